"""Faults a run must survive: kills, two processes on one run, transport faults, a changed model,
stale exports, a read-only run folder."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.errors import UserError
from explore_instruct.export import tree_json
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.pipeline import open_run, run_stages
from explore_instruct.runstore import RunStore
from explore_instruct.summary import run_summary
from tests.fakes import fake_model
from tests.faults import FlakyLLM
from tests.helpers import make_config, run_fake
from tests.test_pipeline import snapshot

REPO = Path(__file__).resolve().parents[1]


def python(script: str, *args: str) -> subprocess.Popen[str]:
    """Run `script` in a fresh interpreter with this checkout's sources first on the path."""
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def assert_exports_match_database(run_dir: Path) -> None:
    store = RunStore.open(run_dir)
    assert json.loads((run_dir / "tree.json").read_text()) == tree_json(store)
    for name, which in (("kept", "kept"), ("dropped", "dropped")):
        lines = (run_dir / "data" / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == store.dataset(which), name
    sample = json.loads((run_dir / "data" / "sample.json").read_text())
    assert sample == [{k: r[k] for k in ("instruction", "input", "output")} for r in store.dataset("sample")]
    assert len(sample) == run_summary(store)["examples"]["sampled"]
    store.close()


# --- one run directory, one process ----------------------------------------------------------------

HOLD_RUN = """
import sys, time
from explore_instruct.runstore import RunStore
RunStore.open(sys.argv[1], write=True)
print("holding", flush=True)
time.sleep(120)
"""


def test_a_second_process_on_a_run_dir_exits_2_naming_the_holder(tmp_path, capsys):
    run_fake(tmp_path / "run")[0].store.close()
    holder = python(HOLD_RUN, str(tmp_path / "run"))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        rc = subprocess.run(
            [sys.executable, "-m", "explore_instruct", "sample", "--run-dir", str(tmp_path / "run")],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
            capture_output=True,
            text=True,
        )
        assert rc.returncode == 2
        assert f"run dir {tmp_path / 'run'} is in use by pid {holder.pid}" in rc.stderr
        assert "Traceback" not in rc.stderr
        # reading needs no lock: stats works while the run is held
        assert main(["stats", "--run-dir", str(tmp_path / "run"), "--json"]) == 0
        capsys.readouterr()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the kernel released the killed holder's lock: no stale lock
    holder_gone = python(
        "import sys; from explore_instruct.runstore import RunStore; RunStore.open(sys.argv[1], write=True)",
        str(tmp_path / "run"),
    )
    assert holder_gone.wait(timeout=60) == 0, holder_gone.stderr.read() if holder_gone.stderr else ""


# --- transport faults and kills ---------------------------------------------------------------------

FLAKY_RUN = """
import sys
from explore_instruct.llm.client import RetryPolicy
from explore_instruct.pipeline import run_stages
from tests.faults import FlakyLLM
from tests.helpers import make_config
RetryPolicy.delay = lambda self, attempt, retry_after: 0.0
config = make_config(explore={"new_per_call": 1}, llm={"retries": 4, "max_concurrency": 4})
run_stages(config, sys.argv[1], backend=FlakyLLM(every=3, latency=0.2))
"""


def test_a_killed_run_under_transport_faults_resumes_to_the_uninterrupted_data(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "flaky"
    proc = python(FLAKY_RUN, str(run_dir))
    db = run_dir / "run.db"

    def explored() -> int:
        if not db.exists():
            return 0
        try:
            with sqlite3.connect(db) as conn:
                return conn.execute("SELECT COUNT(*) FROM llm_calls WHERE stage = 'explore'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    try:
        assert wait_for(lambda: explored() >= 2)
    finally:
        proc.kill()
        proc.wait()
    assert explored() < 9, "the kill should land mid-exploration"

    monkeypatch.setattr("explore_instruct.llm.client.RetryPolicy.delay", lambda self, attempt, retry_after: 0.0)
    config = make_config(explore={"new_per_call": 1}, llm={"retries": 4, "max_concurrency": 4})
    flaky = FlakyLLM(every=3)
    ctx, _ = run_stages(config, run_dir, backend=flaky)
    assert flaky.faults, "the resumed run met transport faults too"
    run_fake(tmp_path / "clean", config)
    assert snapshot(run_dir) == snapshot(tmp_path / "clean")
    # every retry and its reason is in the call log, the summary and stats --json
    calls = run_summary(ctx.store)["calls"]
    reasons = {r: sum(c["retry_reasons"].get(r, 0) for c in calls.values()) for r in ("429", "5xx", "timeout")}
    assert all(n > 0 for n in reasons.values())
    assert sum(c["attempts"] for c in calls.values()) > sum(c["calls"] for c in calls.values())
    session = run_summary(ctx.store, ctx.client.stats)["this_session"]
    assert sum(sum(s["retry_reasons"].values()) for s in session.values()) == len(flaky.faults)
    capsys.readouterr()
    assert main(["stats", "--run-dir", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["calls"] == calls
    assert main(["stats", "--run-dir", str(run_dir)]) == 0
    table = "".join(capsys.readouterr().out.replace("│", " ").split())  # cells wrap: compare without spaces
    assert "failedattempts:429" in table


FILTER_FILE = """
import sys
from explore_instruct.cli import main
main(["filter-file", sys.argv[1], "--out", sys.argv[2], "--workers", "2"])
"""


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the workers")
def test_filter_workers_exit_after_the_parent_is_killed(tmp_path):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(400)]
    records = [{"instruction": " ".join(rng.choices(words, k=12))} for _ in range(12_000)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    proc = python(FILTER_FILE, str(source), str(tmp_path / "out.jsonl"))
    workers: set[int] = set()

    def forked() -> bool:
        workers.update(_children(proc.pid))
        return len(workers) >= 2

    try:
        assert wait_for(forked), "the filter never forked its workers"
    finally:
        proc.kill()
        proc.wait()
    try:
        assert wait_for(lambda: not any(_alive(w) for w in workers), seconds=5), "workers outlived their parent"
    finally:
        for w in workers:  # a failing run must not leave them behind either
            if _alive(w):
                os.kill(w, signal.SIGKILL)


# --- a changed model -----------------------------------------------------------------------------


def test_resume_with_another_model_refuses_unless_allowed(tmp_path):
    run_fake(tmp_path / "run")
    config_before = (tmp_path / "run" / "config.yaml").read_text()
    other = ScriptedLLM(fake_model, model_id="openai:other-model")
    config = make_config(sample={"size": 5})
    with pytest.raises(UserError, match="replies came from scripted, this run would use openai:other-model"):
        run_stages(config, tmp_path / "run", backend=other)
    assert other.requests == []
    assert (tmp_path / "run" / "config.yaml").read_text() == config_before  # nothing half-written
    run_stages(config, tmp_path / "run", backend=other, allow_model_change=True)
    assert other.requests


# --- stale exports -------------------------------------------------------------------------------


def test_refiltering_redraws_the_sample(tmp_path, capsys):
    run_fake(tmp_path / "run")
    run_dir = str(tmp_path / "run")
    assert main(["filter", "--run-dir", run_dir, "--set", "filter.threshold=0.2"]) == 0
    store = RunStore.open(run_dir)
    kept = {r["id"] for r in store.dataset("kept")}
    assert store.sample_ids() and set(store.sample_ids()) <= kept
    assert_exports_match_database(tmp_path / "run")


KILLED_IN_EXPORTS = """
import os, signal, sys
import explore_instruct.export as export
from explore_instruct.pipeline import stored_config, run_stages
real = export.write_records
def write_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)  # after kept.jsonl, before dropped.jsonl and sample.json
export.write_records = write_then_die
run_stages(stored_config(sys.argv[1], {"filter.threshold": 0.2}), sys.argv[1], ("filter",))
"""


def test_a_kill_during_exports_leaves_whole_files_and_the_next_open_rewrites_them(tmp_path):
    run_fake(tmp_path / "run")[0].store.close()
    proc = python(KILLED_IN_EXPORTS, str(tmp_path / "run"))
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""
    data = tmp_path / "run" / "data"
    for path in (data / "kept.jsonl", data / "dropped.jsonl"):
        [json.loads(line) for line in path.read_text().splitlines()]  # whole files, old or new
    json.loads((data / "sample.json").read_text())
    assert not list(data.glob("*.tmp*")) and not list(data.glob(".*"))
    # opening the run for writing brings every export in line with the database
    open_run(make_config(), tmp_path / "run", resume=True).close()
    assert_exports_match_database(tmp_path / "run")


# --- read-only ---------------------------------------------------------------------------------------


def _unshare_works() -> bool:
    try:
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def _in_read_only_folder(run_dir: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with `run_dir` read-only: a read-only bind mount for root (whom chmod does not stop)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cli = [sys.executable, "-m", "explore_instruct", *argv]
    if os.geteuid() == 0:
        script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", script, str(run_dir), *cli], env=env, capture_output=True, text=True
        )
    paths = [run_dir, *run_dir.rglob("*")]
    for p in paths:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        return subprocess.run(cli, env=env, capture_output=True, text=True)
    finally:
        for p in paths:
            p.chmod(p.stat().st_mode | 0o200)


@pytest.mark.skipif(os.geteuid() == 0 and not _unshare_works(), reason="no way to make a folder read-only for root")
def test_a_read_only_run_folder_reads_and_refuses_writes_in_one_line(tmp_path):
    ctx, _, _ = run_fake(tmp_path / "run")
    ctx.store.close()  # the last connection folds the WAL in and removes its files, as a finished run does
    stats = _in_read_only_folder(tmp_path / "run", "stats", "--run-dir", str(tmp_path / "run"), "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["examples"]["sampled"] == 20
    sample = _in_read_only_folder(tmp_path / "run", "sample", "--run-dir", str(tmp_path / "run"))
    assert sample.returncode == 2
    assert "is not writable" in sample.stderr and len(sample.stderr.strip().splitlines()) == 1


# --- identical requests in flight --------------------------------------------------------------------


async def test_judging_two_equal_answers_sends_one_request_per_order(tmp_path):
    from explore_instruct.evaluate.judge import JudgeSettings, judge_pairs
    from explore_instruct.evaluate.questions import Answer, Question
    from explore_instruct.llm.client import LLMClient
    from explore_instruct.runstore import CallLog

    # Equal answers make both orders the same request: sent once, both orders get its verdict.
    backend = ScriptedLLM(lambda r: "Both fine.\nAssistant 1 = Assistant 2", model_id="judge", latency=0.02)
    client = LLMClient(backend, CallLog.open(tmp_path / "judge.db"))
    question = Question("q1", "Name a colour.", "brainstorming")
    [pair] = await judge_pairs(
        client, [question], {"q1": Answer("q1", "red")}, {"q1": Answer("q1", "red")}, JudgeSettings()
    )
    assert len(backend.requests) == 1
    assert pair.baseline_first.verdict == pair.candidate_first.verdict == 0
