"""Benchmark: the ROUGE-L diversity filter against the rouge-score reference, in the same process.

    .venv/bin/python bench/bench_rouge.py            # fixture, 10k..100k, 1M (about 10 minutes)
    .venv/bin/python bench/bench_rouge.py --quick    # fixture subset, 10k..20k (about a minute)

The reference is what self-instruct and Alpaca do: tokenize each instruction once with rouge-score's
tokenizer, score every new instruction against every instruction kept so far with
``RougeScorer.score(kept, new)``, drop it when the highest F1 is greater than the threshold. It is
run in full on the 4,433 real instructions of the shared fixture; for 100k and 1M it would take
hours to days, so its time is estimated from a timed sample of pairs times the number of pairs it
would score, and exactness is checked on a prefix of the data plus sampled records.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import threading
import time
from pathlib import Path

from rouge_score import rouge_scorer

from explore_instruct.rouge import FilterResult, diversity_filter

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "upstream_rewriting_tree"
THRESHOLD = 0.7


# ------------------------------------------------------------------ data


def fixture_instructions() -> tuple[list[str], list[str]]:
    """Instructions of the fixture tree, nodes in the order of tree_meta_info.json (root, children)."""
    meta = json.loads((FIXTURE / "tree_meta_info.json").read_text(encoding="utf-8"))
    queue, texts, groups = [meta], [], []
    while queue:
        node = queue.pop(0)
        queue.extend(node.get("children", []))
        data = json.loads((FIXTURE / node["config_filename"]).read_text(encoding="utf-8"))
        for ex in data.get("examples", []):
            texts.append(ex["instruction"])
            groups.append(node["task_name"])
    return texts, groups


def synthetic(n: int, base: list[str], seed: int = 0) -> list[str]:
    """n instructions: random fixture instructions with 0-3 seeded word-level edits each
    (delete, insert a fixture word, replace by a fixture word, swap neighbours)."""
    rng = random.Random(seed)
    words = [b.split() for b in base]
    vocab = sorted({w for ws in words for w in ws})
    out = []
    for _ in range(n):
        ws = list(rng.choice(words))
        for _ in range(rng.randint(0, 3)):
            op = rng.randrange(4)
            if op == 0 and len(ws) > 1:
                del ws[rng.randrange(len(ws))]
            elif op == 1:
                ws.insert(rng.randrange(len(ws) + 1), rng.choice(vocab))
            elif op == 2 and ws:
                ws[rng.randrange(len(ws))] = rng.choice(vocab)
            elif len(ws) > 1:
                j = rng.randrange(len(ws) - 1)
                ws[j], ws[j + 1] = ws[j + 1], ws[j]
        out.append(" ".join(ws))
    return out


# ------------------------------------------------------------------ the reference


class CachedTokenizer:
    """rouge-score's default tokenizer, memoised per text (the reference tokenizes each text once)."""

    def __init__(self) -> None:
        self._inner = rouge_scorer.RougeScorer(["rougeL"])._tokenizer
        self._cache: dict[str, list[str]] = {}

    def tokenize(self, text: str) -> list[str]:
        toks = self._cache.get(text)
        if toks is None:
            toks = self._cache[text] = self._inner.tokenize(text)
        return toks


def reference_scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=CachedTokenizer())


def reference_filter(texts: list[str], threshold: float = THRESHOLD) -> FilterResult:
    """Greedy, global scope: every new text against every kept one, ``score(kept, new)``."""
    sc = reference_scorer()
    kept_idx: list[int] = []
    kept, dup_of, score = [], [], []
    for i, text in enumerate(texts):
        best_c, best_f = None, 0.0
        for c in kept_idx:
            f = sc.score(texts[c], text)["rougeL"].fmeasure
            if f > threshold and (best_c is None or f > best_f):
                best_c, best_f = c, f
        kept.append(best_c is None)
        dup_of.append(best_c)
        score.append(None if best_c is None else best_f)
        if best_c is None:
            kept_idx.append(i)
    return FilterResult(kept, dup_of, score)


