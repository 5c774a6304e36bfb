"""Tokens and money: the token estimate, prices, and the budget a run may not cross.

Tokens are estimated as one per four characters (rounded up), plus a few per message for the chat
format. tiktoken would be exact for OpenAI models, but it downloads its vocabulary files on first
use, which these machines cannot do; other servers' models use other tokenizers anyway. English
prose comes out within about 10-20 % of real BPE counts; the dry run says the figures are estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from explore_instruct.config import BudgetConfig, LLMConfig, PricingConfig
from explore_instruct.errors import RunStopped
from explore_instruct.llm.base import CompletionRequest, Usage

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators of the chat template, per message


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_tokens(request: CompletionRequest) -> int:
    """Estimated prompt tokens of a chat request."""
    return sum(estimate_tokens(m.content) + MESSAGE_OVERHEAD_TOKENS for m in request.messages)


def price(usage: Usage, pricing: PricingConfig | None, *, batch: bool = False) -> float:
    """What `usage` costs at `pricing` (0 without prices); `batch` applies the batch discount."""
    if pricing is None:
        return 0.0
    cost = (usage.prompt_tokens * pricing.input_per_mtok + usage.completion_tokens * pricing.output_per_mtok) / 1e6
    return cost * (1.0 - pricing.batch_discount) if batch else cost


class BudgetReached(RunStopped):
    """The next call could cross `llm.budget`: the run stops, its finished work kept."""


@dataclass
class _Reservation:
    tokens: int
    cost: float


class Budget:
    """Spent and reserved tokens (and cost) against `llm.budget`.

    Each attempt reserves its worst case (estimated prompt + max_tokens) before it is sent and settles
    with what the reply used; an attempt whose worst case could cross the cap is never sent.
    """

    def __init__(self, limit: BudgetConfig, pricing: PricingConfig | None, spent: Usage) -> None:
        self.limit = limit
        self.pricing = pricing
        self.spent = Usage(spent.prompt_tokens, spent.completion_tokens)
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self.reached = False  # once one call was held back, none starts after it

    @classmethod
    def from_config(cls, llm: LLMConfig, spent: Usage) -> Budget | None:
        return cls(llm.budget, llm.pricing, spent) if llm.budget is not None else None

    def reserve(self, request: CompletionRequest) -> _Reservation:
        return self.reserve_usage(Usage(prompt_tokens(request), request.max_tokens))

    def reserve_usage(self, worst: Usage) -> _Reservation:
        """Hold back `worst` (an embedding request's: its estimated input tokens, no output)."""
        reservation = _Reservation(worst.total_tokens, price(worst, self.pricing))
        if self.limit.max_tokens is not None:
            over = self.spent.total_tokens + self._reserved_tokens + reservation.tokens > self.limit.max_tokens
        else:
            over = self.cost() + self._reserved_cost + reservation.cost > (self.limit.max_cost or 0.0)
        if over or self.reached:
            self.reached = True
            raise BudgetReached(self._stop_line(), settings=("resume",))
        self._reserved_tokens += reservation.tokens
        self._reserved_cost += reservation.cost
        return reservation

    def settle(self, reservation: _Reservation, used: Usage) -> None:
        self._reserved_tokens -= reservation.tokens
        self._reserved_cost -= reservation.cost
        self.spent += used

    def cost(self) -> float:
        return price(self.spent, self.pricing)

    def _stop_line(self) -> str:
        tokens = f"{self.spent.total_tokens:,} tokens"
        if self.limit.max_tokens is not None:
            return (
                f"budget reached: {tokens} spent of llm.budget.max_tokens {self.limit.max_tokens:,}; the next call "
                "could cross it. Finished work is saved: raise llm.budget.max_tokens and rerun with resume to go on"
            )
        return (
            f"budget reached: {self.cost():.4f} spent ({tokens}) of llm.budget.max_cost {self.limit.max_cost:g}; "
            "the next call could cross it. Finished work is saved: raise llm.budget.max_cost and rerun with resume "
            "to go on"
        )
