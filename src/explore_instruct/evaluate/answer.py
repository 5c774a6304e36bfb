"""Answers for a question file, from a local model (batched `generate`) or an OpenAI-compatible endpoint.

Prompt formats: `alpaca` (the template `train` fine-tunes with, `train/prompting.py`), `chat` (the
local tokenizer's own chat template), `plain` (the bare question; an endpoint wraps it in its chat
template). `auto`, the default, picks for a local model the Alpaca prompt when `train` wrote the
model (its tokenizer carries the Alpaca chat template, or its folder `train_settings.json`), else
the model's chat template when it has one, else Alpaca (a base model); for an endpoint, `plain`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from explore_instruct.errors import UserError
from explore_instruct.evaluate.questions import Question
from explore_instruct.llm.base import CompletionRequest
from explore_instruct.llm.client import LLMClient
from explore_instruct.settings import Settings
from explore_instruct.train.prompting import alpaca_chat_template, question_prompt

PromptFormat = Literal["auto", "alpaca", "chat", "plain"]
PROMPT_FORMATS: tuple[str, ...] = ("auto", "alpaca", "chat", "plain")
STAGE = "answer"
# finish_reason of an answer cut at max_tokens; caches written by 0.1.0 hold it as "max_tokens".
TRUNCATED = ("length", "max_tokens")


class AnswerSettings(Settings):
    """Every setting of answering: `answer`'s options and an experiment spec's `evaluate.answer:` section."""

    model_config = ConfigDict(frozen=True)

    temperature: float = Field(0.0, ge=0, le=2, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(512, ge=1, description="Most tokens per answer.")
    seed: int = Field(0, description="Sampling seed.")
    prompt_format: PromptFormat = Field(
        "auto",
        description="auto, alpaca (the training template), chat (the tokenizer's template) or plain; auto: alpaca "
        "for a model `train` wrote, else its chat template if any (local), plain for an endpoint.",
    )
    batch_size: int = Field(8, ge=1, description="Questions per generate() call (local model).")

    def to_dict(self) -> dict[str, Any]:
        """How the answers were sampled, as each answer record keeps it (the batch size changes no answer)."""
        return self.model_dump(exclude={"batch_size"})


SamplingSettings = AnswerSettings  # the name the evaluation functions and their callers have used


@dataclass
class GeneratedAnswer:
    question_id: str
    text: str
    finish_reason: str  # "stop" | "length"


def render(question: Question, prompt_format: PromptFormat, tokenizer: Any = None) -> str:
    """The prompt text for one question in a resolved format (`chat` needs the local tokenizer)."""
    if prompt_format == "alpaca":
        return question_prompt(question.question)
    if prompt_format == "chat":
        messages = [{"role": "user", "content": question.question.strip()}]
        prompt: str = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt
    return question.question.strip()


def trained_here(model_folder: str | Path, chat_template: str | None) -> bool:
    """Did `train` write this model? It saves the Alpaca chat template with the tokenizer (which
    travels with any copy of the tokenizer) and `train_settings.json` beside the weights."""
    from explore_instruct.train.sft import SETTINGS_FILE

    if chat_template in {alpaca_chat_template(bos_token=bos) for bos in (True, False)}:
        return True
    return (Path(model_folder) / SETTINGS_FILE).is_file()


def local_prompt_format(requested: PromptFormat, model_folder: str | Path, tokenizer: Any) -> PromptFormat:
    """Resolve `auto` for a local model (see the module doc); `chat` needs a chat template."""
    template = getattr(tokenizer, "chat_template", None) or None
    if requested == "chat" and template is None:
        raise UserError(
            f"{model_folder}: prompt_format chat needs a tokenizer with a chat template (it has none)",
            settings=("prompt_format",),
        )
    if requested != "auto":
        return requested
    if trained_here(model_folder, template):
        return "alpaca"
    return "chat" if template is not None else "alpaca"


def endpoint_prompt_format(requested: PromptFormat) -> PromptFormat:
    """Resolve `auto` for an endpoint: the bare question, which the server wraps in its chat template."""
    if requested == "chat":
        raise UserError(
            "prompt_format chat is for a local model; an endpoint applies its own chat template (use plain)",
            settings=("prompt_format",),
        )
    return "plain" if requested == "auto" else requested


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
    fmt = local_prompt_format(settings.prompt_format, tokenizer.name_or_path, tokenizer)
    settings = settings.model_copy(update={"prompt_format": fmt})
    prompts = [render(q, fmt, tokenizer) for q in questions]
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
        # A chat template writes its own special tokens (BOS included), so none are added on top.
        enc = tokenizer(
            [prompts[i] for i in idx],
            return_tensors="pt",
            padding=True,
            add_special_tokens=settings.prompt_format != "chat",
        ).to(device)
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
) -> tuple[list[GeneratedAnswer], str, PromptFormat]:
    """Load a trained (or base) model from local files and answer every question.

    Returns (answers, model_id, the prompt format used once `auto` is resolved).
    """
    from explore_instruct.train.deps import require

    require("torch", "transformers")
    import torch

    from explore_instruct.train.models import load_model, load_tokenizer, resolve_source

    src = resolve_source(model_path, gguf_file)
    tokenizer = load_tokenizer(src, padding_side="left")
    fmt = local_prompt_format(settings.prompt_format, src.path, tokenizer)
    settings = settings.model_copy(update={"prompt_format": fmt})
    model = load_model(src)
    if torch.cuda.is_available():
        model = model.to("cuda")
    answers = generate_local(model, tokenizer, questions, settings, batch_size=batch_size, progress=progress)
    return answers, src.describe(), fmt


# --- endpoint ----------------------------------------------------------------------------------


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
        # A long free-text answer cut at max_tokens is still the model's answer: kept, and marked as cut.
        return q, await client.call(request, stage=STAGE, parse=lambda c: c.text.strip(), keep_truncated=True)

    answers, failures = [], []
    for q, result in await asyncio.gather(*(one(q) for q in questions)):
        if result.failed:
            failures.append((q.question_id, result.error or "failed"))
            continue
        finish = result.completion.finish_reason if result.completion else None
        answers.append(GeneratedAnswer(q.question_id, result.value, "length" if finish in TRUNCATED else "stop"))
    return answers, failures
