"""The Python API: open or resume a run, and run one stage or all of them over the run store.

The CLI is a thin layer over these functions; so are the baselines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from explore_instruct.config import LLMConfig, RunConfig, build_config, load_config
from explore_instruct.context import Progress, RunContext, SilentProgress
from explore_instruct.datafile import atomic_write_text
from explore_instruct.errors import RunStopped, UserError
from explore_instruct.export import write_run_exports
from explore_instruct.llm.base import LLM, FatalLLMError, Usage
from explore_instruct.llm.client import LLMClient, RetryPolicy
from explore_instruct.llm.embeddings import Embedder
from explore_instruct.runstore import CONFIG_FILE, RunStore
from explore_instruct.stages import ALL_STAGES, BY_NAME, RunResults
from explore_instruct.stages.rate import STAGE as RATE_STAGE
from explore_instruct.start import insert_start, starting_tree

log = logging.getLogger(__name__)


def open_run(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool,
    model_id: str | None = None,
    allow_model_change: bool = False,
) -> RunStore:
    """A new run directory, or the existing one when resuming (its config is replaced by `config`).

    Either way this process then holds the run's lock. `model_id` is the model the calls will go
    to: resuming a run whose replies came from another model is refused unless `allow_model_change`.
    """
    if RunStore.exists(run_dir):
        if not resume:
            raise UserError(f"{run_dir}: already holds a run; pass resume to continue it", settings=("resume",))
        store = RunStore.open(run_dir, write=True)
        try:
            if model_id is not None and not allow_model_change:
                _refuse_model_change(store, model_id)
            # A process killed between a commit and its exports left them stale: match the database first.
            if store.nodes():
                write_run_exports(store)
        except BaseException:
            store.close()
            raise
        config_path = Path(run_dir) / CONFIG_FILE
        new_yaml = config.to_yaml()
        if config_path.is_file() and config_path.read_text(encoding="utf-8") != new_yaml:
            # Changed prompts or settings make new requests: those calls are paid for again.
            log.warning(
                "%s: the config differs from the one this run used; calls it changes will be sent again", run_dir
            )
        atomic_write_text(config_path, new_yaml)
        return store
    return RunStore.create(run_dir, config.to_yaml())


def _refuse_model_change(store: RunStore, model_id: str) -> None:
    # The rate stage's judge may be another model: its replies rate the data, they are not the data.
    used = [m for m in store.calls.models(excluding=(RATE_STAGE,)) if m != model_id]
    if used:
        raise UserError(
            f"{store.run_dir}: its replies came from {', '.join(used)}, this run would use {model_id}; "
            "pass allow_model_change to mix the two models' data",
            settings=("allow_model_change",),
        )


def stored_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The resolved config a run directory was started with (plus CLI overrides)."""
    if not RunStore.exists(run_dir):
        RunStore.open(run_dir).close()  # raises the clear "not a run directory" error
    return load_config(Path(run_dir) / CONFIG_FILE, overrides)


def build_backend(config: RunConfig) -> LLM:
    from explore_instruct.llm.factory import backend_from_config

    return backend_from_config(config.llm)


def make_client(config: RunConfig, store: RunStore, backend: LLM | None = None) -> LLMClient:
    backend = backend if backend is not None else build_backend(config)
    return _client(config.llm, store, backend, store.calls.spent())


def _client(llm: LLMConfig, store: RunStore, backend: LLM, spent: Usage) -> LLMClient:
    from explore_instruct.cost import Budget

    return LLMClient(
        backend,
        store.calls,
        max_concurrency=llm.total_concurrency(),
        retry=RetryPolicy(retries=llm.retries),
        budget=Budget.from_config(llm, spent),
    )


def make_stage_clients(
    config: RunConfig, store: RunStore, stages: Sequence[str], backends: Mapping[str, LLM] | None = None
) -> dict[str, LLMClient]:
    """Clients of the stages with an endpoint of their own: the rate stage when `rate.llm` is given.

    Its budget (`rate.llm.budget`) counts the rating calls only.
    """
    from explore_instruct.llm.factory import backend_from_config
    from explore_instruct.stages import rate

    judge = config.rate.llm
    if rate.STAGE not in stages or not config.rate.enabled or judge is None:
        return {}
    backend = (backends or {}).get(rate.STAGE) or backend_from_config(judge)
    used = store.calls.usage_by_stage().get(rate.STAGE, {})
    spent = Usage(used.get("prompt_tokens", 0), used.get("completion_tokens", 0))
    return {rate.STAGE: _client(judge, store, backend, spent)}


async def _check_backend(client: LLMClient) -> None:
    await client.backend.check()


