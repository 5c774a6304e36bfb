"""A batch-mode run SIGKILLed between submitting its batch and downloading the results, then resumed:
the batch is polled again, never submitted twice, and the data matches the online run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from explore_instruct.config import load_config
from explore_instruct.pipeline import run_stages
from tests.batch_api import FakeOpenAI
from tests.helpers import BASE, merge
from tests.test_batch import KEY_ENV, SECRET, data_of, llm

REPO = Path(__file__).resolve().parents[1]


def _submitted_row(db: Path) -> tuple[str, str] | None:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT status, batch_id FROM batches WHERE batch_id IS NOT NULL").fetchone()
    except sqlite3.OperationalError:  # no table yet, or locked for a moment
        return None


def killed_after_submit(tmp_path: Path, fake: FakeOpenAI, data: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Start `run` on `data` (default: the test config in batch mode) in a child process, and SIGKILL it
    once its first batch is submitted and saved. Returns the config file and the run directory."""
    config = tmp_path / "batch.yaml"
    config.write_text(yaml.safe_dump(data or merge(BASE, {"llm": llm(fake, provider="openai")})))
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), KEY_ENV: SECRET}
    proc = subprocess.Popen(
        [sys.executable, "-m", "explore_instruct", "run", str(config), "--run-dir", str(run_dir)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _submitted_row(run_dir / "run.db") is None and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.2)  # a few polls of the held batch
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert _submitted_row(run_dir / "run.db") == ("submitted", f"batch_{fake.submissions}")
    return config, run_dir


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with FakeOpenAI(hold=True) as server:
        yield server


def _online(tmp_path: Path, fake: FakeOpenAI) -> dict[str, Any]:
    cfg = load_config(tmp_path / "batch.yaml", {"llm.batch.enabled": False})
    ctx, _ = run_stages(cfg, tmp_path / "online")
    ctx.store.close()
    return data_of(tmp_path / "online")


def test_sigkill_after_submit_then_resume_polls_the_same_batch(tmp_path: Path, fake: FakeOpenAI) -> None:
    config, run_dir = killed_after_submit(tmp_path, fake)
    fake.release()
    ctx, _ = run_stages(load_config(config), run_dir, resume=True)
    ctx.store.close()
    ids = fake.submitted_custom_ids()
    assert fake.submissions == 1 and len(ids) == len(set(ids)) == 20
    assert data_of(run_dir) == _online(tmp_path, fake)


def test_killed_before_the_batch_id_was_saved_finds_the_batch_by_its_tag(tmp_path: Path, fake: FakeOpenAI) -> None:
    config, run_dir = killed_after_submit(tmp_path, fake)
    # As if the kill had landed after the batch was created but before its id was committed.
    with sqlite3.connect(run_dir / "run.db") as conn:
        conn.execute("UPDATE batches SET status = 'uploaded', batch_id = NULL")
    fake.release()
    ctx, _ = run_stages(load_config(config), run_dir, resume=True)
    ctx.store.close()
    assert fake.submissions == 1
    assert _submitted_row(run_dir / "run.db") == ("done", "batch_1")
    assert data_of(run_dir) == _online(tmp_path, fake)
