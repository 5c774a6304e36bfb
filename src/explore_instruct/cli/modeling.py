"""Fine-tuning and evaluation commands: `train`, `answer`, `judge`, `math-eval`.

Thin wrappers: flags become settings, one stage function does the work, a short summary is printed.
Heavy libraries (torch, transformers, trl, math-verify) are imported inside the commands only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from explore_instruct.cli.progress import quiet_libraries
from explore_instruct.cli.settings_options import with_settings
from explore_instruct.cli.vocabulary import AliasedCommand, api_key_env_option, flag_words
from explore_instruct.config import ENDPOINT_SETTINGS, LLMConfig
from explore_instruct.errors import UserError
from explore_instruct.evaluate.answer import AnswerSettings
from explore_instruct.evaluate.judge import JudgeSettings
from explore_instruct.train.config import TrainSettings

if TYPE_CHECKING:
    from explore_instruct.evaluate.stages import EndpointSettings

console = Console(stderr=True)
out_console = Console()

Opt = typer.Option


@with_settings(TrainSettings)
def _train(
    data: Annotated[Path, Opt(help="Alpaca records (JSON list or JSONL): instruction, input, output.")],
    model: Annotated[str, Opt(help="Base model: a local HF folder, a .gguf file, or 'embedded' (SmolLM2).")],
    out: Annotated[
        Path, Opt("--out", "-o", help="Folder for the trained model, train_log.jsonl, train_settings.json.")
    ],
    settings: TrainSettings,
    overwrite: Annotated[bool, Opt(help="Replace an existing --out folder.")] = False,
) -> None:
    """Fine-tune a base model on Alpaca data (TRL SFTTrainer, loss on the response only).

    A NaN or infinite loss or gradient norm stops the run with one line (`training diverged at step
    N: ...`), exit code 1, and nothing is saved."""
    from explore_instruct.train.config import TrainConfig
    from explore_instruct.train.sft import train

    cfg = TrainConfig(data=data, model=model, out=out, overwrite=overwrite, **settings.settings_dict())
    with quiet_libraries(on_terminal=False):
        result = train(cfg)
    if not result.main_process:
        return  # one summary per run, from the main process
    console.print(train_summary(result.settings), highlight=False)
    out_console.print(str(result.out), highlight=False)


def train_summary(settings: dict[str, Any]) -> str:
    """One line from train_settings.json; losses to four decimals (the raw floats are in the file)."""
    r, b = settings["result"], settings["batch"]
    return (
        f"trained {settings['num_examples']} examples, {r['global_steps']} steps in {r['seconds']}s "
        f"(batch {b['effective_global_batch_size']} examples, {b['layout']}, "
        f"{b['gradient_accumulation_steps']} x {b['world_size']} micro-batches, {settings['precision']}); "
        f"loss {_loss(r['first_loss'])} -> {_loss(r['last_loss'])}; {r.get('tokens_per_second') or 0:.0f} tokens/s, "
        f"{100 * (r.get('padding_fraction') or 0):.1f} % padding"
    )


def _loss(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "n/a"


def _endpoint_settings(endpoint: LLMConfig, cache: Path | None) -> EndpointSettings:
    """How the command's client calls the endpoint: calls in flight and retries (from the flags)."""
    from explore_instruct.evaluate.stages import EndpointSettings

    return EndpointSettings(endpoint.max_concurrency, endpoint.retries, cache)


@with_settings(LLMConfig, names=ENDPOINT_SETTINGS, param="endpoint")
@with_settings(AnswerSettings)
def _answer(
    questions: Annotated[Path, Opt(help="Question file: question, std_answer, class, question_id.")],
    out: Annotated[Path, Opt("--out", "-o", help="Output JSONL: question_id, class, answer, model_id, settings.")],
    model: Annotated[
        str | None, Opt(help="Local model folder / .gguf / 'embedded'; with --base-url, the served model's name.")
    ] = None,
    endpoint: LLMConfig | None = None,
    gguf_file: Annotated[str | None, Opt(help="GGUF file name inside the --model folder.")] = None,
    api_key_env: Annotated[str | None, api_key_env_option("Environment variable holding the endpoint's key.")] = None,
    settings: AnswerSettings | None = None,
    cache: Annotated[Path | None, Opt(help="LLM cache file (endpoint); default beside --out.")] = None,
    model_id: Annotated[str | None, Opt(help="Name written as model_id (default: the model).")] = None,
) -> None:
    """Answer a question file with a local model or an OpenAI-compatible endpoint."""
    from explore_instruct.evaluate.stages import answer_file, endpoint_config
    from explore_instruct.llm.factory import backend_from_config

    assert endpoint is not None and settings is not None  # filled in by with_settings
    if (model is None) and (endpoint.base_url is None):
        raise UserError(
            "give model (a local folder or file) or base_url with model (a served one)", settings=("model", "base_url")
        )
    if endpoint.base_url:
        llm = endpoint_config(endpoint, model, api_key_env, "text")
        summary = answer_file(
            questions,
            out,
            settings,
            backend=backend_from_config(llm),
            model_id=model_id,
            endpoint=_endpoint_settings(endpoint, cache),
        )
    else:
        with quiet_libraries(on_terminal=False):  # model loading and generation bars: not for a log file
            summary = answer_file(questions, out, settings, model=model, gguf_file=gguf_file, model_id=model_id)
    console.print(
        flag_words(
            f"{summary.answered} answers from {summary.model_id} ({summary.truncated} cut at "
            f"max_new_tokens) -> {summary.out}",
            ("max_new_tokens",),
        ),
        highlight=False,
    )


