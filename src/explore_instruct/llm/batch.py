"""Batch mode: a round of enrichment calls sent as one batch, its replies logged as if sent online.

Two providers: `openai` submits the round to the OpenAI Batch API (upload the JSONL, create a batch
with a 24 h window, poll, download the output and error files) through the same header-gated SDK
client the online backend uses; `files` writes the same JSONL into the run directory for
`vllm run-batch` on a machine this one cannot reach, stops the run, and `import_results` (the
`batch import` command) reads the output back.

Either way a usable reply (not truncated, and it parses) goes into the call log under its request's
cache key, exactly as an online reply would; the stage then calls the client as usual and finds it
there. So the parser, the quality rules, `stats`, resume and the data are the same whichever way a
call was made. A line that failed is sent again in the next batch (or online, per `llm.batch.retry`)
until the retry limit, then logged as a failed call, as the online client does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from explore_instruct.datafile import atomic_write, read_records
from explore_instruct.errors import RunStopped, UserError
from explore_instruct.llm.base import (
    Completion,
    CompletionRequest,
    ErrorKind,
    FatalLLMError,
    Message,
    ParseError,
    RetryReason,
    Usage,
)
from explore_instruct.llm.client import _RESEED_STEP
from explore_instruct.runstore import BatchRow, BatchStore, CallLog, Failures, custom_id_for, transaction

if TYPE_CHECKING:
    from explore_instruct.config import LLMConfig
    from explore_instruct.llm.client import LLMClient
    from explore_instruct.llm.openai_compat import OpenAICompatLLM
    from explore_instruct.runstore import RunStore

log = logging.getLogger(__name__)

Parse = Callable[[Completion], Any]
URL = "/v1/chat/completions"
BATCH_DIR = "batches"
TAG_KEY = "explore_instruct_batch"  # the metadata field that finds a batch whose id was never saved
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


class BatchPending(RunStopped):
    """The `files` provider wrote its batch: the run waits for `batch import`, then `--resume`."""


# ---------------------------------------------------------------------------------------- lines


def request_from_json(text: str) -> CompletionRequest:
    data = json.loads(text)
    messages = tuple(Message(**m) for m in data.pop("messages"))
    return CompletionRequest(messages=messages, **data)


def batch_line(custom_id: str, body: dict[str, Any]) -> str:
    """One input line, the format the OpenAI Batch API and `vllm run-batch` both read."""
    line = {"custom_id": custom_id, "method": "POST", "url": URL, "body": body}
    return json.dumps(line, ensure_ascii=False) + "\n"


def split_lines(lines: list[str], max_requests: int, max_bytes: int) -> list[list[str]]:
    """Consecutive chunks of at most `max_requests` lines and `max_bytes` bytes each."""
    chunks: list[list[str]] = []
    size = 0
    for line in lines:
        n = len(line.encode("utf-8"))
        if n > max_bytes:
            raise UserError(f"one batch line is {n} bytes, over llm.batch.max_bytes ({max_bytes})")
        if not chunks or len(chunks[-1]) >= max_requests or size + n > max_bytes:
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += n
    return chunks


@dataclass
class LineOutcome:
    """What one result line gave: a usable reply, or why not (and the tokens it cost either way)."""

    completion: Completion | None
    reason: RetryReason | None = None
    error: str | None = None
    usage: Usage = field(default_factory=Usage)


def _status_reason(status: int) -> RetryReason:
    if status == 429:
        return RetryReason.RATE_LIMITED
    return RetryReason.SERVER_ERROR if status >= 500 else RetryReason.REJECTED


def judge_line(record: dict[str, Any], parse: Parse) -> LineOutcome:
    """A result line (output or error file) judged the way the online client judges a reply."""
    error = record.get("error")
    response = record.get("response")
    if not isinstance(response, dict):
        message = error.get("message") if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        reason = RetryReason.TIMEOUT if code == "batch_expired" else RetryReason.SERVER_ERROR
        return LineOutcome(None, reason, f"batch line failed: {code or 'error'}: {message}")
    status = response.get("status_code", 200)
    body = response.get("body")
    if not isinstance(status, int) or status != 200:
        return LineOutcome(None, _status_reason(status if isinstance(status, int) else 500), f"HTTP {status}")
    try:
        choice = body["choices"][0]  # type: ignore[index]
        text = choice["message"]["content"] or ""
        usage = body.get("usage") or {}  # type: ignore[union-attr]
        spent = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return LineOutcome(None, RetryReason.BAD_BODY, "batch line's body is not a chat completion")
    completion = Completion(str(text), spent, finish)
    if finish == "length":
        return LineOutcome(None, RetryReason.TRUNCATED, "ParseError: reply truncated at max_tokens", spent)
    try:
        parse(completion)
    except ParseError as exc:
        return LineOutcome(None, RetryReason.UNPARSEABLE, f"ParseError: {exc}", spent)
    return LineOutcome(completion, usage=spent)


OnLogged = Callable[[str, int, "Completion | None", int, "Counter[str]"], None]


def apply_results(
    store: BatchStore,
    calls: CallLog,
    row: BatchRow,
    results: dict[str, dict[str, Any]],
    parse: Parse,
    *,
    missing: LineOutcome,
    on_logged: OnLogged | None = None,
) -> tuple[int, int]:
    """Each open line of `row` settled from `results` (its custom_id's line, else `missing`).

    A usable reply is logged as an ok call (attempts and tokens include the key's failed batch
    attempts), so the client finds it in the cache. The caller owns the transaction. Returns
    (ok, failed) line counts.
    """
    ok = failed = 0
    for line in store.pending_lines(row.id):
        record = results.get(line.custom_id)
        outcome = judge_line(record, parse) if record is not None else missing
        if outcome.completion is None:
            store.mark_failed(
                line.custom_id,
                str(outcome.reason or RetryReason.SERVER_ERROR),
                outcome.error or "no reply",
                outcome.usage.prompt_tokens,
                outcome.usage.completion_tokens,
            )
            failed += 1
            continue
        before = store.failures(line.cache_key)
        usage = Usage(before.prompt_tokens, before.completion_tokens)
        usage += outcome.usage
        completion = dataclasses.replace(outcome.completion, usage=usage)
        call_id = calls.record(
            key=line.cache_key,
            stage=row.stage,
            model=row.model,
            request=request_from_json(line.request),
            completion=completion,
            attempts=before.count + 1,
            retry_reasons=before.reasons,
        )
        store.mark_ok(line.custom_id, outcome.usage.prompt_tokens, outcome.usage.completion_tokens)
        store.settle(line.cache_key)
        if on_logged is not None:
            on_logged(row.stage, call_id, completion, before.count + 1, before.reasons or Counter())
        ok += 1
    return ok, failed


def give_up(
    store: BatchStore,
    calls: CallLog,
    *,
    key: str,
    stage: str,
    model: str,
    request: CompletionRequest,
    failures: Failures,
) -> int:
    """Log a key whose batch attempts ran out as a failed call (the caller owns the transaction)."""
    reason = failures.last_reason or RetryReason.SERVER_ERROR
    kind = {RetryReason.UNPARSEABLE: ErrorKind.UNPARSEABLE, RetryReason.TRUNCATED: ErrorKind.TRUNCATED}.get(
        RetryReason(reason), ErrorKind.TRANSPORT
    )
    call_id = calls.record(
        key=key,
        stage=stage,
        model=model,
        request=request,
        completion=None,
        attempts=failures.count,
        error=failures.last_error or "no reply",
        retry_reasons=failures.reasons,
        error_kind=kind,
    )
    store.settle(key)
    return call_id


# ---------------------------------------------------------------------------------------- import


@dataclass
class ImportSummary:
    lines: int
    ok: int
    failed: int
    batches: list[int]


def import_results(store: RunStore, path: Path, parses: dict[str, Parse]) -> ImportSummary:
    """Read a results file (`vllm run-batch -o`, or a Batch API output) back into the run.

    Every line is checked first: a line without a custom_id, a custom_id given twice, one this run
    never wrote (another run's results) or one already imported is one UserError, and nothing is
    imported. The batches the file answers are then settled like a finished Batch API batch: their
    lines without a result count as failed, to be sent again.
    """
    batches = BatchStore(store.conn)
    records, _ = read_records(path, model_text=True)
    results: dict[str, dict[str, Any]] = {}
    first_seen: dict[str, int] = {}
    touched: set[int] = set()
    for n, record in enumerate(records, start=1):
        cid = record.get("custom_id")
        where = f"{path}: record {n}"
        if not isinstance(cid, str) or not cid:
            raise UserError(f"{where} has no custom_id; nothing imported")
        if cid in results:
            raise UserError(
                f"{where}: custom_id {cid!r} appears twice (first in record {first_seen[cid]}); nothing imported"
            )
        line = batches.line(cid)
        if line is None:
            raise UserError(
                f"{where}: custom_id {cid!r} is not a request of this run (results of another run?); nothing imported"
            )
        if line.status != "pending" or line.batch_status == "done":
            raise UserError(
                f"{where}: custom_id {cid!r} was already imported (batch {line.batch_row}); nothing imported"
            )
        results[cid], first_seen[cid] = record, n
        touched.add(int(line.batch_row))
    ok = failed = 0
    missing = LineOutcome(None, RetryReason.TIMEOUT, f"no result line in {path.name}")
    with transaction(store.conn):
        for row_id in sorted(touched):
            row = batches.batch(row_id)
            if row.stage not in parses:
                raise UserError(f"batch {row_id} holds calls of stage {row.stage!r}, which has no batch mode")
            got_ok, got_failed = apply_results(batches, store.calls, row, results, parses[row.stage], missing=missing)
            batches.set_done(row_id, "imported")
            ok, failed = ok + got_ok, failed + got_failed
    return ImportSummary(len(records), ok, failed, sorted(touched))


def pending_message(run_dir: Path, rows: list[BatchRow], model: str) -> str:
    files = [run_dir / row.input_file for row in rows]
    count = sum(row.requests for row in rows)
    first = files[0]
    out = first.with_name(first.name.replace(".input.", ".output."))
    written = ", ".join(str(f) for f in files)
    each = " each" if len(files) > 1 else ""
    return (
        f"batch input waiting for results: {written} ({count} requests, no key inside). Run{each} where the "
        f"model is served, e.g. `vllm run-batch -i {first} -o {out} --model {model}`, then "
        f"`explore-instruct batch import -r {run_dir} {out}`{' for each output' if each else ''}, "
        "and rerun with --resume"
    )


# ---------------------------------------------------------------------------------------- OpenAI


class OpenAIBatches:
    """The Batch API calls, through the backend's gated SDK client; transient faults are retried."""

    def __init__(self, backend: OpenAICompatLLM, *, poll_interval: float, retries: int) -> None:
        from explore_instruct.llm.openai_compat import redact_url

        self.sdk = backend.sdk
        self.url = redact_url(backend.base_url)
        self.poll_interval = poll_interval
        self.retries = max(retries, 3)
        self.submitted = 0  # batches this process created (what the tests and bench count)

    async def upload(self, path: Path) -> str:
        data = path.read_bytes()
        uploaded = await self._api("upload", lambda: self.sdk.files.create(file=(path.name, data), purpose="batch"))
        return str(uploaded.id)

    async def find(self, tag: str) -> str | None:
        """A batch created with `tag` whose id never reached the database (killed right after creating it)."""
        page = await self._api("list batches", lambda: self.sdk.batches.list(limit=100))
        for batch in page.data:
            if (batch.metadata or {}).get(TAG_KEY) == tag:
                return str(batch.id)
        return None

    async def create(self, input_file_id: str, tag: str) -> str:
        batch = await self._api(
            "create a batch",
            lambda: self.sdk.batches.create(
                input_file_id=input_file_id,
                endpoint=URL,
                completion_window="24h",
                metadata={TAG_KEY: tag},
            ),
        )
        self.submitted += 1
        return str(batch.id)

    async def wait(self, batch_id: str) -> Any:
        while True:
            batch = await self._api("poll a batch", lambda: self.sdk.batches.retrieve(batch_id))
            if batch.status in TERMINAL:
                return batch
            await asyncio.sleep(self.poll_interval)

    async def download(self, file_id: str) -> bytes:
        content = await self._api("download results", lambda: self.sdk.files.content(file_id))
        return bytes(content.content)

    async def _api(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        import openai

        from explore_instruct.llm.openai_compat import _error_text

        last = ""
        for attempt in range(self.retries + 1):
            try:
                return await call()
            except openai.APIStatusError as exc:
                if exc.status_code != 429 and exc.status_code < 500:
                    raise FatalLLMError(
                        f"the Batch API at {self.url} refused to {what} (HTTP {exc.status_code}): {_error_text(exc)}"
                    ) from exc
                last = f"HTTP {exc.status_code}"
            except openai.APIConnectionError as exc:
                last = " ".join(str(exc.__cause__ or exc).split())[:200]
            if attempt < self.retries:
                await asyncio.sleep(min(self.poll_interval * 2**attempt, 300.0))
        raise FatalLLMError(f"cannot {what} at {self.url} ({last}); submitted batches keep running")


# ---------------------------------------------------------------------------------------- runner


class BatchRunner:
    """Gets replies for a round of requests by batch, into the call log; see the module docstring."""

    def __init__(self, store: RunStore, client: LLMClient, llm: LLMConfig, *, stage: str, parse: Parse) -> None:
        from explore_instruct.llm.factory import backend_from_config
        from explore_instruct.llm.openai_compat import OpenAICompatLLM

        self.run_dir = store.run_dir
        self.conn = store.conn
        self.store = BatchStore(store.conn)
        self.client = client
        self.cfg = llm.batch
        self.retries = llm.retries
        self.stage = stage
        self.parse = parse
        self.model_id = client.backend.model_id  # the cache key's model: the one online calls use
        backend = client.backend
        self._own_backend = not isinstance(backend, OpenAICompatLLM)
        # The online backend when it is one (its structured-output mode may be known by now), else one
        # built from the same config: batch bodies are what an online request would send.
        self.backend: OpenAICompatLLM = backend_from_config(llm) if self._own_backend else backend  # type: ignore[assignment]
        if self._own_backend and isinstance(self.backend, OpenAICompatLLM):
            self.backend.remember_modes(client.log)  # the mode online calls found for this endpoint
        self.openai = (
            OpenAIBatches(self.backend, poll_interval=self.cfg.poll_interval, retries=llm.retries)
            if self.cfg.provider == "openai"
            else None
        )

    async def aclose(self) -> None:
        if self._own_backend:
            await self.backend.aclose()

    async def fetch(self, requests: list[CompletionRequest]) -> set[str]:
        """Replies for `requests` into the call log; returns the keys given up on (logged as failed).

        With `retry: online`, a key whose batch line failed is left out of both: the client sends it.
        """
        todo: dict[str, CompletionRequest] = {}
        for request in requests:
            key = request.key(self.model_id)
            if self.client.log.lookup(key) is None:
                todo[key] = request
        given_up: set[str] = set()
        while todo:
            fresh = [(k, r) for k, r in todo.items() if self.store.pending_batch_of(k) is None]
            if fresh:
                self._write(fresh)
            rows = sorted({row for k in todo if (row := self.store.pending_batch_of(k)) is not None})
            await self._finish(rows)
            for key in list(todo):
                if self.client.log.lookup(key) is not None or self.cfg.retry == "online":
                    del todo[key]
                    continue
                failures = self.store.failures(key)
                if failures.count > self.retries:
                    with transaction(self.conn):
                        call_id = give_up(
                            self.store,
                            self.client.log,
                            key=key,
                            stage=self.stage,
                            model=self.model_id,
                            request=todo[key],
                            failures=failures,
                        )
                    self.client.count_logged(self.stage, call_id, None, failures.count, failures.reasons or Counter())
                    given_up.add(key)
                    del todo[key]
        return given_up

    def _write(self, fresh: list[tuple[str, CompletionRequest]]) -> None:
        """New batch rows and their input files (split by the size limits), committed before any upload."""
        lines: list[str] = []
        meta: dict[str, tuple[str, int, CompletionRequest]] = {}
        for key, request in fresh:
            reseeds = self.store.failures(key).reseeds
            sent = request
            if reseeds and request.seed is not None:  # the last reply was unusable: ask for a different one
                sent = dataclasses.replace(request, seed=request.seed + _RESEED_STEP * reseeds)
            attempt = self.store.attempts_made(key) + 1
            cid = custom_id_for(key, attempt)
            lines.append(batch_line(cid, self.backend.chat_body(sent)))
            meta[lines[-1]] = (key, attempt, request)
        for chunk in split_lines(lines, self.cfg.max_requests, self.cfg.max_bytes):
            with transaction(self.conn):
                name = f"{BATCH_DIR}/{self.store.next_id()}.input.jsonl"
                atomic_write(self.run_dir / name, "".join(chunk))
                row = self.store.add_batch(
                    provider=self.cfg.provider,
                    stage=self.stage,
                    model=self.model_id,
                    input_file=name,
                    tag=secrets.token_hex(8),
                    requests=len(chunk),
                )
                for line in chunk:
                    key, attempt, request = meta[line]
                    self.store.add_request(
                        custom_id=custom_id_for(key, attempt),
                        batch_row=row,
                        cache_key=key,
                        attempt=attempt,
                        request=request.to_dict(),
                    )

    async def _finish(self, rows: list[int]) -> None:
        batches = [self.store.batch(r) for r in rows]
        if self.openai is None:
            raise BatchPending(pending_message(self.run_dir, batches, self.backend.model))
        await asyncio.gather(*(self._run(row) for row in batches))

    async def _run(self, row: BatchRow) -> None:
        """Submit `row` unless that already happened, wait for it, and settle its lines."""
        assert self.openai is not None
        if row.status == "written":
            file_id = await self.openai.upload(self.run_dir / row.input_file)
            with transaction(self.conn):
                self.store.set_uploaded(row.id, file_id)
            row = self.store.batch(row.id)
        if row.status == "uploaded":
            assert row.input_file_id is not None
            batch_id = await self.openai.find(row.tag) or await self.openai.create(row.input_file_id, row.tag)
            with transaction(self.conn):
                self.store.set_submitted(row.id, batch_id)
            row = self.store.batch(row.id)
        assert row.batch_id is not None
        batch = await self.openai.wait(row.batch_id)
        records: list[dict[str, Any]] = []
        for kind, file_id in (("output", batch.output_file_id), ("errors", batch.error_file_id)):
            if file_id:
                path = self.run_dir / BATCH_DIR / f"{row.id}.{kind}.jsonl"
                atomic_write(path, await self.openai.download(file_id))
                if path.stat().st_size:
                    records += read_records(path, model_text=True)[0]
        results = {r["custom_id"]: r for r in records if isinstance(r.get("custom_id"), str)}
        reason = RetryReason.TIMEOUT if batch.status in ("expired", "cancelled") else RetryReason.SERVER_ERROR
        missing = LineOutcome(None, reason, f"no reply in batch {row.batch_id} ({batch.status})")
        with transaction(self.conn):
            ok, failed = apply_results(
                self.store,
                self.client.log,
                row,
                results,
                self.parse,
                missing=missing,
                on_logged=self.client.count_logged,
            )
            self.store.set_done(row.id, batch.status)
        log.info("batch %s (%s): %d replies, %d failed lines", row.batch_id, batch.status, ok, failed)
        if batch.status == "failed":
            errors = getattr(batch, "errors", None)
            detail = "; ".join(f"{e.code}: {e.message}" for e in (getattr(errors, "data", None) or [])[:3])
            raise FatalLLMError(f"the Batch API failed batch {row.batch_id}: {detail or 'no reason given'}")


class RoundCollector:
    """Gathers what every working task asks next and fetches it as one batch, once each task has
    either asked or finished: so a batch holds a whole round (all first calls, then all top-ups)."""

    def __init__(self, workers: int, fetch: Callable[[list[CompletionRequest]], Awaitable[set[str]]]) -> None:
        self.active = workers
        self._fetch = fetch
        self._waiting: list[tuple[list[CompletionRequest], asyncio.Future[set[str]]]] = []
        self._flushes: set[asyncio.Task[None]] = set()

    async def fetch(self, requests: list[CompletionRequest]) -> set[str]:
        done: asyncio.Future[set[str]] = asyncio.get_running_loop().create_future()
        self._waiting.append((requests, done))
        self._maybe_flush()
        return await done

    def leave(self) -> None:
        """A task is finished: the round no longer waits for it."""
        self.active -= 1
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if self._waiting and len(self._waiting) >= self.active:
            waiting, self._waiting = self._waiting, []
            task = asyncio.get_running_loop().create_task(self._flush(waiting))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _flush(self, waiting: list[tuple[list[CompletionRequest], asyncio.Future[set[str]]]]) -> None:
        try:
            failed = await self._fetch([r for requests, _ in waiting for r in requests])
        except asyncio.CancelledError:
            for _, done in waiting:
                done.cancel()
            raise
        except Exception as exc:
            for _, done in waiting:
                if not done.done():
                    done.set_exception(exc)
            return
        for _, done in waiting:
            if not done.done():
                done.set_result(failed)
