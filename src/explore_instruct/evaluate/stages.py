"""The evaluation stages as plain functions over files: answer, judge, math-eval.

The CLI calls these; so can Python code and tests (which pass a scripted backend instead of an
endpoint). Every output is written atomically, and only once the stage has all it needs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from explore_instruct.config import ENDPOINT_SETTINGS, LLMConfig
from explore_instruct.datafile import atomic_write_text, write_records
from explore_instruct.errors import RunStopped, UserError
from explore_instruct.evaluate.answer import (
    SamplingSettings,
    answer_records,
    answer_with_client,
    answer_with_local_model,
    endpoint_prompt_format,
)
from explore_instruct.evaluate.judge import JudgeSettings, judge_pairs
from explore_instruct.evaluate.judge_report import markdown_table, pair_outcome, summarise
from explore_instruct.evaluate.questions import (
    Answer,
    format_ids,
    match_answers,
    read_answers,
    read_questions,
)
from explore_instruct.llm.base import LLM, FatalLLMError, StructuredSetting
from explore_instruct.llm.client import LLMClient, RetryPolicy
from explore_instruct.runstore import CallLog
from explore_instruct.settings import build


def default_cache(out: str | Path) -> Path:
    """Where a command without a run keeps its LLM cache: beside its output."""
    p = Path(out)
    return p.with_name(p.name + ".cache.sqlite")


@dataclass(frozen=True)
class EndpointSettings:
    concurrency: int = 8
    retries: int = 4
    cache: Path | None = None  # default: beside the output file
    retry_delay: float = 1.0  # base of the exponential backoff, seconds


def endpoint_config(
    endpoint: LLMConfig, model: str | None, api_key_env: str | None, structured_output: StructuredSetting
) -> LLMConfig:
    """The `llm` settings of an OpenAI-compatible endpoint to answer or judge with, validated as a config's are."""
    if not model:
        raise UserError("base_url needs model NAME (the name the server serves)", settings=("base_url", "model"))
    values = {**endpoint.model_dump(include=set(ENDPOINT_SETTINGS)), "api_key_env": api_key_env}
    return build(LLMConfig, backend="openai", model=model, structured_output=structured_output, **values)


def judge_backend(
    endpoint: LLMConfig, model: str | None, api_key_env: str | None, config: Path | None, judge_format: str
) -> LLM:
    """The judge: an endpoint (base_url and model), else the `llm` section of a config file."""
    from explore_instruct.llm.factory import backend_from_config

    # A text verdict is free text: no structured output. Otherwise the endpoint finds out what it takes.
    structured: StructuredSetting | None = "text" if judge_format == "text" else None
    if endpoint.base_url or model:
        if not (endpoint.base_url and model):
            raise UserError(
                "the judge needs both base_url and model (or config with an llm section)",
                settings=("base_url", "model", "config"),
            )
        return backend_from_config(endpoint_config(endpoint, model, api_key_env, structured or "auto"))
    if config is None:
        raise UserError(
            "no judge: give base_url and model, or config (a file with an llm section)",
            settings=("base_url", "model", "config"),
        )
    from explore_instruct.config import load_llm_config

    return backend_from_config(load_llm_config(config), structured_output=structured)


def _client(backend: LLM, out: str | Path, endpoint: EndpointSettings) -> LLMClient:
    log = CallLog.open(endpoint.cache or default_cache(out))
    return LLMClient(
        backend,
        log,
        max_concurrency=endpoint.concurrency,
        retry=RetryPolicy(retries=endpoint.retries, base_delay=endpoint.retry_delay),
    )


async def _run_with(client: LLMClient, work: Callable[[LLMClient], Any]) -> Any:
    try:
        await client.backend.check()  # an unreachable endpoint or unknown model stops before any work
        return await work(client)
    except FatalLLMError as exc:
        raise RunStopped(f"{exc} (finished calls are cached; run the same command again to resume)") from None
    finally:
        await client.aclose()
        client.log.conn.close()


# --- answer ------------------------------------------------------------------------------------


@dataclass
class AnswerSummary:
    out: Path
    answered: int
    truncated: int
    model_id: str


def answer_file(
    questions_path: str | Path,
    out: str | Path,
    settings: SamplingSettings,
    *,
    model: str | None = None,
    gguf_file: str | None = None,
    backend: LLM | None = None,
    model_id: str | None = None,
    endpoint: EndpointSettings | None = None,
    progress: Callable[[int], None] | None = None,
) -> AnswerSummary:
    """Answer every question with a local model (`model`) or an endpoint backend (`backend`)."""
    if (model is None) == (backend is None):
        raise UserError("give exactly one of model (a local model) or base_url", settings=("model", "base_url"))
    questions = read_questions(questions_path)
    if backend is None:
        assert model is not None
        generated, described, fmt = answer_with_local_model(
            model, gguf_file, questions, settings, batch_size=settings.batch_size, progress=progress
        )
        settings = settings.model_copy(update={"prompt_format": fmt})  # the answers record what was used
    else:
        described = backend.model_id
        settings = settings.model_copy(update={"prompt_format": endpoint_prompt_format(settings.prompt_format)})
        client = _client(backend, out, endpoint or EndpointSettings())
        generated, failures = asyncio.run(_run_with(client, lambda c: answer_with_client(c, questions, settings)))
        if failures:
            ids = [qid for qid, _ in failures]
            raise RunStopped(
                f"{len(failures)} question(s) got no answer after retries ({format_ids(ids)}; last error: "
                f"{failures[-1][1]}); answers so far are cached, run the same command again to resume"
            )
    label = model_id or described
    records = answer_records(questions, generated, label, settings)
    write_records(out, records, "jsonl")
    truncated = sum(r["finish_reason"] == "length" for r in records)
    return AnswerSummary(Path(out), len(records), truncated, label)


