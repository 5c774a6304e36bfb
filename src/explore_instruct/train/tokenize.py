"""Prompt/completion pairs as token ids and labels, before the trainer exists.

The batch plan needs every example's length before the trainer is built (the gradient accumulation
and the warm-up steps are trainer arguments), so the examples are tokenized here, the way TRL's
SFTTrainer does it for prompt/completion data (a test checks both give the same ids and labels), and
handed to it already prepared: completion plus the end-of-sequence token, labels -100 on the prompt,
cut at `max_length`, and an example whose completion is cut away entirely is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE = -100


@dataclass
class Tokenized:
    examples: list[dict[str, list[int]]]  # input_ids, labels
    truncated: int  # examples cut at max_length
    dropped: int  # examples with no completion token left after the cut

    @property
    def lengths(self) -> list[int]:
        return [len(e["input_ids"]) for e in self.examples]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def tokenize_pairs(pairs: Sequence[dict[str, str]], tokenizer: Any, max_length: int) -> Tokenized:
    eos = tokenizer.eos_token
    examples, truncated, dropped = [], 0, 0
    for pair in pairs:
        completion = pair["completion"] if pair["completion"].endswith(eos) else pair["completion"] + eos
        prompt_ids = tokenizer(pair["prompt"])["input_ids"]
        ids = tokenizer(pair["prompt"] + completion)["input_ids"]
        # The completion starts where the two tokenizations diverge (tokens may merge across the boundary).
        start = _common_prefix(prompt_ids, ids)
        labels = [IGNORE] * start + list(ids[start:])
        if len(ids) > max_length:
            truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        if all(label == IGNORE for label in labels):
            dropped += 1
            continue
        examples.append({"input_ids": list(ids), "labels": labels})
    return Tokenized(examples, truncated, dropped)
