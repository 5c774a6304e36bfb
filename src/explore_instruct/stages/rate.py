"""LLM rating: a judge model scores each kept example from 1 to 10 against the domain's rubric.

Off by default (`rate.enabled`). One call per example that reached the stage, held to the schema
`{score, reason}` (`parse.RATING_SCHEMA`) where the endpoint takes structured output; the judge is
`rate.llm` (its own endpoint and model) or, when that is omitted, the run's `llm`. An example scored
below `rate.threshold` is dropped (`drop_stage: "rate"`, its score in `score`); every rating is kept
in the `ratings` table (`ratings.py`) and exported as the record's `rating`.

Each request is a function of the example (its key, text and task) and the run's seed, so its cache
key is the same on a resume: a rerun replays every rating from the call log and sends nothing. The
ratings table is rebuilt from those replies each time the stage runs, and the drops are decided
when it ends (or stops), so a killed run resumed gives the data an uninterrupted one gives.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from explore_instruct.context import RunContext
from explore_instruct.llm.base import Completion, CompletionRequest
from explore_instruct.parse import RATING_SCHEMA, parse_rating
from explore_instruct.prompting import PromptBuilder
from explore_instruct.ratings import Rating
from explore_instruct.runstore import ExampleRow, clear_ratings, save_rating
from explore_instruct.stages import sample
from explore_instruct.tree import Example

STAGE = "rate"


def build_request(prompts: PromptBuilder, key: str, example: Example, task_path: list[str]) -> CompletionRequest:
    """The rating request for the example stored under `key`, with the judge's sampling settings."""
    return prompts.request(
        "rate.txt",
        seed=prompts.stable_seed(STAGE, key),
        json_schema=RATING_SCHEMA,
        schema_name="rating",
        llm=prompts.config.rate.judge(prompts.config.llm),
        task_path=" > ".join(task_path),
        rubric=prompts.profile.rubric,
        example=example,
    )


def parse_reply(completion: Completion) -> Rating:
    score, reason = parse_rating(completion.text)
    return Rating(score, reason)


def drop_reason(threshold: int) -> str:
    return f"rated below {threshold}"


@dataclass(frozen=True)
class RateResult:
    rated: int
    dropped: int  # rated below rate.threshold


async def run(ctx: RunContext) -> RateResult:
    """Rate every example that reached the stage.

    With `rate.enabled` off, earlier ratings and the drops they made are undone (the call log keeps
    the replies, so enabling it again sends nothing new).
    """
    cfg = ctx.config.rate
    rows = ctx.store.reached(STAGE) if cfg.enabled else []
    view = ctx.store.tree_view()
    rated: dict[str, Rating] = {}
    if rows:
        client = ctx.client_for(STAGE)
        with ctx.store.transaction():
            clear_ratings(ctx.store.conn)  # rebuilt from the call log below: none stays from other settings

        async def rate(row: ExampleRow) -> None:
            def commit(rating: Rating, call_id: int) -> None:
                save_rating(ctx.store.conn, row.key, rating, call_id)
                rated[row.key] = rating

            request = build_request(
                ctx.prompts, row.key, Example(row.instruction, row.input, row.output), view.path(row.node_id)
            )
            await client.call(request, stage=STAGE, parse=parse_reply, commit=commit)
            ctx.progress.advance(STAGE)

        ctx.progress.start(STAGE, len(rows))
        try:
            await asyncio.gather(*(rate(row) for row in rows))
        finally:  # a stopped stage applies the ratings it got; the resume finishes the rest
            _apply(ctx, rows, rated)
        ctx.progress.finish(STAGE)
    else:
        _apply(ctx, rows, rated)
    return RateResult(len(rated), sum(r.score < cfg.threshold for r in rated.values()))


def _apply(ctx: RunContext, rows: list[ExampleRow], rated: dict[str, Rating]) -> None:
    """Drop the examples rated below the threshold (an example whose call failed stays, unrated)."""
    threshold = ctx.config.rate.threshold
    drops = [
        (row.id, drop_reason(threshold), None, float(rating.score))
        for row in rows
        if (rating := rated.get(row.key)) is not None and rating.score < threshold
    ]
    with ctx.store.transaction():
        if not ctx.config.rate.enabled:
            clear_ratings(ctx.store.conn)
        ctx.store.mark_dropped(STAGE, drops)
        sample.redraw(ctx)
