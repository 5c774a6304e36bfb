"""Batch mode: a transport under the client that sends a round of enrichment calls as one batch.

The client (`client.py`) keeps every rule: the cache, which attempt to make (the same request after
a fault, another seed after an unusable reply), truncation, parsing, when to give up and what the
call log says. `BatchTransport` only carries attempts: the stage hands it a round (every working
task's calls), and once each of those calls is waiting for its attempt it writes them as one batch
(split by the size limits), submits it, polls it, and hands each line's reply back to its call. A
line that failed is one failed attempt: the client asks again, and the next attempt goes in the next
batch (or online, with `llm.batch.retry: online`). So the parser, the quality rules, `stats`, resume
and the data are the same whichever way a call was made.

Two providers: `openai` submits to the OpenAI Batch API (upload the JSONL, create a batch with a
24 h window, poll, download the output and error files) through the backend's header-gated SDK
client; `files` writes the same JSONL into the run directory for `vllm run-batch` on a machine this
one cannot reach and stops the run; `import_results` (the `batch import` command) checks the output
and files it beside the input, where the resumed run reads it like a downloaded one.

Every batch and line is in the run's database before anything is sent (`batch_store.py`), and a
line's failed attempts are kept there, so a killed run polls the batches it submitted instead of
paying twice, and continues each call's retries where they were.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from explore_instruct.datafile import atomic_write, read_records
from explore_instruct.errors import RunStopped, UserError
from explore_instruct.llm.base import (
    BatchAPI,
    Completion,
    CompletionRequest,
    FatalLLMError,
    Message,
    RetryReason,
    TransientLLMError,
    Usage,
)
from explore_instruct.llm.client import Attempt, Fault, PastAttempts, judge_reply
from explore_instruct.runstore import BatchRow, BatchStore, custom_id_for, transaction

if TYPE_CHECKING:
    from explore_instruct.config import LLMConfig
    from explore_instruct.llm.client import LLMClient
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


def _status_reason(status: int) -> RetryReason:
    if status == 429:
        return RetryReason.RATE_LIMITED
    return RetryReason.SERVER_ERROR if status >= 500 else RetryReason.REJECTED


def line_reply(record: dict[str, Any]) -> Completion:
    """The reply a result line (output or error file) carries, or TransientLLMError saying why it
    carries none, sorted the way the online backend sorts an HTTP answer. Whether the reply is
    usable is the client's to judge."""
    error = record.get("error")
    response = record.get("response")
    if not isinstance(response, dict):
        message = error.get("message") if isinstance(error, dict) else error
        code = error.get("code") if isinstance(error, dict) else None
        reason = RetryReason.TIMEOUT if code == "batch_expired" else RetryReason.SERVER_ERROR
        raise TransientLLMError(f"batch line failed: {code or 'error'}: {message}", reason=reason)
    status = response.get("status_code", 200)
    body = response.get("body")
    if not isinstance(status, int) or status != 200:
        reason = _status_reason(status if isinstance(status, int) else 500)
        raise TransientLLMError(f"batch line answered HTTP {status}", reason=reason)
    try:
        choice = body["choices"][0]  # type: ignore[index]
        text = choice["message"]["content"] or ""
        usage = body.get("usage") or {}  # type: ignore[union-attr]
        spent = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        raise TransientLLMError("batch line's body is not a chat completion", reason=RetryReason.BAD_BODY) from None
    return Completion(str(text), spent, finish)


def past_attempts(store: BatchStore, key: str) -> PastAttempts:
    """The failed batch lines of `key` since it was last settled: the attempts its call continues from."""
    failures = store.failures(key)
    last = None
    if failures.last_reason is not None:
        last = Fault(RetryReason(failures.last_reason), failures.last_error or "no reply")
    usage = Usage(failures.prompt_tokens, failures.completion_tokens)
    return PastAttempts(failures.count, Counter(failures.reasons or {}), usage, last)


def output_path(run_dir: Path, row: int, kind: str = "output") -> Path:
    """Where a batch's results are kept in the run: downloaded (openai) or imported (files)."""
    return run_dir / BATCH_DIR / f"{row}.{kind}.jsonl"


