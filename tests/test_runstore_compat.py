"""A run written by explore-instruct 0.1.0 opens with today's code: `stats`, every export, the review app and
`run --resume` give the same records, the resume sends no call, and the database is upgraded once, in
place, after a backup. A run written by a newer version is refused, naming both versions, with nothing written.

The 0.1.0 run is tests/fixtures/run-0.1.0 (made by tests/fixtures/make_run_0_1_0.py with 0.1.0's code).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.runstore import RUN_MIGRATIONS
from explore_instruct.runstore.migrate import backup_path, latest_version
from explore_instruct.web.review_data import RunReview
from tests.fakes import fake_model
from tests.test_reliability import _in_read_only_folder, _unshare_works

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"
LATEST = latest_version(RUN_MIGRATIONS)
FORMATS = ("alpaca", "jsonl", "messages", "sharegpt", "upstream")
WHICH = ("kept", "reviewed", "dropped", "all")


def version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def files(folder: Path) -> dict[str, str]:
    """Every file under `folder` by relative path, with the sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def data_files(run: Path) -> dict[str, str]:
    """`files(run)` less the lock file and SQLite's shared-memory index, with the WAL only when it holds data."""
    out = files(run)
    for name in ("run.lock", "run.db-shm"):
        out.pop(name, None)
    if (run / "run.db-wal").is_file() and (run / "run.db-wal").stat().st_size == 0:
        del out["run.db-wal"]
    return out


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    with gzip.open(run / "run.db.gz") as packed, open(run / "run.db", "wb") as raw:
        shutil.copyfileobj(packed, raw)
    (run / "run.db.gz").unlink()
    return run


def test_the_fixture_is_a_0_1_0_run(old_run: Path) -> None:
    assert version(old_run / "run.db") == 0
    tables = {r[0] for r in sqlite3.connect(old_run / "run.db").execute("SELECT name FROM sqlite_master")}
    assert {"nodes", "examples", "sample", "review", "ratings", "embeddings", "cost_estimate", "llm_calls"} <= tables


