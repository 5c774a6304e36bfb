"""What a run holds: tasks per depth, examples kept at each step, drops by reason, calls and tokens.

Calls are counted per stage across every session (from the call log): ok and failed calls, the
attempts they took, and the failed attempts by reason (429, 5xx, timeout, unparseable, truncated, ...).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from explore_instruct.estimate import estimate_vs_spent
from explore_instruct.llm.client import ClientStats
from explore_instruct.runstore import ExampleRow, RunStore, load_ratings


def run_summary(store: RunStore, session: ClientStats | None = None) -> dict[str, Any]:
    """The run's figures, with the quality verdicts later sessions recomputed; with `session` (the
    client's stats) also this session's calls."""
    nodes = store.nodes()
    examples = store.examples()
    produced = [e for e in examples if e.origin != "seed"]
    dropped = Counter(e.drop_stage for e in produced if e.status == "dropped")
    summary: dict[str, Any] = {
        "tasks_per_depth": dict(sorted(Counter(n.depth for n in nodes).items())),
        "pruned_tasks": sum(n.pruned for n in nodes),
        # Subtask names exploration rejected (they never became tasks), per reason.
        "dropped_task_names": store.dropped_task_counts(),
        "examples": {
            "written": len(produced),
            "dropped_quality": dropped.get("quality", 0),
            "dropped_duplicate": dropped.get("duplicate", 0),
            "dropped_filter": dropped.get("filter", 0),
            "dropped_decontaminate": dropped.get("decontaminate", 0),
            "dropped_rate": dropped.get("rate", 0),
            "dropped_semantic": dropped.get("semantic", 0),
            "kept": sum(e.status == "ok" for e in produced),
            "sampled": len(store.sample_ids()),
        },
        "drop_reasons": store.drop_counts(),
        "filter_collisions": filter_collisions(store, limit=3, distinct=True),
        "ratings": rating_summary(store),
        "semantic_collisions": filter_collisions(store, limit=3, distinct=True, stage="semantic"),
        "calls": store.calls.usage_by_stage(),
        "endpoints": store.calls.usage_by_endpoint(),
        "estimate_vs_spent": estimate_vs_spent(store),
    }
    if changed := store.verdicts_recomputed():
        summary["quality_verdicts_recomputed"] = changed  # a quality rule changed since they were stored
    if session is not None:
        summary["this_session"] = {
            stage: {
                "calls": s.calls,
                "cache_hits": s.cache_hits,
                "failed": s.failed,
                "retries": s.retries,
                "retry_reasons": dict(sorted(s.retry_reasons.items())),
                "prompt_tokens": s.usage.prompt_tokens,
                "completion_tokens": s.usage.completion_tokens,
            }
            for stage, s in session.stages.items()
        }
    return summary


def filter_collisions(
    store: RunStore, limit: int | None = None, *, distinct: bool = False, stage: str = "filter"
) -> list[dict[str, Any]]:
    """Instructions a diversity filter (`filter`: ROUGE-L, `semantic`: cosine) dropped, each with the
    kept one it collided with and the score.

    Highest scores first. `distinct` shows each dropped text and each kept example once, so a
    summary's few examples are not the same copy of one instruction repeated.
    """
    rows = [r for r in store.examples(status="dropped") if r.drop_stage == stage and r.dup_of is not None]
    rows.sort(key=lambda r: -(r.score or 0.0))
    text = {r.id: r.instruction for r in store.examples(status="ok")}
    shown: list[ExampleRow] = []
    seen_texts: set[str] = set()
    seen_kept: set[int | None] = set()
    for r in rows:
        if limit is not None and len(shown) >= limit:
            break
        if distinct:
            key = " ".join(r.instruction.lower().split())
            if key in seen_texts or r.dup_of in seen_kept:
                continue
            seen_texts.add(key)
            seen_kept.add(r.dup_of)
        shown.append(r)
    return [
        {
            "dropped": r.instruction,
            "kept": text.get(r.dup_of, "") if r.dup_of is not None else "",
            "score": r.score,
            "id": r.id,
            "dup_of": r.dup_of,
        }
        for r in shown
    ]


def rating_summary(store: RunStore) -> dict[str, Any]:
    """The rate stage's scores: how many examples were rated, the mean, and how many got each score."""
    scores = [r.score for r in load_ratings(store.conn).values()]
    if not scores:
        return {"rated": 0, "mean": None, "scores": {}}
    return {"rated": len(scores), "mean": sum(scores) / len(scores), "scores": dict(sorted(Counter(scores).items()))}
