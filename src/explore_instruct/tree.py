"""Domain-tree value types and the original release's directory format.

The original Explore-Instruct release stores a tree as a directory: `tree_meta_info.json` holds the
task hierarchy (`raw_task_name`, `task_name`, `config_filename`, `reason`, `children`) and each
`<task_name>.json` holds one node with its `examples` (`instruction`, `input`, `output`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explore_instruct.datafile import atomic_write_text
from explore_instruct.errors import UserError

META_FILE = "tree_meta_info.json"


@dataclass
class Example:
    instruction: str
    input: str = ""
    output: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"instruction": self.instruction, "input": self.input, "output": self.output}


def slugify(name: str) -> str:
    """The release's `task_name`: lower case, runs of non-alphanumerics to one underscore."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "task"


def normalise_task_name(name: str) -> str:
    """The key under which two task names count as the same task."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", name.lower()).split())


@dataclass
class TaskNode:
    name: str
    reason: str = ""
    examples: list[Example] = field(default_factory=list)
    children: list[TaskNode] = field(default_factory=list)
    slug: str = ""
    pruned: bool = False

    def __post_init__(self) -> None:
        if not self.slug:
            self.slug = slugify(self.name)


@dataclass
class DomainTree:
    root: TaskNode

    def level_order(self) -> Iterator[tuple[TaskNode, int, TaskNode | None]]:
        """(node, depth, parent) breadth first: the order task pruning compares names in."""
        frontier: list[tuple[TaskNode, int, TaskNode | None]] = [(self.root, 0, None)]
        while frontier:
            nxt: list[tuple[TaskNode, int, TaskNode | None]] = []
            for node, depth, parent in frontier:
                yield node, depth, parent
                nxt.extend((c, depth + 1, node) for c in node.children)
            frontier = nxt

    def depth_first(self) -> Iterator[tuple[TaskNode, int, TaskNode | None]]:
        stack: list[tuple[TaskNode, int, TaskNode | None]] = [(self.root, 0, None)]
        while stack:
            node, depth, parent = stack.pop()
            yield node, depth, parent
            stack.extend((c, depth + 1, node) for c in reversed(node.children))

    def count_examples(self) -> int:
        return sum(len(n.examples) for n, _, _ in self.level_order())


# --- the original release's directory format ---------------------------------------------------


def _require(obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in obj:
        raise UserError(f"{where}: missing field '{key}'")
    if not isinstance(obj[key], kind):
        raise UserError(f"{where}: field '{key}' must be {getattr(kind, '__name__', kind)}")
    return obj[key]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def load_upstream(directory: str | Path) -> DomainTree:
    """Read a tree in the original release's directory format. Bad input raises UserError."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{d}: not a directory")
    meta_path = d / META_FILE
    meta = _read_json(meta_path)
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path}: expected a JSON object")

    def build(entry: Any, where: str) -> TaskNode:
        if not isinstance(entry, dict):
            raise UserError(f"{meta_path}: {where}: expected an object")
        raw = _require(entry, "raw_task_name", f"{meta_path}: {where}")
        slug = entry.get("task_name") or slugify(raw)
        config = entry.get("config_filename") or f"{slug}.json"
        node_path = d / config
        examples: list[Example] = []
        if node_path.exists():
            data = _read_json(node_path)
            rows = _require(data, "examples", str(node_path), list) if isinstance(data, dict) else None
            if rows is None:
                raise UserError(f"{node_path}: expected a JSON object with 'examples'")
            for i, row in enumerate(rows):
                at = f"{node_path}: examples[{i}]"
                if not isinstance(row, dict):
                    raise UserError(f"{at}: expected an object")
                examples.append(
                    Example(
                        _require(row, "instruction", at),
                        row.get("input") or "",
                        row.get("output") or "",
                    )
                )
        children = entry.get("children") or []
        if not isinstance(children, list):
            raise UserError(f"{meta_path}: {where}: field 'children' must be a list")
        return TaskNode(
            name=raw,
            reason=entry.get("reason") or "",
            examples=examples,
            slug=slug,
            children=[build(c, f"{where}.children[{i}]") for i, c in enumerate(children)],
        )

    return DomainTree(build(meta, "root"))


def save_upstream(tree: DomainTree, directory: str | Path) -> None:
    """Write the release's directory format (same layout and JSON style as the release)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()

    def file_slug(node: TaskNode) -> str:
        slug, n = node.slug, 2
        while slug in used:  # two tasks with one slug would overwrite each other's file
            slug, n = f"{node.slug}_{n}", n + 1
        used.add(slug)
        return slug

    def meta_of(node: TaskNode, is_root: bool) -> dict[str, Any]:
        slug = file_slug(node)
        head = {
            "raw_task_name": node.name,
            "task_name": slug,
            "config_filename": f"{slug}.json",
            "reason": node.reason,
        }
        body = {**head, "examples": [e.to_dict() for e in node.examples]}
        # The release writes the hand-made root indented and generated nodes on one line.
        text = json.dumps(body, indent=2) if is_root else json.dumps(body, ensure_ascii=False) + "\n"
        atomic_write_text(d / head["config_filename"], text)
        flag = {"pruned": True} if node.pruned else {}  # an addition to the release's format: readers ignore it
        return {**head, **flag, "children": [meta_of(c, False) for c in node.children]}

    atomic_write_text(d / META_FILE, json.dumps(meta_of(tree.root, True), indent=2))