def test_stats_upgrades_a_0_1_0_run_once_after_a_backup_and_reports_what_0_1_0_did(
    old_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", "--run-dir", str(old_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((FIXTURE / "exports" / "stats.json").read_text())
    assert version(old_run / "run.db") == LATEST
    backup = backup_path(old_run / "run.db", 0)
    assert backup.is_file() and version(backup) == 0
    stamp = backup.stat().st_mtime_ns
    assert main(["stats", "--run-dir", str(old_run), "--json"]) == 0  # already upgraded: no second backup
    assert backup.stat().st_mtime_ns == stamp


def test_every_export_of_a_0_1_0_run_equals_what_0_1_0_wrote(old_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    for fmt in FORMATS:
        assert main(["export", "--run-dir", str(old_run), "--format", fmt, "--out", str(out / fmt)]) == 0
    for which in WHICH:
        target = out / f"{which}.jsonl"
        assert (
            main(["export", "--run-dir", str(old_run), "--format", "jsonl", "--which", which, "-o", str(target)]) == 0
        )
    was = FIXTURE / "exports"
    assert (out / "alpaca").read_bytes() == (was / "sample.alpaca.json").read_bytes()
    assert (out / "jsonl").read_bytes() == (was / "sample.jsonl").read_bytes()
    assert (out / "messages").read_bytes() == (was / "sample.messages.jsonl").read_bytes()
    assert (out / "sharegpt").read_bytes() == (was / "sample.sharegpt.jsonl").read_bytes()
    assert files(out / "upstream") == files(was / "sample.upstream")
    for which in WHICH:
        assert (out / f"{which}.jsonl").read_bytes() == (was / f"{which}.jsonl").read_bytes(), which


def test_the_review_app_shows_a_0_1_0_runs_decisions_and_counts(old_run: Path) -> None:
    stats = json.loads((FIXTURE / "exports" / "stats.json").read_text())
    reviewed = [json.loads(line) for line in (FIXTURE / "exports" / "reviewed.jsonl").read_text().splitlines()]
    review = RunReview(old_run, "tester")
    try:
        assert review.stats() == {"accept": 1, "reject": 1, "edit": 1}  # the accept that was undone is gone
        _, counts = review.tree()
        assert sum(c.kept for c in counts.values()) == stats["examples"]["kept"]
        assert sum(c.sampled for c in counts.values()) == stats["examples"]["sampled"]
        assert sum(sum(c.dropped.values()) for c in counts.values()) == sum(
            n for name, n in stats["examples"].items() if name.startswith("dropped_")
        )
        for record in reviewed:
            found = review.example(record["id"])
            assert found is not None
            shown = found[1]
            assert shown.decision is not None and shown.decision.reviewer == record["review"]["reviewer"]
            assert shown.shown == (record["instruction"], record["input"], record["output"])
            assert shown.rating is not None and shown.rating.score == record["rating"]["score"]
    finally:
        review.close()
    assert version(old_run / "run.db") == LATEST


def test_run_resume_of_a_0_1_0_run_sends_no_call_and_writes_the_same_records(
    old_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = ScriptedLLM(fake_model)  # the model id the 0.1.0 run's replies are logged under
    monkeypatch.setattr("explore_instruct.pipeline.build_backend", lambda config: backend)
    assert main(["run", str(old_run / "config.yaml"), "--run-dir", str(old_run), "--resume"]) == 0
    assert backend.requests == []
    assert backup_path(old_run / "run.db", 0).is_file() and version(old_run / "run.db") == LATEST
    for name in ("tree.json", "data/kept.jsonl", "data/dropped.jsonl", "data/sample.json"):
        assert (old_run / name).read_bytes() == (FIXTURE / name).read_bytes(), name


HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


def test_a_0_1_0_run_locked_by_a_writer_is_read_as_it_is(old_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = data_files(old_run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(old_run / "run.lock")], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        assert main(["stats", "--run-dir", str(old_run), "--json"]) == 0
    finally:
        holder.kill()
        holder.wait()
    assert json.loads(capsys.readouterr().out) == json.loads((FIXTURE / "exports" / "stats.json").read_text())
    assert data_files(old_run) == before  # not upgraded, no backup: the writer owns the file


@pytest.mark.parametrize("command", ["stats", "export", "resume", "review"])
def test_a_run_from_a_newer_version_is_refused_naming_both_versions_and_nothing_is_written(
    old_run: Path, command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = sqlite3.connect(old_run / "run.db")
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    before = data_files(old_run)
    backend = ScriptedLLM(fake_model)
    monkeypatch.setattr("explore_instruct.pipeline.build_backend", lambda config: backend)
    if command == "review":
        from explore_instruct.errors import UserError

        with pytest.raises(UserError) as caught:
            RunReview(old_run, "tester")
        message = str(caught.value)
    else:
        argv = {
            "stats": ["stats", "--run-dir", str(old_run)],
            "export": ["export", "--run-dir", str(old_run), "--format", "jsonl", "--which", "kept"],
            "resume": ["run", str(old_run / "config.yaml"), "--run-dir", str(old_run), "--resume"],
        }[command]
        assert main(argv) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, errors
        message = errors[0]
    assert f"schema version {LATEST + 1}" in message and f"up to {LATEST}" in message
    assert backend.requests == []
    assert data_files(old_run) == before


def test_a_0_1_0_run_without_the_tables_it_created_as_it_went_is_read_in_full(
    old_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0.1.0 created the review, rating, estimate, vector and batch tables only when first needed."""
    conn = sqlite3.connect(old_run / "run.db")
    for table in ("review_history", "review", "ratings", "cost_estimate", "embeddings", "structured_modes"):
        conn.execute(f"DROP TABLE {table}")
    conn.close()
    assert main(["stats", "--run-dir", str(old_run), "--json"]) == 0
    examples = json.loads(capsys.readouterr().out)["examples"]
    assert examples == json.loads((FIXTURE / "exports" / "stats.json").read_text())["examples"]
    assert main(["batch", "status", "--run-dir", str(old_run)]) == 0  # 0.1.0 made no batch tables here
    assert "no batches" in capsys.readouterr().err
    review = RunReview(old_run, "tester")
    try:
        assert review.stats() == {}
    finally:
        review.close()


@pytest.mark.skipif(os.geteuid() == 0 and not _unshare_works(), reason="no way to make a folder read-only for root")
def test_a_0_1_0_run_in_a_read_only_folder_is_read_as_it_is(old_run: Path) -> None:
    before = data_files(old_run)
    stats = _in_read_only_folder(old_run, "stats", "--run-dir", str(old_run), "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout) == json.loads((FIXTURE / "exports" / "stats.json").read_text())
    assert data_files(old_run) == before
