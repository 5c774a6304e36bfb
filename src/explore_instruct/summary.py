"""What a run holds: tasks per depth, examples kept at each step, drops by reason, calls and tokens."""

from __future__ import annotations

from collections import Counter
from typing import Any

from explore_instruct.llm.client import ClientStats
from explore_instruct.store import RunStore


def run_summary(store: RunStore, session: ClientStats | None = None) -> dict[str, Any]:
    nodes = store.nodes()
    examples = store.examples()
    produced = [e for e in examples if e.origin != "seed"]
    dropped = Counter(e.drop_stage for e in produced if e.status == "dropped")
    summary: dict[str, Any] = {
        "tasks_per_depth": dict(sorted(Counter(n.depth for n in nodes).items())),
        "pruned_tasks": sum(n.pruned for n in nodes),
        "examples": {
            "written": len(produced),
            "dropped_quality": dropped.get("quality", 0),
            "dropped_duplicate": dropped.get("duplicate", 0),
            "dropped_filter": dropped.get("filter", 0),
            "kept": sum(e.status == "ok" for e in produced),
            "sampled": len(store.sample_ids()),
        },
        "drop_reasons": store.drop_counts(),
        "calls": store.calls.usage_by_stage(),
    }
    if session is not None:
        summary["this_session"] = {
            stage: {
                "calls": s.calls,
                "cache_hits": s.cache_hits,
                "failed": s.failed,
                "retries": s.retries,
                "prompt_tokens": s.usage.prompt_tokens,
                "completion_tokens": s.usage.completion_tokens,
            }
            for stage, s in session.stages.items()
        }
    return summary
