"""Security (issue 8, items 1-4): secrets from the environment, URL credentials, path traversal, exports.

A header-logging fake endpoint on 127.0.0.1 records every request's headers while the real CLI runs
against it, so the tests see exactly what would leave the machine.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from explore_instruct import datafile
from explore_instruct.cli import main
from explore_instruct.config import load_config
from explore_instruct.errors import UserError
from explore_instruct.llm.base import CompletionRequest
from explore_instruct.llm.factory import build_backend
from tests.fakes import fake_model
from tests.helpers import BASE, merge

SECRETS = {
    "OPENAI_API_KEY": "sk-env-secret-0001",
    "OPENAI_ORG_ID": "org-env-secret-0002",
    "OPENAI_PROJECT_ID": "proj-env-secret-0003",
    "OPENAI_ADMIN_KEY": "admin-env-secret-0004",
    # The SDK turns these lines into headers, even ones that replace its own.
    "OPENAI_CUSTOM_HEADERS": "X-Custom: custom-env-secret-0005\nUser-Agent: ua-env-secret-0007\n"
    "X-Stainless-Lang: lang-env-secret-0008\nHost: host-env-secret-0009",
    "MY_ENDPOINT_KEY": "my-endpoint-secret-0006",
}
SECRET_VALUES = [line.split(": ")[-1] for v in SECRETS.values() for line in v.splitlines()]
# Every header a request may carry: what HTTP needs, and Authorization.
ALLOWED = {"host", "accept", "accept-encoding", "user-agent", "authorization", "content-type", "content-length"}
MAX_REQUESTS = 400  # the fake endpoint answers 503 past this: a runaway run cannot spin forever


class HeaderLoggingServer:
    """An OpenAI-compatible endpoint that logs every request's headers and answers like `fake_model`."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10  # a stuck client cannot hold a handler thread for longer

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _log(self) -> bool:
                server.headers.append({k: v for k, v in self.headers.items()})
                if len(server.headers) > MAX_REQUESTS:
                    self._reply(503, {"error": {"message": "request budget spent"}})
                    return False
                return True

            def do_GET(self) -> None:
                if self._log():
                    data = [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "me"}]
                    self._reply(200, {"object": "list", "data": data})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self._log():
                    self._reply(200, completion(body))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> HeaderLoggingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(body: dict[str, Any]) -> dict[str, Any]:
    """The fake model's reply to an HTTP chat request, as a chat completion."""
    request = CompletionRequest.from_chat_body(body)
    text = fake_model(request) if request.json_schema else "OK"
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }


@pytest.fixture
def endpoint() -> Iterator[HeaderLoggingServer]:
    with HeaderLoggingServer() as server:
        yield server


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


def endpoint_config(tmp_path: Path, url: str, **llm: Any) -> Path:
    data = merge(
        BASE,
        {
            "explore": {"max_depth": 1, "breadth": [2], "new_per_call": 2},
            "generate": {"examples_per_task": [2], "per_call": 2, "max_extra_calls": 0},
            "sample": {"size": 4},
            "llm": {"backend": "openai", "base_url": url, "model": "fake-model", "structured_output": "json_schema"},
        },
    )
    data["llm"].update(llm)
    path = tmp_path / "endpoint.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def files_containing(folder: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.name}: {n}" for n in needles if n.encode() in data]
    return hits


def assert_no_env_secret_sent(server: HeaderLoggingServer, authorization: str) -> None:
    assert server.headers, "the run sent no request"
    for headers in server.headers:
        values = " ".join(f"{k}: {v}" for k, v in headers.items())
        leaked = [s for s in SECRET_VALUES if s in values and f"Bearer {s}" != authorization]
        assert not leaked, f"secret from the environment reached the endpoint: {leaked}"
        assert {k.lower() for k in headers} <= ALLOWED, headers
        assert headers.get("Authorization") == authorization


# --------------------------------------------------------------------------- item 1: environment secrets


def test_no_environment_secret_reaches_an_endpoint_without_a_key(
    tmp_path: Path, endpoint: HeaderLoggingServer, secret_env: None
) -> None:
    config = endpoint_config(tmp_path, endpoint.url)
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    assert_no_env_secret_sent(endpoint, "Bearer not-needed")
    assert files_containing(tmp_path / "run", SECRET_VALUES) == []


