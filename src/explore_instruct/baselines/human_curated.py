"""The Domain-Specific Human-Curated baseline: examples sampled from a local Super-NaturalInstructions copy.

A SuperNI checkout holds one JSON file per task under `tasks/`, each with a `Definition` (a list of
strings), `Categories` (a list of task-type names), `Positive Examples` and `Instances` (each with an
`input` and a list of `output`s). We keep the tasks whose categories match the domain, pool their
instances and draw a seeded uniform sample, written as Alpaca records: the task definition as the
instruction, the instance input, and its first output. Nothing is downloaded.

Default categories per paper domain (SuperNI's own task-type names, compared case-insensitively):

- rewriting: tasks that take a text and return a changed version of it: simplification, paraphrasing,
  grammar correction, style transfer, compression, expansion and question rewriting.
- brainstorming: open-ended generation of new content from a prompt: questions, titles, stories,
  poems, sentence and text completion.
- math: SuperNI's `Mathematics` category (arithmetic, algebra, geometry, counting word problems).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explore_instruct.datafile import read_json
from explore_instruct.errors import UserError

DEFAULT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "rewriting": (
        "Text Simplification",
        "Paraphrasing",
        "Grammar Error Correction",
        "Style Transfer",
        "Sentence Compression",
        "Sentence Expansion",
        "Question Rewriting",
    ),
    "brainstorming": (
        "Question Generation",
        "Title Generation",
        "Story Composition",
        "Poem Generation",
        "Sentence Composition",
        "Text Completion",
    ),
    "math": ("Mathematics",),
}

# The head of a task file is enough to read its categories; skipping a full parse of the thousands
# of non-matching task files (some tens of MB) keeps a scan of a full checkout to seconds.
_HEAD_BYTES = 64 * 1024
_CATEGORIES_RE = re.compile(r'"Categories"\s*:\s*(\[[^\]]*\])')


@dataclass(frozen=True)
class SampleReport:
    """What a sampling run used and produced, for the CLI summary."""

    tasks_scanned: int
    tasks_matched: list[str]
    instances_available: int
    sampled: int


def categories_for(domain: str, override: Sequence[str] | None = None) -> tuple[str, ...]:
    """The SuperNI categories to draw from: the override when given, else the domain's defaults."""
    if override:
        cats = tuple(c.strip() for c in override if c.strip())
        if not cats:
            raise UserError("categories: no category names given", settings=("categories",))
        return cats
    key = domain.strip().lower()
    if key not in DEFAULT_CATEGORIES:
        known = ", ".join(sorted(DEFAULT_CATEGORIES))
        raise UserError(
            f"no default SuperNI categories for domain '{domain}' (known: {known}); pass categories",
            settings=("categories",),
        )
    return DEFAULT_CATEGORIES[key]


def tasks_dir(superni: str | Path) -> Path:
    """The folder of task files: `DIR/tasks` for a checkout, or DIR itself when it holds task files."""
    root = Path(superni)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory (expected a Super-NaturalInstructions checkout)")
    for candidate in (root / "tasks", root):
        if candidate.is_dir() and any(candidate.glob("*.json")):
            return candidate
    raise UserError(f"{root}: no task files found (expected tasks/*.json of a Super-NaturalInstructions checkout)")


def _head_categories(path: Path) -> list[str] | None:
    """Categories read from the file's head, or None when they are not there (then parse it all)."""
    with path.open("rb") as fh:
        head = fh.read(_HEAD_BYTES).decode("utf-8", errors="ignore")
    match = _CATEGORIES_RE.search(head)
    if not match:
        return None
    try:
        cats = json.loads(match.group(1))
    except json.JSONDecodeError:
        return None
    return [c for c in cats if isinstance(c, str)] if isinstance(cats, list) else None


def _is_english(task: dict[str, Any]) -> bool:
    """True unless the task declares a non-English input or output language."""
    for key in ("Input_language", "Output_language"):
        langs = task.get(key)
        if isinstance(langs, list) and langs and not any(str(x).lower() == "english" for x in langs):
            return False
    return True


def _records_of(task: dict[str, Any], path: Path) -> list[dict[str, str]]:
    definition = task.get("Definition")
    if isinstance(definition, list):
        definition = "\n".join(str(d) for d in definition)
    if not isinstance(definition, str) or not definition.strip():
        raise UserError(f"{path}: missing field 'Definition'")
    instances = task.get("Instances")
    if not isinstance(instances, list):
        raise UserError(f"{path}: missing field 'Instances' (a list)")
    records: list[dict[str, str]] = []
    for inst in instances:
        if not isinstance(inst, dict):
            continue
        outputs = inst.get("output")
        if isinstance(outputs, str):
            outputs = [outputs]
        # An instance without a reference output cannot be a training example.
        if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], str):
            continue
        records.append({"instruction": definition.strip(), "input": str(inst.get("input") or ""), "output": outputs[0]})
    return records


def sample_superni(
    superni: str | Path,
    categories: Iterable[str],
    num: int,
    *,
    seed: int = 42,
    english_only: bool = True,
    progress: Any = None,
) -> tuple[list[dict[str, str]], SampleReport]:
    """Draw `num` Alpaca records (seeded, uniform over instances) from the matching SuperNI tasks.

    `progress`, when given, is called with (done, total) after each task file. Fewer instances than
    `num` yields all of them (the report says how many).
    """
    if num <= 0:
        raise UserError("sample_size must be a positive number", settings=("sample_size",))
    wanted = {c.strip().lower() for c in categories}
    files = sorted(tasks_dir(superni).glob("*.json"))
    pool: list[dict[str, str]] = []
    matched: list[str] = []
    for i, path in enumerate(files):
        cats = _head_categories(path)
        if cats is not None and not wanted.intersection(c.lower() for c in cats):
            if progress:
                progress(i + 1, len(files))
            continue
        task = read_json(path)
        if not isinstance(task, dict):
            raise UserError(f"{path}: expected a JSON object (a SuperNI task)")
        cats = task.get("Categories") or []
        if (
            isinstance(cats, list)
            and wanted.intersection(str(c).lower() for c in cats)
            and (not english_only or _is_english(task))
        ):
            matched.append(path.stem)
            pool.extend(_records_of(task, path))
        if progress:
            progress(i + 1, len(files))
    if not matched:
        raise UserError(
            f"{superni}: no task matches the categories {', '.join(sorted(wanted))}"
            + (" (English-only)" if english_only else "")
        )
    rng = random.Random(seed)
    sample = rng.sample(pool, num) if num < len(pool) else rng.sample(pool, len(pool))
    return sample, SampleReport(len(files), matched, len(pool), len(sample))
