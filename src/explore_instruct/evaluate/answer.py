"""Answers for a question file, from a local model (batched `generate`) or an OpenAI-compatible endpoint.

A local model gets the same Alpaca prompt it was trained with (`train/prompting.py`). An endpoint
gets the question as a plain chat message by default (what a reference chat model expects), or
the Alpaca prompt with `prompt_format="alpaca"` (e.g. vLLM serving a model trained here).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from explore_instruct.evaluate.questions import Question
from explore_instruct.llm.base import LLM, Completion, CompletionRequest
from explore_instruct.llm.client import LLMClient
from explore_instruct.train.prompting import question_prompt

PromptFormat = Literal["alpaca", "plain"]
STAGE = "answer"


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 0.0  # 0 = greedy decoding
    top_p: float = 1.0
    max_new_tokens: int = 512
    seed: int = 0
    prompt_format: PromptFormat = "alpaca"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GeneratedAnswer:
    question_id: str
    text: str
    finish_reason: str  # "stop" | "length"


def render(question: Question, prompt_format: PromptFormat) -> str:
    return question_prompt(question.question) if prompt_format == "alpaca" else question.question.strip()


def answer_records(
    questions: Sequence[Question], generated: Sequence[GeneratedAnswer], model_id: str, settings: SamplingSettings
) -> list[dict[str, Any]]:
    """Output records in question order: question_id, class, answer, model_id, settings."""
    by_id = {g.question_id: g for g in generated}
    return [
        {
            "question_id": q.question_id,
            "class": q.cls,
            "answer": by_id[q.question_id].text,
            "model_id": model_id,
            "finish_reason": by_id[q.question_id].finish_reason,
            "settings": settings.to_dict(),
        }
        for q in questions
    ]


# --- local model -------------------------------------------------------------------------------


def generate_local(
    model: Any,
    tokenizer: Any,
    questions: Sequence[Question],
    settings: SamplingSettings,
    *,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[GeneratedAnswer]:
    """Batched generation with left padding; prompts sorted by length so a batch pads little."""
    import torch

    tokenizer.padding_side = "left"  # new tokens must follow each prompt directly
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    device = next(model.parameters()).device
    prompts = [render(q, settings.prompt_format) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    sample = settings.temperature > 0
    gen_kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": sample,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    if sample:
        gen_kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:  # silence the model's own sampling defaults: greedy means greedy
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    torch.manual_seed(settings.seed)
    results: dict[int, GeneratedAnswer] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            out = model.generate(**enc, **gen_kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        for row, i in enumerate(idx):
            tokens = new_tokens[row].tolist()
            stopped = tokenizer.eos_token_id in tokens
            text = tokenizer.decode(tokens, skip_special_tokens=True).strip()
            results[i] = GeneratedAnswer(questions[i].question_id, text, "stop" if stopped else "length")
        if progress is not None:
            progress(len(idx))
    return [results[i] for i in range(len(questions))]


def answer_with_local_model(
    model_path: str,
    gguf_file: str | None,
    questions: Sequence[Question],
    settings: SamplingSettings,
    *,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[GeneratedAnswer], str]:
    """Load a trained (or base) model from local files and answer every question; (answers, model_id)."""
    from explore_instruct.train.deps import require

    require("torch", "transformers")
    import torch

    from explore_instruct.train.models import load_model, load_tokenizer, resolve_source

    src = resolve_source(model_path, gguf_file)
    tokenizer = load_tokenizer(src, padding_side="left")
    model = load_model(src)
    if torch.cuda.is_available():
        model = model.to("cuda")
    answers = generate_local(model, tokenizer, questions, settings, batch_size=batch_size, progress=progress)
    return answers, src.describe()


# --- endpoint ----------------------------------------------------------------------------------


class _KeepTruncated:
    """Passes a reply cut at max_tokens through as a finished answer.

    The client retries truncated replies (right for structured output, where half a JSON object is
    useless); a long free-text answer cut at the limit is still the model's answer.
    """

    def __init__(self, backend: LLM) -> None:
        self.backend = backend
        self.model_id = backend.model_id

    async def complete(self, request: CompletionRequest) -> Completion:
        completion = await self.backend.complete(request)
        if completion.finish_reason == "length":
            return dataclasses.replace(completion, finish_reason="max_tokens")
        return completion

    async def check(self) -> None:
        check = getattr(self.backend, "check", None)
        if check is not None:
            await check()

    async def aclose(self) -> None:
        await self.backend.aclose()


def keep_truncated(backend: LLM) -> LLM:
    return _KeepTruncated(backend)


async def answer_with_client(
    client: LLMClient,
    questions: Sequence[Question],
    settings: SamplingSettings,
) -> tuple[list[GeneratedAnswer], list[tuple[str, str]]]:
    """Answer concurrently through the client (cache, retries); returns (answers, [(id, error)])."""

    async def one(q: Question) -> tuple[Question, Any]:
        request = CompletionRequest.chat(
            render(q, settings.prompt_format),
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_new_tokens,
            seed=settings.seed,
        )
        return q, await client.call(request, stage=STAGE, parse=lambda c: c.text.strip())

    answers, failures = [], []
    for q, result in await asyncio.gather(*(one(q) for q in questions)):
        if result.failed:
            failures.append((q.question_id, result.error or "failed"))
            continue
        finish = result.completion.finish_reason if result.completion else None
        answers.append(GeneratedAnswer(q.question_id, result.value, "length" if finish == "max_tokens" else "stop"))
    return answers, failures