def test_null_override_drops_the_configured_key(
    tmp_path: Path, endpoint: HeaderLoggingServer, secret_env: None
) -> None:
    """The README's recipe for a local server: `--set llm.api_key_env=null` must really unset the key."""
    config = endpoint_config(tmp_path, endpoint.url, api_key_env="MY_ENDPOINT_KEY")
    run_dir = tmp_path / "run"
    assert main(["run", str(config), "--run-dir", str(run_dir), "--set", "llm.api_key_env=null"]) == 0
    assert_no_env_secret_sent(endpoint, "Bearer not-needed")
    assert "api_key_env: null" in (run_dir / "config.yaml").read_text()
    assert files_containing(run_dir, SECRET_VALUES) == []


def test_configured_key_is_the_only_secret_sent(
    tmp_path: Path, endpoint: HeaderLoggingServer, secret_env: None
) -> None:
    config = endpoint_config(tmp_path, endpoint.url, api_key_env="MY_ENDPOINT_KEY")
    run_dir = tmp_path / "run"
    assert main(["run", str(config), "--run-dir", str(run_dir)]) == 0
    assert_no_env_secret_sent(endpoint, f"Bearer {SECRETS['MY_ENDPOINT_KEY']}")
    assert files_containing(run_dir, SECRET_VALUES) == []


@pytest.mark.parametrize("spelling", ["null", "~", "Null"])
def test_null_and_tilde_overrides_set_null(tmp_path: Path, spelling: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, {"llm": {"api_key_env": "MY_KEY", "model": "m"}})))
    config = load_config(path, {"llm.api_key_env": yaml.safe_load(spelling), "llm.model": None})
    assert config.llm.api_key_env is None and config.llm.model is None


