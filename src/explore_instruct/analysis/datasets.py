"""Loading what `analyze` is pointed at into one shape: a named list of records, plus a tree if any.

Accepted inputs: a JSON list or JSONL file of records (Alpaca `instruction/input/output`, our JSONL
export with `task/task_path/depth`, or chat records with `messages`), a tree directory in the original
release's format (`tree_meta_info.json`), or a run directory (`run.db`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from explore_instruct.datafile import read_records, text_field
from explore_instruct.errors import UserError
from explore_instruct.tree import META_FILE, DomainTree, load_upstream


@dataclass
class AnalysedDataset:
    """One dataset under analysis: display name, records with string fields, and its tree if any."""

    name: str
    records: list[dict[str, str]]
    tree: DomainTree | None = None
    source: str = ""
    kind: str = "file"  # "file" | "tree" | "run"
    seeds: list[str] | None = None  # the hand-written seed instructions, when the input knows them


def parse_spec(spec: str) -> tuple[str, Path]:
    """`NAME=PATH` or `PATH` (name = the file or folder stem). An existing path wins over a split."""
    if Path(spec).exists() or "=" not in spec:
        path = Path(spec)
        return (path.stem or path.resolve().name), path
    name, _, written = spec.partition("=")
    if not name.strip():
        raise UserError(f"{spec}: empty dataset name before '='")
    if not written:
        raise UserError(f"{spec}: empty path after '='")
    return name.strip(), Path(written)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _from_messages(messages: Any) -> dict[str, str] | None:
    """A chat record as a triple: first user message = instruction, the assistant reply after it = output."""
    if not isinstance(messages, list):
        return None
    instruction = output = None
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role == "user" and instruction is None:
            instruction = _text(msg.get("content"))
        elif role == "assistant" and instruction is not None and output is None:
            output = _text(msg.get("content"))
    if instruction is None:
        return None
    return {"instruction": instruction, "input": "", "output": output or ""}


def normalise_records(raw: list[dict[str, Any]], where: str) -> list[dict[str, str]]:
    """Records with string instruction/input/output (provenance kept); UserError on the first bad one."""
    out: list[dict[str, str]] = []
    for i, rec in enumerate(raw):
        if "instruction" in rec:
            instruction = text_field(rec, "instruction", f"{where}: record {i}")
            row = {k: _text(v) for k, v in rec.items() if k in ("task", "task_path", "depth")}
            row.update(instruction=instruction, input=_text(rec.get("input")), output=_text(rec.get("output")))
        else:
            chat = _from_messages(rec.get("messages"))
            if chat is None:
                raise UserError(
                    f"{where}: record {i} has no 'instruction' field (nor chat 'messages' with a user turn)"
                )
            row = chat
        out.append(row)
    return out


def _tree_records(tree: DomainTree) -> list[dict[str, str]]:
    """Every task's examples. The root's are the hand-written seeds once the tree has grown, so like a
    run's `kept` set they are left out then (they are what the seed overlap compares against)."""
    rows: list[dict[str, str]] = []
    paths: dict[int, str] = {}  # id(node) -> "root > task > subtask", as a run's records give it
    for node, depth, parent in tree.depth_first():
        paths[id(node)] = f"{paths[id(parent)]} > {node.name}" if parent is not None else node.name
        if node is tree.root and node.children:
            continue
        for ex in node.examples:
            rows.append({**ex.to_dict(), "task": node.name, "task_path": paths[id(node)], "depth": str(depth)})
    return rows


@dataclass
class _OpenedRun:
    tree: DomainTree
    rows: list[dict[str, Any]]
    seeds: list[str]


def _open_run(path: Path) -> _OpenedRun:
    from explore_instruct.runstore import RunStore  # the run store is only needed for run directories

    store = RunStore.open(path)
    try:
        tree = store.load_tree()
        # The sampled set is the run's final dataset; before sampling the store gives what the filters kept.
        rows = store.dataset("sample")
        # The config's seed examples only: the root also holds examples that enrichment generated for it.
        seeds = [ex.instruction for ex in store.examples(origins=["seed"])]
    finally:
        store.close()
    return _OpenedRun(tree, rows, seeds)


def _root_instructions(tree: DomainTree) -> list[str]:
    """A released tree's seeds: its root's examples (hand-written there)."""
    return [e.instruction for e in tree.root.examples]


def load_dataset(name: str, path: Path) -> AnalysedDataset:
    """Load one input. Raises UserError for a missing path, a bad file, or a dataset with no records."""
    if path.is_dir():
        if (path / "run.db").exists():
            run = _open_run(path)
            records = normalise_records(run.rows, str(path))
            ds = AnalysedDataset(name, records, run.tree, str(path), "run", run.seeds)
        elif (path / META_FILE).exists():
            tree = load_upstream(path)
            ds = AnalysedDataset(name, _tree_records(tree), tree, str(path), "tree", _root_instructions(tree))
        else:
            raise UserError(
                f"{path}: not a dataset (expected a JSON/JSONL file, a tree directory with "
                f"{META_FILE}, or a run directory with run.db)"
            )
    elif path.exists():
        raw, _fmt = read_records(path)
        ds = AnalysedDataset(name, normalise_records(raw, str(path)), None, str(path), "file")
    else:
        raise UserError(f"{path}: no such file or directory")
    if not ds.records:
        raise UserError(f"{path}: the dataset is empty (no records to analyse)")
    return ds


def load_datasets(specs: list[str]) -> list[AnalysedDataset]:
    """All inputs, with unique display names (a repeated name gets a numeric suffix)."""
    out: list[AnalysedDataset] = []
    seen: set[str] = set()
    for spec in specs:
        name, path = parse_spec(spec)
        base, n = name, 2
        while name in seen:
            name, n = f"{base}-{n}", n + 1
        seen.add(name)
        out.append(load_dataset(name, path))
    return out


def load_seed_instructions(path: Path) -> list[str]:
    """Seed instructions: a run's seed examples (from its config), a tree's root examples, or every
    record of a file."""
    if path.is_dir():
        if (path / "run.db").exists():
            seeds = _open_run(path).seeds
        elif (path / META_FILE).exists():
            seeds = _root_instructions(load_upstream(path))
        else:
            raise UserError(
                f"{path}: seeds must be a record file, a tree directory or a run directory", settings=("seeds",)
            )
    elif path.exists():
        raw, _fmt = read_records(path)
        seeds = [r["instruction"] for r in normalise_records(raw, str(path))]
    else:
        raise UserError(f"{path}: no such file or directory (seeds)", settings=("seeds",))
    seeds = [s for s in seeds if s.strip()]
    if not seeds:
        raise UserError(f"{path}: no seed instructions found (seeds)", settings=("seeds",))
    return seeds


def default_seeds(datasets: list[AnalysedDataset]) -> tuple[list[str], str] | None:
    """Without --seeds: the seeds of the first run or tree that has some, and where they came from."""
    for ds in datasets:
        if ds.seeds:
            where = "seed examples" if ds.kind == "run" else "root examples"
            return ds.seeds, f"{where} of {ds.name}"
    return None
