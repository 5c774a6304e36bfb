"""Diversity measures of a dataset's instructions: the Vendi score, distinct-n, and a 2-D map.

Vendi score (Friedman and Dieng, 2023): exp of the Shannon entropy of the eigenvalues of K/n, where K
is the n x n cosine-similarity matrix of the instructions' embeddings. It reads as an effective
number of distinct instructions: 1 when all are alike, n when all are orthogonal. With unit vectors
X (n x d), K = X Xᵀ has the same non-zero eigenvalues as Xᵀ X (d x d), so the score is computed
from the smaller of the two matrices: exactly, for any n, with no subsampling.

distinct-n (Li et al., 2016): distinct word n-grams over all n-grams of the instructions (lowercased,
split on whitespace).

The map projects the embeddings to 2-D with UMAP when `umap` is installed, else PCA (numpy's SVD).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MAP_POINTS = 5000  # points drawn on the map at most (a seeded subsample past it)


def vendi_score(vectors: np.ndarray) -> float:
    """exp(-Σ λ log λ) over the eigenvalues λ of K/n, K the cosine-similarity matrix (0 log 0 = 0)."""
    x = np.asarray(vectors, dtype=np.float64)
    n = len(x)
    if n == 0:
        return 0.0
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    gram = x.T @ x if x.shape[1] < n else x @ x.T
    eigenvalues = np.clip(np.linalg.eigvalsh(gram / n), 0.0, None)  # tiny negatives are rounding
    positive = eigenvalues[eigenvalues > 0]
    return float(np.exp(-np.sum(positive * np.log(positive))))


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams across `texts` (0 when there are none)."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = text.lower().split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def top_level_task(record: dict[str, Any]) -> str:
    """The task right below the root that a record belongs to (its own task at depth 1 or 0)."""
    path = [p.strip() for p in str(record.get("task_path") or "").split(" > ") if p.strip()]
    if len(path) > 1:
        return path[1]
    return path[0] if path else str(record.get("task") or "(no task)")


def project_2d(vectors: np.ndarray, seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates of `vectors` and the method's name ("umap" when installed, else "pca")."""
    x = np.asarray(vectors, dtype=np.float64)
    if len(x) < 3:
        return np.zeros((len(x), 2)), "pca"
    try:
        import umap
    except ImportError:
        centred = x - x.mean(axis=0)
        _u, _s, vt = np.linalg.svd(centred, full_matrices=False)
        coords = centred @ vt[:2].T
        if coords.shape[1] < 2:
            coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
        return coords, "pca"
    return umap.UMAP(n_components=2, random_state=seed).fit_transform(x), "umap"


def diversity_summary(texts: Sequence[str], vectors: np.ndarray, model_id: str) -> dict[str, Any]:
    """The numbers `summary.json` keeps per dataset."""
    return {
        "embedding_model": model_id,
        "vendi_score": vendi_score(vectors),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
    }


def map_sample(n: int, seed: int = 0) -> np.ndarray:
    """Indices of the points drawn on the map: all of them, or a seeded sample of MAP_POINTS."""
    if n <= MAP_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, MAP_POINTS, replace=False))
