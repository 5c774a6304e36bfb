"""The real embedded model: in-process (LocalLLM) and behind `python -m llama_cpp.server` (OpenAICompatLLM).

Replies are short (small max_tokens) so the whole module runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from explore_instruct.llm.base import CompletionRequest
from explore_instruct.llm.local import LocalLLM
from explore_instruct.llm.openai_compat import OpenAICompatLLM
from tests.llm_server import LlamaServer

pytestmark = pytest.mark.integration

# Three short names: the counts come from minItems/maxItems, the short strings keep replies cheap.
THREE_NAMES = {
    "type": "object",
    "properties": {
        "names": {
            "type": "array",
            "items": {"type": "string", "maxLength": 12},
            "minItems": 3,
            "maxItems": 3,
        }
    },
    "required": ["names"],
}


def three_names_request(seed: int) -> CompletionRequest:
    return CompletionRequest.chat(
        'Name three fruits. Answer in JSON like {"names": ["...", "...", "..."]}.',
        json_schema=THREE_NAMES,
        schema_name="three_names",
        temperature=0.2,
        max_tokens=48,
        seed=seed,
    )


def check_three_names(text: str) -> list[str]:
    data = json.loads(text)
    assert set(data) == {"names"}
    assert len(data["names"]) == 3
    assert all(isinstance(n, str) and len(n) <= 12 for n in data["names"])
    return data["names"]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    with LlamaServer.start_or_skip(n_ctx=2048) as server:
        yield server


@pytest.fixture
async def local_llm() -> AsyncIterator[LocalLLM]:
    llm = LocalLLM(n_ctx=1024)
    yield llm
    await llm.aclose()


async def test_local_llm_grammar_constrained_json(local_llm: LocalLLM) -> None:
    start = time.monotonic()
    out = await local_llm.complete(three_names_request(seed=1))
    elapsed = time.monotonic() - start
    check_three_names(out.text)
    assert out.finish_reason == "stop"
    assert out.usage.prompt_tokens > 0 and out.usage.completion_tokens > 0
    assert local_llm.model_id == "local:SmolLM2-135M-Instruct.Q4_1"
    print(f"local: first call (load + generate) {elapsed:.2f}s, {out.usage.completion_tokens} tokens")


async def test_local_llm_same_seed_same_reply(local_llm: LocalLLM) -> None:
    a = await local_llm.complete(three_names_request(seed=7))
    b = await local_llm.complete(three_names_request(seed=7))
    assert a.text == b.text


async def test_openai_backend_discovers_json_object_on_llama_cpp_server(llama_server: LlamaServer) -> None:
    llm = OpenAICompatLLM(llama_server.base_url, llama_server.model, structured_output="auto")
    try:
        await llm.check()
        start = time.monotonic()
        first = await llm.complete(three_names_request(seed=3))
        elapsed = time.monotonic() - start
        check_three_names(first.text)
        # llama_cpp.server answers HTTP 500 to json_schema and takes json_object + schema.
        assert llm.structured_mode == "json_object"
        second = await llm.complete(three_names_request(seed=4))
        check_three_names(second.text)
        assert second.usage.completion_tokens > 0
    finally:
        await llm.aclose()
    print(f"server: startup {llama_server.startup_seconds:.2f}s, first call incl. discovery {elapsed:.2f}s")


async def test_openai_backend_plain_text_on_llama_cpp_server(llama_server: LlamaServer) -> None:
    llm = OpenAICompatLLM(llama_server.base_url, llama_server.model)
    try:
        out = await llm.complete(CompletionRequest.chat("Say hello.", max_tokens=8, temperature=0.0, seed=1))
    finally:
        await llm.aclose()
    assert out.text.strip()
    assert out.finish_reason in ("stop", "length")
