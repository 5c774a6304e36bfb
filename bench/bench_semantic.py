"""Benchmark: the semantic near-duplicate filter, exact search against the approximate index (usearch).

    .venv/bin/python bench/bench_semantic.py            # 5k .. 100k vectors of 384 dimensions
    .venv/bin/python bench/bench_semantic.py --quick    # 5k .. 20k

The data: unit vectors of 384 dimensions around 2,000 topic centres (cosine to their centre about
0.6, so records of one topic are alike but not duplicates), a fifth of them near-copies of an
earlier vector (cosine about 0.97). Threshold 0.9, global scope. Each figure is measured in a fresh
child process, so its peak memory (ru_maxrss) is that method's alone. The reference is exact search;
for the index it prints the time ratio and the agreement: the share of records whose decision (kept
or dropped) is the same, and the share of exact search's drops the index also drops. The crossover
is the smallest size where the index is faster (`semantic.INDEX_FROM` is set from it).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time

import numpy as np

from explore_instruct.semantic import index_available, semantic_filter

DIMS = 384
TOPICS = 2000
THRESHOLD = 0.9


def vectors(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((TOPICS, DIMS)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    originals = n - n // 5
    x = centres[rng.integers(0, TOPICS, originals)] + 0.055 * rng.standard_normal((originals, DIMS)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    copies = x[rng.integers(0, originals, n // 5)] + 0.012 * rng.standard_normal((n // 5, DIMS)).astype(np.float32)
    out = np.concatenate([x, copies])[rng.permutation(n)]
    return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


def _measure(n: int, search: str, queue: multiprocessing.Queue) -> None:
    x = vectors(n)
    start = time.perf_counter()
    result = semantic_filter(x, THRESHOLD, search=search)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    queue.put((seconds, peak, np.array(result.kept)))


def measure(n: int, search: str) -> tuple[float, float, np.ndarray]:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_measure, args=(n, search, queue))
    child.start()
    out = queue.get()
    child.join()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5k to 20k only")
    args = parser.parse_args()
    sizes = [5_000, 10_000, 20_000] if args.quick else [5_000, 10_000, 20_000, 50_000, 100_000]
    if not index_available():
        print("usearch is not installed (pip install 'explore-instruct[quality]'): exact search only")
    print(f"{DIMS} dimensions, threshold {THRESHOLD}; peak = the child process's max RSS (data included)")
    print(f"{'n':>8} {'kept':>7} {'exact s':>8} {'peak GiB':>8} {'index s':>8} {'peak GiB':>8} {'ratio':>6} "
          f"{'agree':>7} {'drops found':>11}")  # fmt: skip
    crossover = None
    for n in sizes:
        exact_s, exact_peak, exact_kept = measure(n, "exact")
        line = f"{n:>8,} {int(exact_kept.sum()):>7,} {exact_s:>8.2f} {exact_peak:>8.2f}"
        if index_available():
            index_s, index_peak, index_kept = measure(n, "index")
            agree = float(np.mean(exact_kept == index_kept))
            drops = ~exact_kept
            found = float(np.mean(~index_kept[drops])) if drops.any() else 1.0
            line += f" {index_s:>8.2f} {index_peak:>8.2f} {exact_s / index_s:>5.2f}x {agree:>7.4f} {found:>11.4f}"
            if crossover is None and index_s < exact_s:
                crossover = n
        print(line, flush=True)
    if index_available():
        print(f"crossover (index faster from): {crossover if crossover else 'not within the sizes measured'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
