"""The endpoint start check names the model a server reports when it differs from --model (a warning,
not a failure), both on its own and before `answer` / `judge` spend anything."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI

from explore_instruct.evaluate.answer import SamplingSettings
from explore_instruct.evaluate.stages import EndpointSettings, answer_file
from explore_instruct.llm.openai_compat import OpenAICompatLLM, served_model_note

URL = "http://127.0.0.1:8000/v1"
LOADED = "smollm2-135m.gguf"


def lenient_server(listed: list[str] | None, served: str = LOADED) -> tuple[Callable, list[dict]]:
    """A server like llama.cpp's: lists `listed` (None: no /models route) and answers any model name."""
    chats: list[dict] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            if listed is None:
                return httpx.Response(404, json={"error": {"message": "not found"}})
            return httpx.Response(200, json={"object": "list", "data": [{"id": m, "object": "model"} for m in listed]})
        chats.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "id": "c1",
                "object": "chat.completion",
                "created": 0,
                "model": served,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            },
        )

    return handle, chats


def backend(model: str, handler: Callable) -> OpenAICompatLLM:
    llm = OpenAICompatLLM(URL, model, structured_output="text")
    llm._client = AsyncOpenAI(  # the same SDK client, over an in-process transport
        base_url=URL,
        api_key="not-needed",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)),
    )
    return llm


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_unlisted_name_that_a_lenient_server_answers_warns(caplog: pytest.LogCaptureFixture) -> None:
    handler, chats = lenient_server([LOADED])
    llm = backend("gpt-4o-typo", handler)
    with caplog.at_level(logging.WARNING):
        await llm.check()  # passes: the server does answer
    await llm.aclose()
    assert len(chats) == 1
    (line,) = warnings_in(caplog)
    assert f"does not list model 'gpt-4o-typo' (it lists '{LOADED}')" in line and "check the model name given" in line


async def test_listed_name_is_silent_and_costs_no_completion(caplog: pytest.LogCaptureFixture) -> None:
    handler, chats = lenient_server([LOADED])
    llm = backend(LOADED, handler)
    with caplog.at_level(logging.WARNING):
        await llm.check()
    await llm.aclose()
    assert chats == [] and warnings_in(caplog) == []


async def test_no_listing_but_reply_names_another_model_warns(caplog: pytest.LogCaptureFixture) -> None:
    handler, _ = lenient_server(None)
    llm = backend("mymodel", handler)
    with caplog.at_level(logging.WARNING):
        await llm.check()
    await llm.aclose()
    (line,) = warnings_in(caplog)
    assert f"answered a request for model 'mymodel' as model '{LOADED}'" in line


def test_note_wording_edges() -> None:
    assert served_model_note(URL, "gpt-4o", None, "gpt-4o-2024-08-06") is None  # a dated snapshot agrees
    assert served_model_note(URL, "m", None, "m") is None
    assert served_model_note(URL, "m", [], None) is None
    many = served_model_note(URL, "x", [f"m{i}" for i in range(8)], "other")
    assert many is not None and "and 3 more" in many and "the reply came from 'other'" in many


def test_answer_checks_the_endpoint_first(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": "a", "question": "Say hi."}) + "\n", encoding="utf-8")
    handler, chats = lenient_server([LOADED])
    with caplog.at_level(logging.WARNING):
        answer_file(
            questions,
            tmp_path / "a.jsonl",
            SamplingSettings(prompt_format="plain"),
            backend=backend("wrong-name", handler),
            endpoint=EndpointSettings(retries=0),
        )
    assert len(chats) == 2  # the start check's probe, then the answer
    assert chats[0]["max_tokens"] == 1
    assert any("does not list model 'wrong-name'" in w for w in warnings_in(caplog))
