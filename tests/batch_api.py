"""A fake OpenAI server on 127.0.0.1 for batch-mode tests: chat completions and the Batch API.

Replies come from the deterministic fake model (`tests/fakes.py`), so a request answered online and
the same request answered in a batch get the same text. It serves

    GET  /v1/models                      POST /v1/chat/completions     POST /v1/embeddings
    POST /v1/files (multipart upload)    GET  /v1/files/{id}/content
    POST /v1/batches                     GET  /v1/batches/{id}     GET /v1/batches (list)

A batch stays `in_progress` until `release()` is called (or at once with `hold=False`), then
completes with one output line per input line; `line_fault(custom_id)` may turn a line into an
error-file line instead, `expire_after=n` ends the next batch `expired` after n lines, and
`fail_next` fails the next batch as a whole. `script(body)` may answer a chat body, online or in a
batch line alike, with its own (status, reply body) instead of the fake model's. `refuse_json_schema`
answers HTTP 500 to a chat request asking for `json_schema`, as llama.cpp's server does; `formats`
lists each chat request's format.
`vllm_run_batch` does what `vllm run-batch -i IN -o OUT` does, with the same fake model.
"""

from __future__ import annotations

import email.parser
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from explore_instruct.llm.base import CompletionRequest
from explore_instruct.llm.embeddings import HashEmbedder
from tests.fakes import fake_model

MODEL = "fake-model"


def request_from_body(body: dict[str, Any]) -> CompletionRequest:
    """The CompletionRequest a chat body was made from (what the fake model's reply depends on)."""
    return CompletionRequest.from_chat_body(body)


def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    request = request_from_body(body)
    text = fake_model(request)
    prompt_tokens = sum(len(m.content.split()) for m in request.messages)
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        },
    }


def embeddings_reply(body: dict[str, Any]) -> dict[str, Any]:
    """A /v1/embeddings answer with the hash embedder's vectors, listed in reverse (servers may reorder)."""
    texts = body["input"]
    vectors = HashEmbedder().vector
    data = [{"object": "embedding", "index": i, "embedding": vectors(t).tolist()} for i, t in enumerate(texts)]
    tokens = sum(len(t.split()) for t in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data[::-1], "model": body["model"], "usage": usage}


def output_line(line: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"batch_req_{line['custom_id']}",
        "custom_id": line["custom_id"],
        "response": {"status_code": 200, "request_id": "req", "body": chat_completion(line["body"])},
        "error": None,
    }


def vllm_run_batch(input_path: Path, output_path: Path, *, skip: int = 0) -> None:
    """`vllm run-batch -i input -o output` with the fake model (the last `skip` lines left out)."""
    lines = [json.loads(x) for x in input_path.read_text().splitlines() if x.strip()]
    kept = lines[: len(lines) - skip]
    output_path.write_text("".join(json.dumps(output_line(x)) + "\n" for x in kept))