# --- judge -------------------------------------------------------------------------------------


def _label(answers: list[Answer], path: str | Path) -> str:
    ids = {str(a.record.get("model_id")) for a in answers if a.record.get("model_id")}
    return ids.pop() if len(ids) == 1 else Path(path).stem


@dataclass
class JudgeOutcome:
    out: Path
    table_path: Path
    table: str
    summaries: list[dict[str, Any]]
    failed_pairs: int  # the judge call kept failing (a rerun asks again)
    unparsed_pairs: int  # every review of an order lacked a verdict line (kept; a rerun reads the cache)


def judge_files(
    questions_path: str | Path,
    baseline_path: str | Path,
    candidate_path: str | Path,
    out: str | Path,
    backend: LLM,
    settings: JudgeSettings,
    *,
    table_path: str | Path | None = None,
    endpoint: EndpointSettings | None = None,
) -> JudgeOutcome:
    """Judge candidate against baseline on every question, in both orders; write JSON + Markdown."""
    questions = read_questions(questions_path)
    baseline_answers, candidate_answers = read_answers(baseline_path), read_answers(candidate_path)
    baseline = match_answers(questions, baseline_answers, baseline_path)
    candidate = match_answers(questions, candidate_answers, candidate_path)
    # A review cut at max_tokens is still stored and parsed (its verdict line may be missing).
    settings = settings.for_backend(backend)  # the verdict format `auto` means for this judge
    client = _client(backend, out, endpoint or EndpointSettings())
    judged = asyncio.run(_run_with(client, lambda c: judge_pairs(c, questions, baseline, candidate, settings)))

    outcomes = [pair_outcome(p) for p in judged]
    summaries = summarise(outcomes, resamples=settings.bootstrap, seed=settings.seed)
    names = {
        "baseline": _label(baseline_answers, baseline_path),
        "candidate": _label(candidate_answers, candidate_path),
    }
    table = markdown_table(summaries, **names)
    pairs = []
    for p, o in zip(judged, outcomes, strict=True):
        pairs.append(
            {
                "question_id": p.question_id,
                "class": p.cls,
                "outcome": o.outcome,
                "orders_disagree": o.disagree,
                "baseline_first": asdict(p.baseline_first),
                "candidate_first": asdict(p.candidate_first),
            }
        )
    summary_rows = [s.to_dict() for s in summaries]
    failed = sum(o.outcome == "failed" for o in outcomes)
    unparsed = sum(o.outcome == "unparsed" for o in outcomes)
    result = {
        **names,
        "judge_model": backend.model_id,
        "settings": settings.model_dump(),
        "not_judged": {"unparsed": unparsed, "failed": failed},
        "summary": summary_rows,
        "pairs": pairs,
    }
    table_file = Path(table_path) if table_path else Path(out).with_suffix(".md")
    atomic_write_text(out, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(table_file, table)
    if judged and failed + unparsed == len(judged):
        cache = (endpoint or EndpointSettings()).cache or default_cache(out)
        raise RunStopped(
            f"no pair could be judged ({unparsed} of {len(judged)} with reviews lacking a verdict line, {failed} "
            f"with failed judge calls); the reviews are in {out} and cached in {cache}, so a rerun pays only "
            "for failed calls"
        )
    return JudgeOutcome(Path(out), table_file, table, summary_rows, failed, unparsed)


# --- math --------------------------------------------------------------------------------------


@dataclass
class MathOutcome:
    out: Path
    verdicts_path: Path
    summary: dict[str, Any]
    table: str


def default_verdicts(out: str | Path) -> Path:
    p = Path(out)
    return p.with_name(p.stem + ".verdicts.jsonl")


def math_eval_files(
    questions_path: str | Path,
    answers_path: str | Path,
    out: str | Path,
    *,
    verdicts_path: str | Path | None = None,
    timeout: int = 5,
) -> MathOutcome:
    """Grade answers against the questions' reference solutions; summary JSON + per-item verdicts."""
    from explore_instruct.evaluate.math_grade import build_items, grade_items, markdown_summary
    from explore_instruct.evaluate.math_grade import summarise as summarise_math

    questions = read_questions(questions_path)
    answers = match_answers(questions, read_answers(answers_path), answers_path)
    verdicts = grade_items(build_items(questions, answers), timeout=timeout)
    summary = summarise_math(verdicts)
    verdict_file = Path(verdicts_path) if verdicts_path else default_verdicts(out)
    write_records(verdict_file, [v.to_dict() for v in verdicts], "jsonl")
    summary["verdicts"] = str(verdict_file)
    atomic_write_text(out, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return MathOutcome(Path(out), verdict_file, summary, markdown_summary(summary))