@with_settings(LLMConfig, names=ENDPOINT_SETTINGS, param="endpoint")
@with_settings(JudgeSettings)
def _judge(
    questions: Annotated[Path, Opt(help="Question file.")],
    baseline: Annotated[Path, Opt(help="Baseline answers (JSONL from `answer`).")],
    candidate: Annotated[Path, Opt(help="Candidate answers (JSONL from `answer`).")],
    out: Annotated[Path, Opt("--out", "-o", help="Result JSON (summary + every pair's reviews).")],
    table: Annotated[Path | None, Opt(help="Markdown table; default: --out with .md.")] = None,
    endpoint: LLMConfig | None = None,
    model: Annotated[str | None, Opt(help="Judge model name.")] = None,
    api_key_env: Annotated[str | None, api_key_env_option("Environment variable holding the judge's key.")] = None,
    config: Annotated[Path | None, Opt(help="A run config whose llm section names the judge.")] = None,
    settings: JudgeSettings | None = None,
    cache: Annotated[Path | None, Opt(help="LLM cache file; default beside --out.")] = None,
) -> None:
    """Judge candidate answers against baseline answers, every pair in both orders."""
    from explore_instruct.errors import RunStopped
    from explore_instruct.evaluate.stages import judge_backend, judge_files

    assert endpoint is not None and settings is not None  # filled in by with_settings
    backend = judge_backend(endpoint, model, api_key_env, config, settings.format)
    result = judge_files(
        questions,
        baseline,
        candidate,
        out,
        backend,
        settings,
        table_path=table,
        endpoint=_endpoint_settings(endpoint, cache),
    )
    out_console.print(result.table, highlight=False, soft_wrap=True, markup=False)
    console.print(f"results -> {result.out}, table -> {result.table_path}", highlight=False)
    if result.unparsed_pairs:
        console.print(
            f"[yellow]warning:[/] {result.unparsed_pairs} pair(s) not judged: the judge's reviews had no verdict "
            f"line (they are kept in {result.out} and the cache)",
            highlight=False,
        )
    if result.failed_pairs:
        raise RunStopped(
            f"{result.failed_pairs} pair(s) not judged because the judge kept failing; "
            "run the same command again to retry them (finished reviews come from the cache)"
        )


def _math_eval(
    questions: Annotated[Path, Opt(help="MATH question file (std_answer with \\boxed{}, level, type).")],
    answers: Annotated[Path, Opt(help="Answers (JSONL from `answer`).")],
    out: Annotated[Path, Opt("--out", "-o", help="Summary JSON: accuracy overall, by level, by type.")],
    verdicts: Annotated[Path | None, Opt(help="Per-item verdicts JSONL; default <out>.verdicts.jsonl.")] = None,
    timeout: Annotated[int, Opt(help="Seconds math-verify may spend per parse / comparison.")] = 5,
) -> None:
    """Accuracy of final answers on MATH problems (math-verify, with a LaTeX-normalising fallback)."""
    from explore_instruct.evaluate.stages import math_eval_files

    if timeout < 1:
        raise UserError("--timeout must be at least 1 second")
    result = math_eval_files(questions, answers, out, verdicts_path=verdicts, timeout=timeout)
    out_console.print(result.table, highlight=False, soft_wrap=True, markup=False)
    console.print(f"summary -> {result.out}, verdicts -> {result.verdicts_path}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this group's commands to `app`."""
    for name, command in (("train", _train), ("answer", _answer), ("judge", _judge), ("math-eval", _math_eval)):
        app.command(name, cls=AliasedCommand)(command)
