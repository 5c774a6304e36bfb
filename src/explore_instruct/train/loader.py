"""The torch side of token-budget batches: a batch sampler that replays a `batching.Plan`, and the
collator that turns a micro-batch into model inputs.

Packed rows carry no attention mask; their position ids restart at 0 at every example (and at the
padding that ends a row), which is how transformers recognises packed sequences and keeps attention
inside each one (`masking_utils.find_packed_sequence_indices`, with `sdpa`, eager and flash attention).
Labels are the tokenized dataset's own: -100 on prompt tokens, so the loss is on completions only;
padding is -100 too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from explore_instruct.train.batching import Layout, Plan

IGNORE = -100


class RowTaggedDataset:
    """The tokenized examples, indexed by (example, row): the row travels with the example to the collator."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, row = key
        item = self.dataset[index]
        return {"input_ids": item["input_ids"], "labels": item["labels"], "row": row}


class PlanSampler:
    """Yields the plan's micro-batches, all devices' in round-robin order (accelerate's shard wrapper
    hands device d every world_size-th one). Epoch e replays planned epoch e (modulo the planned count)."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.plan.micro_batches_per_epoch * self.plan.settings.world_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.plan.epochs[self.epoch % len(self.plan.epochs)]
        self.epoch += 1  # advances on its own when nobody calls set_epoch
        for step in epoch.steps:
            for micro in step:
                yield [(i, r) for r, row in enumerate(micro) for i in row]


@dataclass
class TokenMeter:
    """Real and computed tokens of the batches handed to the model, counted as they are consumed."""

    pending: deque[tuple[int, int]] = field(default_factory=deque)
    real: int = 0
    computed: int = 0

    def produced(self, real: int, computed: int) -> None:
        self.pending.append((real, computed))

    def consume(self) -> None:
        """One micro-batch went through the model (batches are consumed in the order they were made)."""
        if self.pending:
            real, computed = self.pending.popleft()
            self.real += real
            self.computed += computed


def _pad(seq: Sequence[int], width: int, value: int) -> list[int]:
    return list(seq) + [value] * (width - len(seq))


@dataclass
class RowCollator:
    """Micro-batch -> tensors. `packed`: rows of several examples, position ids per example, no mask.
    `grouped`: one example per row, right padding and an attention mask."""

    pad_token_id: int
    layout: Layout
    meter: TokenMeter | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        rows: dict[int, list[dict[str, Any]]] = {}
        for ex in examples:
            rows.setdefault(ex["row"], []).append(ex)
        ids, labels, positions = [], [], []
        for members in rows.values():
            ids.append([t for ex in members for t in ex["input_ids"]])
            labels.append([t for ex in members for t in ex["labels"]])
            positions.append([p for ex in members for p in range(len(ex["input_ids"]))])
        width = max(len(r) for r in ids)
        real = sum(len(r) for r in ids)
        if self.meter is not None:
            self.meter.produced(real, width * len(ids))
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([_pad(r, width, self.pad_token_id) for r in ids]),
            "labels": torch.tensor([_pad(r, width, IGNORE) for r in labels]),
        }
        if self.layout == "packed":
            # The padding that ends a row starts a sequence of its own, so it never joins a real one.
            batch["position_ids"] = torch.tensor([p + list(range(width - len(p))) for p in positions])
        else:
            batch["attention_mask"] = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
        return batch


@dataclass
class CountingCollator:
    """Wraps another collator (the padded trainer's) to count its real and computed tokens."""

    inner: Any
    meter: TokenMeter

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = self.inner(examples)
        mask = batch.get("attention_mask")
        computed = int(batch["input_ids"].numel())
        self.meter.produced(int(mask.sum()) if mask is not None else computed, computed)
        return batch
