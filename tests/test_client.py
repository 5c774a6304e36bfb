import asyncio

import pytest

from explore_instruct.llm.base import (
    Backend,
    Completion,
    CompletionRequest,
    FatalLLMError,
    ParseError,
    RetryReason,
    TransientLLMError,
    Usage,
)
from explore_instruct.llm.client import LLMClient, RetryPolicy
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.runstore import CallLog

FAST = RetryPolicy(retries=3, base_delay=0.0, max_delay=0.0)


def strict_int(c: Completion) -> int:
    try:
        return int(c.text)
    except ValueError:
        raise ParseError("not an int") from None


@pytest.fixture
def log(tmp_path):
    return CallLog.open(tmp_path / "calls.db")


def req(text="hi", **kw):
    return CompletionRequest.chat(text, seed=1, **kw)


async def test_retries_then_succeeds_and_logs_once(log):
    backend = ScriptedLLM([TransientLLMError("503"), "not a number", Completion("1", Usage(1, 1), "length"), "42"])
    client = LLMClient(backend, log, retry=FAST)
    result = await client.call(req(), stage="t", parse=strict_int)
    assert result.value == 42 and not result.cached
    assert len(backend.requests) == 4
    # a transport fault resends the identical request; an unusable reply asks with another seed
    seeds = [r.seed for r in backend.requests]
    assert backend.requests[1] == backend.requests[0]
    assert seeds[1] < seeds[2] < seeds[3]
    assert client.stats.stage("t").retries == 3
    rows = log.conn.execute("SELECT status, attempts, retry_reasons FROM llm_calls").fetchall()
    assert [tuple(r) for r in rows] == [("ok", 4, '{"5xx": 1, "truncated": 1, "unparseable": 1}')]


async def test_cache_hit_sends_nothing(log):
    backend = ScriptedLLM(lambda r: "7")
    client = LLMClient(backend, log, retry=FAST)
    await client.call(req(), stage="t", parse=strict_int)
    again = await client.call(req(), stage="t", parse=strict_int)
    assert again.cached and again.value == 7
    assert len(backend.requests) == 1
    assert client.stats.stage("t").cache_hits == 1


async def test_exhausted_retries_record_failure_and_go_on(log):
    backend = ScriptedLLM(lambda r: TransientLLMError("500 Internal"))
    client = LLMClient(backend, log, retry=FAST)
    result = await client.call(req(), stage="t", parse=strict_int)
    assert result.failed and "500" in result.error
    assert log.usage_by_stage()["t"]["failed"] == 1
    # a failed call is not cached: the next attempt asks again
    await client.call(req(), stage="t", parse=strict_int)
    assert len(backend.requests) == 8


async def test_retry_after_is_honoured(log, monkeypatch):
    slept = []

    async def fake_sleep(seconds):
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    backend = ScriptedLLM([TransientLLMError("429", retry_after=3.5), "1"])
    client = LLMClient(backend, log, retry=RetryPolicy(retries=2, base_delay=100))
    await client.call(req(), stage="t", parse=strict_int)
    assert slept == [3.5]


async def test_fatal_error_propagates(log):
    client = LLMClient(ScriptedLLM([FatalLLMError("cannot reach http://x")]), log, retry=FAST)
    with pytest.raises(FatalLLMError):
        await client.call(req(), stage="t", parse=strict_int)


async def test_commit_is_atomic_with_call_row(log):
    client = LLMClient(ScriptedLLM(lambda r: "5"), log, retry=FAST)
    log.conn.execute("CREATE TABLE things (v INTEGER)")

    def bad_commit(value, call_id):
        log.conn.execute("INSERT INTO things VALUES (?)", (value,))
        raise RuntimeError("crash while writing records")

    with pytest.raises(RuntimeError):
        await client.call(req(), stage="t", parse=strict_int, commit=bad_commit)
    assert log.conn.execute("SELECT COUNT(*) FROM llm_calls").fetchone()[0] == 0
    assert log.conn.execute("SELECT COUNT(*) FROM things").fetchone()[0] == 0


async def test_concurrency_is_bounded(log):
    in_flight = peak = 0

    class Slow(Backend):
        model_id = "slow"

        async def complete(self, request):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return Completion("1")

        async def aclose(self):
            pass

    client = LLMClient(Slow(), log, max_concurrency=3, retry=FAST)
    await asyncio.gather(*(client.call(req(str(i)), stage="t", parse=strict_int) for i in range(12)))
    assert peak == 3


def test_request_key_covers_every_field():
    base = req()
    assert base.key("m") == req().key("m")
    assert base.key("m") != base.key("other-model")
    assert base.key("m") != req(temperature=0.5).key("m")
    assert base.key("m") != CompletionRequest.chat("hi", seed=2).key("m")


async def test_identical_concurrent_calls_send_once_and_both_commit(log):
    backend = ScriptedLLM(lambda r: "5", latency=0.02)
    client = LLMClient(backend, log, retry=FAST)
    committed = []

    def commit(value, call_id):
        committed.append((value, call_id))

    first, second = await asyncio.gather(
        client.call(req(), stage="t", parse=strict_int, commit=commit),
        client.call(req(), stage="t", parse=strict_int, commit=commit),
    )
    assert first.value == second.value == 5
    assert len(backend.requests) == 1
    assert committed == [(5, first.call_id), (5, first.call_id)]
    assert log.conn.execute("SELECT COUNT(*) FROM llm_calls").fetchone()[0] == 1


