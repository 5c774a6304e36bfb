"""Valid text, and the two rules for outside text that is not.

A Python string can hold what no UTF-8 file and no SQLite database can store: a surrogate code point
(U+D800-U+DFFF) that is not half of a pair, which a JSON escape such as `"\\udcff"` decodes to and
which some servers (llama.cpp's among them) let through. Outside text follows one of two rules:

- Model text (a reply online or in a batch, an answer, a judge's review) is repaired where it
  arrives: each lone surrogate becomes U+FFFD, so every reply can be logged, cached and written.
  The quality rules then drop an example or a task name holding text that is not valid ("invalid
  text": U+FFFD, or a control character other than tab, newline and the like), and `stats` counts it.
- An input file, a config or a value on the command line is refused: one line naming the file, the
  line or record, and the field.
"""

from __future__ import annotations

import re
from typing import Any

from explore_instruct.errors import UserError

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def repair(text: str) -> str:
    """`text` with each lone surrogate replaced by U+FFFD (a pair written as two halves is joined)."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def repair_json(value: Any) -> Any:
    """A decoded JSON value with every string in it (keys too) repaired."""
    if isinstance(value, str):
        return repair(value)
    if isinstance(value, list):
        return [repair_json(v) for v in value]
    if isinstance(value, dict):
        return {repair(k) if isinstance(k, str) else k: repair_json(v) for k, v in value.items()}
    return value


def invalid_char(text: str) -> str | None:
    """The first character that makes model text invalid (U+FFFD, a surrogate, a control character
    other than whitespace), or None. Right-to-left marks and other format characters are text."""
    for ch in text:
        control = (ch < " " or "\x7f" <= ch <= "\x9f") and not ch.isspace()
        if control or ch == REPLACEMENT or "\ud800" <= ch <= "\udfff":
            return ch
    return None


def may_hold_surrogates(json_text: str) -> bool:
    """False when JSON text read from a UTF-8 file surely decodes to no surrogate: the file itself
    cannot hold one, so only an escape (`\\ud...`) can write one. A substring test: the common case
    costs one fast scan and no walk."""
    return "\\ud" in json_text or "\\uD" in json_text


def _first_surrogate(value: Any) -> tuple[str, str] | None:
    """(where in `value`, the surrogate) for the first string holding one; iterative, since a
    decoded file may nest as deep as the parser allows."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if (m := _SURROGATE.search(item)) is not None:
                return path, m.group()
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                name = str(key)
                if (m := _SURROGATE.search(name)) is not None:
                    return f"{path} (a key)" if path else "a key", m.group()
                children.append((f"{path}.{name}" if path else name, child))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{path}[{i}]", child) for i, child in enumerate(item)]))
    return None


def refuse_invalid(value: Any, where: str) -> None:
    """Raise a UserError at `where` if a string in `value` holds a surrogate (not valid Unicode)."""
    found = _first_surrogate(value)
    if found is None:
        return
    path, char = found
    field = f"field '{repair(path)}' " if path else ""
    problem = f"holds U+{ord(char):04X}, a lone surrogate, which is not valid Unicode text"
    raise UserError(f"{repair(where)}: {field}{problem}")
