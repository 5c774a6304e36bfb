"""Pipeline commands: `run` (every stage) and one command per stage, plus export, import, stats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from explore_instruct.cli.progress import LOCAL_FIRST_REPLY_HINT, REMOTE_FIRST_REPLY_HINT, StageProgress
from explore_instruct.cli.settings_options import with_overrides
from explore_instruct.cli.vocabulary import AliasedCommand, api_key_env_option
from explore_instruct.config import LLMConfig, RunConfig, load_config, parse_override
from explore_instruct.errors import UserError
from explore_instruct.pipeline import import_tree, run_stages, stored_config
from explore_instruct.runstore import CONFIG_FILE, RunStore
from explore_instruct.stages import ALL_STAGES, BY_NAME
from explore_instruct.summary import run_summary

# The `llm` settings `run` takes as options (the rest through --set llm.NAME=VALUE); help and type
# come from LLMConfig. `api_key_env` has its own option, which refuses a pasted key unechoed.
RUN_LLM_OVERRIDES = ("backend", "base_url", "model", "max_tokens", "max_concurrency")

console = Console(stderr=True)
out = Console()

RunDir = Annotated[Path, typer.Option("--run-dir", "-r", help="The run directory.")]
WHICH = ("sample", "kept", "reviewed", "dropped", "all")
Which = Annotated[str, typer.Option(help="sample | kept | reviewed | dropped | all")]
License = Annotated[
    str | None,
    typer.Option("--license", help="The data's licence on the card (a Hub id, e.g. cc-by-4.0); default: the config's."),
]
Analysis = Annotated[
    bool | None,
    typer.Option(
        "--analysis/--no-analysis",
        help="Put the verb–noun chart, seed overlap and diversity measures on the card (default: when installed).",
    ),
]


def check_which(which: str) -> None:
    if which not in WHICH:
        raise UserError(f"--which {which!r}: choose sample, kept, reviewed, dropped or all")


def check_license(value: str | None) -> str | None:
    from explore_instruct.config import check_hub_id

    try:
        return None if value is None else check_hub_id(value)
    except ValueError as exc:
        raise UserError(f"--license: {exc}") from None


Sets = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config value: section.field=value (repeatable)."),
]


def _overrides(sets: list[str] | None, **flags: Any) -> dict[str, Any]:
    values = dict(parse_override(s) for s in sets or [])
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def _clip(text: str, width: int = 48) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _later_drops(e: dict[str, int]) -> str:
    """The quality controls after the diversity filter, named only when they dropped something."""
    parts = [
        f", {e['dropped_semantic']} too close in meaning" if e["dropped_semantic"] else "",
        f", {e['dropped_decontaminate']} contaminated" if e["dropped_decontaminate"] else "",
        f", {e['dropped_rate']} rated too low" if e["dropped_rate"] else "",
    ]
    return "".join(parts)


def print_summary(store: RunStore, session: Any = None, to: Console = console) -> None:
    s = run_summary(store, session)
    table = Table(title=f"run {store.run_dir}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    depths = ", ".join(f"depth {d}: {n}" for d, n in s["tasks_per_depth"].items())
    table.add_row("tasks", f"{depths}  ({s['pruned_tasks']} pruned)")
    if s["dropped_task_names"]:
        names = ", ".join(f"{reason} ({n})" for reason, n in list(s["dropped_task_names"].items())[:4])
        table.add_row("  dropped: task names", names)
    e = s["examples"]
    table.add_row(
        "examples",
        f"{e['written']} written → {e['dropped_quality']} failed quality, {e['dropped_duplicate']} exact "
        f"duplicates, {e['dropped_filter']} too similar{_later_drops(e)} → {e['kept']} kept → "
        f"{e['sampled']} sampled",
    )
    if changed := s.get("quality_verdicts_recomputed"):
        table.add_row("quality verdicts", f"recomputed with the current rules: {changed} changed")
    if s["ratings"]["rated"]:
        r = s["ratings"]
        spread = ", ".join(f"{score}: {n}" for score, n in r["scores"].items())
        table.add_row("ratings", f"{r['rated']} rated, mean {r['mean']:.1f} (score: examples {spread})")
    for stage, reasons in s["drop_reasons"].items():
        top = ", ".join(f"{reason} ({n})" for reason, n in list(reasons.items())[:4])
        table.add_row(f"  dropped: {stage}", top)
    for c in s["filter_collisions"]:
        table.add_row("  e.g.", f"{_clip(c['dropped'])!r} ~ kept {_clip(c['kept'])!r} (ROUGE-L {c['score']:.2f})")
    for c in s["semantic_collisions"]:
        table.add_row("  e.g.", f"{_clip(c['dropped'])!r} ~ kept {_clip(c['kept'])!r} (cosine {c['score']:.2f})")
    session_stats = s.get("this_session", {})
    for stage, c in s["calls"].items():
        here = session_stats.get(stage)
        extra = f"; this session {here['calls']} new, {here['cache_hits']} from cache" if here else ""
        reasons = ", ".join(f"{reason} {n}" for reason, n in c.get("retry_reasons", {}).items())
        retried = f" ({c['attempts']} attempts; failed attempts: {reasons})" if reasons else ""
        table.add_row(
            f"calls: {stage}",
            f"{c['calls']} ok, {c['failed']} failed{retried}; tokens {c['prompt_tokens']} in / "
            f"{c['completion_tokens']} out{extra}",
        )
    for name, e in s["endpoints"].items():
        mean = f"{e['mean_seconds']:.2f} s per call" if e["mean_seconds"] is not None else "no call answered"
        table.add_row(f"endpoint: {name}", f"{e['calls']} ok, {e['failed']} failed; {mean}")
    for row in s["estimate_vs_spent"]:
        est, spent = row["estimate"], row["spent"]
        # Costs only where the config has prices; without them they would read 0.
        est_cost, spent_cost = (
            (f", cost {est['cost']:.4f}", f", cost {spent['cost']:.4f}") if row.get("priced") else ("", "")
        )
        table.add_row(
            f"estimate: {row['stage']}",
            f"{est['calls']} calls, {est['prompt_tokens']} in / {est['completion_tokens']} out{est_cost}"
            f"; spent {spent['calls']} calls, {spent['prompt_tokens']} in / {spent['completion_tokens']} out"
            f"{spent_cost}",
        )
    to.print(table)


def print_estimate(config: RunConfig) -> None:
    """The dry run: each LLM stage's first prompt, then calls, tokens and cost per stage; nothing is sent."""
    from explore_instruct.estimate import estimate_run

    estimate = estimate_run(config)
    for stage, prompt in estimate.first_prompts.items():
        console.rule(f"first {stage} prompt", style="dim")
        console.print(prompt, markup=False, highlight=False)
    table = Table(title="dry run: nothing was sent (tokens estimated at 4 characters each)", title_justify="left")
    for column in ("stage", "calls", "prompt tokens", "completion tokens", "cost"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for s in [*estimate.stages, estimate.total()]:
        table.add_row(s.stage, f"{s.calls:,}", f"{s.prompt_tokens:,}", f"{s.completion_tokens:,}", f"{s.cost:.4f}")
    console.print(table)
    total, budget = estimate.total(), config.llm.budget
    if budget is not None:
        need, cap = (
            (total.cost, budget.max_cost)
            if budget.max_cost is not None
            else (total.prompt_tokens + total.completion_tokens, budget.max_tokens or 0)
        )
        verdict = "within" if need <= cap else "above: the run will stop before the end and can --resume with more"
        console.print(f"llm.budget {cap:g}: the estimate ({need:g}) is {verdict}", highlight=False)
    pricing = config.llm.pricing
    if pricing is None:
        console.print("no llm.pricing set: costs are 0 (give input_per_mtok and output_per_mtok to price the run)")
    elif pricing.batch_discount:
        batched = estimate.cost_in_batch_mode(pricing)
        console.print(f"with enrichment through a batch API ({pricing.batch_discount:.0%} off): {batched:.4f}")


def _config(config_file: Path, run_dir: Path, resume: bool, overrides: dict[str, Any]) -> RunConfig:
    """The config to run with: a resumed run keeps its stored settings (the first run's flags included)."""
    if not (resume and RunStore.exists(run_dir)):
        return load_config(config_file, overrides)
    # Flags and --set given now still apply on top; open_run warns when they change the config.
    console.print(f"resuming with the settings in {run_dir / CONFIG_FILE}", highlight=False)
    return stored_config(run_dir, overrides)


def _progress(config: RunConfig) -> StageProgress:
    hint = LOCAL_FIRST_REPLY_HINT if config.llm.backend == "local" else REMOTE_FIRST_REPLY_HINT
    llm_stages = frozenset(name for name, stage in BY_NAME.items() if stage.needs.llm)
    return StageProgress(llm_stages=llm_stages, first_reply_hint=hint)


AllowModelChange = Annotated[
    bool, typer.Option("--allow-model-change", help="Resume with another model than the run's replies came from.")
]


def _run(
    config: RunConfig, run_dir: Path, stages: tuple[str, ...], resume: bool, allow_model_change: bool = False
) -> None:
    with _progress(config) as progress:
        ctx, results = run_stages(
            config, run_dir, stages, resume=resume, progress=progress, allow_model_change=allow_model_change
        )
    session = ctx.client.stats if ctx.client else None
    print_summary(ctx.store, session)
    redrawn = results.ran("filter", "semantic", "decontaminate", "rate") and ctx.store.sample_ids()
    if results.sample is not None or redrawn:  # a stage that drops examples redraws a sample
        from explore_instruct.stages.sample import shortfall

        if short := shortfall(ctx):
            console.print(short, style="yellow", highlight=False)
    if results.filter is not None:
        console.print(f"diversity filter: kept {results.filter.kept} / {results.filter.judged}")
    if results.semantic is not None and config.filter.semantic.enabled:
        console.print(f"semantic filter: kept {results.semantic.kept} / {results.semantic.judged}")
    if results.decontaminate is not None and config.decontaminate.against:
        removed = results.decontaminate
        console.print(f"decontamination: removed {removed.removed} / {removed.judged}")
    if results.rate is not None and config.rate.enabled:
        rated = results.rate
        console.print(f"rating: rated {rated.rated}, dropped {rated.dropped} below {config.rate.threshold}")
    exports = ", ".join(p for p in ("tree.json", "data/kept.jsonl", "data/sample.json") if (run_dir / p).exists())
    console.print(f"wrote {exports} in {run_dir}")
    ctx.store.close()


def register(app: typer.Typer) -> None:
    @app.command(cls=AliasedCommand)
    @with_overrides(LLMConfig, "llm", RUN_LLM_OVERRIDES, param="llm")
    def run(
        config: Annotated[Path, typer.Argument(metavar="CONFIG", help="The run config (YAML).")],
        run_dir: Annotated[Path | None, typer.Option("--run-dir", "-r", help="Default: runs/<config name>.")] = None,
        resume: Annotated[
            bool,
            typer.Option(
                "--resume", help="Continue a killed or finished run with its stored settings (flags given now apply)."
            ),
        ] = False,
        sets: Sets = None,
        llm: dict[str, Any] | None = None,  # the options of RUN_LLM_OVERRIDES (with_overrides)
        api_key_env: Annotated[
            str | None, api_key_env_option("Environment variable holding the endpoint's key (its NAME).")
        ] = None,
        max_depth: Annotated[int | None, typer.Option(help="Max depth K.")] = None,
        sample_size: Annotated[int | None, typer.Option(help="Examples to sample.")] = None,
        allow_model_change: AllowModelChange = False,
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print the first prompts and the estimated calls, tokens and cost.")
        ] = False,
    ) -> None:
        """Run every stage: explore, prune, generate, filter, semantic, decontaminate, rate, sample; then export."""
        directory = run_dir or Path("runs") / config.stem
        overrides = _overrides(
            sets,
            **(llm or {}),
            **{"llm.api_key_env": api_key_env, "explore.max_depth": max_depth, "sample.size": sample_size},
        )
        cfg = _config(config, directory, resume, overrides)
        if dry_run:
            print_estimate(cfg)
            return
        _run(cfg, directory, ALL_STAGES, resume, allow_model_change)

    def stage_command(stage: str, doc: str) -> None:
        def command(run_dir: RunDir, sets: Sets = None, allow_model_change: AllowModelChange = False) -> None:
            cfg = stored_config(run_dir, _overrides(sets))
            _run(cfg, run_dir, (stage,), resume=True, allow_model_change=allow_model_change)

        command.__doc__ = doc
        app.command(name=stage, cls=AliasedCommand)(command)

    stage_command("explore", "Grow the task tree (lookahead + backtracking depth-first search).")
    stage_command("generate", "Write N examples for every task (enrichment).")
    stage_command("prune", "Mark tasks whose names are too close to an earlier task's.")
    stage_command("filter", "Drop instructions too similar (ROUGE-L) to a kept one.")
    stage_command("semantic", "Drop instructions too close in meaning (embedding cosine) to a kept one.")
    # The decontaminate stage runs within `run`; the `decontaminate` command (cli/decontaminate.py) is for files.
    stage_command("rate", "Score each kept example 1-10 with an LLM judge; drop those below rate.threshold.")
    stage_command("sample", "Draw the target number of examples across tasks.")

    from explore_instruct.cli.analysis import baseline_app

    @baseline_app.command("self-instruct", cls=AliasedCommand)
    def self_instruct(
        config: Annotated[
            Path, typer.Argument(metavar="CONFIG", help="The exploration run's config (same root and seeds).")
        ],
        run_dir: Annotated[
            Path | None, typer.Option("--run-dir", "-r", help="Default: runs/<config>-self-instruct.")
        ] = None,
        sample_size: Annotated[
            int | None, typer.Option(help="Examples to generate (default: the config's sample size).")
        ] = None,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue a killed or finished run with its stored settings.")
        ] = False,
        sets: Sets = None,
    ) -> None:
        """Domain-Aware Self-Instruct: the same root and seeds, no exploration (K = 0), bootstrapped."""
        from explore_instruct.baselines.self_instruct import self_instruct_config

        directory = run_dir or Path("runs") / f"{config.stem}-self-instruct"
        cfg = self_instruct_config(_config(config, directory, resume, _overrides(sets)), sample_size)
        _run(cfg, directory, ALL_STAGES, resume)

    @app.command(cls=AliasedCommand)
    def export(
        run_dir: RunDir,
        fmt: Annotated[
            str, typer.Option("--format", "-f", help="upstream | alpaca | jsonl | messages | sharegpt | hf")
        ] = "alpaca",
        out_path: Annotated[
            Path | None,
            typer.Option(
                "--out",
                "-o",
                help="File (or folder for upstream and hf). Default: <run-dir>/exports/<which>.<format>[.json/l].",
            ),
        ] = None,
        which: Which = "sample",
        license_id: License = None,
        analysis: Analysis = None,
    ) -> None:
        """Write the run's data in one format (hf: a Hugging Face dataset folder with its card)."""
        from explore_instruct.export import default_export_name
        from explore_instruct.export import export as do_export
        from explore_instruct.publish.options import CardOptions
        from explore_instruct.runstore import decisions

        check_which(which)
        store = RunStore.open(run_dir)
        target = out_path or run_dir / "exports" / default_export_name(fmt, which)
        card = CardOptions(license=check_license(license_id), analysis=analysis)
        n = do_export(store, fmt, target, which=which, card=card)  # type: ignore[arg-type]
        console.print(f"wrote {n} {'tasks' if fmt == 'upstream' else 'records'} to {target}")
        if which == "reviewed" and not decisions(store.conn):  # an empty file is right, but say why
            console.print(
                f"[yellow]warning:[/] nobody has reviewed an example of {run_dir} yet, so the export is empty; "
                f"review them with `explore-instruct review -r {run_dir}`",
                highlight=False,
            )

    @app.command("import-tree", cls=AliasedCommand)
    def import_tree_cmd(
        source: Annotated[
            Path, typer.Argument(metavar="SOURCE", help="A tree in the original release's directory format.")
        ],
        run_dir: RunDir,
        domain: Annotated[str, typer.Option(help="Domain profile.")] = "generic",
    ) -> None:
        """Start a run from an existing tree (e.g. the original release's data)."""
        store = import_tree(source, run_dir, domain=domain)
        print_summary(store)

    @app.command(cls=AliasedCommand)
    def stats(
        run_dir: RunDir,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ) -> None:
        """Summarise a run: tasks, examples kept at each step, drops by reason, calls, tokens."""
        store = RunStore.open(run_dir)
        if as_json:
            out.print_json(json.dumps(run_summary(store)))
        else:  # the summary is this command's result: stdout, so `stats | less` shows it
            print_summary(store, to=out)
