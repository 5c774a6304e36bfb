"""The results of a human-evaluation study: Win:Tie:Lose and beat rate per rater, by majority and per
question class, with bootstrap intervals; agreement between raters; agreement with an LLM judge.

Every vote is turned from the rater's sides (left / right) into the candidate's outcome (win, tie,
lose, or both bad) with the side recorded for that rater and item. The majority of an item is the
outcome most of its raters chose; a split vote counts as a tie. "Both bad" neither wins nor loses,
so it is left out of the beat rate, like a tie. Fleiss' kappa comes from statsmodels and
Krippendorff's alpha (nominal) from the `krippendorff` package.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from explore_instruct.datafile import read_json
from explore_instruct.errors import UserError
from explore_instruct.evaluate.judge_report import OVERALL, beat_rate, bootstrap_ci
from explore_instruct.web.study import Study

OUTCOMES = ("win", "tie", "lose", "both_bad")
SCORE = {"win": 1, "tie": 0, "lose": -1, "both_bad": 0}


@dataclass(frozen=True)
class Vote:
    rater: str
    item_id: int
    question_id: str
    cls: str
    outcome: str  # from the candidate's side
    comment: str = ""


@dataclass
class Tally:
    name: str
    win: int
    tie: int
    lose: int
    both_bad: int
    beat_rate: float | None
    ci_low: float | None
    ci_high: float | None


def outcome(choice: str, candidate_side: str) -> str:
    if choice in ("left", "right"):
        return "win" if choice == candidate_side else "lose"
    return choice


def study_votes(study: Study) -> list[Vote]:
    return [
        Vote(v.rater, v.item_id, v.question_id, v.cls, outcome(v.choice, v.candidate_side), v.comment)
        for v in study.db.votes()
    ]


def tally(name: str, outcomes: Sequence[str], *, resamples: int, seed: int) -> Tally:
    counts = Counter(outcomes)
    low, high = bootstrap_ci([SCORE[o] for o in outcomes], resamples=resamples, seed=seed)
    return Tally(
        name, counts["win"], counts["tie"], counts["lose"], counts["both_bad"],
        beat_rate(counts["win"], counts["lose"]), low, high,
    )  # fmt: skip


def majority(outcomes: Sequence[str]) -> str:
    """The outcome most raters chose; a split vote is a tie."""
    ranked = Counter(outcomes).most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return "tie"
    return ranked[0][0]


def item_majorities(votes: Sequence[Vote]) -> dict[int, tuple[str, str, str]]:
    """Item id -> (question id, class, majority outcome), for every item with at least one vote."""
    by_item: dict[int, list[Vote]] = defaultdict(list)
    for v in votes:
        by_item[v.item_id].append(v)
    return {i: (vs[0].question_id, vs[0].cls, majority([v.outcome for v in vs])) for i, vs in by_item.items()}


def fleiss(votes: Sequence[Vote]) -> dict[str, Any]:
    """Fleiss' kappa over the items rated by the most common number (>= 2) of raters."""
    from statsmodels.stats.inter_rater import fleiss_kappa

    by_item: dict[int, list[str]] = defaultdict(list)
    for v in votes:
        by_item[v.item_id].append(v.outcome)
    sizes = Counter(len(o) for o in by_item.values() if len(o) >= 2)
    if not sizes:
        return {"value": None, "items": 0, "raters_per_item": None}
    n = max(sizes, key=lambda size: (sizes[size], size))
    table = np.array([[o.count(c) for c in OUTCOMES] for o in by_item.values() if len(o) == n])
    with np.errstate(divide="ignore", invalid="ignore"):
        value = float(fleiss_kappa(table, method="fleiss")) if len(table) >= 2 else math.nan
    return {"value": None if math.isnan(value) else value, "items": len(table), "raters_per_item": n}


def _fleiss_items(fk: dict[str, Any]) -> str:
    if fk["raters_per_item"] is None:
        return "no item has two or more votes yet"
    return f"{fk['items']} items with {fk['raters_per_item']} raters each"


def krippendorff_alpha(votes: Sequence[Vote]) -> dict[str, Any]:
    """Krippendorff's alpha (nominal) over every vote; items rated once add nothing, as the measure says."""
    import krippendorff

    raters = sorted({v.rater for v in votes})
    items = sorted({v.item_id for v in votes})
    data = np.full((len(raters), len(items)), np.nan)
    r_index, i_index = {r: k for k, r in enumerate(raters)}, {i: k for k, i in enumerate(items)}
    for v in votes:
        data[r_index[v.rater], i_index[v.item_id]] = OUTCOMES.index(v.outcome)
    pairable = int(np.sum(np.sum(~np.isnan(data), axis=0) >= 2))
    try:
        value = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
    except (ValueError, ZeroDivisionError):  # fewer than two values in use, or nothing pairable
        value = math.nan
    return {"value": None if math.isnan(value) else value, "items": pairable}