def results_of(run_dir: Path, row: int) -> dict[str, dict[str, Any]]:
    """The result lines kept for batch `row` (downloaded or imported), by custom_id."""
    records: list[dict[str, Any]] = []
    for kind in ("output", "errors"):
        path = output_path(run_dir, row, kind)
        if path.exists() and path.stat().st_size:
            records += read_records(path, model_text=True)[0]
    return {r["custom_id"]: r for r in records if isinstance(r.get("custom_id"), str)}


# ---------------------------------------------------------------------------------------- import


@dataclass
class ImportSummary:
    lines: int
    ok: int
    failed: int
    batches: list[int]


def import_results(store: RunStore, path: Path, parses: dict[str, Parse]) -> ImportSummary:
    """Check a results file (`vllm run-batch -o`, or a Batch API output) and file it in the run.

    Every line is checked first: a line without a custom_id, a custom_id given twice, one this run
    never wrote (another run's results) or one already imported is one UserError, and nothing is
    imported. Each batch the file answers gets its lines as `batches/N.output.jsonl` and is marked
    imported; the resumed run reads them like a downloaded batch, and the client takes each reply
    (a line without a result is a failed attempt, sent again). The counts are the client's verdict
    on each reply.
    """
    batches = BatchStore(store.conn)
    records, _ = read_records(path, model_text=True)
    results: dict[str, dict[str, Any]] = {}
    first_seen: dict[str, int] = {}
    rows: dict[int, list[dict[str, Any]]] = {}
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
        rows.setdefault(int(line.batch_row), []).append(record)
    for row_id in rows:
        stage = batches.batch(row_id).stage
        if stage not in parses:
            raise UserError(f"batch {row_id} holds calls of stage {stage!r}, which has no batch mode")
    ok = sent = 0
    for row_id, answered in sorted(rows.items()):
        parse = parses[batches.batch(row_id).stage]
        lines = batches.pending_lines(row_id)
        sent += len(lines)
        ok += sum(_usable(results[line.custom_id], parse) for line in lines if line.custom_id in results)
        atomic_write(output_path(store.run_dir, row_id), "".join(json.dumps(r) + "\n" for r in answered))
    with transaction(store.conn):
        for row_id in rows:
            batches.set_done(row_id, "imported")
    return ImportSummary(len(records), ok, sent - ok, sorted(rows))


def _usable(record: dict[str, Any], parse: Parse) -> bool:
    """Whether the client will take this result line's reply (the rule is the client's: `judge_reply`)."""
    try:
        completion = line_reply(record)
    except TransientLLMError:
        return False
    return not isinstance(judge_reply(completion, parse, keep_truncated=False), Fault)


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
        "and rerun with resume"
    )


# ---------------------------------------------------------------------------------------- OpenAI


class OpenAIBatches:
    """The Batch API calls, through the backend's gated SDK client; transient faults are retried."""

    def __init__(self, backend: BatchAPI, *, poll_interval: float, retries: int) -> None:
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


# ---------------------------------------------------------------------------------------- transport


@dataclass
class _Waiting:
    """An attempt waiting for the next batch: its line (new, or one an earlier process wrote) and its reply."""

    attempt: Attempt
    reply: asyncio.Future[Completion]
    row: int | None = None  # the batch holding its line (None: not written yet)
    custom_id: str | None = None


