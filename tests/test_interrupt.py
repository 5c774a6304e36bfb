"""Ctrl-C during `run`: one line, exit code 130, and exports that match the database (issue 13, item 1)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

from explore_instruct.export import tree_json
from explore_instruct.runstore import RunStore
from tests.helpers import BASE, merge

REPO = Path(__file__).resolve().parents[1]

# The real CLI entry point, with the backend the config names swapped for the slow scripted fake.
CLI_WITH_SLOW_FAKE = """
import sys
sys.path[:0] = [{src!r}, {repo!r}]
from explore_instruct import pipeline
from explore_instruct.cli import main
from explore_instruct.llm.scripted import ScriptedLLM
from tests.fakes import fake_model
pipeline.build_backend = lambda config: ScriptedLLM(fake_model, latency=0.3)
sys.exit(main(sys.argv[1:]))
"""


def _explore_calls(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM llm_calls WHERE stage='explore'").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return 0


def test_ctrl_c_during_run_exits_130_with_one_line_and_consistent_exports(tmp_path: Path) -> None:
    script = tmp_path / "cli.py"
    script.write_text(CLI_WITH_SLOW_FAKE.format(src=str(REPO / "src"), repo=str(REPO)))
    config = tmp_path / "c.yaml"
    # One subtask per round: nine sequential exploration calls of 0.3 s, so the signal lands mid-run.
    config.write_text(yaml.safe_dump(merge(BASE, {"explore": {"new_per_call": 1}})))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(script), "run", str(config), "--run-dir", str(run_dir)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _explore_calls(run_dir / "run.db") < 2 and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before the signal could land"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == "interrupted: resume with --resume", err
    assert "Traceback" not in err

    store = RunStore.open(run_dir)
    try:
        assert 2 <= _explore_calls(run_dir / "run.db") < 9, "the signal should land mid-exploration"
        assert json.loads((run_dir / "tree.json").read_text()) == tree_json(store)
        kept = [json.loads(line) for line in (run_dir / "data" / "kept.jsonl").read_text().splitlines()]
        assert kept == store.dataset("kept")
    finally:
        store.close()