def reference_pairs(result: FilterResult, groups: list[str] | None = None) -> int:
    """How many pairs the reference scores on this input: each text against the kept before it."""
    pairs, kept_so_far = 0, {}
    for i, k in enumerate(result.kept):
        g = None if groups is None else groups[i]
        pairs += kept_so_far.get(g, 0)
        if k:
            kept_so_far[g] = kept_so_far.get(g, 0) + 1
    return pairs


def seconds_per_pair(texts: list[str], n: int = 20_000, seed: int = 1) -> float:
    """rouge-score's time per scored pair (tokens cached), on random pairs of these texts."""
    sc = reference_scorer()
    rng = random.Random(seed)
    pairs = [(rng.choice(texts), rng.choice(texts)) for _ in range(n)]
    for a, b in pairs:  # fill the token cache first: the reference tokenizes each text once
        sc._tokenizer.tokenize(a)
        sc._tokenizer.tokenize(b)
    start = time.perf_counter()
    for a, b in pairs:
        sc.score(a, b)
    return (time.perf_counter() - start) / n


def same(a: FilterResult, b: FilterResult) -> bool:
    return (
        a.kept == b.kept
        and a.dup_of == b.dup_of
        and [None if s is None else float(s).hex() for s in a.score]
        == [None if s is None else float(s).hex() for s in b.score]
    )


def spot_check(texts: list[str], result: FilterResult, dropped: int, kept: int, seed: int = 2) -> str:
    """Check sampled decisions of a large run with rouge-score itself.

    Dropped: the reported pair's rouge-score F1 is the reported score (bit for bit) and above the
    threshold. Kept: rouge-score's F1 with every text kept before it is at most the threshold.
    """
    sc = reference_scorer()
    rng = random.Random(seed)
    drop_idx = [i for i, k in enumerate(result.kept) if not k]
    kept_idx = [i for i, k in enumerate(result.kept) if k]
    for i in rng.sample(drop_idx, min(dropped, len(drop_idx))):
        c = result.dup_of[i]
        assert c is not None and result.kept[c] and c < i
        f = sc.score(texts[c], texts[i])["rougeL"].fmeasure
        assert float(f).hex() == float(result.score[i]).hex() and f > THRESHOLD, (i, c, f, result.score[i])
    pos = {c: j for j, c in enumerate(kept_idx)}
    sample = rng.sample(kept_idx, min(kept, len(kept_idx)))
    for i in sample:
        for c in kept_idx[: pos[i]]:
            assert sc.score(texts[c], texts[i])["rougeL"].fmeasure <= THRESHOLD, (i, c)
    return f"{min(dropped, len(drop_idx))} dropped + {len(sample)} kept records re-checked with rouge-score: ok"