def read_judge(path: str | Path) -> dict[str, str]:
    """Question id -> the judge's outcome for the candidate (win / tie / lose) from a `judge` result file."""
    p = Path(path)
    data = read_json(p, "a judge result file")
    pairs = data.get("pairs") if isinstance(data, dict) else None
    if not isinstance(pairs, list):
        raise UserError(f"{p}: not a result of 'explore-instruct judge' (no 'pairs' list)")
    out = {}
    for k, pair in enumerate(pairs):
        if not isinstance(pair, dict) or "question_id" not in pair or "outcome" not in pair:
            raise UserError(f"{p}: pairs[{k}] lacks 'question_id' or 'outcome'")
        if pair["outcome"] in ("win", "tie", "lose"):
            out[str(pair["question_id"])] = pair["outcome"]
    return out


def judge_agreement(majorities: dict[int, tuple[str, str, str]], judge: dict[str, str]) -> dict[str, Any]:
    """How often the judge's outcome equals the human majority ("both bad" compares as a tie), with ties
    and, as MT-Bench also reports, over the items where neither calls a tie."""
    pairs = [(m, judge[q]) for q, _, m in majorities.values() if q in judge]
    if not pairs:
        raise UserError("the judge file shares no judged question with the study's voted items")
    human = ["tie" if m == "both_bad" else m for m, _ in pairs]
    machine = [j for _, j in pairs]
    same = sum(h == j for h, j in zip(human, machine, strict=True))
    decisive = [(h, j) for h, j in zip(human, machine, strict=True) if h != "tie" and j != "tie"]
    return {
        "items": len(pairs),
        "agreement": same / len(pairs),
        "items_without_tie": len(decisive),
        "agreement_without_tie": (sum(h == j for h, j in decisive) / len(decisive)) if decisive else None,
    }


def build_report(
    study: Study, *, judge_path: str | Path | None = None, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    votes = study_votes(study)
    if not votes:
        raise UserError(f"{study.path}: no votes yet; nothing to report")
    raters = sorted({v.rater for v in votes}, key=lambda r: (len(r), r))
    per_rater = [tally(r, [v.outcome for v in votes if v.rater == r], resamples=resamples, seed=seed) for r in raters]
    majorities = item_majorities(votes)
    classes = sorted({c for _, c, _ in majorities.values()})
    per_class = [
        tally(c or "(none)", [m for _, cls, m in majorities.values() if cls == c], resamples=resamples, seed=seed)
        for c in classes
    ]
    per_class.append(tally(OVERALL, [m for _, _, m in majorities.values()], resamples=resamples, seed=seed))
    items = study.db.item_count()
    report: dict[str, Any] = {
        "study": str(study.path),
        "baseline": study.meta.get("baseline_name", "baseline"),
        "candidate": study.meta.get("candidate_name", "candidate"),
        "items": items,
        "items_voted": len(majorities),
        "votes": len(votes),
        "per_rater": [asdict(t) for t in per_rater],
        "majority": [asdict(t) for t in per_class],
        "agreement": {"fleiss_kappa": fleiss(votes), "krippendorff_alpha": krippendorff_alpha(votes)},
        "item_majority": [{"question_id": q, "class": c, "majority": m} for q, c, m in majorities.values()],
        "votes_detail": [
            {"question_id": v.question_id, "rater": v.rater, "outcome": v.outcome, "comment": v.comment} for v in votes
        ],
    }
    if judge_path is not None:
        report["judge"] = {"file": str(judge_path), **judge_agreement(majorities, read_judge(judge_path))}
    return report


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _rows(tallies: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| | Win:Tie:Lose | Both bad | Beat rate (%) | 95 % CI (%) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in tallies:
        ci = "n/a" if t["ci_low"] is None else f"{_pct(t['ci_low'])} – {_pct(t['ci_high'])}"
        name = f"**{t['name']}**" if t["name"] == OVERALL else t["name"]
        lines.append(
            f"| {name} | {t['win']}:{t['tie']}:{t['lose']} | {t['both_bad']} | {_pct(t['beat_rate'])} | {ci} |"
        )
    return lines


def markdown(report: dict[str, Any]) -> str:
    fk, ka = report["agreement"]["fleiss_kappa"], report["agreement"]["krippendorff_alpha"]
    lines = [
        f"Human evaluation: candidate `{report['candidate']}` against baseline `{report['baseline']}` "
        f"({report['votes']} votes on {report['items_voted']} of {report['items']} items).",
        "",
        "By majority of raters, per question class:",
        "",
        *_rows(report["majority"]),
        "",
        "Per rater:",
        "",
        *_rows(report["per_rater"]),
        "",
        f"Agreement: Fleiss' kappa {_num(fk['value'])} ({_fleiss_items(fk)}); "
        f"Krippendorff's alpha (nominal) {_num(ka['value'])} ({ka['items']} items with two or more votes).",
    ]
    if "judge" in report:
        j = report["judge"]
        lines += [
            "",
            f"LLM judge against the human majority: {_pct(j['agreement'])} % agreement on {j['items']} items; "
            f"{_pct(j['agreement_without_tie'])} % on the {j['items_without_tie']} items where neither calls a tie.",
        ]
    return "\n".join(lines) + "\n"
