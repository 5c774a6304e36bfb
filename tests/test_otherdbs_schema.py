"""experiment.db and study.db carry a schema version: files written by 0.1.0 open, keep their rows and
reach the latest version; a file from a newer version is refused naming both versions.

The fixtures under tests/fixtures/otherdbs/ were written by explore-instruct 0.1.0 (commit f184e9c, user_version
0): `study.db` by `create_study` (2 raters, 3 items each, seed 7) and three votes; `explore_instruct.db` by
`ExperimentDB` with two artefacts, three steps and their events.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.experiment.runner import DB_FILE, ExperimentDB
from explore_instruct.runstore import experiment_db, study_db
from explore_instruct.runstore.migrate import SchemaTooNew, backup_path, latest_version
from explore_instruct.web.study import STUDY_DB, Rater, Study, create_study
from explore_instruct.web.study_report import build_report
from tests.web_support import study_inputs

FIXTURES = Path(__file__).parent / "fixtures" / "otherdbs"
TOO_NEW = 99


def old_study(tmp_path: Path) -> Path:
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(FIXTURES / STUDY_DB, folder / STUDY_DB)
    return folder


def old_experiment(tmp_path: Path) -> Path:
    path = tmp_path / DB_FILE
    shutil.copy(FIXTURES / DB_FILE, path)
    return path


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def set_user_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.close()


def schema(path: Path) -> list[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    try:
        return sorted(conn.execute("SELECT type, name, COALESCE(sql, '') FROM sqlite_master"))
    finally:
        conn.close()


# --- study.db -------------------------------------------------------------------------------------


def test_a_0_1_0_study_opens_with_its_votes_and_reaches_the_latest_version(tmp_path: Path) -> None:
    folder = old_study(tmp_path)
    assert user_version(folder / STUDY_DB) == 0
    study = Study(folder)
    try:
        assert study.meta["seed"] == "7" and study.meta["candidate_name"] == "candidate-model-omega"
        assert sorted(r.name for r in study.rater_digests().values()) == ["rater-1", "rater-2"]
        first = study.assignments(Rater(1, "rater-1"))
        assert [(a.position, a.question_id, a.choice, a.comment) for a in first] == [
            (1, "q1", "left", "clearer"),
            (2, "q6", "tie", ""),
            (3, "q5", None, ""),
        ]
        report = build_report(study, resamples=10)
        assert (report["items"], report["votes"], report["items_voted"]) == (6, 3, 3)
        assert [(v["question_id"], v["rater"], v["outcome"]) for v in report["votes_detail"]] == [
            ("q1", "rater-1", "lose"),  # the candidate was on the right, the rater chose left
            ("q6", "rater-1", "tie"),
            ("q4", "rater-2", "both_bad"),
        ]
        assert study.vote(Rater(1, "rater-1"), 3, "right")  # and it takes new votes
    finally:
        study.close()
    assert user_version(folder / STUDY_DB) == latest_version(study_db.MIGRATIONS)
    assert user_version(backup_path(folder / STUDY_DB, 0)) == 0


def test_an_upgraded_study_has_the_layout_of_a_new_one(tmp_path: Path) -> None:
    folder = old_study(tmp_path)
    Study(folder).close()
    q, a, b = study_inputs(tmp_path / "in")
    made = create_study(q, a, b, tmp_path / "new", raters=1, seed=0).path
    assert user_version(made / STUDY_DB) == latest_version(study_db.MIGRATIONS)
    assert schema(folder / STUDY_DB) == schema(made / STUDY_DB)


def test_a_study_from_a_newer_version_is_refused_naming_both_versions(tmp_path: Path, capsys) -> None:
    folder = old_study(tmp_path)
    set_user_version(folder / STUDY_DB, TOO_NEW)
    known = latest_version(study_db.MIGRATIONS)
    with pytest.raises(SchemaTooNew, match=rf"schema version {TOO_NEW}\b.*up to {known}\b"):
        Study(folder)
    assert main(["human-eval", "report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"schema version {TOO_NEW}" in err and f"up to {known}" in err
    assert user_version(folder / STUDY_DB) == TOO_NEW and not backup_path(folder / STUDY_DB, TOO_NEW).exists()


# --- experiment.db --------------------------------------------------------------------------------


def test_a_0_1_0_experiment_db_opens_with_its_rows_and_reaches_the_latest_version(tmp_path: Path) -> None:
    path = old_experiment(tmp_path)
    assert user_version(path) == 0
    db = ExperimentDB(path)
    try:
        data = db.artefact("k-data")
        assert data is not None and (data.kind, data.digest, data.info) == ("data", "d1", {"examples": 12, "note": "é"})
        assert not data.weights_deleted
        train = db.artefact("k-train")
        assert train is not None and train.weights_deleted and train.info == {"loss": 1.5}
        steps = db.step_rows()
        assert {s: (r.key, r.status, r.reason) for s, r in steps.items()} == {
            "data:explore": ("k-data", "done", None),
            "train:explore": ("k-train", "done", None),
            "answer:explore:0": ("k-ans", "failed", "RuntimeError: boom"),
        }
        assert [(e.id, e.step_id) for e in db.events("ran")] == [(1, "data:explore"), (2, "train:explore")]
        db.set_step("answer:explore:0", "k-ans", "done", None, "ran")  # and it takes new rows
        assert [e.event for e in db.events()] == ["ran", "ran", "failed", "ran"]
    finally:
        db.close()
    assert user_version(path) == latest_version(experiment_db.MIGRATIONS)
    assert user_version(backup_path(path, 0)) == 0


def test_an_upgraded_experiment_db_has_the_layout_of_a_new_one(tmp_path: Path) -> None:
    path = old_experiment(tmp_path)
    ExperimentDB(path).close()
    ExperimentDB(tmp_path / "new.db").close()
    assert user_version(tmp_path / "new.db") == latest_version(experiment_db.MIGRATIONS)
    assert schema(path) == schema(tmp_path / "new.db")


def test_a_dry_run_reads_a_0_1_0_experiment_db_without_writing_it(tmp_path: Path) -> None:
    path = old_experiment(tmp_path)
    before = path.read_bytes()
    db = ExperimentDB(path, readonly=True)
    try:
        assert db.step_rows()["answer:explore:0"].status == "failed"
    finally:
        db.close()
    assert path.read_bytes() == before and not backup_path(path, 0).exists()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")  # a folder where a run was killed before its first step
    db = ExperimentDB(empty, readonly=True)
    try:
        assert db.step_rows() == {} and db.artefact("k-data") is None and db.events() == []
    finally:
        db.close()
    assert empty.read_bytes() == b""


@pytest.mark.parametrize("readonly", [False, True])
def test_an_experiment_db_from_a_newer_version_is_refused_naming_both_versions(tmp_path: Path, readonly: bool) -> None:
    path = old_experiment(tmp_path)
    set_user_version(path, TOO_NEW)
    known = latest_version(experiment_db.MIGRATIONS)
    with pytest.raises(SchemaTooNew, match=rf"schema version {TOO_NEW}\b.*up to {known}\b"):
        ExperimentDB(path, readonly=readonly)
    assert user_version(path) == TOO_NEW
