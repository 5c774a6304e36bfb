import asyncio

import pytest

from explore_instruct.llm.base import Completion, CompletionRequest, FatalLLMError, ParseError, TransientLLMError, Usage
from explore_instruct.llm.cache import CallLog
from explore_instruct.llm.client import LLMClient, RetryPolicy
from explore_instruct.llm.scripted import ScriptedLLM

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
    # retries vary the seed so a seeded backend does not repeat a bad reply
    assert len({r.seed for r in backend.requests}) == 4
    assert client.stats.stage("t").retries == 3
    rows = log.conn.execute("SELECT status, attempts FROM llm_calls").fetchall()
    assert [tuple(r) for r in rows] == [("ok", 4)]


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

    class Slow:
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
