"""Reading and writing record files: a JSON list (Alpaca style) or JSONL, detected from the content.

Writes are atomic (temporary file + rename), so a failed command never leaves half a file behind.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from explore_instruct.errors import UserError
from explore_instruct.text import may_hold_surrogates, refuse_invalid, repair_json

RecordFormat = Literal["json", "jsonl"]
# What Python's JSON parser raises RecursionError on: nesting no record file needs.
TOO_DEEP = "JSON nested too deeply to read"


def read_text_file(path: str | Path, expected: str = "a file") -> str:
    """The UTF-8 text of `path`; a missing, unreadable or non-UTF-8 file is a UserError naming it."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
        # A device never ends (/dev/zero, /dev/urandom): reading it would fill memory. Pipes stay
        # allowed, so `filter-file <(zcat data.jsonl.gz)` works.
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
            raise UserError(f"{p}: is a device or socket, expected {expected}")
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a directory, expected {expected}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror})") from None


def read_json(path: str | Path, expected: str = "a JSON file") -> Any:
    """The JSON value in `path`; bad JSON, nesting too deep or a lone surrogate is a UserError naming it."""
    p = Path(path)
    text = read_text_file(p, expected)
    try:
        data = json.loads(text)
    except RecursionError:
        raise UserError(f"{p}: {TOO_DEEP}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if may_hold_surrogates(text):
        refuse_invalid(data, str(p))
    return data


def read_records(path: str | Path, *, model_text: bool = False) -> tuple[list[dict[str, Any]], RecordFormat]:
    """Records of a JSON list or a JSONL file, and which of the two it was.

    Raises UserError naming the file (and line, for JSONL) when the content is neither, or when a
    string holds a lone surrogate (an escape such as `\\udcff`), which is not valid Unicode. A file of
    model replies (`model_text`, a batch's results) is repaired instead, as every reply is (text.py).
    """
    p = Path(path)
    text = read_text_file(p, "a JSON or JSONL file")
    stripped = text.lstrip()
    if not stripped:
        raise UserError(f"{p}: the file is empty")
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{p}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
        except RecursionError:
            raise UserError(f"{p}: {TOO_DEEP}") from None
        for i, rec in enumerate(data):
            if not isinstance(rec, dict):
                raise UserError(f"{p}: record {i} is a {type(rec).__name__}, expected an object")
        if may_hold_surrogates(text):
            data = [_valid_text(rec, f"{p}: record {i}", model_text) for i, rec in enumerate(data)]
        return data, "json"
    records: list[dict[str, Any]] = []
    suspect = may_hold_surrogates(text)  # one scan of the file; lines are checked only when it finds one
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{p}: line {lineno} is not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise UserError(f"{p}: line {lineno}: {TOO_DEEP}") from None
        if not isinstance(rec, dict):
            raise UserError(f"{p}: line {lineno} is a {type(rec).__name__}, expected an object")
        if suspect and may_hold_surrogates(line):
            rec = _valid_text(rec, f"{p}: line {lineno}", model_text)
        records.append(rec)
    return records, "jsonl"


def _valid_text(record: dict[str, Any], where: str, repair: bool) -> dict[str, Any]:
    if repair:
        return repair_json(record)  # type: ignore[no-any-return]
    refuse_invalid(record, where)
    return record


def text_field(record: Mapping[str, Any], name: str, where: str, *, required: bool = True) -> str:
    """`record[name]` as a string; a missing (when required) or non-string field is a UserError at `where`."""
    value = record.get(name)
    if value is None:
        if required:
            raise UserError(f"{where}: missing field '{name}'")
        return ""
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{name}' is a {type(value).__name__}, expected a string")
    return value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UNDER_A_FILE = "a part of the folder path is a file, not a folder"


def _refuse_special_target(p: Path) -> None:
    """An existing target must be a plain file: a rename would replace a link or device itself."""
    try:
        mode = p.lstat().st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise UserError(f"{p}: {_UNDER_A_FILE}") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot write here ({exc.strerror})") from None
    if stat.S_ISLNK(mode):
        raise UserError(f"{p}: is a symbolic link; refusing to replace it (write to a plain file path)")
    if stat.S_ISDIR(mode):
        raise UserError(f"{p}: is a directory, expected a file path")
    if not stat.S_ISREG(mode):
        raise UserError(f"{p}: is a FIFO, socket or device; refusing to replace it (write to a plain file path)")


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and a rename.

    Readers never see half a file, the temporary file is removed on any failure, and a target that
    is not a plain file (a symlink, FIFO, device) is refused rather than replaced. A path under a file
    or in a folder that cannot be written is a UserError naming the path.
    """
    p = Path(path)
    _refuse_special_target(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{p}: {_UNDER_A_FILE}") from None
    except PermissionError:
        raise UserError(f"{p}: cannot write in {p.parent} (permission denied)") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot write in {p.parent} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file owner-only; exports are ordinary files
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# The name most callers use; text and bytes go through the one writer above.
atomic_write_text = atomic_write


def write_records(path: str | Path, records: Iterable[dict[str, Any]], fmt: RecordFormat) -> None:
    """Write records atomically as a JSON list (indented) or as JSONL."""
    if fmt == "json":
        text = json.dumps(list(records), ensure_ascii=False, indent=2) + "\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(path, text)


def format_for_path(path: str | Path, default: RecordFormat = "json") -> RecordFormat:
    """The format a file name asks for: `.jsonl` means JSONL, `.json` a JSON list, anything else `default`."""
    name = Path(path).name.lower()
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    return default
