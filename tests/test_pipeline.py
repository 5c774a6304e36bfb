import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from explore_instruct import pipeline
from explore_instruct.cli import main
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.pipeline import run_stages
from explore_instruct.runstore import RunStore
from tests.fakes import fake_model
from tests.helpers import BASE, fake_backend, make_config, merge, run_fake

REPO = Path(__file__).resolve().parents[1]


def snapshot(run_dir: Path) -> dict:
    """Everything a run decided, by deterministic keys (row ids may differ between runs)."""
    store = RunStore.open(run_dir)
    keys = {e.id: e.key for e in store.examples()}
    nodes = {n.id: n.key for n in store.nodes()}
    return {
        "nodes": [(n.key, n.name, n.reason, n.pruned, nodes.get(n.pruned_by)) for n in store.nodes()],
        "examples": sorted(
            (e.key, nodes[e.node_id], e.instruction, e.input, e.output, e.status, e.drop_reason, keys.get(e.dup_of))
            for e in store.examples()
        ),
        "sample": [keys[i] for i in store.sample_ids()],
    }


def test_full_run_writes_exports(tmp_path):
    _ctx, _results, _backend = run_fake(tmp_path / "run")
    run_dir = tmp_path / "run"
    sample = json.loads((run_dir / "data" / "sample.json").read_text())
    assert len(sample) == 20 and set(sample[0]) == {"instruction", "input", "output"}
    tree = json.loads((run_dir / "tree.json").read_text())
    assert len(tree["children"]) == 3 and all(len(c["children"]) == 2 for c in tree["children"])
    kept = [json.loads(line) for line in (run_dir / "data" / "kept.jsonl").read_text().splitlines()]
    assert {"task", "task_path", "depth"} <= set(kept[0])


def test_same_replies_give_the_same_run(tmp_path):
    run_fake(tmp_path / "a")
    run_fake(tmp_path / "b", backend=ScriptedLLM(fake_model, latency=0.001))
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_rerun_with_resume_pays_nothing(tmp_path):
    run_fake(tmp_path / "run")
    before = snapshot(tmp_path / "run")
    ctx, _, backend = run_fake(tmp_path / "run")
    assert backend.requests == []
    assert snapshot(tmp_path / "run") == before
    assert sum(s.cache_hits for s in ctx.client.stats.stages.values()) > 0


def test_prune_marks_near_duplicate_task_names(tmp_path):
    names = iter(
        [
            "Paraphrase sentences",
            "Paraphrase short sentences",
            "Simplify legal language",
            "Translate idioms",
            "Fix grammar errors",
            "Shorten emails",
        ]
    )

    def named(request):
        reply = json.loads(fake_model(request))
        for s in reply.get("subtasks", []):
            s["name"] = next(names)
        return json.dumps(reply)

    cfg = make_config(explore={"max_depth": 1, "breadth": [4], "new_per_call": 4}, sample={"size": 100})
    ctx, _results, _ = run_fake(tmp_path / "run", cfg, backend=ScriptedLLM(named))
    pruned = [n for n in ctx.store.nodes() if n.pruned]
    assert [n.name for n in pruned] == ["Paraphrase short sentences"]
    assert ctx.store.nodes()[pruned[0].pruned_by - 1].name == "Paraphrase sentences"
    assert pruned[0].pruned_score > 0.7
    # pruned tasks get no enrichment calls and no place in the sample
    sampled = {r["task"] for r in ctx.store.dataset("sample")}
    assert "Paraphrase short sentences" not in sampled


def test_filter_drops_near_duplicates_and_explains(tmp_path):
    def similar(request):
        reply = json.loads(fake_model(request))
        for i, ex in enumerate(reply.get("examples", [])):
            ex["instruction"] = f"Please rewrite the following short text in a formal tone version {i % 2}"
        return json.dumps(reply)

    cfg = make_config(
        explore={"max_depth": 0}, generate={"examples_per_task": [6], "per_call": 3, "max_extra_calls": 0}
    )
    ctx, results, _ = run_fake(tmp_path / "run", cfg, backend=ScriptedLLM(similar))
    kept, total = results.filter.kept, results.filter.judged
    assert kept < total
    dropped = [r for r in ctx.store.dataset("dropped") if r["drop_stage"] == "filter"]
    assert dropped and all(r["score"] > 0.7 and r["dup_of"] for r in dropped)


def test_sample_is_even_across_tasks_and_seeded(tmp_path):
    cfg = make_config(generate={"examples_per_task": [10, 8, 4]}, sample={"size": 30})
    ctx, _, _ = run_fake(tmp_path / "run", cfg)
    tasks = [r["task"] for r in ctx.store.dataset("sample")]
    assert len(tasks) == 30
    counts = sorted(tasks.count(t) for t in set(tasks))
    assert counts[-1] - counts[0] <= 1  # even share: 30 over 9 subtasks
    first = ctx.store.sample_ids()
    assert main(["sample", "--run-dir", str(tmp_path / "run")]) == 0
    assert RunStore.open(tmp_path / "run").sample_ids() == first
    assert main(["sample", "--run-dir", str(tmp_path / "run"), "--set", "sample.seed=99"]) == 0
    assert RunStore.open(tmp_path / "run").sample_ids() != first


