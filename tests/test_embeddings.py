"""Embeddings through the backend layer: cache, batches, retries, call log, budget, the OpenAI-compatible
backend against the fake server, and a whole run with the semantic filter (rerun and resume send nothing)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from explore_instruct.config import build_config
from explore_instruct.cost import Budget, BudgetReached
from explore_instruct.errors import RunStopped, UserError
from explore_instruct.estimate import estimate_run
from explore_instruct.llm.base import FatalLLMError, RetryReason, TransientLLMError, Usage
from explore_instruct.llm.client import RetryPolicy
from explore_instruct.llm.embed_client import EmbeddingClient, EmbeddingFailed
from explore_instruct.llm.embeddings import EmbedResult, HashEmbedder, build_embedder
from explore_instruct.llm.openai_compat import OpenAICompatEmbedder
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.pipeline import run_stages
from explore_instruct.runstore import CallLog, RunStore, VectorCache
from explore_instruct.summary import run_summary
from tests.batch_api import MODEL, FakeOpenAI
from tests.fakes import fake_model

NO_WAIT = RetryPolicy(retries=2, base_delay=0.0, max_delay=0.0)


def client(tmp_path: Path, embedder: HashEmbedder, **kwargs: object) -> EmbeddingClient:
    log = CallLog.open(tmp_path / "cache.db")
    return EmbeddingClient(embedder, VectorCache(log.conn), log, retry=NO_WAIT, **kwargs)  # type: ignore[arg-type]


def test_vectors_are_unit_rows_in_order_and_a_second_call_sends_nothing(tmp_path: Path) -> None:
    embedder = HashEmbedder()
    c = client(tmp_path, embedder, batch_size=2)
    texts = ["write a poem", "solve an equation", "write a poem", "rewrite a sentence"]
    first = asyncio.run(c.embed(texts))
    assert first.shape == (4, 64)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(first[0], first[2])  # a repeated text is sent once and given twice
    assert [len(b) for b in embedder.requests] == [2, 1]  # 3 distinct texts, batches of 2
    again = HashEmbedder()
    second = asyncio.run(client(tmp_path, again).embed(texts))
    assert again.requests == []
    assert np.array_equal(first, second)


def test_batches_are_cut_from_all_texts_so_a_resume_sends_the_same_ones(tmp_path: Path) -> None:
    texts = [f"text number {i}" for i in range(7)]
    asyncio.run(client(tmp_path, HashEmbedder(), batch_size=3).embed(texts[3:6]))  # one batch done earlier
    embedder = HashEmbedder()
    asyncio.run(client(tmp_path, embedder, batch_size=3).embed(texts))
    assert embedder.requests == [texts[0:3], texts[6:7]]


def test_a_transient_fault_is_retried_and_counted_in_the_call_log(tmp_path: Path) -> None:
    embedder = HashEmbedder(faults=[TransientLLMError("busy", reason=RetryReason.RATE_LIMITED)])
    c = client(tmp_path, embedder)
    asyncio.run(c.embed(["a b", "c d"]))
    stats = c.stats.stage("embed")
    assert (stats.calls, stats.retries, dict(stats.retry_reasons)) == (1, 1, {"429": 1})
    logged = c.log.usage_by_stage()["embed"]  # type: ignore[union-attr]
    assert (logged["calls"], logged["attempts"], logged["prompt_tokens"]) == (1, 2, 4)
    assert c.log.models() == []  # type: ignore[union-attr]  # the embedding model is no model change


def test_retries_running_out_stop_with_finished_batches_kept(tmp_path: Path) -> None:
    class FailSecond(HashEmbedder):
        async def embed(self, texts: list[str]) -> EmbedResult:
            if texts[0].startswith("second"):
                raise TransientLLMError("down", reason=RetryReason.SERVER_ERROR)
            return await super().embed(texts)

    c = client(tmp_path, FailSecond(), batch_size=1, max_concurrency=1)
    with pytest.raises(EmbeddingFailed, match="rerun with resume"):
        asyncio.run(c.embed(["first text", "second text"]))
    rows = c.cache.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]
    assert rows == 1
    assert c.log.usage_by_stage()["embed"]["failed"] == 1  # type: ignore[union-attr]


def test_embedding_tokens_count_against_the_budget(tmp_path: Path) -> None:
    cfg = build_config({"root": {"name": "x"}, "llm": {"budget": {"max_tokens": 20}}}, "t")
    budget = Budget.from_config(cfg.llm, Usage())
    c = client(tmp_path, HashEmbedder(), batch_size=1, max_concurrency=1, budget=budget)
    with pytest.raises(BudgetReached):
        asyncio.run(c.embed([f"instruction number {i} with several words in it" for i in range(10)]))
    assert budget is not None and 0 < budget.spent.prompt_tokens <= 20


def test_config_section_shares_the_llm_fields_checks() -> None:
    with pytest.raises(UserError, match="embeddings: Value error, backend 'openai' needs 'model'"):
        build_config({"root": {"name": "x"}, "embeddings": {"backend": "openai"}}, "t")
    with pytest.raises(UserError, match=r"embeddings\.api_key_env"):
        build_config({"root": {"name": "x"}, "embeddings": {"api_key_env": "sk-abc"}}, "t")
    with pytest.raises(UserError, match=r"embeddings\.base_url"):
        build_config({"root": {"name": "x"}, "embeddings": {"base_url": "http://u:p@h/v1"}}, "t")
    with pytest.raises(UserError, match="embeddings backend must be one of"):
        build_embedder("nope")


def test_openai_compatible_embeddings_against_the_fake_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMBED_KEY", "secret-123")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-leak")
    with FakeOpenAI() as server:
        embedder = OpenAICompatEmbedder(server.base_url, MODEL, api_key_env="EMBED_KEY")
        texts = ["rewrite the sentence", "solve for x", "write a haiku"]
        result = asyncio.run(embedder.embed(texts))
        asyncio.run(embedder.aclose())
        sent = server.headers[-1]
    expected = np.stack([HashEmbedder().vector(t) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(result.vectors, expected, atol=1e-6)  # the server's reversed list is put back in order
    assert result.tokens == 9  # the words of the three texts, as the fake server counts them
    assert sent["Authorization"] == "Bearer secret-123"
    assert "OpenAI-Organization" not in sent and "secret-123" not in repr(embedder)


def test_a_missing_route_is_fatal() -> None:
    with FakeOpenAI() as server:
        embedder = OpenAICompatEmbedder(server.base_url.replace("/v1", "/nope"), MODEL)
        with pytest.raises(FatalLLMError):
            asyncio.run(embedder.embed(["x"]))


RUN = {
    "root": {
        "name": "Rewriting",
        "examples": [{"instruction": "Rewrite the sentence politely."}, {"instruction": "Shorten this headline."}],
    },
    "explore": {"max_depth": 1, "breadth": [3]},
    "generate": {"examples_per_task": [8]},
    "sample": {"size": 20},
    # The fake model's instructions share their first and last word: a low bar makes some collide.
    "filter": {"semantic": {"enabled": True, "threshold": 0.3}},
    "embeddings": {"batch_size": 5},
}


def exported(run_dir: Path) -> dict[str, bytes]:
    return {p: (run_dir / p).read_bytes() for p in ("data/kept.jsonl", "data/dropped.jsonl", "data/sample.json")}


def test_a_run_against_the_fake_server_and_its_rerun_sends_no_request(tmp_path: Path) -> None:
    with FakeOpenAI() as server:
        data = {
            **RUN,
            "llm": {"backend": "openai", "base_url": server.base_url, "model": MODEL},
            "embeddings": {"backend": "openai", "base_url": server.base_url, "model": MODEL, "batch_size": 5},
        }
        cfg = build_config(data, "t")
        ctx, results = run_stages(cfg, tmp_path / "run")
        kept, total = results.semantic.kept, results.semantic.judged
        summary = run_summary(ctx.store, ctx.client.stats if ctx.client else None)
        ctx.store.close()
        chat_calls, embed_requests = server.chat_calls, len(server.embedding_inputs)
        assert 0 < kept < total and embed_requests == summary["calls"]["embed"]["calls"] > 1
        assert summary["examples"]["dropped_semantic"] == total - kept
        assert summary["semantic_collisions"][0]["score"] > 0.3
        before = exported(tmp_path / "run")
        ctx, _ = run_stages(cfg, tmp_path / "run", resume=True)
        ctx.store.close()
        assert (server.chat_calls, len(server.embedding_inputs)) == (chat_calls, embed_requests)
    assert exported(tmp_path / "run") == before


def test_a_kill_during_embedding_and_resume_give_the_same_data(tmp_path: Path) -> None:
    cfg = build_config(RUN, "t")
    ctx, _ = run_stages(cfg, tmp_path / "whole", backend=ScriptedLLM(fake_model), embedder=HashEmbedder())
    ctx.store.close()

    class DiesOnThirdBatch(HashEmbedder):
        async def embed(self, texts: list[str]) -> EmbedResult:
            if len(self.requests) == 2:
                raise FatalLLMError("killed")
            return await super().embed(texts)

    dying = DiesOnThirdBatch()
    with pytest.raises(RunStopped):
        run_stages(cfg, tmp_path / "killed", backend=ScriptedLLM(fake_model), embedder=dying)
    store = RunStore.open(tmp_path / "killed")
    assert store.conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 10  # two batches of 5 kept
    store.close()
    resumed = HashEmbedder()
    ctx, _ = run_stages(cfg, tmp_path / "killed", resume=True, backend=ScriptedLLM(fake_model), embedder=resumed)
    ctx.store.close()
    assert resumed.requests and all(len(b) <= 5 for b in resumed.requests)
    finished = {t for batch in dying.requests[:2] for t in batch}
    assert not finished & {t for batch in resumed.requests for t in batch}  # none sent again
    assert exported(tmp_path / "killed") == exported(tmp_path / "whole")


def test_the_dry_run_counts_embedding_requests() -> None:
    estimate = estimate_run(build_config(RUN, "t"))
    embed = next(s for s in estimate.stages if s.stage == "embed")
    texts = 2 + 8 + 3 * 8  # seeds, the root's examples and each subtask's
    assert embed.calls == -(-texts // 5) and embed.prompt_tokens > 0 and embed.completion_tokens == 0
    off = estimate_run(build_config({**RUN, "filter": {}}, "t"))
    assert "embed" not in [s.stage for s in off.stages]


def test_every_quality_control_at_once_against_the_fake_server_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    """Semantic filter, decontamination and rating in one run behind one OpenAI-compatible server:
    each stage judges what the one before it kept, and the rerun sends no chat and no embedding request."""
    with FakeOpenAI() as server:
        endpoint = {"backend": "openai", "base_url": server.base_url, "model": MODEL}
        questions = tmp_path / "questions.jsonl"
        questions.write_text('{"question_id": "q1", "question": "Name three rivers of Europe.", "std_answer": "x"}\n')
        data = {
            **RUN,
            "llm": endpoint,
            "embeddings": {**endpoint, "batch_size": 5},
            "decontaminate": {"against": [str(questions)]},
            "rate": {"enabled": True, "threshold": 5},
        }
        cfg = build_config(data, "t")
        ctx, results = run_stages(cfg, tmp_path / "run")
        summary = run_summary(ctx.store, ctx.client.stats if ctx.client else None)
        kept_ids = {r.id for r in ctx.store.examples(status="ok") if r.origin != "seed"}
        ctx.store.close()
        assert results.semantic and results.decontaminate and results.rate
        semantic_kept = results.semantic.kept
        judged = results.decontaminate.judged
        rated = results.rate.rated
        assert judged == semantic_kept and 0 < rated <= judged  # each control sees what the one before kept
        assert summary["calls"]["embed"]["calls"] > 0 and summary["calls"]["rate"]["calls"] == rated
        assert kept_ids and summary["examples"]["kept"] == len(kept_ids)
        before = exported(tmp_path / "run")
        sent = (server.chat_calls, len(server.embedding_inputs))
        ctx, _ = run_stages(cfg, tmp_path / "run", resume=True)
        ctx.store.close()
        assert (server.chat_calls, len(server.embedding_inputs)) == sent
    assert exported(tmp_path / "run") == before