class FakeOpenAI:
    def __init__(self, *, hold: bool = False) -> None:
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.submissions = 0
        self.chat_calls = 0
        self.embedding_inputs: list[list[str]] = []  # the texts of each /v1/embeddings request, in order
        self.headers: list[dict[str, str]] = []
        self.uploads: list[bytes] = []
        self.hold = hold
        self._released = threading.Event()
        self.line_fault: Callable[[str], dict[str, Any] | None] | None = None
        self.script: Callable[[dict[str, Any]], tuple[int, dict[str, Any]] | None] | None = None
        self.expire_after: int | None = None
        self.fail_next = False  # the next batch fails as a whole (as validation failures do)
        self.refuse_json_schema = False
        self.formats: list[str | None] = []  # response_format type of each chat request, in order
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def release(self) -> None:
        self._released.set()

    def submitted_custom_ids(self) -> list[str]:
        """Every custom_id of every batch created, in order (a line sent twice shows up twice)."""
        out = []
        for batch in self.batches.values():
            text = self.files[batch["input_file_id"]].decode()
            out += [json.loads(x)["custom_id"] for x in text.splitlines() if x.strip()]
        return out

    # ------------------------------------------------------------------ the batch's life

    def _advance(self, batch: dict[str, Any]) -> None:
        if batch["status"] != "in_progress" or (self.hold and not self._released.is_set()):
            return
        if self.fail_next:
            self.fail_next = False
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_model", "message": "no such model"}]}
            return
        lines = [json.loads(x) for x in self.files[batch["input_file_id"]].decode().splitlines() if x.strip()]
        out, errors = [], []
        expire_after, self.expire_after = self.expire_after, None
        for n, line in enumerate(lines):
            if expire_after is not None and n >= expire_after:
                error = {"code": "batch_expired", "message": "This request could not be executed before expiry."}
                errors.append({"id": f"e{n}", "custom_id": line["custom_id"], "response": None, "error": error})
                continue
            fault = self.line_fault(line["custom_id"]) if self.line_fault else None
            scripted = self.script(line["body"]) if self.script else None
            if fault is not None:
                errors.append({"id": f"e{n}", "custom_id": line["custom_id"], **fault})
            elif scripted is not None:
                status, body = scripted
                response = {"status_code": status, "request_id": "req", "body": body}
                (out if status == 200 else errors).append(
                    {"id": f"r{n}", "custom_id": line["custom_id"], "response": response, "error": None}
                )
            else:
                out.append(output_line(line))
        batch["status"] = "expired" if expire_after is not None else "completed"
        for kind, rows in (("output_file_id", out), ("error_file_id", errors)):
            if rows:
                file_id = f"file-{len(self.files) + 1}"
                self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[kind] = file_id

    # ------------------------------------------------------------------ HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
                data = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes:
                fake.headers.append(dict(self.headers.items()))
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                self._body()
                path = self.path.split("?")[0]
                with fake.lock:
                    if path == "/v1/models":
                        return self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                    if path == "/v1/batches":
                        data = list(reversed(fake.batches.values()))
                        return self._send(200, {"object": "list", "data": data, "has_more": False})
                    if path.startswith("/v1/batches/"):
                        batch = fake.batches.get(path.rsplit("/", 1)[1])
                        if batch is None:
                            return self._send(404, {"error": {"message": "no such batch"}})
                        fake._advance(batch)
                        return self._send(200, batch)
                    if path.startswith("/v1/files/") and path.endswith("/content"):
                        content = fake.files.get(path.split("/")[3])
                        if content is None:
                            return self._send(404, {"error": {"message": "no such file"}})
                        return self._send(200, None, raw=content)
                self._send(404, {"error": {"message": f"no route {path}"}})

            def do_POST(self) -> None:
                body = self._body()
                path = self.path.split("?")[0]
                with fake.lock:
                    if path == "/v1/chat/completions":
                        fake.chat_calls += 1
                        request = json.loads(body)
                        fake.formats.append((request.get("response_format") or {}).get("type"))
                        if fake.refuse_json_schema and fake.formats[-1] == "json_schema":
                            return self._send(500, {"error": {"message": "Internal Server Error"}})
                        scripted = fake.script(request) if fake.script else None
                        if scripted is not None:
                            return self._send(*scripted)
                        return self._send(200, chat_completion(request))
                    if path == "/v1/embeddings":
                        fake.embedding_inputs.append(json.loads(body)["input"])
                        return self._send(200, embeddings_reply(json.loads(body)))
                    if path == "/v1/files":
                        header = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                        message = email.parser.BytesParser().parsebytes(header + body)
                        parts = {p.get_param("name", header="content-disposition"): p for p in message.get_payload()}
                        content = parts["file"].get_payload(decode=True)
                        file_id = f"file-{len(fake.files) + 1}"
                        fake.files[file_id] = content
                        fake.uploads.append(content)
                        uploaded = {"id": file_id, "object": "file", "bytes": len(content), "created_at": 0}
                        return self._send(200, {**uploaded, "filename": "in.jsonl", "purpose": "batch"})
                    if path == "/v1/batches":
                        spec = json.loads(body)
                        if spec["input_file_id"] not in fake.files:
                            return self._send(400, {"error": {"message": "unknown input file"}})
                        fake.submissions += 1
                        batch_id = f"batch_{fake.submissions}"
                        fake.batches[batch_id] = {
                            "id": batch_id,
                            "object": "batch",
                            "endpoint": spec["endpoint"],
                            "completion_window": spec["completion_window"],
                            "input_file_id": spec["input_file_id"],
                            "metadata": spec.get("metadata"),
                            "status": "in_progress",
                            "created_at": int(time.time()),
                            "output_file_id": None,
                            "error_file_id": None,
                        }
                        return self._send(200, fake.batches[batch_id])
                self._send(404, {"error": {"message": f"no route {path}"}})

        return Handler
