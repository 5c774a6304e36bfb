"""Several endpoints for one model: routing by load, cool-down and failover, the call log, the config."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from explore_instruct.cli import main
from explore_instruct.config import LLMConfig, build_config
from explore_instruct.errors import UserError
from explore_instruct.llm.base import (
    Completion,
    CompletionRequest,
    FatalLLMError,
    RetryReason,
    TransientLLMError,
    Usage,
)
from explore_instruct.llm.factory import backend_from_config
from explore_instruct.llm.openai_compat import OpenAICompatLLM
from explore_instruct.llm.pool import EndpointPool, Member
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.runstore import CallLog, RunStore
from tests.fakes import fake_model
from tests.helpers import BASE, make_config, merge, run_fake
from tests.test_llm_backends import SCHEMA, FakeServer, chat_reply, free_port, llama_cpp_like


class Counting(ScriptedLLM):
    """A scripted backend that records the most calls it ever had in flight."""

    def __init__(self, latency: float = 0.01, fail: Any = None) -> None:
        super().__init__(self._reply, latency=latency)
        self.fail = fail  # None, or a function of the call number returning an exception to raise
        self.in_flight = self.peak = self.calls = 0

    def _reply(self, request: CompletionRequest) -> Any:
        self.calls += 1
        if self.fail is not None:
            error = self.fail(self.calls)
            if error is not None:
                return error
        text = fake_model(request) if request.json_schema else "ok"
        return Completion(text, Usage(10, 5), "stop")

    async def complete(self, request: CompletionRequest) -> Completion:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await super().complete(request)
        finally:
            self.in_flight -= 1


def refused(_: int) -> TransientLLMError:
    return TransientLLMError("cannot reach it", reason=RetryReason.CONNECTION)


def request(i: int) -> CompletionRequest:
    return CompletionRequest.chat(f"say {i}", seed=i)


def pool_of(*backends: Any, limits: tuple[int, ...] = (), weights: tuple[float, ...] = (), **kw: Any) -> EndpointPool:
    members = [
        Member(f"http://e{i}/v1", b, limit=limits[i] if limits else 4, weight=weights[i] if weights else 1.0)
        for i, b in enumerate(backends)
    ]
    return EndpointPool(members, "openai:m", **kw)


def records(store: RunStore) -> list[tuple[str, ...]]:
    """The kept data without row ids (which follow the order replies arrived in)."""
    rows = store.dataset("kept")
    return sorted((r["task_path"], r["instruction"], r["input"], r["output"]) for r in rows)


# --------------------------------------------------------------------------- routing


async def test_requests_spread_by_limit_and_never_exceed_an_endpoints_limit() -> None:
    small, big = Counting(0.02), Counting(0.02)
    pool = pool_of(small, big, limits=(2, 6))
    await asyncio.gather(*(pool.complete(request(i)) for i in range(80)))
    assert small.peak <= 2 and big.peak <= 6
    assert small.calls + big.calls == 80
    # The endpoint with three times the slots takes about three times the calls.
    assert big.calls > 2 * small.calls


async def test_weight_shifts_traffic_between_equal_endpoints() -> None:
    light, heavy = Counting(0.02), Counting(0.02)
    pool = pool_of(light, heavy, limits=(8, 8), weights=(1.0, 3.0))
    for batch in range(5):  # a few calls at a time, so the choice is by load, not by free slots
        await asyncio.gather(*(pool.complete(request(batch * 4 + i)) for i in range(4)))
    assert heavy.calls > light.calls


async def test_completion_names_the_endpoint_and_model_id_is_the_models() -> None:
    pool = pool_of(Counting(), Counting())
    reply = await pool.complete(request(1))
    assert reply.endpoint in ("http://e0/v1", "http://e1/v1")
    assert pool.model_id == "openai:m"


# --------------------------------------------------------------------------- faults


async def test_refused_endpoint_is_cooled_and_its_requests_go_elsewhere() -> None:
    dead, alive = Counting(fail=refused), Counting()
    pool = pool_of(dead, alive, base_cooldown=30.0)
    replies = await asyncio.gather(*(pool.complete(request(i)) for i in range(20)))
    assert all(r.endpoint == "http://e1/v1" for r in replies)
    # Refused once, then cooled: no more traffic while it cools (at most the calls already on their way).
    assert dead.calls <= 4
    assert pool.members[0].failures == dead.calls


async def test_repeated_5xx_cools_and_a_probe_brings_the_endpoint_back() -> None:
    def flaky(n: int) -> TransientLLMError | None:
        return TransientLLMError("HTTP 503", reason=RetryReason.SERVER_ERROR) if n <= 3 else None

    sick, healthy = Counting(fail=flaky), Counting()
    pool = pool_of(sick, healthy, limits=(1, 1), base_cooldown=0.05, failures_to_cool=3)
    for i in range(3):  # one at a time: each lands on the sick one first (equal load) and fails over
        assert (await pool.complete(request(i))).endpoint == "http://e1/v1"
    assert pool.members[0].cooled_until > 0
    await asyncio.sleep(0.1)  # the cool-down ends: the next request probes the sick endpoint
    assert (await pool.complete(request(99))).endpoint == "http://e0/v1"
    assert pool.members[0].streak == 0


async def test_single_5xx_does_not_cool_an_endpoint() -> None:
    once = Counting(fail=lambda n: TransientLLMError("HTTP 500", reason=RetryReason.SERVER_ERROR) if n == 1 else None)
    pool = pool_of(once, Counting(), failures_to_cool=3)
    await pool.complete(request(1))
    assert pool.members[0].cooled_until == 0.0


async def test_rate_limit_is_not_failed_over_but_left_to_the_client() -> None:
    busy = Counting(fail=lambda n: TransientLLMError("429", reason=RetryReason.RATE_LIMITED, retry_after=2.0))
    pool = pool_of(busy)
    with pytest.raises(TransientLLMError) as info:
        await pool.complete(request(1))
    assert info.value.reason == RetryReason.RATE_LIMITED and info.value.endpoint == "http://e0/v1"
    assert pool.members[0].cooled_until == 0.0


async def test_all_endpoints_down_is_transient_then_fatal() -> None:
    pool = pool_of(Counting(fail=refused), Counting(fail=refused), base_cooldown=0.01, dead_after=3)
    for _ in range(2):
        with pytest.raises(TransientLLMError):
            await pool.complete(request(1))
        await asyncio.sleep(0.05)
    with pytest.raises(FatalLLMError, match="all 2 endpoints failed 3 times"):
        await pool.complete(request(1))


async def test_check_leaves_out_a_failing_endpoint_and_fails_only_when_all_fail() -> None:
    class Checked(Counting):
        def __init__(self, ok: bool) -> None:
            super().__init__()
            self.ok = ok

        async def check(self) -> None:
            if not self.ok:
                raise FatalLLMError("cannot reach it")

    pool = pool_of(Checked(False), Checked(True), base_cooldown=30.0)
    await pool.check()
    assert (await pool.complete(request(1))).endpoint == "http://e1/v1"
    with pytest.raises(FatalLLMError, match="no endpoint of the pool answered"):
        await pool_of(Checked(False), Checked(False)).check()


def test_run_over_a_pool_with_one_dead_endpoint_gives_the_same_data(tmp_path: Path) -> None:
    cfg = make_config()
    _, _, _ = run_fake(tmp_path / "one", cfg)
    pool = pool_of(Counting(fail=lambda n: refused(n) if n > 5 else None), Counting(), Counting(), base_cooldown=60.0)
    ctx, _, _ = run_fake(tmp_path / "pool", cfg, backend=pool)
    one = RunStore.open(tmp_path / "one")
    assert records(ctx.store) == records(one)
    per_endpoint = ctx.store.calls.usage_by_endpoint()
    assert set(per_endpoint) == {"http://e0/v1", "http://e1/v1", "http://e2/v1"}
    assert sum(e["calls"] for e in per_endpoint.values()) == sum(
        s["calls"] for s in ctx.store.calls.usage_by_stage().values()
    )


# --------------------------------------------------------------------------- real HTTP: discovery per endpoint


async def test_structured_output_is_discovered_per_endpoint() -> None:
    with FakeServer() as vllm_like, FakeServer() as llama_like:
        vllm_like.responder = lambda body: chat_reply('{"items": ["a", "b"]}')
        llama_like.responder = llama_cpp_like
        cfg = LLMConfig.model_validate(
            {
                "backend": "openai",
                "model": "fake-model",
                "endpoints": [
                    {"base_url": vllm_like.url, "max_concurrency": 1},
                    {"base_url": llama_like.url, "max_concurrency": 1},
                ],
            }
        )
        pool = backend_from_config(cfg)
        assert isinstance(pool, EndpointPool)
        structured = [CompletionRequest.chat(f"two items {i}", json_schema=SCHEMA) for i in range(6)]
        replies = await asyncio.gather(*(pool.complete(r) for r in structured))
        await pool.aclose()
    assert {r.text for r in replies} == {'{"items": ["a", "b"]}'}
    modes = {m.name: m.backend.structured_mode for m in pool.members}  # type: ignore[attr-defined]
    assert modes == {pool.members[0].name: "json_schema", pool.members[1].name: "json_object"}


async def test_each_endpoint_starts_from_the_mode_an_earlier_process_found(tmp_path: Path) -> None:
    memory = CallLog.open(tmp_path / "calls.db")
    formats: list[str | None] = []

    def llama_recorded(body: dict[str, Any]) -> Any:
        formats.append((body.get("response_format") or {}).get("type"))
        return llama_cpp_like(body)

    with FakeServer() as vllm_like, FakeServer() as llama_like:
        vllm_like.responder = lambda body: chat_reply('{"items": ["a", "b"]}')
        llama_like.responder = llama_recorded
        cfg = LLMConfig.model_validate(
            {
                "backend": "openai",
                "model": "fake-model",
                "endpoints": [{"base_url": vllm_like.url}, {"base_url": llama_like.url}],
            }
        )
        for process in range(2):  # the same pool in two processes, one after the other
            pool = backend_from_config(cfg)
            assert isinstance(pool, EndpointPool)
            pool.remember_modes(memory)
            seen = len(formats)
            requests = [CompletionRequest.chat(f"two items {process} {i}", json_schema=SCHEMA) for i in range(6)]
            await asyncio.gather(*(pool.complete(r) for r in requests))
            await pool.aclose()
            assert len(formats) > seen
            assert ("json_schema" in formats[seen:]) == (process == 0)
    modes = {m.name: memory.structured_mode(m.name, "fake-model") for m in pool.members}
    assert modes == {pool.members[0].name: "json_schema", pool.members[1].name: "json_object"}


async def test_connection_refused_endpoint_over_http_fails_over() -> None:
    with FakeServer() as alive:
        cfg = LLMConfig.model_validate(
            {
                "backend": "openai",
                "model": "fake-model",
                "endpoints": [{"base_url": f"http://127.0.0.1:{free_port()}/v1"}, {"base_url": alive.url}],
            }
        )
        pool = backend_from_config(cfg)
        replies = [await pool.complete(CompletionRequest.chat(f"hi {i}")) for i in range(3)]
        await pool.aclose()
    assert {r.endpoint for r in replies} == {pool.members[1].name}  # type: ignore[attr-defined]


def test_pool_model_id_equals_a_single_endpoints_so_the_cache_is_shared() -> None:
    single = OpenAICompatLLM("http://127.0.0.1:1/v1", "m")
    cfg = LLMConfig.model_validate(
        {"backend": "openai", "model": "m", "endpoints": [{"base_url": "http://a:1/v1"}, {"base_url": "http://b:1/v1"}]}
    )
    assert backend_from_config(cfg).model_id == single.model_id
    request_ = CompletionRequest.chat("same")
    assert request_.key(backend_from_config(cfg).model_id) == request_.key(single.model_id)


def test_endpoint_urls_in_the_log_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_KEY", "sk-secret-123")
    cfg = LLMConfig.model_validate(
        {
            "backend": "openai",
            "model": "m",
            "endpoints": [{"base_url": "https://a.example:8443/v1/", "api_key_env": "POOL_KEY"}],
        }
    )
    pool = backend_from_config(cfg)
    assert pool.members[0].name == "https://a.example:8443/v1/"  # type: ignore[attr-defined]
    assert "sk-secret" not in repr(pool)


# --------------------------------------------------------------------------- call log


def test_old_call_log_gains_the_endpoint_column(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute(
        "CREATE TABLE llm_calls (id INTEGER PRIMARY KEY, key TEXT NOT NULL, stage TEXT NOT NULL, model TEXT NOT NULL,"
        " request TEXT NOT NULL, response TEXT, finish_reason TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0,"
        " completion_tokens INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 1, status TEXT NOT NULL,"
        " error TEXT, seconds REAL, created_at REAL NOT NULL)"
    )
    conn.commit()
    conn.close()
    log = CallLog.open(tmp_path / "old.db")
    log.record(
        key="k",
        stage="s",
        model="m",
        request=request(1),
        completion=Completion("x", Usage(1, 1), "stop", endpoint="http://e0/v1"),
        attempts=1,
        seconds=0.5,
        endpoint="http://e0/v1",
    )
    log.conn.commit()
    assert log.usage_by_endpoint() == {"http://e0/v1": {"calls": 1, "failed": 0, "mean_seconds": 0.5}}


def test_stats_shows_calls_per_endpoint(tmp_path: Path) -> None:
    pool = pool_of(Counting(), Counting())
    ctx, _, _ = run_fake(tmp_path / "run", make_config(), backend=pool)
    ctx.store.close()
    out = io.StringIO()  # the stats table goes to stdout
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(out):
        assert main(["stats", "-r", str(tmp_path / "run")]) == 0
    lines = [line for line in out.getvalue().splitlines() if "endpoint: http://e" in line]
    assert len(lines) == 2 and all(" ok, 0 failed; " in line for line in lines), out.getvalue()


# --------------------------------------------------------------------------- config


ENDPOINTS = [{"base_url": "http://127.0.0.1:9/v1"}, {"base_url": "http://127.0.0.1:10/v1", "max_concurrency": 4}]


def config_with(llm: dict[str, Any]) -> dict[str, Any]:
    return merge(BASE, {"llm": {"backend": "openai", "model": "m", **llm}})


def test_concurrency_is_the_sum_of_endpoint_limits_unless_capped_lower() -> None:
    uncapped = config_with({"endpoints": ENDPOINTS})
    del uncapped["llm"]["max_concurrency"]
    cfg = build_config(uncapped, "t")
    assert cfg.llm.total_concurrency() == 12
    # BASE sets max_concurrency 4: an explicit value caps the sum.
    capped = build_config(merge(BASE, {"llm": {"backend": "openai", "model": "m", "endpoints": ENDPOINTS}}), "t")
    assert capped.llm.total_concurrency() == 4
    # The resolved config (what config.yaml keeps) gives the same number again on resume.
    again = build_config(yaml.safe_load(cfg.to_yaml()), "t")
    assert again.llm.total_concurrency() == 12


@pytest.mark.parametrize(
    ("llm", "message"),
    [
        ({"endpoints": []}, "'endpoints' is empty"),
        ({"endpoints": ENDPOINTS, "base_url": "http://127.0.0.1:8/v1"}, "either 'base_url' or 'endpoints'"),
        ({"endpoints": [*ENDPOINTS, {"base_url": "http://127.0.0.1:9/v1/"}]}, "endpoints[2] repeats a base_url"),
        ({"endpoints": [{"base_url": "http://127.0.0.1:9/v1", "model": "other"}]}, "must serve llm.model 'm'"),
        ({"endpoints": [{"base_url": "http://u:p@127.0.0.1:9/v1"}]}, "must not carry credentials"),
        ({"endpoints": [{"base_url": "http://127.0.0.1:9/v1", "api_key_env": "sk-abc"}]}, "NAME of an environment"),
        ({"backend": "local", "endpoints": ENDPOINTS}, "'endpoints' needs backend 'openai'"),
        ({"budget": {"max_cost": 5.0}}, "budget.max_cost needs 'pricing'"),
        ({"budget": {"max_cost": 5.0, "max_tokens": 10}, "pricing": {}}, "exactly one of 'max_cost' or 'max_tokens'"),
    ],
)
def test_bad_endpoint_and_cost_config_is_one_line_exit_2(tmp_path: Path, llm: dict[str, Any], message: str) -> None:
    data = config_with({"max_concurrency": 8} | llm)
    data["llm"].pop("max_concurrency")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_config(data, "bad.yaml")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", str(path), "-r", str(tmp_path / "run")])
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err.getvalue(), err.getvalue()
    assert not (tmp_path / "run").exists()
    assert "sk-abc" not in err.getvalue() and "u:p@" not in err.getvalue()


def test_run_dir_config_holds_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POOL_KEY", "sk-secret-456")
    cfg = build_config(
        config_with({"endpoints": [{"base_url": "http://127.0.0.1:9/v1", "api_key_env": "POOL_KEY"}]}), "t"
    )
    run_fake(tmp_path / "run", cfg, backend=pool_of(Counting()))
    assert "sk-secret" not in (tmp_path / "run" / "config.yaml").read_text()
    assert json.dumps(cfg.model_dump()).count("POOL_KEY") == 1


def test_batch_mode_with_endpoints_is_refused(tmp_path, capsys):
    from explore_instruct.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "root: {name: Rewriting}\n"
        "llm:\n  backend: openai\n  model: m\n  batch: {enabled: true}\n"
        "  endpoints:\n    - {base_url: 'http://127.0.0.1:9/v1'}\n",
        encoding="utf-8",
    )
    assert main(["run", str(cfg), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "batch mode submits to one server" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
