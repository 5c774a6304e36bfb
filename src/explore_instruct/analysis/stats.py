"""The numbers of the report: pair diversity, seed overlap, lengths and tree shape. Pure functions."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from statistics import mean, median
from typing import Any

from explore_instruct.analysis.verbnoun import VerbNoun
from explore_instruct.tree import DomainTree

TOP_K = 20
OVERLAP_BINS = 20  # histogram bins of width 0.05 over [0, 1]


def normalised_entropy(counts: Iterable[int]) -> float:
    """Shannon entropy of the distribution divided by its maximum log(K): 1 = perfectly even, 0 = one item."""
    values = [c for c in counts if c > 0]
    total = sum(values)
    if len(values) <= 1 or total == 0:
        return 0.0
    h = -sum((c / total) * math.log(c / total) for c in values)
    return h / math.log(len(values))


def top_k_share(counter: Counter[Any], k: int = TOP_K) -> float:
    """Share of all occurrences that the k most common items account for (high = concentrated)."""
    total = sum(counter.values())
    return sum(c for _, c in counter.most_common(k)) / total if total else 0.0


def verb_noun_stats(items: Sequence[VerbNoun], k: int = TOP_K) -> dict[str, Any]:
    pairs = Counter(vn.pair for vn in items if vn.pair)
    verbs = Counter(vn.verb for vn in items if vn.pair)
    n = len(items)
    with_pair = sum(pairs.values())
    return {
        "instructions": n,
        "with_pair": with_pair,
        "with_pair_share": with_pair / n if n else 0.0,
        "with_verb": sum(1 for vn in items if vn.verb),
        "unique_pairs": len(pairs),
        "unique_verbs": len(verbs),
        "unique_nouns": len({p[1] for p in pairs}),
        "pair_entropy_norm": normalised_entropy(pairs.values()),
        f"top{k}_pair_share": top_k_share(pairs, k),
        "top_pairs": [[v, o, c] for (v, o), c in pairs.most_common(k)],
    }


def verb_noun_rings(
    items: Sequence[VerbNoun], top_verbs: int = 20, top_nouns: int = 4
) -> list[tuple[str, list[tuple[str, int]]]]:
    """The top verbs (by pairs) and, for each, its top nouns with counts: the data of the two-ring figure."""
    by_verb: dict[str, Counter[str]] = {}
    for vn in items:
        if vn.pair:
            by_verb.setdefault(vn.pair[0], Counter())[vn.pair[1]] += 1
    ranked = sorted(by_verb.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))[:top_verbs]
    return [(verb, nouns.most_common(top_nouns)) for verb, nouns in ranked]


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[idx])


def describe(values: Sequence[float]) -> dict[str, float]:
    """mean / median / p90 / max of a list of numbers (zeros for an empty list)."""
    s = sorted(values)
    if not s:
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    return {"mean": float(mean(s)), "median": float(median(s)), "p90": _quantile(s, 0.9), "max": float(s[-1])}


def overlap_stats(scores: Sequence[float], threshold: float = 0.7) -> dict[str, Any]:
    """Highest ROUGE-L F1 of each instruction against the seeds: summary and a 0.05-wide histogram."""
    hist = [0] * OVERLAP_BINS
    for s in scores:
        hist[min(OVERLAP_BINS - 1, int(s * OVERLAP_BINS))] += 1
    return {
        **describe(scores),
        f"share_above_{threshold}": (sum(1 for s in scores if s > threshold) / len(scores)) if scores else 0.0,
        "histogram": {"bin_width": 1 / OVERLAP_BINS, "counts": hist},
    }


def word_count(text: str) -> int:
    return len(text.split())


def length_stats(records: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Lengths in whitespace-separated words of instruction, input and output."""
    out: dict[str, Any] = {}
    for field in ("instruction", "input", "output"):
        lengths = [word_count(r.get(field, "")) for r in records]
        out[field] = describe(lengths)
        if field == "input":
            out[field]["empty_share"] = sum(1 for n in lengths if n == 0) / len(lengths) if lengths else 0.0
    return out


def tree_stats(tree: DomainTree) -> dict[str, Any]:
    """Tasks per depth, examples per task and pruned tasks (pruned tasks are counted, not hidden)."""
    per_depth: Counter[int] = Counter()
    examples: list[int] = []
    tasks: list[dict[str, Any]] = []
    pruned: list[str] = []
    leaves = 0
    for node, depth, _parent in tree.level_order():
        per_depth[depth] += 1
        if not node.children:
            leaves += 1
        if node.pruned:
            pruned.append(node.name)
        # The root holds the seeds once the tree has grown; it is not a task of the data.
        if not (depth == 0 and node.children):
            examples.append(len(node.examples))
        tasks.append({"name": node.name, "depth": depth, "examples": len(node.examples), "pruned": node.pruned})
    return {
        "tasks": sum(per_depth.values()),
        "max_depth": max(per_depth),
        "leaves": leaves,
        "tasks_per_depth": {str(d): per_depth[d] for d in sorted(per_depth)},
        "examples_per_task": describe(examples) | {"min": float(min(examples)) if examples else 0.0},
        "pruned_tasks": len(pruned),
        "pruned_names": pruned,
        "task_list": tasks,
    }
