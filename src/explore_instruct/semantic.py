"""The semantic near-duplicate filter: greedy, like the ROUGE-L one, on cosine similarity of embeddings.

In input order, a record is dropped when the cosine similarity of its vector with some record kept
before it (in its group) is greater than `threshold`; `dup_of` is the kept record with the highest
similarity, the earliest on a tie, and `score` that similarity.

Exact search works in blocks: one matrix product scores a block against every vector kept before it,
a second one scores the block against itself, and a short loop walks the block in order. Float32
products summed in a fixed order give the same decisions on every run with the same block size.
Past `INDEX_FROM` vectors in a group (the crossover `bench/bench_semantic.py` measured), and when
`usearch` is installed (the `quality` extra), an HNSW index takes the place of the first product: it
proposes the `INDEX_NEIGHBOURS` nearest kept vectors, whose exact similarities decide. An
approximate index can miss a neighbour, so a few near-duplicates may be kept that exact search
drops (the benchmark reports the agreement); `search: exact` always searches exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

import numpy as np

from explore_instruct.rouge import FilterResult

Search = Literal["auto", "exact", "index"]

BLOCK = 1024  # rows scored per matrix product: large enough for BLAS, small enough for the block loop
KEPT_CHUNK = 16_384  # kept vectors per product: a 1024-row block's scores take 64 MiB
INDEX_FROM = 50_000  # vectors in a group from which `auto` uses the index (bench/bench_semantic.py)
INDEX_NEIGHBOURS = 8
INDEX_DTYPE = "i8"  # what the index stores: a quarter of f32, 4x faster to build; exact scores decide


def index_available() -> bool:
    try:
        import usearch.index  # noqa: F401
    except ImportError:
        return False
    return True


def semantic_filter(
    vectors: np.ndarray,
    threshold: float = 0.9,
    *,
    groups: Sequence[Hashable] | None = None,
    search: Search = "auto",
    block: int = BLOCK,
    progress: Callable[[int], None] | None = None,
) -> FilterResult:
    """Greedy filter over unit `vectors` (one row per record, in order); `groups` limits comparisons
    to records of one group (node scope). `progress(n)` is told of each block judged."""
    start = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    total = len(vectors)
    if groups is not None and len(groups) != total:
        raise ValueError(f"groups has {len(groups)} keys for {total} vectors")
    kept = [True] * total
    dup_of: list[int | None] = [None] * total
    score: list[float | None] = [None] * total
    members: dict[Hashable, list[int]] = {}
    for i in range(total):
        members.setdefault(None if groups is None else groups[i], []).append(i)
    for indices in members.values():
        use_index = search == "index" or (search == "auto" and len(indices) >= INDEX_FROM and index_available())
        greedy = _greedy_index if use_index else _greedy_exact
        sub = vectors[indices] if groups is not None else vectors
        for local, (dup, sim) in greedy(sub, threshold, block, progress).items():
            i = indices[local]
            kept[i], dup_of[i], score[i] = False, indices[dup], sim
    return FilterResult(kept, dup_of, score, time.perf_counter() - start)


def _walk_block(
    block_vectors: np.ndarray,
    offset: int,
    best_sim: np.ndarray,
    best_dup: np.ndarray,
    threshold: float,
    drops: dict[int, tuple[int, float]],
) -> list[int]:
    """Decide a block in order, given each row's best earlier kept match; returns the rows kept.

    A row whose similarity with every earlier row of the block is at most the threshold is decided by
    its earlier kept match alone; only the other rows ("contested") are walked one by one.
    """
    n = len(block_vectors)
    inner = np.minimum(block_vectors @ block_vectors.T, 1.0)
    earlier = np.tri(n, k=-1, dtype=bool)  # earlier[i, j]: j comes before i
    keep = best_sim <= threshold
    for i in np.flatnonzero((earlier & (inner > threshold)).any(axis=1)):
        if keep[i]:
            keep[i] = not np.any(inner[i, :i][keep[:i]] > threshold)
    # Each drop names the most similar kept record: of those kept before the block, or earlier in it.
    inside = np.where(earlier & keep[None, :], inner, -np.inf)
    j = inside.argmax(axis=1)  # the first maximum: the earliest on a tie
    sim_inside = inside[np.arange(n), j]
    for i in np.flatnonzero(~keep):
        if sim_inside[i] > best_sim[i]:  # strictly: on a tie the record kept before the block wins
            drops[offset + int(i)] = (offset + int(j[i]), float(sim_inside[i]))
        else:
            drops[offset + int(i)] = (int(best_dup[i]), float(best_sim[i]))
    return [int(i) for i in np.flatnonzero(keep)]


def _greedy_exact(
    vectors: np.ndarray, threshold: float, block: int, progress: Callable[[int], None] | None
) -> dict[int, tuple[int, float]]:
    n, dims = vectors.shape if vectors.ndim == 2 else (0, 0)
    kept_vectors = np.empty((n, dims), dtype=np.float32)
    kept_ids = np.empty(n, dtype=np.int64)
    n_kept = 0
    drops: dict[int, tuple[int, float]] = {}
    for offset in range(0, n, block):
        rows = vectors[offset : offset + block]
        best_sim, best_dup = np.full(len(rows), -np.inf), np.zeros(len(rows), dtype=np.int64)
        # Against the kept vectors in chunks, so the score matrix stays small (block x KEPT_CHUNK).
        for start in range(0, n_kept, KEPT_CHUNK):
            scores = np.minimum(rows @ kept_vectors[start : min(start + KEPT_CHUNK, n_kept)].T, 1.0)
            best = scores.argmax(axis=1)  # the first maximum: the earliest kept record on a tie
            sims = scores[np.arange(len(rows)), best]
            better = sims > best_sim  # strictly: an equal score in a later chunk is a later record
            best_sim[better], best_dup[better] = sims[better], kept_ids[start + best[better]]
        for i in _walk_block(rows, offset, best_sim, best_dup, threshold, drops):
            kept_vectors[n_kept], kept_ids[n_kept] = rows[i], offset + i
            n_kept += 1
        if progress is not None:
            progress(len(rows))
    return drops


def _greedy_index(
    vectors: np.ndarray, threshold: float, block: int, progress: Callable[[int], None] | None
) -> dict[int, tuple[int, float]]:
    from usearch.index import Index

    n, dims = vectors.shape if vectors.ndim == 2 else (0, 0)
    # One thread to add: the graph (and so every later answer) then depends on the input order only.
    index = Index(ndim=dims, metric="ip", dtype=INDEX_DTYPE, connectivity=16, expansion_add=48, expansion_search=64)
    drops: dict[int, tuple[int, float]] = {}
    for offset in range(0, n, block):
        rows = vectors[offset : offset + block]
        best_sim, best_dup = np.full(len(rows), -np.inf), np.zeros(len(rows), dtype=np.int64)
        if len(index):
            found = index.search(rows, min(INDEX_NEIGHBOURS, len(index)))  # each query alone: any thread count
            keys = np.atleast_2d(found.keys).astype(np.int64)
            valid = np.atleast_2d(found.distances) < np.inf
            for i in range(len(rows)):
                candidates = np.sort(keys[i][valid[i]])  # ascending: argmax then takes the earliest
                if len(candidates):
                    sims = np.minimum(vectors[candidates] @ rows[i], 1.0)
                    j = int(sims.argmax())
                    best_sim[i], best_dup[i] = sims[j], candidates[j]
        kept_here = _walk_block(rows, offset, best_sim, best_dup, threshold, drops)
        if kept_here:
            index.add(np.array(kept_here, dtype=np.int64) + offset, rows[kept_here], threads=1)
        if progress is not None:
            progress(len(rows))
    return drops