# ------------------------------------------------------------------ measuring


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(x) for x in fh.read().split())
    except OSError:
        pass
    return out


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """Peak of the summed PSS of this process and its children (sampled every 0.1 s)."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            pids, todo = [], [me]
            while todo:
                p = todo.pop()
                pids.append(p)
                todo.extend(_children(p))
            self.peak_kib = max(self.peak_kib, sum(_pss_kib(p) for p in pids))
            self._stop.wait(0.1)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> tuple[float, float]:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def timed(fn, *args, **kwargs):
    c0 = cpu_seconds()
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    wall = time.perf_counter() - start
    c1 = cpu_seconds()
    return out, wall, (c1[0] - c0[0]) + (c1[1] - c0[1])


def fmt_s(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds:.2f} s"


# ------------------------------------------------------------------ the three figures


def bench_fixture(texts: list[str], groups: list[str], quick: bool, workers: int | None) -> None:
    print(f"== 1. the fixture's {len(texts)} instructions (global scope, threshold {THRESHOLD})")
    ours, wall, cpu = min(
        (timed(diversity_filter, texts, THRESHOLD, workers=workers) for _ in range(3)), key=lambda r: r[1]
    )
    print(f"   ours:      kept {ours.n_kept} / {len(texts)} in {wall:.3f} s (best of 3; cpu {cpu:.3f} s)")
    part = texts[:1500] if quick else texts
    ref, ref_wall, _ = timed(reference_filter, part)
    ours_part = diversity_filter(part, THRESHOLD, workers=workers) if quick else ours
    scope = f"first {len(part)}" if quick else "all"
    print(f"   reference: kept {ref.n_kept} / {len(part)} ({scope}) in {ref_wall:.1f} s (rouge-score, one core)")
    ok = same(ours_part, ref)
    print(f"   identical kept set, dup_of and scores: {'yes' if ok else 'NO'}")
    if quick:
        _, sub_wall, _ = timed(diversity_filter, part, THRESHOLD, workers=workers)
        print(f"   speed-up on the same {len(part)}: {ref_wall / sub_wall:.0f}x")
    else:
        print(f"   speed-up: {ref_wall / wall:.0f}x")
    node = diversity_filter(texts, THRESHOLD, groups=groups, workers=workers)
    print(f"   node scope (per task): kept {node.n_kept} / {len(texts)}")
    if not ok:
        sys.exit("exactness check failed")


def bench_scale(base: list[str], sizes: list[int], workers: int | None, spk: float) -> None:
    print(f"== 2. synthetic near-duplicates from the fixture (seeded word-level edits), sizes {sizes}")
    times = {}
    for n in sizes:
        texts = synthetic(n, base)
        result, wall, cpu = timed(diversity_filter, texts, THRESHOLD, workers=workers)
        pairs = reference_pairs(result)
        est = pairs * spk
        times[n] = wall
        print(
            f"   {n:>9,}: kept {result.n_kept:>7,} in {wall:6.2f} s (cpu {cpu:6.2f} s, all processes); "
            f"reference ~{fmt_s(est)} ({pairs:.3g} pairs x {spk * 1e6:.1f} us, estimated) -> ~{est / wall:,.0f}x"
        )
        if n == sizes[-1]:
            m = min(2000 if n <= 20_000 else 3000, n)
            head = texts[:m]
            ok = same(diversity_filter(head, THRESHOLD, workers=1), reference_filter(head))
            print(f"   exactness on the first {m:,} texts against the full reference: {'yes' if ok else 'NO'}")
            if not ok:
                sys.exit("exactness check failed")
            print("   " + spot_check(texts, result, dropped=1000, kept=20))
    lo, hi = sizes[0], sizes[-1]
    print(f"   growth {lo:,} -> {hi:,} ({hi // lo}x the data): {times[hi] / times[lo]:.1f}x the time")


def bench_million(base: list[str], n: int, workers: int | None, spk: float) -> None:
    print(f"== 3. {n:,} synthetic instructions")
    texts = synthetic(n, base, seed=3)
    with PeakMemory() as mem:
        result, wall, cpu = timed(diversity_filter, texts, THRESHOLD, workers=workers)
    pairs = reference_pairs(result)
    est = pairs * spk
    maxrss = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    )
    print(f"   kept {result.n_kept:,} / {n:,} in {wall:.1f} s (cpu {cpu:.1f} s, all processes)")
    print(
        f"   peak memory: {mem.peak_kib / 2**20:.2f} GiB PSS, this process and its workers together "
        f"(largest single RSS {maxrss / 2**20:.2f} GiB); includes the 1M input strings"
    )
    print(f"   reference ~{fmt_s(est)} ({pairs:.3g} pairs x {spk * 1e6:.1f} us, estimated) -> ~{est / wall:,.0f}x")
    print("   " + spot_check(texts, result, dropped=1000, kept=10))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fixture subset for the reference, 10k and 20k only")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ap.add_argument("--skip-1m", action="store_true", help="leave out the 1,000,000 run")
    args, unknown = ap.parse_known_args()
    if unknown:
        print(f"ignoring arguments meant for other benchmarks: {' '.join(unknown)}")
    if not FIXTURE.is_dir():
        sys.exit(f"fixture not found: {FIXTURE}")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, workers={args.workers or 'auto'}")
    texts, groups = fixture_instructions()
    bench_fixture(texts, groups, args.quick, args.workers)
    spk = seconds_per_pair(texts)
    print(f"   rouge-score per pair (tokens cached): {spk * 1e6:.1f} us")
    bench_scale(texts, [10_000, 20_000] if args.quick else [10_000, 30_000, 100_000], args.workers, spk)
    if not (args.quick or args.skip_1m):
        bench_million(texts, 1_000_000, args.workers, spk)


if __name__ == "__main__":
    main()