def test_sample_tops_up_from_root_and_respects_max_depth(tmp_path):
    cfg = make_config(generate={"examples_per_task": [20, 2, 2]}, sample={"size": 14, "max_depth": 1})
    ctx, _, _ = run_fake(tmp_path / "run", cfg)
    depths = [r["depth"] for r in ctx.store.dataset("sample")]
    assert 2 not in depths
    live = [n for n in ctx.store.nodes() if n.depth == 1 and not n.pruned]
    assert depths.count(1) == len(live) * 4  # each depth-1 task: 2 generated + 2 exploration examples
    assert depths.count(0) == 14 - len(live) * 4


def test_stage_commands_and_stats(tmp_path, capsys):
    run_fake(tmp_path / "run")
    run_dir = str(tmp_path / "run")
    assert main(["filter", "--run-dir", run_dir, "--set", "filter.threshold=0.3"]) == 0
    assert main(["stats", "--run-dir", run_dir, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tasks_per_depth"] == {"0": 1, "1": 3, "2": 6}
    assert summary["examples"]["dropped_filter"] > 0
    # stats explains drops: each collision names the kept instruction and the score
    collisions = summary["filter_collisions"]
    assert collisions and all(c["score"] > 0.3 and c["kept"] and c["dropped"] != c["kept"] for c in collisions)
    assert summary["calls"]["explore"]["calls"] > 0
    assert main(["stats", "--run-dir", str(tmp_path / "nothing")]) == 2


def test_existing_run_needs_resume(tmp_path, capsys):
    run_fake(tmp_path / "run")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("root: {name: X}\n")
    assert main(["run", str(cfg), "--run-dir", str(tmp_path / "run")]) == 2
    assert "--resume" in capsys.readouterr().err


KILLED_RUN = """
import sys
sys.path.insert(0, {repo!r})
from explore_instruct.pipeline import run_stages
from explore_instruct.llm.scripted import ScriptedLLM
from tests.fakes import fake_model
from tests.helpers import make_config
# One subtask per round: 3 sequential rounds at the root, then 2 per child (9 exploration calls).
run_stages(make_config(explore={{"new_per_call": 1}}), sys.argv[1], backend=ScriptedLLM(fake_model, latency=0.3))
"""


def test_killed_run_resumes_to_the_same_result(tmp_path):
    run_dir = tmp_path / "killed"
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN.format(repo=str(REPO)))
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir)], cwd=REPO)
    db = run_dir / "run.db"
    deadline = time.monotonic() + 60
    done = 0
    try:
        while time.monotonic() < deadline:
            if db.exists():
                try:
                    with sqlite3.connect(db) as conn:
                        done = conn.execute("SELECT COUNT(*) FROM llm_calls WHERE stage='explore'").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
            if done >= 3:
                break
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert 3 <= done < 9, "the kill should land mid-exploration"

    with sqlite3.connect(db) as conn:
        stored = {r[0] for r in conn.execute("SELECT key FROM llm_calls WHERE status='ok'")}
    backend = ScriptedLLM(fake_model)
    config = make_config(explore={"new_per_call": 1})
    run_stages(config, run_dir, backend=backend)
    resent = {r.key(backend.model_id) for r in backend.requests} & stored
    assert resent == set(), "a request whose reply was stored was sent again"
    assert len(backend.requests) > 0

    _, _, clean = run_fake(tmp_path / "clean", config)
    assert sum(r.schema_name == "subtasks" for r in clean.requests) == 9
    assert snapshot(run_dir) == snapshot(tmp_path / "clean")


def test_filter_drops_copies_of_the_seeds(tmp_path):
    def copies_a_seed(request):
        reply = json.loads(fake_model(request))
        if request.schema_name == "examples":
            reply["examples"][0]["instruction"] = "Fix the grammar of the following text."
        return json.dumps(reply)

    cfg = make_config(
        explore={"max_depth": 0}, generate={"examples_per_task": [2], "per_call": 2, "max_extra_calls": 0}
    )
    ctx, _, _ = run_fake(tmp_path / "run", cfg, backend=ScriptedLLM(copies_a_seed))
    [dropped] = [r for r in ctx.store.dataset("dropped") if r["drop_stage"] == "filter"]
    seed = next(e for e in ctx.store.examples(origins=["seed"]) if e.id == dropped["dup_of"])
    assert seed.instruction == dropped["instruction"] and dropped["score"] == 1.0
    assert all(e.status == "ok" for e in ctx.store.examples(origins=["seed"]))


def test_resume_with_a_changed_config_warns(tmp_path, caplog):
    run_fake(tmp_path / "run")
    with caplog.at_level("WARNING"):
        run_fake(tmp_path / "run", make_config(sample={"size": 5}))
    assert "config differs" in caplog.text
    assert "size: 5" in (tmp_path / "run" / "config.yaml").read_text()


def test_a_short_sample_is_warned_about_with_the_reason_and_what_to_change(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(pipeline, "build_backend", lambda config: fake_backend())
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(merge(BASE, {"sample": {"size": 500}})))
    run_dir = tmp_path / "run"
    assert main(["run", str(config_file), "--run-dir", str(run_dir)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    store = RunStore.open(run_dir)
    drawn = len(store.sample_ids())
    store.close()
    assert 0 < drawn < 500
    assert f"warning: sampled {drawn} of the 500 asked for (sample.size)" in err
    assert f"the pool held {drawn} examples" in err and "generate.examples_per_task" in err

    # The sample command says it too; a sample of the size asked for says nothing.
    assert main(["sample", "--run-dir", str(run_dir)]) == 0
    assert "warning: sampled" in capsys.readouterr().err
    assert main(["sample", "--run-dir", str(run_dir), "--set", f"sample.size={drawn}"]) == 0
    assert "warning: sampled" not in capsys.readouterr().err
