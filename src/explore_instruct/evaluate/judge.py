"""Pairwise LLM judging: the prompt, a tolerant verdict parser, and judging every pair in both orders.

Each (baseline, candidate) pair is judged twice, once with each answer in first place, so a judge
that favours a position cancels out; `judge_report.py` turns the two verdicts into win/tie/lose.

Two verdict formats. `text`: a free review ending in a line such as "Assistant 1 > Assistant 2"
(what a capable judge writes best). `json`: a short explanation and two scores from 1 to 10 in a
JSON object, asked for with a JSON schema so that a backend with structured output (the embedded
model's grammar, a server's json_schema/json_object mode) can only produce a readable verdict; a
135M model never ends a free review with the verdict line. `auto` picks json where the backend
supports structured output.

A review is parsed here, after the client has cached it: a review without a verdict line is a
result (kept in the cache and in the output), not a failed call, so a rerun, even with a better
parser, pays for nothing twice. Such a review is asked again under another seed, which is a new
request with its own cache entry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from pydantic import ConfigDict, Field

from explore_instruct.evaluate.questions import Answer, Question
from explore_instruct.llm.base import LLM, Completion, CompletionRequest, ParseError
from explore_instruct.llm.client import RESEED_STEP, LLMClient
from explore_instruct.parse import SCORE_SCHEMA, read_score
from explore_instruct.settings import Settings

STAGE = "judge"

# A verdict is told from Assistant 1's side: +1 it is better, -1 Assistant 2 is, 0 a tie.
Verdict = int

VerdictFormat = Literal["json", "text"]
FormatChoice = Literal["auto", "json", "text"]
FORMAT_CHOICES: tuple[str, ...] = ("auto", "json", "text")

SCORE_KEYS = ("assistant_1_score", "assistant_2_score")
# Bounds the explanation so a small model cannot ramble past max_tokens before the scores.
EXPLANATION_MAX_CHARS = 200

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "explanation": {"type": "string", "minLength": 1, "maxLength": EXPLANATION_MAX_CHARS},
        SCORE_KEYS[0]: SCORE_SCHEMA,
        SCORE_KEYS[1]: SCORE_SCHEMA,
    },
    "required": ["explanation", *SCORE_KEYS],
    "additionalProperties": False,
}


def supports_structured_output(backend: LLM) -> bool:
    """Whether `backend` can be held to a JSON schema (its capabilities say): the embedded model always
    (grammar), an OpenAI-compatible endpoint unless its structured output is set to text."""
    return backend.capabilities.structured_output


def resolve_format(choice: str, backend: LLM) -> VerdictFormat:
    """The verdict format for `choice` (auto, json or text) on this backend."""
    if choice == "auto":
        return "json" if supports_structured_output(backend) else "text"
    if choice not in ("json", "text"):
        raise ValueError(f"judge format must be one of {', '.join(FORMAT_CHOICES)} (got {choice!r})")
    return "json" if choice == "json" else "text"


@cache
def _template(name: str) -> str:
    path = resources.files("explore_instruct").joinpath("prompts", "judge", name)
    return path.read_text(encoding="utf-8")


_PLACEHOLDER = re.compile(r"\{(question|answer_1|answer_2)\}")


def render_prompt(question: str, answer_1: str, answer_2: str, fmt: VerdictFormat = "text") -> tuple[str, str]:
    """(system, user) prompts for one ordering; one substitution pass, so an answer that itself
    contains "{answer_2}" is not expanded."""
    values = {"question": question.strip(), "answer_1": answer_1.strip(), "answer_2": answer_2.strip()}
    template = _template("pairwise_json.txt" if fmt == "json" else "pairwise.txt")
    user = _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    return _template("pairwise_system.txt").strip(), user


# "Assistant 1", "[Assistant 2]", "(Assistant 1)", "Assistant #2", "Answer 1" ...
_SIDE = r"[\[\(]?\s*(?:assistant|answer|response)\s*[\[\(#]?\s*([12])\s*[\]\)]?"
_OP = r"(>=|=>|<=|=<|==|≥|≤|>|<|=)"
_ORDER_LINE = re.compile(_SIDE + r"\s*" + _OP + r"\s*" + _SIDE, re.IGNORECASE)
_MARKUP = re.compile(r"[*_`]")


def parse_verdict(review: str) -> Verdict:
    """The ordering on the last line of `review` that states one, from Assistant 1's side.

    Tolerates markdown, brackets, spacing and the reversed order ("Assistant 2 > Assistant 1").
    ">=" and "<=" do not claim either answer is better, so they count as a tie.
    Raises ParseError when no line orders the two assistants.
    """
    for line in reversed(review.splitlines()):
        match = _ORDER_LINE.search(_MARKUP.sub("", line))
        if match is None:
            continue
        left, op, right = match.group(1), match.group(2), match.group(3)
        if left == right:
            continue
        if op in (">", "<"):
            verdict = 1 if op == ">" else -1
            return verdict if left == "1" else -verdict
        return 0
    raise ParseError("no final line ordering Assistant 1 and Assistant 2")


def parse_scores(review: str) -> Verdict:
    """The verdict of a JSON review: the first object in `review` holding both scores, from
    Assistant 1's side (+1 its score is higher, -1 lower, 0 equal).

    Tolerates text or a code fence around the object (a server that fell back to plain text).
    Raises ParseError when no object holds two whole-number scores from 1 to 10.
    """
    # strict=False: llama.cpp's grammar lets a raw newline into the explanation, which strict JSON refuses.
    decoder = json.JSONDecoder(strict=False)
    problem = "no JSON object with assistant_1_score and assistant_2_score"
    for start in (i for i, ch in enumerate(review) if ch == "{"):
        try:
            obj, _ = decoder.raw_decode(review, start)
        except json.JSONDecodeError:
            continue
        if not isinstance(obj, dict) or not all(k in obj for k in SCORE_KEYS):
            continue
        try:
            first, second = (read_score(obj, k) for k in SCORE_KEYS)
        except ParseError as exc:
            problem = str(exc)
            continue
        return (first > second) - (first < second)
    raise ParseError(problem)


def _raw_text(completion: Completion) -> Completion:
    return completion  # parsed after the client has cached it (see the module doc)


class JudgeSettings(Settings):
    """Every setting of judging: `judge`'s options and an experiment spec's `evaluate.judge:` section
    (beside its `llm`, the endpoint)."""

    model_config = ConfigDict(frozen=True)

    format: FormatChoice = Field(
        "auto",
        description="Verdict format: json (an explanation and two 1-10 scores, schema-constrained), text (a review "
        "ending in 'Assistant 1 > Assistant 2'), or auto (json where the judge supports structured output).",
    )
    temperature: float = Field(0.0, ge=0, le=2, description="Judge sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Judge nucleus sampling mass.")
    max_tokens: int = Field(1024, ge=16, le=1_000_000, description="Most tokens per review.")
    bootstrap: int = Field(2000, ge=100, le=1_000_000, description="Bootstrap resamples for the 95 % interval.")
    seed: int = Field(0, description="Seed of the judge requests and the bootstrap.")

    def for_backend(self, backend: LLM) -> JudgeSettings:
        """These settings with `auto` resolved to the verdict format `backend` takes."""
        return self.model_copy(update={"format": resolve_format(self.format, backend)})


@dataclass
class OrderResult:
    verdict: Verdict | None  # from the first-placed answer's side
    review: str | None  # the review that gave the verdict, else the last one received
    error: str | None  # "unparsed: ..." or "failed: ..." when no verdict
    unparsed_reviews: list[str] = dataclasses.field(default_factory=list)  # reviews without a verdict line
    failed: bool = False  # no review arrived at all (a transport fault), as opposed to reviews without a verdict


@dataclass
class PairJudgement:
    question_id: str
    cls: str
    baseline_first: OrderResult  # Assistant 1 = baseline, Assistant 2 = candidate
    candidate_first: OrderResult  # Assistant 1 = candidate, Assistant 2 = baseline


def _retry_seed(seed: int | None, attempt: int) -> int | None:
    """The seed of the attempt-th request for one ordering (attempt 0 keeps the configured seed)."""
    return seed if attempt == 0 else (seed or 0) + RESEED_STEP * attempt


async def _judge_once(
    client: LLMClient, question: str, first: str, second: str, settings: JudgeSettings
) -> OrderResult:
    as_json = settings.format == "json"  # `auto` is resolved by judge_pairs
    system, user = render_prompt(question, first, second, "json" if as_json else "text")
    request = CompletionRequest.chat(
        user,
        system=system,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_tokens,
        seed=settings.seed,
        # A text request stays exactly what it was before json existed, so its cached reviews still count.
        **({"json_schema": VERDICT_SCHEMA, "schema_name": "verdict"} if as_json else {}),
    )
    unparsed: list[str] = []
    reason = ""
    for attempt in range(client.retry.retries + 1):
        sent = request if attempt == 0 else dataclasses.replace(request, seed=_retry_seed(request.seed, attempt))
        # A review cut at max_tokens is kept and parsed: its verdict may be there.
        result = await client.call(sent, stage=STAGE, parse=_raw_text, keep_truncated=True)
        if result.failed or result.value is None:
            last = unparsed[-1] if unparsed else None
            return OrderResult(None, last, f"failed: {result.error}", unparsed, failed=True)
        completion = result.value
        try:
            verdict = parse_scores(completion.text) if as_json else parse_verdict(completion.text)
            return OrderResult(verdict, completion.text, None, unparsed)
        except ParseError as exc:
            unparsed.append(completion.text)
            cut = completion.finish_reason in ("length", "max_tokens")
            reason = f"{exc}{' (the review was cut at max_tokens)' if cut else ''}"
    return OrderResult(None, unparsed[-1], f"unparsed: {reason} in {len(unparsed)} review(s)", unparsed)


async def judge_pairs(
    client: LLMClient,
    questions: Sequence[Question],
    baseline: dict[str, Answer],
    candidate: dict[str, Answer],
    settings: JudgeSettings,
) -> list[PairJudgement]:
    """Judge every question's pair in both orders, all calls concurrently (the client bounds them)."""
    settings = settings.for_backend(client.backend)

    async def one(q: Question) -> PairJudgement:
        base, cand = baseline[q.question_id].answer, candidate[q.question_id].answer
        bf, cf = await asyncio.gather(
            _judge_once(client, q.question, base, cand, settings),
            _judge_once(client, q.question, cand, base, settings),
        )
        return PairJudgement(q.question_id, q.cls, bf, cf)

    return list(await asyncio.gather(*(one(q) for q in questions)))
