"""One set of call rules (issue 17): online and batch calls go through the client's retry, reseed,
truncation, parsing and call-log rules, so a rule changed in `client.py` changes both paths; and no
caller probes a backend for what it can do (the protocol's `capabilities` say it)."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from explore_instruct.llm import client as client_module
from explore_instruct.llm.base import Backend, Capabilities, Completion, CompletionRequest, ErrorKind, Usage
from explore_instruct.llm.client import LLMClient, RetryPolicy
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.runstore import CallLog
from tests.batch_api import FakeOpenAI, chat_completion
from tests.test_batch import KEY_ENV, SECRET, data_of, llm, run

SRC = Path(__file__).resolve().parents[1] / "src" / "explore_instruct"

# Log columns that must not depend on the transport (not `seconds`: the time differs).
LOG_COLUMNS = (
    "key, stage, status, attempts, retry_reasons, error_kind, response, finish_reason, prompt_tokens,"
    " completion_tokens, endpoint"
)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(KEY_ENV, SECRET)
    with FakeOpenAI() as server:
        yield server


def faulty_first_replies(body: dict[str, Any], seen: set[str]) -> tuple[int, dict[str, Any]] | None:
    """Some enrichment requests go wrong the first time they are sent: cut at max_tokens, not the records
    asked for, or HTTP 500. Which ones, and how, is a function of the body (prompt and seed), so it does
    not depend on the order requests arrive in; the same body sent again is answered normally."""
    if (body.get("response_format") or {}).get("json_schema", {}).get("name") != "examples":
        return None
    sent = json.dumps([body["messages"], body.get("seed")])
    if sent in seen:
        return None
    seen.add(sent)
    kind = int(hashlib.sha256(sent.encode()).hexdigest(), 16) % 6
    reply = chat_completion(body)
    if kind == 0:
        reply["choices"][0]["finish_reason"] = "length"
        return 200, reply
    if kind == 1:
        reply["choices"][0]["message"]["content"] = "no records here"
        return 200, reply
    if kind == 2:
        return 500, {"error": {"message": "overloaded"}}
    return None


def call_log(run_dir: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(run_dir / "run.db") as conn:
        return conn.execute(f"SELECT {LOG_COLUMNS} FROM llm_calls ORDER BY key, id").fetchall()


def online_and_batch(tmp_path: Path, fake: FakeOpenAI) -> tuple[Path, Path]:
    for name, section in (("online", llm(fake)), ("batch", llm(fake, provider="openai"))):
        seen: set[str] = set()
        fake.script = lambda body, seen=seen: faulty_first_replies(body, seen)
        run(tmp_path / name, fake, llm=section)
    return tmp_path / "online", tmp_path / "batch"


def test_the_same_faulty_replies_give_the_same_log_and_data_online_and_in_batches(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    online, batch = online_and_batch(tmp_path, fake)
    assert fake.submissions >= 2  # the first batch, then the retried attempts in later ones
    rows = call_log(online)
    reasons = {reason for r in rows if r[4] for reason in json.loads(r[4])}
    assert reasons == {"truncated", "unparseable", "5xx"}  # every kind of fault happened
    assert call_log(batch) == rows
    assert data_of(batch) == data_of(online)


@pytest.mark.parametrize("rule", ["reseed step", "truncation resends the same request"])
def test_a_rule_changed_in_the_client_changes_both_transports(
    tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch, rule: str
) -> None:
    if rule == "reseed step":
        monkeypatch.setattr(client_module, "RESEED_STEP", 101)
    else:
        rules = client_module.fault_kind
        monkeypatch.setattr(
            client_module, "fault_kind", lambda r: ErrorKind.TRANSPORT if r == "truncated" else rules(r)
        )
    online, batch = online_and_batch(tmp_path, fake)
    assert call_log(batch) == call_log(online)
    assert data_of(batch) == data_of(online)
    seeds = {
        json.loads(line)["body"]["seed"] - json.loads(first)["body"]["seed"]
        for first, line in _first_and_second_lines(batch)
    }
    # The second attempt of an unusable reply moves the seed by the client's step; a 500 keeps it. A
    # truncated reply counted as a transport fault keeps its seed too.
    assert seeds == ({0, 101} if rule == "reseed step" else {0, client_module.RESEED_STEP})


def _first_and_second_lines(run_dir: Path) -> list[tuple[str, str]]:
    lines = [x for p in sorted((run_dir / "batches").glob("*.input.jsonl")) for x in p.read_text().splitlines()]
    by_id = {json.loads(x)["custom_id"]: x for x in lines}
    return [(by_id[cid[:-2] + "-1"], line) for cid, line in by_id.items() if cid.endswith("-2")]


# ------------------------------------------------------------------------------ truncation asked per call


async def test_keep_truncated_is_the_callers_choice(tmp_path: Path) -> None:
    cut = Completion("half an answ", Usage(3, 4), "length")
    backend = ScriptedLLM([cut, cut, Completion("whole", Usage(3, 1), "stop")])
    client = LLMClient(backend, CallLog.open(tmp_path / "c.sqlite"), retry=RetryPolicy(retries=2, base_delay=0))
    kept = await client.call(CompletionRequest.chat("a"), stage="t", parse=lambda c: c.text, keep_truncated=True)
    assert (kept.value, kept.completion and kept.completion.finish_reason) == ("half an answ", "length")
    retried = await client.call(CompletionRequest.chat("b", seed=1), stage="t", parse=lambda c: c.text)
    assert retried.value == "whole" and [r.seed for r in backend.requests[1:]] == [1, 1 + client_module.RESEED_STEP]
    client.log.conn.close()


# ------------------------------------------------------------------------------ capabilities, no probing


def test_no_module_probes_a_backend() -> None:
    probes = re.compile(
        r"getattr\([^)]*[\"'](check|remember_modes|structured_output|chat_body|sdk)[\"']"
        r"|isinstance\([^)]*\b(LLM|Backend|OpenAICompatLLM|LocalLLM|EndpointPool|ScriptedLLM)\)"
    )
    found = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if probes.search(line)
    ]
    assert found == []


def test_a_backend_has_every_method_callers_need(tmp_path: Path) -> None:
    class Minimal(Backend):
        model_id = "minimal"

    backend = Minimal()
    assert backend.capabilities == Capabilities()
    backend.remember_modes(CallLog.open(tmp_path / "c.sqlite"))  # nothing to remember: no error


def test_the_run_checks_a_backend_that_declares_a_check(tmp_path: Path) -> None:
    from explore_instruct.errors import RunStopped
    from explore_instruct.llm.base import FatalLLMError
    from explore_instruct.pipeline import run_stages
    from tests.fakes import fake_model
    from tests.helpers import make_config

    class Unreachable(ScriptedLLM):
        async def check(self) -> None:
            raise FatalLLMError("cannot reach the test server")

    with pytest.raises(RunStopped, match="cannot reach the test server"):
        run_stages(make_config(), tmp_path / "r", backend=Unreachable(fake_model))
