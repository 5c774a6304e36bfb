"""The semantic near-duplicate filter: the greedy rule (against a direct implementation), the stage in a
run (drops with what they collided with, in stats and dropped.jsonl), and `filter-file --semantic`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from explore_instruct.cli import main
from explore_instruct.config import build_config
from explore_instruct.llm.embeddings import HashEmbedder
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.pipeline import run_stages
from explore_instruct.semantic import index_available, semantic_filter
from explore_instruct.stages.filter import filter_candidates
from explore_instruct.summary import run_summary
from tests.fakes import fake_model


def greedy_by_hand(vectors: np.ndarray, threshold: float, groups: list[int] | None = None) -> list[tuple]:
    """The rule read literally: one pair at a time, in order, against every kept vector of the group."""
    kept: list[int] = []
    out = []
    for i, v in enumerate(vectors):
        same = [j for j in kept if groups is None or groups[j] == groups[i]]
        sims = [min(float(np.dot(vectors[j].astype(np.float64), v)), 1.0) for j in same]
        best = int(np.argmax(sims)) if sims else None
        if best is not None and sims[best] > threshold:
            out.append((False, same[best]))
        else:
            kept.append(i)
            out.append((True, None))
    return out


def planted(n: int, dims: int, seed: int) -> np.ndarray:
    """Random unit vectors, a third of them near-copies of earlier ones."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n - n // 3, dims))
    copies = base[rng.integers(0, len(base), n // 3)] + 0.15 * rng.standard_normal((n // 3, dims))
    x = np.concatenate([base, copies])
    x = x[rng.permutation(n)]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("block", [1, 7, 1024])
@pytest.mark.parametrize("grouped", [False, True])
def test_exact_search_decides_as_the_rule_reads(block: int, grouped: bool) -> None:
    x = planted(300, 16, seed=block)
    groups = [i % 3 for i in range(len(x))] if grouped else None
    result = semantic_filter(x, 0.9, groups=groups, search="exact", block=block)
    expected = greedy_by_hand(x, 0.9, groups)
    assert 0 < result.n_kept < len(x)
    assert list(zip(result.kept, result.dup_of, strict=True)) == expected
    for i, dup in enumerate(result.dup_of):
        if dup is not None:
            assert result.score[i] == pytest.approx(float(x[i] @ x[dup]), abs=1e-5)


def test_kept_vectors_scored_in_chunks_decide_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from explore_instruct import semantic

    x = planted(200, 8, seed=5)
    whole = semantic_filter(x, 0.85, search="exact", block=16)
    monkeypatch.setattr(semantic, "KEPT_CHUNK", 7)
    chunked = semantic_filter(x, 0.85, search="exact", block=16)
    by_hand = greedy_by_hand(x, 0.85)
    assert (chunked.kept, chunked.dup_of) == (whole.kept, whole.dup_of)
    assert whole.kept == [k for k, _ in by_hand] and whole.dup_of == [d for _, d in by_hand]


def test_a_tie_goes_to_the_earliest_kept_record_and_identical_vectors_pass_threshold_one() -> None:
    a, b = np.eye(3, dtype=np.float32)[:2]
    x = np.stack([a, b, (a + b) / np.sqrt(2)])  # the third is as close to the first as to the second
    result = semantic_filter(x, 0.5)
    assert result.kept == [True, True, False] and result.dup_of[2] == 0
    same = np.stack([a, a, a])
    assert semantic_filter(same, 1.0).kept == [True, True, True]
    assert semantic_filter(same, 0.99).kept == [True, False, False]


@pytest.mark.skipif(not index_available(), reason="usearch (the quality extra) is not installed")
def test_the_index_agrees_with_exact_search_on_planted_duplicates() -> None:
    x = planted(2000, 32, seed=3)
    exact = semantic_filter(x, 0.9, search="exact")
    approx = semantic_filter(x, 0.9, search="index")
    agree = np.mean(np.array(exact.kept) == np.array(approx.kept))
    assert agree > 0.99
    again = semantic_filter(x, 0.9, search="index")
    assert (again.kept, again.dup_of) == (approx.kept, approx.dup_of)  # one thread: the same every time


CONFIG = {
    "root": {"name": "Rewriting", "examples": [{"instruction": "Rewrite the sentence politely."}]},
    "explore": {"max_depth": 1, "breadth": [3]},
    "generate": {"examples_per_task": [8]},
    "sample": {"size": 20},
    "filter": {"semantic": {"enabled": True, "threshold": 0.3}},
}


def test_the_stage_records_what_each_drop_collided_with(tmp_path: Path) -> None:
    cfg = build_config(CONFIG, "t")
    embedder = HashEmbedder()
    ctx, results = run_stages(cfg, tmp_path / "run", backend=ScriptedLLM(fake_model), embedder=embedder)
    kept, total = results.semantic.kept, results.semantic.judged
    assert 0 < kept < total
    dropped = [json.loads(line) for line in (tmp_path / "run/data/dropped.jsonl").read_text().splitlines()]
    semantic = [r for r in dropped if r["drop_stage"] == "semantic"]
    assert len(semantic) == total - kept
    by_id = {r.id: r for r in ctx.store.examples()}
    tree_order = {r.id: i for i, r in enumerate(filter_candidates(ctx))}
    for r in semantic:
        other = by_id[r["dup_of"]]  # a kept record before it in tree order, or a seed
        assert other.status == "ok" and (other.origin == "seed" or tree_order[other.id] < tree_order[r["id"]])
        expected = float(embedder.vector(r["instruction"]) @ embedder.vector(other.instruction))
        expected /= np.linalg.norm(embedder.vector(r["instruction"])) * np.linalg.norm(
            embedder.vector(other.instruction)
        )
        assert r["score"] == pytest.approx(expected, abs=1e-5) and r["score"] > 0.3
        assert r["drop_reason"] == "cosine > 0.3"
    sampled = set(ctx.store.sample_ids())
    assert not sampled & {r["id"] for r in semantic}
    summary = run_summary(ctx.store)
    assert summary["examples"]["dropped_semantic"] == len(semantic)
    assert summary["semantic_collisions"]
    ctx.store.close()


def test_rerunning_the_rouge_filter_undoes_the_semantic_drops_and_the_stage_redoes_them(tmp_path: Path) -> None:
    cfg = build_config(CONFIG, "t")
    ctx, _ = run_stages(cfg, tmp_path / "run", backend=ScriptedLLM(fake_model), embedder=HashEmbedder())
    before = ctx.store.drop_counts().get("semantic")
    ctx.store.close()
    ctx, _ = run_stages(cfg, tmp_path / "run", ["filter"], resume=True)
    assert "semantic" not in ctx.store.drop_counts()
    ctx.store.close()
    embedder = HashEmbedder()
    ctx, _ = run_stages(cfg, tmp_path / "run", ["semantic"], resume=True, embedder=embedder)
    assert ctx.store.drop_counts().get("semantic") == before and embedder.requests == []  # cached vectors
    ctx.store.close()


def test_stats_shows_the_semantic_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = build_config(CONFIG, "t")
    ctx, _ = run_stages(cfg, tmp_path / "run", backend=ScriptedLLM(fake_model), embedder=HashEmbedder())
    ctx.store.close()
    assert main(["stats", "--run-dir", str(tmp_path / "run")]) == 0
    shown = capsys.readouterr().out
    assert "too close in meaning" in shown and "(cosine 0." in shown and "calls: embed" in shown


def test_filter_file_semantic_drops_near_copies_after_rouge(tmp_path: Path) -> None:
    records = [
        {"instruction": "Write a poem about the sea"},
        {"instruction": "the sea poem about a Write"},  # the same words reordered: ROUGE-L low, cosine 1
        {"instruction": "Solve the equation for x"},
        {"instruction": "Write a poem about the sea today"},  # ROUGE-L catches this one first
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    out, explain = tmp_path / "out.jsonl", tmp_path / "why.jsonl"
    assert main(["filter-file", str(src), "-o", str(out), "--semantic", "0.95", "--explain", str(explain)]) == 0
    kept = [json.loads(line)["instruction"] for line in out.read_text().splitlines()]
    assert kept == ["Write a poem about the sea", "Solve the equation for x"]
    why = {r["index"]: r for r in map(json.loads, explain.read_text().splitlines())}
    assert why[1]["filter"] == "semantic" and why[1]["dup_of"] == 0 and why[1]["score"] > 0.99
    assert why[3]["filter"] == "rouge"


def test_filter_file_refuses_a_semantic_threshold_out_of_range(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"instruction": "x"}\n')
    assert main(["filter-file", str(src), "-o", str(tmp_path / "o.jsonl"), "--semantic", "1.5"]) == 2
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.integration
def test_a_run_with_the_embedded_embedding_model_offline_and_its_rerun(tmp_path: Path) -> None:
    cfg = build_config({**CONFIG, "filter": {"semantic": {"enabled": True, "threshold": 0.98}}}, "t")
    ctx, results = run_stages(cfg, tmp_path / "run", backend=ScriptedLLM(fake_model))  # embeddings: local
    kept, total = results.semantic.kept, results.semantic.judged
    assert total > 0 and 0 <= kept <= total
    requests = run_summary(ctx.store)["calls"]["embed"]["calls"]
    model = ctx.store.conn.execute("SELECT DISTINCT model FROM embeddings").fetchall()
    assert requests >= 1 and len(model) == 1 and model[0][0].startswith("local-embed:SmolLM2")  # the real GGUF
    ctx.store.close()
    ctx, again = run_stages(cfg, tmp_path / "run", ["semantic"], resume=True)
    assert again.semantic is not None and (again.semantic.kept, again.semantic.judged) == (kept, total)
    assert run_summary(ctx.store)["calls"]["embed"]["calls"] == requests  # every vector from the run's cache
    ctx.store.close()
