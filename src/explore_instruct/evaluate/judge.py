"""Pairwise LLM judging: the prompt, a tolerant verdict parser, and judging every pair in both orders.

Each (baseline, candidate) pair is judged twice, once with each answer in first place, so a judge
that favours a position cancels out; `judge_report.py` turns the two verdicts into win/tie/lose.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from explore_instruct.evaluate.questions import Answer, Question
from explore_instruct.llm.base import Completion, CompletionRequest, ErrorKind, ParseError
from explore_instruct.llm.client import LLMClient

STAGE = "judge"

# A verdict is told from Assistant 1's side: +1 it is better, -1 Assistant 2 is, 0 a tie.
Verdict = int


@cache
def _template(name: str) -> str:
    path = resources.files("explore_instruct").joinpath("prompts", "judge", name)
    return path.read_text(encoding="utf-8")


_PLACEHOLDER = re.compile(r"\{(question|answer_1|answer_2)\}")


def render_prompt(question: str, answer_1: str, answer_2: str) -> tuple[str, str]:
    """(system, user) prompts for one ordering; one substitution pass, so an answer that itself
    contains "{answer_2}" is not expanded."""
    values = {"question": question.strip(), "answer_1": answer_1.strip(), "answer_2": answer_2.strip()}
    user = _PLACEHOLDER.sub(lambda m: values[m.group(1)], _template("pairwise.txt"))
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


def _parse_completion(completion: Completion) -> Verdict:
    return parse_verdict(completion.text)


@dataclass(frozen=True)
class JudgeSettings:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = 0


@dataclass
class OrderResult:
    verdict: Verdict | None  # from the first-placed answer's side
    review: str | None
    error: str | None  # "unparsed: ..." or "failed: ..." when no verdict


@dataclass
class PairJudgement:
    question_id: str
    cls: str
    baseline_first: OrderResult  # Assistant 1 = baseline, Assistant 2 = candidate
    candidate_first: OrderResult  # Assistant 1 = candidate, Assistant 2 = baseline


async def _judge_once(
    client: LLMClient, question: str, first: str, second: str, settings: JudgeSettings
) -> OrderResult:
    system, user = render_prompt(question, first, second)
    request = CompletionRequest.chat(
        user,
        system=system,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_tokens,
        seed=settings.seed,
    )
    result = await client.call(request, stage=STAGE, parse=_parse_completion)
    if result.failed:
        kind = "failed" if result.error_kind == ErrorKind.TRANSPORT else "unparsed"
        return OrderResult(None, None, f"{kind}: {result.error}")
    review = result.completion.text if result.completion else None
    return OrderResult(result.value, review, None)


async def judge_pairs(
    client: LLMClient,
    questions: Sequence[Question],
    baseline: dict[str, Answer],
    candidate: dict[str, Answer],
    settings: JudgeSettings,
) -> list[PairJudgement]:
    """Judge every question's pair in both orders, all calls concurrently (the client bounds them)."""

    async def one(q: Question) -> PairJudgement:
        base, cand = baseline[q.question_id].answer, candidate[q.question_id].answer
        bf, cf = await asyncio.gather(
            _judge_once(client, q.question, base, cand, settings),
            _judge_once(client, q.question, cand, base, settings),
        )
        return PairJudgement(q.question_id, q.cls, bf, cf)

    return list(await asyncio.gather(*(one(q) for q in questions)))
