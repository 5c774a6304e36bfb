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

from explore_instruct.datafile import atomic_write_text, read_json, text_field
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

# Deeper than any real tree (the paper's K is 2); stops a crafted file from exhausting the stack.
MAX_TREE_DEPTH = 64
# File names stay well under the usual 255-byte limit, with room for a `_2` suffix and `.json`.
_MAX_FILE_SLUG = 120
_SAFE_SLUG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def safe_slug(slug: str) -> str:
    """`slug` as one plain file name: no folder separators, no `..`, no leading dot, not too long.

    A `task_name` from a tree file decides where `export --format upstream` writes, so anything that is
    not already a plain name is slugged again.
    """
    if not _SAFE_SLUG.fullmatch(slug) or ".." in slug:
        slug = slugify(slug)
    return slug[:_MAX_FILE_SLUG]


def _confined(folder: Path, name: str, where: str) -> Path:
    """`folder / name` after resolving links, refused unless it is a file inside `folder`."""
    if not name or Path(name).is_absolute() or "\x00" in name:
        raise UserError(f"{where}: config_filename {name!r} must be a file name inside the tree folder")
    path = folder / name
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (named by {where})") from None
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
        raise UserError(f"{path}: a symbolic link that loops (named by {where})") from None
    if not resolved.is_relative_to(folder):
        raise UserError(f"{where}: config_filename {name!r} points outside the tree folder {folder}")
    if not resolved.is_file():
        raise UserError(f"{path}: not a file (named by {where})")
    return resolved


def _examples(data: Any, node_path: Path) -> list[Example]:
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise UserError(f"{node_path}: expected a JSON object with a list 'examples'")
    examples: list[Example] = []
    for i, row in enumerate(data["examples"]):
        at = f"{node_path}: examples[{i}]"
        if not isinstance(row, dict):
            raise UserError(f"{at}: expected an object")
        examples.append(
            Example(
                text_field(row, "instruction", at),
                text_field(row, "input", at, required=False),
                text_field(row, "output", at, required=False),
            )
        )
    return examples


def load_upstream(directory: str | Path) -> DomainTree:
    """Read a tree in the original release's directory format. Bad input raises UserError.

    Every file read is confined to the tree folder: a `config_filename` that is absolute, climbs out
    with `..`, or is a link to a file outside is refused, and so is a missing or looping node file.
    """
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"{d}: not a directory")
    folder = d.resolve()
    meta_path = d / META_FILE
    meta = read_json(_confined(folder, META_FILE, str(d)))
    if not isinstance(meta, dict):
        raise UserError(f"{meta_path}: expected a JSON object")

    def build(entry: Any, where: str, depth: int) -> TaskNode:
        at = f"{meta_path}: {where}"
        if not isinstance(entry, dict):
            raise UserError(f"{at}: expected an object")
        if depth > MAX_TREE_DEPTH:
            raise UserError(f"{at}: the tree is deeper than {MAX_TREE_DEPTH} levels")
        raw = text_field(entry, "raw_task_name", at)
        slug = safe_slug(text_field(entry, "task_name", at, required=False) or slugify(raw))
        config = text_field(entry, "config_filename", at, required=False) or f"{slug}.json"
        node_path = _confined(folder, config, at)
        children = entry.get("children") or []
        if not isinstance(children, list):
            raise UserError(f"{at}: field 'children' must be a list")
        return TaskNode(
            name=raw,
            reason=text_field(entry, "reason", at, required=False),
            examples=_examples(read_json(node_path), d / config),
            slug=slug,
            children=[build(c, f"{where}.children[{i}]", depth + 1) for i, c in enumerate(children)],
        )

    return DomainTree(build(meta, "root", 0))


def save_upstream(tree: DomainTree, directory: str | Path) -> None:
    """Write the release's directory format (same layout and JSON style as the release).

    File names come from `safe_slug`, so every file lands directly inside `directory`.
    """
    d = Path(directory)
    used: set[str] = set()

    def file_slug(node: TaskNode) -> str:
        base = safe_slug(node.slug)
        slug, n = base, 2
        while slug.lower() in used:  # two tasks with one slug would overwrite each other's file
            slug, n = f"{base}_{n}", n + 1
        used.add(slug.lower())
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
