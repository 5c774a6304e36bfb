"""Turning completions into validated records: JSON first, a labelled text format as fallback.

One parser serves every domain and both exploration and enrichment: a reply is either JSON
(possibly wrapped in prose or a code fence) or lines labelled `Subtask:`, `Reason:`,
`Instruction:`, `Input:`, `Output:`. Anything else raises ParseError, which the client retries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from explore_instruct.llm.base import ParseError
from explore_instruct.text import repair_json
from explore_instruct.tree import Example

# Inputs that mean "no input" in the wild.
_EMPTY_INPUTS = {"", "none", "n/a", "na", "null", "<noinput>", "no input", "<no input>", "(none)", "-", "empty"}


@dataclass
class Subtask:
    name: str
    reason: str = ""
    examples: list[Example] = field(default_factory=list)


# --- JSON schemas for structured output -------------------------------------------------------------


def _example_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            # Non-empty instruction and output: a constrained model may otherwise leave them blank.
            "instruction": {"type": "string", "minLength": 5},
            "input": {"type": "string"},
            "output": {"type": "string", "minLength": 1},
        },
        "required": ["instruction", "input", "output"],
    }


def examples_schema(count: int) -> dict[str, Any]:
    # minItems/maxItems: a grammar-constrained small model otherwise happily returns an empty list.
    return {
        "type": "object",
        "properties": {"examples": {"type": "array", "items": _example_schema(), "minItems": count, "maxItems": count}},
        "required": ["examples"],
    }


def subtasks_schema(count: int, examples_per: int) -> dict[str, Any]:
    subtask = {
        "type": "object",
        "properties": {
            # Bounded so a grammar-constrained model writes a name, not a paragraph.
            "name": {"type": "string", "minLength": 3, "maxLength": 80},
            "reason": {"type": "string"},
            "examples": {
                "type": "array",
                "items": _example_schema(),
                "minItems": examples_per,
                "maxItems": examples_per,
            },
        },
        "required": ["name", "reason", "examples"],
    }
    return {
        "type": "object",
        "properties": {"subtasks": {"type": "array", "items": subtask, "minItems": count, "maxItems": count}},
        "required": ["subtasks"],
    }


# Scores from 1 to 10: the judge's verdict scores and the rate stage's rating.
SCORE_MIN, SCORE_MAX = 1, 10
SCORE_SCHEMA: dict[str, Any] = {
    "type": "integer",
    "minimum": SCORE_MIN,
    "maximum": SCORE_MAX,
    # llama-cpp-python's grammar ignores minimum/maximum; an enum bounds the score there too.
    "enum": list(range(SCORE_MIN, SCORE_MAX + 1)),
}
# Bounds the reason so a small model cannot ramble past max_tokens.
RATING_REASON_MAX_CHARS = 300
RATING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": SCORE_SCHEMA,
        "reason": {"type": "string", "minLength": 1, "maxLength": RATING_REASON_MAX_CHARS},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}


def read_score(obj: dict[str, Any], key: str) -> int:
    """`obj[key]` as a whole number from 1 to 10 ("7" too: a server in text mode may quote it)."""
    value = obj.get(key)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ParseError(f"{key} is not a whole number")
    if not SCORE_MIN <= value <= SCORE_MAX:
        raise ParseError(f"{key} {value} is outside {SCORE_MIN}-{SCORE_MAX}")
    return int(value)


# --- JSON -----------------------------------------------------------------------------------------


def _balanced_spans(text: str) -> list[str]:
    """Candidate JSON values in `text`: each outermost {...} or [...] span, in order."""
    spans, depth, start, in_str, escaped = [], 0, -1, False, False
    for i, ch in enumerate(text):
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"' and depth:
            in_str = True
        elif ch in "{[":
            if depth == 0:
                start = i
            depth += 1
        elif ch in "}]" and depth:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def extract_json(text: str) -> Any:
    """The JSON value in a reply, tolerating code fences and surrounding prose; None if there is none.

    An escape such as `\\udcff` in the model's JSON decodes to a lone surrogate: it comes back as U+FFFD.
    """
    cleaned = re.sub(r"```(?:json)?", "", text).strip()
    try:
        return repair_json(json.loads(cleaned))
    except json.JSONDecodeError:
        pass
    for span in sorted(_balanced_spans(cleaned), key=len, reverse=True):
        try:
            return repair_json(json.loads(span))
        except json.JSONDecodeError:
            continue
    return None


def _clean(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
    return text.strip()


def _clean_input(value: Any) -> str:
    text = _clean(value)
    return "" if text.lower() in _EMPTY_INPUTS else text


def _example_from(obj: Any) -> Example | None:
    if not isinstance(obj, dict):
        return None
    lowered = {str(k).lower(): v for k, v in obj.items()}
    instruction = _clean(lowered.get("instruction"))
    if not instruction:
        return None
    return Example(instruction, _clean_input(lowered.get("input")), _clean(lowered.get("output")))


def _list_under(value: Any, *keys: str) -> list[Any] | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in keys:
            found = value.get(key)
            if isinstance(found, list):
                return found
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    return None


# --- labelled text --------------------------------------------------------------------------------

_LABEL = re.compile(
    r"^\s*(?:[#>*\-\d.)\s]*)?\**\s*(subtask|task name|task|name|reason|instruction|input|output)"
    r"(?:\s*\d+)?\s*\**\s*[:：]\**\s?(.*)$",
    re.IGNORECASE,
)
_CANON = {"subtask": "name", "task name": "name", "task": "name", "name": "name"}


def _labelled_fields(text: str) -> list[tuple[str, str]]:
    """(label, value) pairs in order; unlabelled lines continue the previous field."""
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        m = _LABEL.match(line)
        if m:
            label = _CANON.get(m.group(1).lower(), m.group(1).lower())
            fields.append((label, m.group(2)))
        elif fields and not re.match(r"^\s*(?:example|###)\s*\d*\s*:?\s*$", line, re.IGNORECASE):
            label, value = fields[-1]
            fields[-1] = (label, f"{value}\n{line}")
    return [(label, value.strip()) for label, value in fields]


def _examples_from_fields(fields: list[tuple[str, str]]) -> list[Example]:
    out: list[Example] = []
    current: dict[str, str] | None = None
    for label, value in fields:
        if label == "instruction":
            if current:
                out.append(
                    Example(current["instruction"], _clean_input(current.get("input")), current.get("output", ""))
                )
            current = {"instruction": value}
        elif current is not None and label in ("input", "output"):
            current[label] = value
    if current and current["instruction"]:
        out.append(Example(current["instruction"], _clean_input(current.get("input")), current.get("output", "")))
    return [e for e in out if e.instruction]


# --- public parsers ---------------------------------------------------------------------------------


def parse_examples(text: str) -> list[Example]:
    """Examples in a reply (JSON `{"examples": [...]}`, a JSON list, or labelled text)."""
    value = extract_json(text)
    items = _list_under(value, "examples", "data", "items")
    if items is None and isinstance(value, dict) and "instruction" in {k.lower() for k in value}:
        items = [value]
    if items is not None:
        examples = [e for e in (_example_from(i) for i in items) if e is not None]
    else:
        examples = _examples_from_fields(_labelled_fields(text))
    if not examples:
        raise ParseError("no examples found in the reply")
    return examples


def parse_subtasks(text: str) -> list[Subtask]:
    """Subtasks with their reasons and example triples (JSON or labelled text)."""
    value = extract_json(text)
    items = _list_under(value, "subtasks", "tasks")
    subtasks: list[Subtask] = []
    if items is not None:
        for item in items:
            if not isinstance(item, dict):
                continue
            lowered = {str(k).lower(): v for k, v in item.items()}
            name = _clean(lowered.get("name") or lowered.get("task") or lowered.get("subtask"))
            if not name:
                continue
            listed = lowered.get("examples")
            raw_examples = listed if isinstance(listed, list) else []
            examples = [e for e in (_example_from(x) for x in raw_examples) if e is not None]
            subtasks.append(Subtask(name, _clean(lowered.get("reason")), examples))
    else:
        fields = _labelled_fields(text)
        groups: list[list[tuple[str, str]]] = []
        for label, value in fields:
            if label == "name":
                groups.append([])
            if groups:
                groups[-1].append((label, value))
        for group in groups:
            name = group[0][1].splitlines()[0].strip() if group[0][1] else ""
            if not name:
                continue
            reason = next((v for k, v in group if k == "reason"), "")
            subtasks.append(Subtask(name, reason, _examples_from_fields(group)))
    if not subtasks:
        raise ParseError("no subtasks found in the reply")
    return subtasks


_LABELLED_SCORE = re.compile(r"^\W*score\W*\s*[:=]\s*(\d+)", re.IGNORECASE | re.MULTILINE)
_LABELLED_REASON = re.compile(r"^\W*reason\W*\s*[:=]\s*(.+)$", re.IGNORECASE | re.MULTILINE)


def parse_rating(text: str) -> tuple[int, str]:
    """(score, reason) of a rating reply: JSON `{"score": S, "reason": "..."}`, or lines `Score:` / `Reason:`."""
    value = extract_json(text)
    if isinstance(value, dict):
        lowered = {str(k).lower(): v for k, v in value.items()}
        score = read_score(lowered, "score")
        reason = " ".join(_clean(lowered.get("reason")).split())
    else:
        found = _LABELLED_SCORE.search(text)
        if found is None:
            raise ParseError("no score in the rating")
        score = read_score({"score": found.group(1)}, "score")
        labelled = _LABELLED_REASON.search(text)
        reason = " ".join(labelled.group(1).split()) if labelled else ""
    if not reason:
        raise ParseError("the rating gives no reason")
    return score, reason
