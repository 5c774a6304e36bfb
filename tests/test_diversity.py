"""Diversity measures: the Vendi score against an independent computation, distinct-n, the top-level task,
the 2-D map, and `analyze` writing them (with the real embedded model in one integration test)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from explore_instruct.analysis.diversity import distinct_n, project_2d, top_level_task, vendi_score
from explore_instruct.cli import main


def vendi_by_definition(x: np.ndarray) -> float:
    """exp(entropy) of the eigenvalues of K/n with K the n x n cosine matrix, through scipy, in a loop."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    k = np.array([[float(np.dot(a, b)) for b in unit] for a in unit])
    entropy = 0.0
    for lam in scipy.linalg.eigh(k / len(x), eigvals_only=True):
        if lam > 1e-15:
            entropy -= lam * math.log(lam)
    return math.exp(entropy)


@pytest.mark.parametrize(("n", "dims"), [(40, 8), (12, 50), (200, 16)])
def test_vendi_score_equals_the_formula(n: int, dims: int) -> None:
    x = np.random.default_rng(n).standard_normal((n, dims))
    x[: n // 4] += 3.0  # some structure, so the score is neither 1 nor n
    assert vendi_score(x) == pytest.approx(vendi_by_definition(x), abs=1e-6)


def test_vendi_score_of_known_cases() -> None:
    assert vendi_score(np.tile([[0.3, 0.4]], (5, 1))) == pytest.approx(1.0, abs=1e-9)  # all alike
    assert vendi_score(np.eye(6)) == pytest.approx(6.0, abs=1e-9)  # all orthogonal
    assert vendi_score(np.concatenate([np.eye(3), np.eye(3)])) == pytest.approx(3.0, abs=1e-9)
    assert vendi_score(np.zeros((0, 4))) == 0.0


def test_distinct_n() -> None:
    texts = ["write a poem", "Write a story", "solve it"]
    assert distinct_n(texts, 1) == pytest.approx(6 / 8)  # write, a, poem, story, solve, it
    assert distinct_n(texts, 2) == pytest.approx(4 / 5)  # "write a" twice
    assert distinct_n(["one"], 2) == 0.0


def test_top_level_task_reads_the_task_path() -> None:
    assert top_level_task({"task_path": "Root > Paraphrase > Formal", "task": "Formal"}) == "Paraphrase"
    assert top_level_task({"task_path": "Root", "task": "Root"}) == "Root"
    assert top_level_task({"task": "Only"}) == "Only"
    assert top_level_task({}) == "(no task)"


def test_the_map_is_pca_without_umap_and_keeps_the_main_direction() -> None:
    rng = np.random.default_rng(0)
    x = np.outer(rng.standard_normal(50), [1.0, 2.0, 0.0]) + 0.01 * rng.standard_normal((50, 3))
    coords, method = project_2d(x)
    assert coords.shape == (50, 2)
    if method == "pca":
        assert np.var(coords[:, 0]) > 100 * np.var(coords[:, 1])


def write_records(path: Path, instructions: list[str], tasks: list[str]) -> None:
    path.write_text(
        "".join(
            json.dumps({"instruction": t, "output": "x", "task_path": f"Root > {task}"}) + "\n"
            for t, task in zip(instructions, tasks, strict=True)
        )
    )


def test_analyze_writes_the_diversity_measures_side_by_side(tmp_path: Path) -> None:
    same = tmp_path / "same.jsonl"
    varied = tmp_path / "varied.jsonl"
    write_records(same, ["Rewrite the sentence politely"] * 6, ["A", "A", "A", "B", "B", "B"])
    write_records(varied, [f"Task {w} about topic {i}" for i, w in enumerate("abcdef")], list("ABCDEF"))
    out = tmp_path / "report"
    assert main(["analyze", f"same={same}", f"varied={varied}", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())["datasets"]
    assert summary["same"]["diversity"]["vendi_score"] == pytest.approx(1.0, abs=1e-5)
    assert summary["varied"]["diversity"]["vendi_score"] > 2.0
    assert summary["same"]["diversity"]["distinct_1"] == pytest.approx(4 / 24)
    assert (out / "embeddings_varied.png").is_file()
    assert "Vendi score" in (out / "report.md").read_text() and "Vendi score" in (out / "report.html").read_text()
    cached = (out / "embeddings.db").stat().st_size
    assert main(["analyze", f"same={same}", "--out", str(out)]) == 0  # the vectors come from embeddings.db
    assert (out / "embeddings.db").stat().st_size == cached


@pytest.mark.integration
def test_the_embedded_model_puts_a_paraphrase_closer_than_another_task() -> None:
    from explore_instruct.llm.local import LocalEmbedder

    embedder = LocalEmbedder()
    texts = ["Write a poem about the sea.", "Compose a short poem about the ocean.", "Solve the equation 2x + 3 = 7."]
    result = asyncio.run(embedder.embed(texts))
    asyncio.run(embedder.aclose())
    assert result.vectors.shape[0] == 3 and result.tokens > 0
    assert np.allclose(np.linalg.norm(result.vectors, axis=1), 1.0, atol=1e-5)
    sims = result.vectors @ result.vectors.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]