async def run_stages_async(ctx: RunContext, stages: Sequence[str]) -> RunResults:
    """Run `stages` in order on `ctx`, each once what it needs is there; returns what they reported."""
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown:
        raise UserError(f"unknown stage(s): {', '.join(unknown)}")
    results = RunResults()
    try:
        if calls_llm(ctx.config, stages):
            await _check_backend(ctx.require_client())
        for client in ctx.stage_clients.values():
            await _check_backend(client)
        for name in stages:
            stage = BY_NAME[name]
            if stage.needs.tree:  # "run 'explore' first" when there is none
                ctx.store.require_tree()
            results.record(name, await stage.run(ctx))
    except FatalLLMError as exc:
        raise RunStopped(
            f"{exc} (finished work is saved; fix it and rerun with resume)", settings=("resume",)
        ) from None
    finally:
        if ctx.store.nodes():  # exports reflect whatever finished, even when a stage stopped
            write_run_exports(ctx.store)
    return results


def run_stages(
    config: RunConfig,
    run_dir: str | Path,
    stages: Sequence[str] = ALL_STAGES,
    *,
    resume: bool = True,
    backend: LLM | None = None,
    progress: Progress | None = None,
    allow_model_change: bool = False,
    stage_backends: Mapping[str, LLM] | None = None,
    embedder: Embedder | None = None,
) -> tuple[RunContext, RunResults]:
    """Open (or resume) the run at `run_dir` and run `stages`. Returns the context and results.

    `stage_backends` replaces the backend a stage with an endpoint of its own would build (tests);
    `embedder` answers the semantic filter's embeddings (default: built from `embeddings`)."""
    starting_tree(config)  # a malformed seed tree fails here, before anything is written
    if "decontaminate" in stages and config.decontaminate.against:  # so does a bad question file
        from explore_instruct.decontaminate import build_index

        build_index(config.decontaminate.against, config.decontaminate.ngram)
    needs_llm = calls_llm(config, stages)
    if needs_llm and backend is None:
        backend = build_backend(config)  # a bad llm section fails here, before anything is written
    store = open_run(
        config,
        run_dir,
        resume=resume,
        model_id=backend.model_id if needs_llm and backend is not None else None,
        allow_model_change=allow_model_change,
    )
    return run_on_store(
        store, config, stages, backend=backend, progress=progress, stage_backends=stage_backends, embedder=embedder
    )


def calls_llm(config: RunConfig, stages: Sequence[str]) -> bool:
    """Whether any of `stages` calls the run's LLM under `config` (a disabled rate stage does not)."""
    return any(BY_NAME[s].calls_llm(config) for s in stages if s in BY_NAME)


def run_on_store(
    store: RunStore,
    config: RunConfig,
    stages: Sequence[str],
    *,
    backend: LLM | None = None,
    progress: Progress | None = None,
    stage_backends: Mapping[str, LLM] | None = None,
    embedder: Embedder | None = None,
) -> tuple[RunContext, RunResults]:
    """Run `stages` on a run this process opened for writing, with `config` (which may differ from
    the stored one: a study draws each cell's filter and sample from one generated pool)."""
    needs_llm = calls_llm(config, stages)
    if needs_llm:  # for `stats` to show beside the spend
        keep_estimate(store, config)
    client = make_client(config, store, backend) if needs_llm else None
    ctx = RunContext(store, config, client, progress or SilentProgress(), embedder=embedder)
    ctx.stage_clients = make_stage_clients(config, store, stages, stage_backends)

    async def go() -> RunResults:
        try:
            return await run_stages_async(ctx, stages)
        finally:
            await ctx.close_embedder()
            for one in [client, *ctx.stage_clients.values()]:
                if one is not None:
                    await one.aclose()

    return ctx, asyncio.run(go())


def keep_estimate(store: RunStore, config: RunConfig) -> None:
    """Store the dry run's estimate of `config` in the run, for `stats` to show beside the spend.

    The first estimate stays: a resume, whose calls are partly done, does not replace it.
    """
    from explore_instruct.estimate import estimate_run, load_estimate, save_estimate

    if not load_estimate(store.conn):
        save_estimate(store.conn, estimate_run(config))


def import_tree(source_dir: str | Path, run_dir: str | Path, *, domain: str = "generic") -> RunStore:
    """Start a run from a tree in the release's directory format (nothing is explored)."""
    if not (Path(source_dir) / "tree_meta_info.json").is_file():
        raise UserError(f"{source_dir}: no tree_meta_info.json (not a tree in the release's format)")
    config = build_config(
        {"domain": domain, "seed_tree": str(Path(source_dir).resolve()), "explore": {"max_depth": 0}},
        "import-tree",
    )
    starting_tree(config)  # validates the whole tree before the run directory is created
    if RunStore.exists(run_dir):  # RunStore.create's hint names --resume, which import-tree does not have
        raise UserError(f"{run_dir}: already holds a run; import into another run_dir", settings=("run_dir",))
    store = RunStore.create(run_dir, config.to_yaml())
    insert_start(store, config)
    write_run_exports(store)
    return store
