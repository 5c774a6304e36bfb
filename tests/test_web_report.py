"""`human-eval report`: outcomes from the candidate's side, majorities, agreement, the judge's agreement."""

from __future__ import annotations

import json
from pathlib import Path

import krippendorff
import numpy as np
import pytest

from explore_instruct.cli import main
from explore_instruct.web.study import Rater, Study, create_study
from explore_instruct.web.study_report import build_report, majority, markdown
from tests.web_support import study_inputs

CHOICE = {"tie": "tie", "both_bad": "both_bad"}


def new_study(tmp_path: Path, raters: int = 3, **kw) -> Study:
    q, a, b = study_inputs(tmp_path / "in")
    create_study(q, a, b, tmp_path / "study", raters=raters, seed=3, **kw)
    return Study(tmp_path / "study")


def vote(study: Study, rater_id: int, question_id: str, outcome: str) -> None:
    """Vote as rater `rater_id` so that the candidate gets `outcome`, whichever side it is shown on."""
    rater = Rater(rater_id, f"rater-{rater_id}")
    item = next(a for a in study.assignments(rater) if a.question_id == question_id)
    candidate_side = next(a.candidate_side for a in study.db.assignments(rater_id) if a.item_id == item.item_id)
    other = "right" if candidate_side == "left" else "left"
    choice = {"win": candidate_side, "lose": other}.get(outcome, outcome)
    assert study.vote(rater, item.position, choice)


def vote_all(study: Study, table: dict[str, list[str]]) -> None:
    for qid, outcomes in table.items():
        for rater_id, outcome in enumerate(outcomes, start=1):
            if outcome:
                vote(study, rater_id, qid, outcome)