class BatchTransport:
    """Attempts as lines of provider batches, a round at a time; see the module docstring.

    Each working task hands its calls of a round (`round`) or says it is done (`leave`); when every
    one has, their calls start, and a batch goes out as soon as each call of the round that is not
    logged yet waits for its attempt here (a retry's attempt goes in the next batch the same way).
    """

    paced = False  # a batch's turnaround spaces the attempts; no backoff on top

    def __init__(self, store: RunStore, client: LLMClient, llm: LLMConfig, *, stage: str, workers: int) -> None:
        from explore_instruct.llm.factory import backend_from_config

        self.run_dir = store.run_dir
        self.conn = store.conn
        self.store = BatchStore(store.conn)
        self.client = client
        self.cfg = llm.batch
        self.stage = stage
        self.model_id = client.backend.model_id  # the cache key's model: the one online calls use
        backend = client.backend
        # The online backend when it can batch (its structured-output mode may be known by now), else
        # one built from the same config: batch bodies are what an online request would send.
        self._own = None if backend.capabilities.batch else backend_from_config(llm)
        if self._own is not None:
            self._own.remember_modes(client.log)  # the mode online calls found for this endpoint
        self.api = (self._own or backend).batch_api()
        self.openai = (
            OpenAIBatches(self.api, poll_interval=self.cfg.poll_interval, retries=llm.retries)
            if self.cfg.provider == "openai"
            else None
        )
        self.active = workers  # tasks still working: a round waits for each to hand its calls or leave
        self._arrived: list[asyncio.Future[None]] = []
        self._round: set[str] = set()  # keys handed for the next round
        self._open: set[str] = set()  # keys of started rounds whose call is not logged yet
        self._queued: dict[str, _Waiting] = {}
        self._lines: dict[str, _Waiting] = {}  # key -> its attempt whose line is out, until the client judged it
        self._outcomes: dict[int, str] = {}  # batch row -> how it ended, once its results were handed out
        self._flushes: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        if self._own is not None:
            await self._own.aclose()

    # ------------------------------------------------------------------ rounds

    async def round(self, requests: list[CompletionRequest]) -> None:
        """Wait until every working task has handed its calls (or left); then make the calls."""
        keys = (request.key(self.model_id) for request in requests)
        self._round |= {key for key in keys if self.client.log.lookup(key) is None}  # logged calls send nothing
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arrived.append(arrived)
        self._maybe_start()
        await arrived

    def leave(self) -> None:
        """A task is finished: rounds no longer wait for it."""
        self.active -= 1
        self._maybe_start()

    def _maybe_start(self) -> None:
        if self._arrived and len(self._arrived) >= self.active:
            arrived, self._arrived = self._arrived, []
            self._open |= self._round
            self._round = set()
            for waiter in arrived:
                waiter.set_result(None)

    # ------------------------------------------------------------------ the transport protocol

    def past(self, key: str) -> PastAttempts:
        return past_attempts(self.store, key)

    async def send(self, attempt: Attempt) -> Completion:
        if self.cfg.retry == "online" and attempt.number > 1:
            return await self.client.online.send(attempt)  # a failed line's next attempts go online
        waiting = _Waiting(attempt, asyncio.get_running_loop().create_future())
        waiting.row = self.store.pending_batch_of(attempt.key)  # a line an earlier process sent
        if waiting.row is not None:
            waiting.custom_id = next(
                line.custom_id for line in self.store.pending_lines(waiting.row) if line.cache_key == attempt.key
            )
        self._open.add(attempt.key)
        self._queued[attempt.key] = waiting
        self._maybe_flush()
        return await waiting.reply

    def failed(self, attempt: Attempt, fault: Fault, spent: Usage) -> None:
        waiting = self._lines.pop(attempt.key, None)
        if waiting is None or waiting.custom_id is None:  # an online attempt: nothing to keep
            return
        with transaction(self.conn):
            self.store.mark_failed(
                waiting.custom_id, str(fault.reason), fault.message, spent.prompt_tokens, spent.completion_tokens
            )
            self._line_judged(waiting)

    def settled(self, key: str, ok: Attempt | None, spent: Usage) -> None:
        waiting = self._lines.pop(key, None)
        if ok is not None and waiting is not None and waiting.custom_id is not None:
            self.store.mark_ok(waiting.custom_id, spent.prompt_tokens, spent.completion_tokens)
            self._line_judged(waiting)
        self.store.settle(key)  # its failed lines no longer count: a later run starts its retries afresh
        self._open.discard(key)
        self._maybe_flush()

    def _line_judged(self, waiting: _Waiting) -> None:
        """Close the batch once the client has judged each of its lines (inside the caller's transaction)."""
        row = waiting.row
        if row is not None and row in self._outcomes and not self.store.pending_lines(row):
            self.store.set_done(row, self._outcomes.pop(row))

    # ------------------------------------------------------------------ batches

    def _maybe_flush(self) -> None:
        """Send what waits once every open call of the round waits here (or is logged)."""
        if not self._queued or not self._open <= self._queued.keys():
            return
        queued, self._queued = self._queued, {}
        task = asyncio.get_running_loop().create_task(self._flush(list(queued.values())))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, queued: list[_Waiting]) -> None:
        try:
            fresh = [w for w in queued if w.row is None]
            if fresh:
                self._write(fresh)
            await self._finish(queued)
        except BaseException as exc:
            for waiting in queued:
                if not waiting.reply.done():
                    if isinstance(exc, asyncio.CancelledError):
                        waiting.reply.cancel()
                    else:
                        waiting.reply.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def _write(self, fresh: list[_Waiting]) -> None:
        """New batch rows and their input files (split by the size limits), committed before any upload."""
        lines: list[str] = []
        by_line: dict[str, tuple[_Waiting, int]] = {}
        for waiting in fresh:
            key = waiting.attempt.key
            number = self.store.attempts_made(key) + 1  # every line this key had, so the custom_id is new
            waiting.custom_id = custom_id_for(key, number)
            lines.append(batch_line(waiting.custom_id, self.api.chat_body(waiting.attempt.sent)))
            by_line[lines[-1]] = (waiting, number)
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
                    waiting, number = by_line[line]
                    waiting.row = row
                    self.store.add_request(
                        custom_id=custom_id_for(waiting.attempt.key, number),
                        batch_row=row,
                        cache_key=waiting.attempt.key,
                        attempt=number,
                        request=waiting.attempt.request.to_dict(),  # as the call log keeps it, before any reseed
                    )

    async def _finish(self, queued: list[_Waiting]) -> None:
        by_row: dict[int, list[_Waiting]] = {}
        for waiting in queued:
            assert waiting.row is not None
            by_row.setdefault(waiting.row, []).append(waiting)
        rows = [self.store.batch(r) for r in sorted(by_row)]
        if self.openai is None:  # files: a batch is answered once `batch import` checked and filed its results
            unanswered = [row for row in rows if row.status != "done"]
            if unanswered:
                raise BatchPending(pending_message(self.run_dir, unanswered, self.api.model), settings=("resume",))
            for row in rows:
                self._hand_out(row, by_row[row.id], results_of(self.run_dir, row.id), "imported")
            return
        await asyncio.gather(*(self._run(row, by_row[row.id]) for row in rows))

    def _hand_out(
        self, row: BatchRow, waiting: list[_Waiting], results: dict[str, dict[str, Any]], outcome: str
    ) -> None:
        """Each waiting attempt gets its line's reply, or the fault of a line without one."""
        self._outcomes[row.id] = outcome
        missing = TransientLLMError(
            f"no reply in batch {row.batch_id or row.id} ({outcome})",
            reason=RetryReason.TIMEOUT if outcome in ("expired", "cancelled", "imported") else RetryReason.SERVER_ERROR,
        )
        for w in waiting:
            self._lines[w.attempt.key] = w
            record = results.get(w.custom_id or "")
            try:
                if record is None:
                    raise missing
                w.reply.set_result(line_reply(record))
            except TransientLLMError as exc:
                w.reply.set_exception(exc)

    async def _run(self, row: BatchRow, waiting: list[_Waiting]) -> None:
        """Submit `row` unless that already happened, wait for it, and hand out its lines' replies."""
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
        for kind, file_id in (("output", batch.output_file_id), ("errors", batch.error_file_id)):
            if file_id:
                atomic_write(output_path(self.run_dir, row.id, kind), await self.openai.download(file_id))
        results = results_of(self.run_dir, row.id)
        log.info("batch %s (%s): %d of %d lines answered", row.batch_id, batch.status, len(results), len(waiting))
        if batch.status == "failed":
            errors = getattr(batch, "errors", None)
            detail = "; ".join(f"{e.code}: {e.message}" for e in (getattr(errors, "data", None) or [])[:3])
            with transaction(self.conn):  # each line was an attempt that got no reply; the resume sends it again
                for line in self.store.pending_lines(row.id):
                    self.store.mark_failed(
                        line.custom_id, str(RetryReason.SERVER_ERROR), f"batch {row.batch_id} failed"
                    )
                self.store.set_done(row.id, batch.status)
            raise FatalLLMError(f"the Batch API failed batch {row.batch_id}: {detail or 'no reason given'}")
        self._hand_out(row, waiting, results, batch.status)