# --------------------------------------------------------------------------- item 2: URL credentials


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:hunter2-secret@127.0.0.1:{port}/v1",
        "http://hunter2-secret@127.0.0.1:{port}/v1",
        "http://127.0.0.1:{port}/v1?token=hunter2-secret",
        "http://127.0.0.1:{port}/v1#hunter2-secret",
    ],
)
def test_url_credentials_are_refused_before_anything_is_written(
    tmp_path: Path, endpoint: HeaderLoggingServer, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    config = endpoint_config(tmp_path, url.format(port=endpoint.port))
    run_dir = tmp_path / "run"
    assert main(["run", str(config), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "api_key_env" in err and "hunter2" not in err
    assert not run_dir.exists()
    assert endpoint.headers == []


def test_url_credentials_on_the_command_line_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = endpoint_config(tmp_path, "http://127.0.0.1:9/v1")
    run_dir = tmp_path / "run"
    args = ["run", str(config), "--run-dir", str(run_dir), "--base-url", "http://u:hunter2@127.0.0.1:9/v1"]
    assert main(args) == 2
    assert "hunter2" not in capsys.readouterr().err
    assert not run_dir.exists()


@pytest.mark.parametrize(
    "url", ["http://u:hunter2@127.0.0.1:9/v1", "http://127.0.0.1:9/v1?key=hunter2", "http://h:70000"]
)
def test_endpoint_flags_of_other_commands_check_the_url_too(url: str) -> None:
    """`answer --endpoint` and `judge --base-url` build their backend through the factory."""
    with pytest.raises(UserError) as caught:
        build_backend("openai", base_url=url, model="m")
    assert "hunter2" not in str(caught.value) and "base URL" in str(caught.value)


# --------------------------------------------------------------------------- item 3: seed-tree traversal


def write_tree(folder: Path, meta: dict[str, Any], nodes: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tree_meta_info.json").write_text(json.dumps(meta))
    for name, body in nodes.items():
        (folder / name).write_text(json.dumps(body))
    return folder


def one_child_tree(folder: Path, child: dict[str, Any], nodes: dict[str, Any] | None = None) -> Path:
    meta = {"raw_task_name": "Root", "task_name": "root", "config_filename": "root.json", "children": [child]}
    nodes = {"root.json": {"examples": [{"instruction": "Root example"}]}, **(nodes or {})}
    return write_tree(folder, meta, nodes)


SECRET_FILE = {"examples": [{"instruction": "private data outside the tree", "input": "", "output": ""}]}


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "nested-dotdot"])
def test_node_files_outside_the_tree_folder_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(SECRET_FILE))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "sub").mkdir()
    name = {
        "dotdot": "../outside.json",
        "absolute": str(outside),
        "symlink": "link.json",
        "nested-dotdot": "sub/../../outside.json",
    }[kind]
    if kind == "symlink":
        (tree / "link.json").symlink_to(outside)
    one_child_tree(tree, {"raw_task_name": "Child", "config_filename": name})
    run_dir = tmp_path / "run"
    assert main(["import-tree", str(tree), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "outside the tree folder" in err or "must be a file name inside" in err
    assert not run_dir.exists()


def test_symlink_inside_the_tree_folder_is_allowed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "real.json").write_text(json.dumps(SECRET_FILE))
    (tree / "alias.json").symlink_to(tree / "real.json")
    one_child_tree(tree, {"raw_task_name": "Child", "config_filename": "alias.json"})
    assert main(["import-tree", str(tree), "--run-dir", str(tmp_path / "run")]) == 0


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("task_name", ["../../escape", "{tmp}/escape", "..", "a/b", ".hidden", "x" * 400])
def test_upstream_export_never_writes_outside_out(tmp_path: Path, task_name: str) -> None:
    task_name = task_name.format(tmp=tmp_path)  # an absolute path, inside this test's folder
    tree = one_child_tree(
        tmp_path / "tree",
        {"raw_task_name": "Child", "task_name": task_name, "config_filename": "child.json"},
        {"child.json": {"examples": [{"instruction": "Child example"}]}},
    )
    run_dir = tmp_path / "run"
    assert main(["import-tree", str(tree), "--run-dir", str(run_dir)]) == 0
    out = tmp_path / "deep" / "out"
    before = listing(tmp_path)
    assert main(["export", "--run-dir", str(run_dir), "--format", "upstream", "--which", "all", "--out", str(out)]) == 0
    new = listing(tmp_path) - before
    assert new and all(p.startswith("deep") for p in new), new
    assert all((out / p).parent == out for p in listing(out)), listing(out)
    meta = json.loads((out / "tree_meta_info.json").read_text())
    child = meta["children"][0]
    assert child["raw_task_name"] == "Child" and "/" not in child["task_name"] and ".." not in child["task_name"]
    assert (out / child["config_filename"]).is_file()


# --------------------------------------------------------------------------- item 4: export targets


@pytest.fixture
def small_run(tmp_path: Path) -> Path:
    tree = one_child_tree(
        tmp_path / "tree",
        {"raw_task_name": "Child", "config_filename": "child.json"},
        {"child.json": {"examples": [{"instruction": "Child example", "output": "x"}]}},
    )
    run_dir = tmp_path / "run"
    assert main(["import-tree", str(tree), "--run-dir", str(run_dir)]) == 0
    return run_dir


def export_to(run_dir: Path, out: Path | str) -> int:
    return main(["export", "--run-dir", str(run_dir), "--format", "jsonl", "--which", "all", "--out", str(out)])


def test_export_refuses_to_replace_a_symlink(
    small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "link.jsonl"
    link.symlink_to(victim)
    capsys.readouterr()
    assert export_to(small_run, link) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and len(err.strip().splitlines()) == 1
    assert link.is_symlink() and victim.read_text() == "keep me"


def test_export_refuses_to_replace_a_fifo_or_device(
    small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    assert export_to(small_run, fifo) == 2
    assert fifo.is_fifo()
    assert export_to(small_run, "/dev/null") == 2
    assert Path("/dev/null").is_char_device()
    err = capsys.readouterr().err
    assert err.count("FIFO, socket or device") == 2
    assert list(tmp_path.glob(".pipe.jsonl.*")) == []


def test_export_under_a_file_is_one_line(small_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "plain").write_text("a file")
    capsys.readouterr()
    assert export_to(small_run, tmp_path / "plain" / "out.jsonl") == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and len(err.strip().splitlines()) == 1


def test_unwritable_folder_is_one_line(
    small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def denied(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(datafile.tempfile, "mkstemp", denied)  # as root, chmod cannot make a folder unwritable
    capsys.readouterr()
    assert export_to(small_run, tmp_path / "out.jsonl") == 2
    err = capsys.readouterr().err
    assert "permission denied" in err and len(err.strip().splitlines()) == 1


def test_temporary_file_is_removed_when_the_rename_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(datafile.os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        datafile.atomic_write(tmp_path / "out.json", "data")
    assert list(tmp_path.iterdir()) == []


def test_one_atomic_writer_for_text_and_bytes(tmp_path: Path) -> None:
    datafile.atomic_write(tmp_path / "a.png", b"\x89PNG")
    datafile.atomic_write_text(tmp_path / "b.txt", "héllo")
    assert (tmp_path / "a.png").read_bytes() == b"\x89PNG"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "héllo"
    with pytest.raises(UserError, match="symbolic link"):
        (tmp_path / "l").symlink_to(tmp_path / "a.png")
        datafile.atomic_write(tmp_path / "l", "x")