async def test_identical_concurrent_calls_share_a_failure(log):
    backend = ScriptedLLM(lambda r: TransientLLMError("HTTP 502"), latency=0.01)
    client = LLMClient(backend, log, retry=FAST)
    results = await asyncio.gather(*(client.call(req(), stage="t", parse=strict_int) for _ in range(3)))
    assert all(r.failed and r.error_kind == "transport" for r in results)
    assert len(backend.requests) == FAST.retries + 1  # one call's attempts, not three
    assert log.conn.execute("SELECT COUNT(*) FROM llm_calls").fetchone()[0] == 1


async def test_transport_faults_resend_the_identical_request(log):
    faults = [
        TransientLLMError("429", reason=RetryReason.RATE_LIMITED),
        TransientLLMError("503", reason=RetryReason.SERVER_ERROR),
        TransientLLMError("timed out", reason=RetryReason.TIMEOUT),
        TransientLLMError("malformed body", reason=RetryReason.BAD_BODY),
    ]
    backend = ScriptedLLM([*faults, "3"])
    client = LLMClient(backend, log, retry=RetryPolicy(retries=4, base_delay=0.0, max_delay=0.0))
    result = await client.call(req(), stage="t", parse=strict_int)
    assert result.value == 3
    assert len(set(backend.requests)) == 1 and len(backend.requests) == 5
    assert log.usage_by_stage()["t"]["retry_reasons"] == {"429": 1, "5xx": 1, "bad_body": 1, "timeout": 1}
    assert log.usage_by_stage()["t"]["attempts"] == 5


@pytest.mark.parametrize(
    ("replies", "kind"),
    [
        (["x", "y"], "unparseable"),
        ([Completion("1", Usage(1, 1), "length")] * 2, "truncated"),
        ([TransientLLMError("500")] * 2, "transport"),
    ],
)
async def test_failed_calls_carry_a_typed_error_kind(log, replies, kind):
    client = LLMClient(ScriptedLLM(replies), log, retry=RetryPolicy(retries=1, base_delay=0.0, max_delay=0.0))
    result = await client.call(req(), stage="t", parse=strict_int)
    assert result.failed and result.error_kind == kind
    assert log.conn.execute("SELECT error_kind FROM llm_calls").fetchone()[0] == kind


async def test_timeouts_halve_concurrency_once_per_burst_then_it_grows_back(log):
    in_flight = peak_after_burst = 0
    timeouts_left = 8

    class SlowServer(Backend):
        model_id = "slow"

        async def complete(self, request):
            nonlocal in_flight, peak_after_burst, timeouts_left
            in_flight += 1
            try:
                await asyncio.sleep(0.01)
                if timeouts_left:
                    timeouts_left -= 1
                    raise TransientLLMError("timed out", reason=RetryReason.TIMEOUT)
                peak_after_burst = max(peak_after_burst, in_flight)
                return Completion("1", Usage(1, 1), "stop")
            finally:
                in_flight -= 1

        async def aclose(self):
            pass

    client = LLMClient(SlowServer(), log, max_concurrency=8, retry=FAST)
    await asyncio.gather(*(client.call(req(f"q{i}"), stage="t", parse=strict_int) for i in range(8)))
    # eight timeouts of calls sent together halve the limit once, not eight times
    assert client.limit.lowest == 4 and peak_after_burst <= 4
    await asyncio.gather(*(client.call(req(f"more{i}"), stage="t", parse=strict_int) for i in range(40)))
    assert client.limit.limit == 8


def test_old_call_log_gains_the_new_columns(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE llm_calls (id INTEGER PRIMARY KEY, key TEXT NOT NULL, stage TEXT NOT NULL, model TEXT NOT NULL,"
        " request TEXT NOT NULL, response TEXT, finish_reason TEXT, prompt_tokens INTEGER NOT NULL DEFAULT 0,"
        " completion_tokens INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 1, status TEXT NOT NULL,"
        " error TEXT, seconds REAL, created_at REAL NOT NULL)"
    )
    conn.execute(
        "INSERT INTO llm_calls (key, stage, model, request, attempts, status, created_at)"
        " VALUES ('k', 'explore', 'm', '{}', 3, 'ok', 0)"
    )
    conn.commit()
    conn.close()
    usage = CallLog.open(path).usage_by_stage()
    assert usage["explore"]["attempts"] == 3 and usage["explore"]["retry_reasons"] == {}


async def test_two_clients_on_one_cache_file_store_one_reply(tmp_path):
    # Two processes (here: two clients with their own connections) may both miss the cache and both be
    # answered; the second reply must not crash on the unique index, and the first stays cached.
    path = tmp_path / "shared.db"
    first = LLMClient(ScriptedLLM(["1"], latency=0.05), CallLog.open(path), retry=FAST)
    second = LLMClient(ScriptedLLM(["2"], latency=0.05), CallLog.open(path), retry=FAST)
    a, b = await asyncio.gather(
        first.call(req(), stage="t", parse=strict_int), second.call(req(), stage="t", parse=strict_int)
    )
    assert not a.failed and not b.failed
    assert a.call_id == b.call_id
    again = await LLMClient(ScriptedLLM([]), CallLog.open(path), retry=FAST).call(req(), stage="t", parse=strict_int)
    assert again.cached and again.value in (1, 2) and again.call_id == a.call_id
