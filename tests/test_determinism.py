"""A run's outcome is a function of its config and the replies, never of the order replies arrive in.

Issue 16 item 3 (two identical runs give byte-identical exports) and issue 20 item 5 (a finished run
resumes to zero calls and the same statistics, and a fresh run agrees).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from pathlib import Path

from explore_instruct.cli import main
from explore_instruct.export import export
from explore_instruct.llm.base import Completion, CompletionRequest
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.pipeline import run_stages
from explore_instruct.runstore import RunStore
from tests.fakes import fake_model
from tests.helpers import make_config

# Instructions several tasks share, so the diversity filter drops some (explored examples included).
COMMON = [
    "Rewrite the following text in a formal tone",
    "Summarise the following text in one sentence",
    "Explain the following text to a child",
]


def overlapping(request: CompletionRequest) -> str:
    """The fake model, with shared instructions and repeated examples: drops of every kind."""
    reply = json.loads(fake_model(request))
    rng = random.Random(request.key("overlap"))
    if request.schema_name == "subtasks":
        for sub in reply["subtasks"]:
            for ex in sub["examples"]:
                if rng.random() < 0.5:
                    ex["instruction"] = rng.choice(COMMON)
        return json.dumps(reply)
    examples = reply["examples"]
    for ex in examples:
        if rng.random() < 0.3:
            ex["instruction"] = rng.choice(COMMON)
    if len(examples) > 1 and rng.random() < 0.5:
        examples[-1] = dict(examples[0])  # an exact duplicate inside one reply
    return json.dumps(reply)


class ShuffledArrival(ScriptedLLM):
    """Replies after a random delay: every run sees them arrive in another order."""

    def __init__(self, seed: int) -> None:
        super().__init__(overlapping)
        self._delays = random.Random(seed)

    async def complete(self, request: CompletionRequest) -> Completion:
        await asyncio.sleep(self._delays.random() * 0.01)
        return await super().complete(request)


def config():
    return make_config(
        explore={"max_depth": 2, "breadth": [3, 2], "new_per_call": 2, "examples_per_subtask": 2},
        generate={"examples_per_task": [6], "per_call": 3, "max_extra_calls": 2},
        llm={"max_concurrency": 8},
        sample={"size": 30},
    )


def arrival_order(run_dir: Path) -> list[str]:
    with sqlite3.connect(run_dir / "run.db") as conn:
        return [r[0] for r in conn.execute("SELECT key FROM llm_calls ORDER BY id")]


def exports(run_dir: Path) -> dict[str, bytes]:
    """The run's standard exports and an upstream export of the kept data, byte for byte."""
    store = RunStore.open(run_dir)
    try:
        export(store, "upstream", run_dir / "upstream", which="kept")
    finally:
        store.close()
    files = [run_dir / "tree.json", *sorted((run_dir / "data").iterdir()), *sorted((run_dir / "upstream").rglob("*"))]
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in files if p.is_file()}


def stats_json(run_dir: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["stats", "--run-dir", str(run_dir), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_two_runs_with_replies_in_another_order_write_byte_identical_exports(tmp_path):
    run_stages(config(), tmp_path / "a", backend=ShuffledArrival(seed=1))
    run_stages(config(), tmp_path / "b", backend=ShuffledArrival(seed=2))
    assert arrival_order(tmp_path / "a") != arrival_order(tmp_path / "b"), "the replies should arrive in another order"
    a, b = exports(tmp_path / "a"), exports(tmp_path / "b")
    assert set(a) == set(b) and {"data/kept.jsonl", "data/dropped.jsonl", "data/sample.json"} <= set(a)
    dropped = [json.loads(line) for line in a["data/dropped.jsonl"].decode().splitlines()]
    assert {r["drop_stage"] for r in dropped} >= {"duplicate", "filter"}, "the test should exercise both drops"
    for name in a:
        assert a[name] == b[name], name


def test_a_finished_run_resumes_to_no_call_and_the_same_statistics(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_stages(config(), run_dir, backend=ShuffledArrival(seed=1))
    before_stats, before_files = stats_json(run_dir, capsys), exports(run_dir)
    assert before_stats["examples"]["dropped_filter"] > 0 and before_stats["examples"]["dropped_duplicate"] > 0

    again = ShuffledArrival(seed=3)
    run_stages(config(), run_dir, backend=again)
    assert again.requests == []
    assert stats_json(run_dir, capsys) == before_stats
    assert exports(run_dir) == before_files

    run_stages(config(), tmp_path / "fresh", backend=ShuffledArrival(seed=4))
    fresh = stats_json(tmp_path / "fresh", capsys)
    for part in ("examples", "drop_reasons", "filter_collisions", "calls", "tasks_per_depth"):
        assert fresh[part] == before_stats[part], part
