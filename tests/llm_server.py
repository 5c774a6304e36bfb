"""Start the embedded SmolLM2 model behind `python -m llama_cpp.server` on 127.0.0.1, for integration tests.

Use it from a fixture, e.g.

    @pytest.fixture(scope="module")
    def llama_server() -> Iterator[LlamaServer]:
        with LlamaServer.start_or_skip() as server:
            yield server

    backend = OpenAICompatLLM(llama_server.base_url, llama_server.model, structured_output="auto")

The server is always terminated when the `with` block ends, also when the test fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

import pytest

from explore_instruct.llm.local import find_bundled_gguf

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_missing_reason() -> str | None:
    """Why `python -m llama_cpp.server` cannot run here, or None when it can."""
    for module, package in (
        ("llama_cpp", "llama-cpp-python"),
        ("fastapi", "llama-cpp-python[server]"),
        ("uvicorn", "llama-cpp-python[server]"),
        ("sse_starlette", "llama-cpp-python[server]"),
        ("starlette_context", "llama-cpp-python[server]"),
        ("pydantic_settings", "llama-cpp-python[server]"),
    ):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install '{package}'"
    return None


class LlamaServer:
    """`python -m llama_cpp.server` serving one GGUF on a free loopback port."""

    def __init__(self, model_path: str | Path | None = None, *, n_ctx: int = 2048, alias: str = "smollm2") -> None:
        self.model_path = Path(model_path) if model_path else find_bundled_gguf()
        self.n_ctx = n_ctx
        self.model = alias  # the name clients send as `model`
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="llama_server_", suffix=".log", delete=False)  # noqa: SIM115

    @classmethod
    def start_or_skip(cls, model_path: str | Path | None = None, **kwargs: object) -> LlamaServer:
        reason = server_missing_reason()
        if reason:
            pytest.skip(reason)
        return cls(model_path, **kwargs)  # type: ignore[arg-type]

    def __enter__(self) -> LlamaServer:
        cmd = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model_path),
            "--model_alias", self.model,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(max(1, len(os.sched_getaffinity(0)))),
        ]  # fmt: skip
        start = time.monotonic()
        # Output goes to a file, not a pipe: a full pipe would block the server.
        # Passive OpenMP waiting: spinning threads crawl when the test run shares the cores (see local.py).
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        self._proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - start
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, chars: int = 2000) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with code {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"llama_cpp.server not ready after {READY_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            # The server runs in its own session: signal the whole group so no worker is left behind.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)
