"""Findings of the outside probe (a new user's and an attacker's tries), one test per fixed problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from explore_instruct.store import RunStore
from explore_instruct.tree import Example


def arrival_order_store(run_dir: Path) -> RunStore:
    """A tree whose rows arrived out of order: the second subtree's nodes and examples were stored first.

    root > a > a0 > a0x and root > b > b0 > b0x, with b0 (and so b0x) inserted before a0 (and a0x),
    as happens when b's lookahead reply comes back before a's.
    """
    store = RunStore.create(run_dir, "domain: generic\n")
    ids: dict[str, int] = {}

    def add(key: str, parent: str | None, position: int) -> None:
        depth = key.count("/")
        pid = ids[parent] if parent else None
        ids[key] = store.add_node(key=key, parent_id=pid, position=position, depth=depth, name=key)

    with store.transaction():
        add("root", None, 0)
        add("root/0", "root", 0)
        add("root/1", "root", 1)
        add("root/1/0", "root/1", 0)
        add("root/0/0", "root/0", 0)
        add("root/1/0/0", "root/1/0", 0)
        add("root/0/0/0", "root/0/0", 0)
        for key in ("root/1/0/0", "root/0/0/0", "root/1", "root/0"):
            for i in (1, 0):
                store.add_example(
                    key=f"{key}#g{i:05d}.000",
                    node_id=ids[key],
                    origin="generate",
                    example=Example(f"Do {key} number {i}.", "", "Done."),
                )
    return store


def test_level_order_follows_the_tree_not_the_order_replies_arrived(tmp_path: Path) -> None:
    # Pruning ("an earlier task in level order") and the diversity filter's greedy order both walk
    # this order, so it must not depend on which reply came back first.
    store = arrival_order_store(tmp_path / "run")
    keys = [n.key for n in store.nodes()]
    assert keys == ["root", "root/0", "root/1", "root/0/0", "root/1/0", "root/0/0/0", "root/1/0/0"]
    store.close()


def test_exported_records_are_in_tree_order_whatever_the_arrival_order(tmp_path: Path) -> None:
    store = arrival_order_store(tmp_path / "run")
    tasks = [(r["task"], r["instruction"]) for r in store.dataset("kept")]
    assert tasks == [
        ("root/0", "Do root/0 number 0."),
        ("root/0", "Do root/0 number 1."),
        ("root/1", "Do root/1 number 0."),
        ("root/1", "Do root/1 number 1."),
        ("root/0/0/0", "Do root/0/0/0 number 0."),
        ("root/0/0/0", "Do root/0/0/0 number 1."),
        ("root/1/0/0", "Do root/1/0/0 number 0."),
        ("root/1/0/0", "Do root/1/0/0 number 1."),
    ]
    assert [r["task"] for r in store.dataset("all")] == [t for t, _ in tasks]
    store.close()


@pytest.fixture(autouse=True)
def _quiet_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps at 80 columns otherwise, splitting lines under test
