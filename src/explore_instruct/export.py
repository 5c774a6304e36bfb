"""Exports of a run: the release's tree directory, Alpaca JSON, JSONL with provenance, chat messages
(OpenAI `messages` or ShareGPT `conversations`), and a Hugging Face dataset folder (Parquet + card).

`write_run_exports` writes the standard set after a run (`tree.json`, `data/kept.jsonl`,
`data/dropped.jsonl`, `data/sample.json`); `export` writes one format anywhere.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from explore_instruct.datafile import atomic_write_text, write_records
from explore_instruct.errors import UserError
from explore_instruct.publish.options import CardOptions
from explore_instruct.runlock import LOCK_FILE
from explore_instruct.runstore import CONFIG_FILE, DB_FILE, NodeRow, RunStore, Which, task_node
from explore_instruct.tree import DomainTree, Example, save_upstream

ExportFormat = Literal["upstream", "alpaca", "jsonl", "messages", "sharegpt", "hf"]
FORMATS: tuple[str, ...] = ("upstream", "alpaca", "jsonl", "messages", "sharegpt", "hf")
# Formats written as a folder rather than one file.
FOLDER_FORMATS = frozenset({"upstream", "hf"})
# Default names: `<which>.<format>`, with the file type's extension where the format's name is not one.
_DEFAULT_NAMES = {
    "upstream": "{}.upstream",
    "alpaca": "{}.alpaca.json",
    "jsonl": "{}.jsonl",
    "messages": "{}.messages.jsonl",
    "sharegpt": "{}.sharegpt.jsonl",
    "hf": "{}.hf",
}


def default_export_name(fmt: str, which: str) -> str:
    """The file (or folder, for upstream and hf) name an export gets when no path is given."""
    return _DEFAULT_NAMES.get(fmt, "{}." + fmt).format(which)


def alpaca_record(rec: dict[str, Any]) -> dict[str, str]:
    return {"instruction": rec["instruction"], "input": rec["input"], "output": rec["output"]}


def user_turn(rec: dict[str, Any]) -> str:
    """The user's message of a chat record: the input, when there is one, follows the instruction."""
    return rec["instruction"] if not rec["input"] else f"{rec['instruction']}\n\n{rec['input']}"


def messages_record(rec: dict[str, Any]) -> dict[str, Any]:
    """Chat format for SFT trainers (OpenAI style roles)."""
    return {
        "messages": [
            {"role": "user", "content": user_turn(rec)},
            {"role": "assistant", "content": rec["output"]},
        ]
    }


def sharegpt_record(rec: dict[str, Any]) -> dict[str, Any]:
    """ShareGPT's chat format (`from`: human | gpt), which LLaMA-Factory and Axolotl read."""
    return {
        "conversations": [
            {"from": "human", "value": user_turn(rec)},
            {"from": "gpt", "value": rec["output"]},
        ]
    }


def tree_json(store: RunStore) -> dict[str, Any]:
    """The tree with reasons, pruned flags and kept-example counts (no example bodies)."""
    view = store.tree_view()
    counts = Counter(r.node_id for r in store.examples(status="ok") if r.origin != "seed")

    def node_json(row: NodeRow) -> dict[str, Any]:
        return {
            "name": row.name,
            "slug": row.slug,
            "reason": row.reason,
            "depth": row.depth,
            "pruned": row.pruned,
            "pruned_by": view.by_id[row.pruned_by].name if row.pruned_by else None,
            "pruned_score": row.pruned_score,
            "examples": counts[row.id],
            "children": [node_json(c) for c in view.children.get(row.id, [])],
        }

    return node_json(view.root)


def upstream_tree(store: RunStore, which: Which) -> DomainTree:
    """Every task, pruned ones too (flagged), each with its examples among `which`'s records.

    Pruned tasks stay because their subtasks were explored and enriched; the root keeps its seed
    examples whatever `which` is, since the release's format keeps them there.
    """
    view = store.tree_view()
    nodes = view.build(task_node)
    for ex in store.examples(status="ok", origins=["seed"]):
        nodes[ex.node_id].examples.append(Example(ex.instruction, ex.input, ex.output))
    # The records as `which` exports them (a reviewer's edit included), in example order.
    node_of = {ex.id: ex.node_id for ex in store.examples()}
    for rec in sorted(store.dataset(which), key=lambda r: r["id"]):
        if rec["origin"] != "seed":
            nodes[node_of[rec["id"]]].examples.append(Example(rec["instruction"], rec["input"], rec["output"]))
    return DomainTree(nodes[view.root.id])


# The run's own state: an export written over one of these would destroy the run.
_RUN_STATE_FILES = frozenset(
    {DB_FILE, f"{DB_FILE}-wal", f"{DB_FILE}-shm", f"{DB_FILE}-journal", LOCK_FILE, CONFIG_FILE}
)


def _refuse_run_state(store: RunStore, fmt: str, out: Path) -> None:
    """An export never replaces the run's database, lock or config, nor spills a tree into the run folder."""
    target, run_dir = out.resolve(), store.run_dir.resolve()
    if fmt in FOLDER_FORMATS and target == run_dir:
        raise UserError(f"{out}: is the run directory itself; give the {fmt} export a folder of its own")
    if target.parent == run_dir and target.name in _RUN_STATE_FILES:
        raise UserError(f"{out}: is the run's own {target.name}; choose another --out")


def export(
    store: RunStore, fmt: str, out: str | Path, *, which: Which = "sample", card: CardOptions | None = None
) -> int:
    """Write one export; returns the number of records (or tasks, for `upstream`).

    `card` sets the dataset card of the `hf` format (licence, analysis figures, repository id).
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    _refuse_run_state(store, fmt, Path(out))
    if fmt == "upstream":
        tree = upstream_tree(store, which)
        save_upstream(tree, out)
        return sum(1 for _ in tree.level_order())
    if fmt == "hf":
        from explore_instruct.publish.folder import write_hf_folder

        return write_hf_folder(store, Path(out), which, card or CardOptions())
    records = store.dataset(which)
    if fmt == "alpaca":
        write_records(out, [alpaca_record(r) for r in records], "json")
    elif fmt == "messages":
        write_records(out, [messages_record(r) for r in records], "jsonl")
    elif fmt == "sharegpt":
        write_records(out, [sharegpt_record(r) for r in records], "jsonl")
    else:
        write_records(out, records, "jsonl")
    return len(records)


def write_run_exports(store: RunStore) -> dict[str, int]:
    d = store.run_dir
    atomic_write_text(d / "tree.json", json.dumps(tree_json(store), ensure_ascii=False, indent=2) + "\n")
    counts = {
        "data/kept.jsonl": export(store, "jsonl", d / "data" / "kept.jsonl", which="kept"),
        "data/dropped.jsonl": export(store, "jsonl", d / "data" / "dropped.jsonl", which="dropped"),
    }
    if store.sample_ids():
        counts["data/sample.json"] = export(store, "alpaca", d / "data" / "sample.json", which="sample")
    return counts