def test_sides_do_not_matter_only_the_model_does(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    # every rater calls the candidate better on q1-q4, worse on q5, a tie on q6, on whatever side it sat
    vote_all(study, {f"q{i}": ["win"] * 3 for i in range(1, 5)} | {"q5": ["lose"] * 3, "q6": ["tie"] * 3})
    report = build_report(study, resamples=200)
    for t in report["per_rater"]:
        assert (t["win"], t["tie"], t["lose"], t["both_bad"]) == (4, 1, 1, 0)
        assert t["beat_rate"] == pytest.approx(0.8)
    overall = report["majority"][-1]
    assert overall["name"] == "overall" and (overall["win"], overall["tie"], overall["lose"]) == (4, 1, 1)
    assert report["agreement"]["fleiss_kappa"]["value"] == pytest.approx(1.0)
    assert report["agreement"]["krippendorff_alpha"]["value"] == pytest.approx(1.0)
    assert report["baseline"] == "baseline-model-alpha" and report["candidate"] == "candidate-model-omega"


def test_majority_per_class_and_split_votes_count_as_ties(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    vote_all(
        study,
        {
            "q1": ["win", "win", "lose"],  # rewriting: win
            "q3": ["win", "lose", "tie"],  # rewriting: split -> tie
            "q5": ["both_bad", "both_bad", "win"],  # rewriting: both bad
            "q2": ["lose", "lose", "win"],  # brainstorming: lose
            "q4": ["win", "win", "win"],  # brainstorming: win
        },
    )
    report = build_report(study, resamples=200)
    by = {t["name"]: t for t in report["majority"]}
    assert (by["rewriting"]["win"], by["rewriting"]["tie"], by["rewriting"]["lose"], by["rewriting"]["both_bad"]) == (
        1,
        1,
        0,
        1,
    )
    assert (by["brainstorming"]["win"], by["brainstorming"]["lose"]) == (1, 1)
    assert by["overall"]["beat_rate"] == pytest.approx(2 / 3)
    assert report["items_voted"] == 5 and report["votes"] == 15
    low, high = by["overall"]["ci_low"], by["overall"]["ci_high"]
    assert 0 <= low <= by["overall"]["beat_rate"] <= high <= 1
    assert majority(["win", "lose"]) == "tie" and majority(["lose", "lose", "tie"]) == "lose"
    assert {m["question_id"]: m["majority"] for m in report["item_majority"]}["q3"] == "tie"


def test_agreement_matches_the_libraries_on_the_model_side_matrix(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    table = {
        "q1": ["win", "win", "lose"],
        "q2": ["lose", "lose", "lose"],
        "q3": ["tie", "win", "tie"],
        "q4": ["win", "win", "win"],
        "q5": ["both_bad", "both_bad", "tie"],
        "q6": ["win", "lose", "win"],
    }
    vote_all(study, table)
    report = build_report(study, resamples=200)
    codes = {"win": 0, "tie": 1, "lose": 2, "both_bad": 3}
    data = np.array([[codes[table[f"q{i}"][r]] for i in range(1, 7)] for r in range(3)], dtype=float)
    expected_alpha = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    expected_kappa = fleiss_kappa(aggregate_raters(data.T.astype(int), n_cat=4)[0])
    assert report["agreement"]["krippendorff_alpha"]["value"] == pytest.approx(expected_alpha)
    assert report["agreement"]["fleiss_kappa"]["value"] == pytest.approx(expected_kappa)
    assert 0 < expected_alpha < 1


def test_overlapping_subsets_use_every_pairable_vote(tmp_path: Path) -> None:
    study = new_study(tmp_path, raters=4, per_rater=3, min_votes=2)
    for r in range(1, 5):
        for a in study.assignments(Rater(r, f"rater-{r}")):
            vote(study, r, a.question_id, "win")
    report = build_report(study, resamples=200)
    assert report["votes"] == 12 and report["items_voted"] == 6
    assert report["agreement"]["fleiss_kappa"]["raters_per_item"] == 2
    assert report["agreement"]["krippendorff_alpha"]["items"] == 6


def test_judge_agreement_with_the_human_majority(tmp_path: Path) -> None:
    study = new_study(tmp_path)
    vote_all(study, {"q1": ["win"] * 3, "q2": ["lose"] * 3, "q3": ["tie"] * 3, "q4": ["both_bad"] * 3})
    judge = tmp_path / "review.json"
    pairs = [
        {"question_id": "q1", "outcome": "win"},  # agrees
        {"question_id": "q2", "outcome": "win"},  # disagrees
        {"question_id": "q3", "outcome": "tie"},  # agrees
        {"question_id": "q4", "outcome": "tie"},  # both bad compares as a tie: agrees
        {"question_id": "q5", "outcome": "win"},  # no human votes: left out
        {"question_id": "q6", "outcome": "failed"},  # not judged: left out
    ]
    judge.write_text(json.dumps({"baseline": "a", "candidate": "b", "pairs": pairs}))
    j = build_report(study, judge_path=judge, resamples=200)["judge"]
    assert j["items"] == 4 and j["agreement"] == pytest.approx(0.75)
    assert j["items_without_tie"] == 2 and j["agreement_without_tie"] == pytest.approx(0.5)


def test_report_command_writes_json_and_markdown(tmp_path: Path, capsys) -> None:
    study = new_study(tmp_path)
    vote_all(study, {"q1": ["win", "win", "tie"], "q2": ["lose", "win", "win"]})
    study.close()
    assert main(["human-eval", "report", str(tmp_path / "study"), "--bootstrap", "200"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "study" / "report.json").read_text())
    md = (tmp_path / "study" / "report.md").read_text()
    assert md == markdown(saved) and "| **overall** | 2:0:0 |" in md and "Fleiss' kappa" in md
    assert "Krippendorff's alpha (nominal)" in printed


def test_report_refusals_are_one_line(tmp_path: Path, capsys) -> None:
    study = new_study(tmp_path)
    study.close()
    assert main(["human-eval", "report", str(tmp_path / "study")]) == 2
    assert "no votes yet" in capsys.readouterr().err
    assert main(["human-eval", "report", str(tmp_path / "nowhere")]) == 2
    assert "not a study folder" in capsys.readouterr().err
    study = Study(tmp_path / "study")
    vote(study, 1, "q1", "win")
    study.close()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"summary": []}))
    assert main(["human-eval", "report", str(tmp_path / "study"), "--judge", str(bad)]) == 2
    assert "no 'pairs' list" in capsys.readouterr().err
