"""From two verdicts per pair to Win:Tie:Lose, beat rate, a bootstrap interval and a Markdown table.

A pair is a win (or a loss) for the candidate only when both orders say so; when the orders
disagree it is a tie, and the share of such pairs is reported as the order-disagreement rate.
Pairs with a verdict missing in either order are counted apart, never as ties.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from explore_instruct.evaluate.judge import PairJudgement

OVERALL = "overall"


@dataclass
class PairOutcome:
    question_id: str
    cls: str
    outcome: str  # "win" | "tie" | "lose" | "unparsed" | "failed" (from the candidate's side)
    disagree: bool


def pair_outcome(p: PairJudgement) -> PairOutcome:
    """Combine the two orders into the candidate's outcome."""
    a, b = p.baseline_first, p.candidate_first
    for order in (a, b):
        if order.verdict is None:
            kind = "failed" if order.failed else "unparsed"
            return PairOutcome(p.question_id, p.cls, kind, False)
    assert a.verdict is not None and b.verdict is not None
    from_baseline_first = -a.verdict  # there the candidate is Assistant 2
    from_candidate_first = b.verdict
    if from_baseline_first != from_candidate_first:
        return PairOutcome(p.question_id, p.cls, "tie", True)
    label = {1: "win", 0: "tie", -1: "lose"}[from_candidate_first]
    return PairOutcome(p.question_id, p.cls, label, False)


@dataclass
class ClassSummary:
    cls: str
    win: int
    tie: int
    lose: int
    unparsed: int
    failed: int
    disagreements: int
    beat_rate: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def judged(self) -> int:
        return self.win + self.tie + self.lose

    @property
    def disagreement_rate(self) -> float | None:
        return self.disagreements / self.judged if self.judged else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "judged": self.judged, "disagreement_rate": self.disagreement_rate}


def beat_rate(wins: int, losses: int) -> float | None:
    return wins / (wins + losses) if wins + losses else None


def bootstrap_ci(
    scores: Sequence[int], *, resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the beat rate over pairs (+1 win, 0 tie, -1 lose).

    Resamples without a single decisive pair have no beat rate and are left out.
    """
    outcomes = np.asarray(scores, dtype=np.int8)
    if outcomes.size == 0 or not np.any(outcomes != 0):
        return None, None
    rng = np.random.default_rng(seed)
    draws = outcomes[rng.integers(0, outcomes.size, size=(resamples, outcomes.size))]
    wins = (draws == 1).sum(axis=1)
    decisive = wins + (draws == -1).sum(axis=1)
    rates = wins[decisive > 0] / decisive[decisive > 0]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(rates, [tail, 100 - tail])
    return float(low), float(high)


def summarise(
    outcomes: Sequence[PairOutcome],
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> list[ClassSummary]:
    """One summary per class (sorted by name), then the overall one."""
    classes = sorted({o.cls for o in outcomes})
    groups = [(c, [o for o in outcomes if o.cls == c]) for c in classes]
    groups.append((OVERALL, list(outcomes)))
    score = {"win": 1, "tie": 0, "lose": -1}
    summaries = []
    for name, group in groups:
        counts = {k: sum(o.outcome == k for o in group) for k in ("win", "tie", "lose", "unparsed", "failed")}
        low, high = bootstrap_ci(
            [score[o.outcome] for o in group if o.outcome in score], resamples=resamples, seed=seed
        )
        summaries.append(
            ClassSummary(
                cls=name or "(none)",
                **counts,
                disagreements=sum(o.disagree for o in group),
                beat_rate=beat_rate(counts["win"], counts["lose"]),
                ci_low=low,
                ci_high=high,
            )
        )
    return summaries


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def markdown_table(summaries: Sequence[ClassSummary], *, baseline: str, candidate: str) -> str:
    """The paper-style table: Win:Tie:Lose of the candidate against the baseline, per class."""
    lines = [
        f"Candidate `{candidate}` against baseline `{baseline}` (each pair judged in both orders).",
        "",
        "| Class | Win:Tie:Lose | Beat rate (%) | 95 % CI (%) | Order disagreement (%) | Not judged |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        ci = "n/a" if s.ci_low is None else f"{_pct(s.ci_low)} – {_pct(s.ci_high)}"
        not_judged = s.unparsed + s.failed
        name = f"**{s.cls}**" if s.cls == OVERALL else s.cls
        lines.append(
            f"| {name} | {s.win}:{s.tie}:{s.lose} | {_pct(s.beat_rate)} | {ci} | "
            f"{_pct(s.disagreement_rate)} | {not_judged} |"
        )
    overall = summaries[-1] if summaries else None
    if overall is not None and overall.unparsed + overall.failed:
        total = overall.judged + overall.unparsed + overall.failed
        lines += [
            "",
            f"**Not judged: {overall.unparsed + overall.failed} of {total} pairs.** {overall.unparsed} unparsed "
            "(the judge's reviews gave no verdict the parser could read: no final line such as `Assistant 1 > "
            "Assistant 2`, or no JSON scores; they are kept in the results and the cache), "
            f"{overall.failed} failed (the judge call kept failing; a rerun asks again).",
        ]
    return "\n".join(lines) + "\n"
