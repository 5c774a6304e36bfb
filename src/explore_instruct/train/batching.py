"""Token-budget batches: which examples go into which row, micro-batch and optimizer step.

Pure planning over example lengths (no torch), so it can be tested and measured alone.

An epoch is a shuffled order of the examples cut into optimizer steps of `global_batch` examples (the
paper's 128), exactly as a padded trainer would cut it. Each step's examples are then laid out:

- `packed`: best-fit-decreasing packing into rows of at most `row_capacity` tokens (several examples per
  row; the collator restarts position ids at every example so attention stays inside it);
- `grouped`: one example per row, rows sorted by length (each micro-batch pads only to its own longest).

The rows are then split, longest first, into exactly `micro_batches_per_step` micro-batches (the trainer's
gradient accumulation times the number of devices), each costing at most the token budget (rows x the
widest row). That number is the largest any step of any planned epoch needs, so every step has the same
count; steps that need fewer split further (smaller micro-batches, no extra padding).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Layout = Literal["packed", "grouped"]
Row = list[int]  # example indices, in order
MicroBatch = list[Row]
Step = list[MicroBatch]


def shuffled_steps(n: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """A seeded permutation of range(n) cut into steps of `global_batch` (the last may be short)."""
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return [order[i : i + global_batch] for i in range(0, n, global_batch)]


def pack_rows(indices: Sequence[int], lengths: Sequence[int], capacity: int) -> list[Row]:
    """Best-fit decreasing: longest example first, into the fullest row it still fits in."""
    rows: list[Row] = []
    free: list[int] = []
    for i in sorted(indices, key=lambda i: (-lengths[i], i)):
        best = -1
        for r, room in enumerate(free):
            if lengths[i] <= room and (best < 0 or room < free[best]):
                best = r
        if best < 0:
            rows.append([i])
            free.append(capacity - lengths[i])
        else:
            rows[best].append(i)
            free[best] -= lengths[i]
    return rows


def _waste(rows: Sequence[Row], lengths: Sequence[int]) -> int:
    widths = [row_length(r, lengths) for r in rows]
    return len(widths) * max(widths) - sum(widths)


def pack_rows_evenly(indices: Sequence[int], lengths: Sequence[int], capacity: int, tries: int = 3) -> list[Row]:
    """Rows of nearly equal length. Rows of one micro-batch are padded to the longest, so the short last
    row that plain best-fit leaves would be mostly padding. For each row count R from the fewest
    possible (`tries` counts), find the smallest capacity (at most `capacity`) at which best-fit
    decreasing still needs only R rows; keep the packing that pads least."""
    total = sum(lengths[i] for i in indices)
    longest = max((lengths[i] for i in indices), default=0)
    best = pack_rows(indices, lengths, capacity)
    first = max(1, math.ceil(total / capacity))
    for count in range(first, first + tries):
        lo, hi = max(longest, math.ceil(total / count)), capacity
        if len(pack_rows(indices, lengths, hi)) > count:
            continue
        while lo < hi:  # smallest capacity that packs into `count` rows
            mid = (lo + hi) // 2
            if len(pack_rows(indices, lengths, mid)) <= count:
                hi = mid
            else:
                lo = mid + 1
        rows = pack_rows(indices, lengths, hi)
        if _waste(rows, lengths) < _waste(best, lengths):
            best = rows
    return best


def layout_rows(indices: Sequence[int], lengths: Sequence[int], layout: Layout, row_capacity: int) -> list[Row]:
    rows = pack_rows_evenly(indices, lengths, row_capacity) if layout == "packed" else [[i] for i in indices]
    return sorted(rows, key=lambda r: (-row_length(r, lengths), r[0]))


def row_length(row: Row, lengths: Sequence[int]) -> int:
    return sum(lengths[i] for i in row)


def _cut(widths: Sequence[int], budget: int) -> list[int]:
    """Greedy cut of rows sorted longest first: group sizes whose rows x first width stay <= budget."""
    sizes: list[int] = []
    start = 0
    while start < len(widths):
        take = max(1, budget // max(1, widths[start]))
        take = min(take, len(widths) - start)
        sizes.append(take)
        start += take
    return sizes


def micro_batches_needed(rows: Sequence[Row], lengths: Sequence[int], budget: int) -> int:
    return len(_cut([row_length(r, lengths) for r in rows], budget))


def _split_rows_until(rows: list[Row], lengths: Sequence[int], count: int) -> list[Row]:
    """Break the rows holding most examples in two until there are at least `count` rows."""
    rows = [list(r) for r in rows]
    while len(rows) < count:
        k = max(range(len(rows)), key=lambda j: (len(rows[j]), -j))
        if len(rows[k]) < 2:
            break
        row = rows.pop(k)
        half = len(row) // 2
        rows += [row[:half], row[half:]]
    return sorted(rows, key=lambda r: (-row_length(r, lengths), r[0]))


def split_micro_batches(rows: Sequence[Row], lengths: Sequence[int], count: int) -> list[MicroBatch]:
    """Exactly `count` micro-batches of consecutive rows (longest first), the costliest as cheap as
    possible: the smallest budget whose greedy cut needs at most `count` groups, then the largest
    groups halved until there are `count`."""
    rows = _split_rows_until(list(rows), lengths, count)
    if len(rows) < count:
        raise ValueError(f"cannot make {count} micro-batches from {len(rows)} examples")
    widths = [row_length(r, lengths) for r in rows]
    lo, hi = max(widths), len(widths) * max(widths)
    while lo < hi:  # smallest budget that cuts into <= count groups
        mid = (lo + hi) // 2
        if len(_cut(widths, mid)) <= count:
            hi = mid
        else:
            lo = mid + 1
    sizes = _cut(widths, lo)
    while len(sizes) < count:
        k = max(range(len(sizes)), key=lambda j: sizes[j])
        sizes[k : k + 1] = [sizes[k] - sizes[k] // 2, sizes[k] // 2]
    out, start = [], 0
    for size in sizes:
        out.append(rows[start : start + size])
        start += size
    return out


@dataclass(frozen=True)
class PlanSettings:
    layout: Layout
    global_batch: int  # examples per optimizer step, all devices together
    world_size: int
    row_capacity: int  # most tokens in one row (the max length)
    token_budget: int  # most tokens in one micro-batch: rows x widest row
    seed: int


@dataclass
class EpochPlan:
    steps: list[Step]  # each step: micro-batches in the order the devices take them (round robin)


@dataclass
class Plan:
    settings: PlanSettings
    accumulation: int  # micro-batches per device per step
    last_step_accumulation: int  # the same for a final short step (0: no such step)
    epochs: list[EpochPlan]

    @property
    def micro_batches_per_epoch(self) -> int:
        """Per device: what the trainer sees as the length of its data loader."""
        full = len(self.epochs[0].steps) - (1 if self.last_step_accumulation else 0)
        return full * self.accumulation + self.last_step_accumulation


def _last_step_accumulation(n: int, global_batch: int, world_size: int, accumulation: int) -> tuple[int, bool]:
    """(micro-batches per device for the final short step, whether it is dropped)."""
    short = n % global_batch
    if short == 0:
        return 0, False
    per_device = min(accumulation, short // world_size)
    return per_device, per_device == 0


def plan_epochs(lengths: Sequence[int], settings: PlanSettings, epochs: int) -> Plan:
    """Plan `epochs` epochs; the accumulation is the largest any of their steps needs."""
    s = settings
    if s.token_budget < s.row_capacity:
        raise ValueError("the token budget must hold at least one full row")
    n = len(lengths)
    laid: list[list[list[Row]]] = []
    need = 1
    for epoch in range(epochs):
        steps = [
            layout_rows(step, lengths, s.layout, s.row_capacity)
            for step in shuffled_steps(n, s.global_batch, s.seed, epoch)
        ]
        laid.append(steps)
        for rows in steps:
            need = max(need, math.ceil(micro_batches_needed(rows, lengths, s.token_budget) / s.world_size))
    accumulation = min(need, max(1, s.global_batch // s.world_size))
    # A final short step gets as many micro-batches as it has examples per device, at most `accumulation`.
    last, drop_last = _last_step_accumulation(n, s.global_batch, s.world_size, accumulation)
    planned = []
    for steps in laid:
        if drop_last:
            steps = steps[:-1]
        out = []
        for k, rows in enumerate(steps):
            short = bool(last) and k == len(steps) - 1
            count = (last if short else accumulation) * s.world_size
            out.append(_round_robin(split_micro_batches(rows, lengths, count), s.world_size))
        planned.append(EpochPlan(out))
    return Plan(s, accumulation, last, planned)


def _round_robin(micro: list[MicroBatch], world_size: int) -> list[MicroBatch]:
    """Order a step's micro-batches (longest first) so that device d, which takes every world_size-th
    one starting at d, gets a fair share of long and short ones."""
    if world_size == 1:
        return micro
    slots = [micro[i : i + world_size] for i in range(0, len(micro), world_size)]
    return [mb for slot in slots for mb in slot]


@dataclass(frozen=True)
class PlanStats:
    real_tokens: int
    computed_tokens: int  # rows x widest row of their micro-batch, summed

    @property
    def padding_fraction(self) -> float:
        return 1 - self.real_tokens / self.computed_tokens if self.computed_tokens else 0.0


def micro_batch_tokens(mb: MicroBatch, lengths: Sequence[int]) -> tuple[int, int]:
    """(real tokens, computed tokens) of one micro-batch."""
    widths = [row_length(r, lengths) for r in mb]
    return sum(widths), len(widths) * max(widths, default=0)


def plan_stats(steps: Sequence[Step], lengths: Sequence[int]) -> PlanStats:
    real = computed = 0
    for step in steps:
        for mb in step:
            r, c = micro_batch_tokens(mb, lengths)
            real += r
            computed += c
    return PlanStats(real, computed)


def padded_stats(lengths: Sequence[int], global_batch: int, per_device: int, seed: int, epochs: int = 1) -> PlanStats:
    """What a padded trainer computes: random micro-batches of `per_device` rows, each padded to its longest."""
    real = computed = 0
    for epoch in range(epochs):
        for step in shuffled_steps(len(lengths), global_batch, seed, epoch):
            for i in range(0, len(step), per_device):
                widths = [lengths[j] for j in step[i : i + per_device]]
                real += sum(widths)
                computed += len(widths) * max(widths)
    return PlanStats(real, computed)
