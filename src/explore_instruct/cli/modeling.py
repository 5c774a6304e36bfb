"""Fine-tuning and evaluation commands: `train`, `answer`, `judge`, `math-eval`.

Thin wrappers: flags become settings, one stage function does the work, a short summary is printed.
Heavy libraries (torch, transformers, trl, math-verify) are imported inside the commands only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from explore_instruct.cli.progress import quiet_libraries
from explore_instruct.cli.vocabulary import AliasedCommand, api_key_env_option
from explore_instruct.errors import UserError

console = Console(stderr=True)
out_console = Console()

Opt = typer.Option


def _train(
    data: Annotated[Path, Opt(help="Alpaca records (JSON list or JSONL): instruction, input, output.")],
    model: Annotated[str, Opt(help="Base model: a local HF folder, a .gguf file, or 'embedded' (SmolLM2).")],
    out: Annotated[
        Path, Opt("--out", "-o", help="Folder for the trained model, train_log.jsonl, train_settings.json.")
    ],
    gguf_file: Annotated[str | None, Opt(help="GGUF file name inside the --model folder.")] = None,
    lr: Annotated[float, Opt("--lr", help="Peak learning rate.")] = 2e-5,
    global_batch_size: Annotated[int, Opt(help="Per-device batch x accumulation x devices.")] = 128,
    per_device_batch_size: Annotated[
        int, Opt(help="Rows per micro-batch with --batching padded; on CPU also sets the token budget.")
    ] = 4,
    max_tokens_per_batch: Annotated[
        int | None, Opt(help="Token budget of a micro-batch (rows x longest row); default from the device.")
    ] = None,
    batching: Annotated[
        str, Opt(help="auto (packed where attention keeps examples apart, else grouped), packed, grouped, padded.")
    ] = "auto",
    epochs: Annotated[float, Opt(help="Passes over the data.")] = 3.0,
    max_steps: Annotated[int, Opt(help="Stop after this many optimizer steps (> 0 overrides --epochs).")] = -1,
    max_length: Annotated[int, Opt(help="Tokens per sequence (longer ones are cut).")] = 512,
    weight_decay: Annotated[float, Opt(help="AdamW weight decay.")] = 0.0,
    warmup_ratio: Annotated[float, Opt(help="Share of steps for linear warm-up.")] = 0.03,
    lr_scheduler: Annotated[str, Opt(help="Learning-rate schedule (transformers name).")] = "cosine",
    optim: Annotated[
        str, Opt(help="Optimizer (transformers name); auto: adamw_torch_fused on CUDA, else adamw_torch.")
    ] = "auto",
    precision: Annotated[str, Opt(help="auto (bf16 where supported, else fp32), bf16, fp16, fp32.")] = "auto",
    gradient_checkpointing: Annotated[
        bool | None, Opt(help="Trade compute for activation memory (default: only when memory requires it).")
    ] = None,
    liger: Annotated[bool | None, Opt(help="Liger kernels (default: on CUDA when installed).")] = None,
    max_examples: Annotated[int | None, Opt(help="Train on the first N records only.")] = None,
    seed: Annotated[int, Opt(help="Random seed.")] = 42,
    lora: Annotated[bool, Opt("--lora", help="Train LoRA adapters (PEFT) instead of all weights.")] = False,
    lora_r: Annotated[int, Opt(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, Opt(help="LoRA alpha.")] = 32,
    lora_dropout: Annotated[float, Opt(help="LoRA dropout.")] = 0.05,
    lora_targets: Annotated[str, Opt(help="'all-linear' or comma-separated module names.")] = "all-linear",
    merge_lora: Annotated[bool, Opt(help="Save a merged full model (else the adapter only).")] = True,
    deepspeed: Annotated[str | None, Opt(help="DeepSpeed JSON, or 'zero3' for the shipped one.")] = None,
    overwrite: Annotated[bool, Opt(help="Replace an existing --out folder.")] = False,
) -> None:
    """Fine-tune a base model on Alpaca data (TRL SFTTrainer, loss on the response only).

    A NaN or infinite loss or gradient norm stops the run with one line (`training diverged at step
    N: ...`), exit code 1, and nothing is saved."""
    from explore_instruct.train.config import TrainConfig
    from explore_instruct.train.sft import train

    if precision not in ("auto", "bf16", "fp16", "fp32"):
        raise UserError(f"--precision {precision}: expected auto, bf16, fp16 or fp32")
    cfg = TrainConfig(
        data=data,
        model=model,
        out=out,
        gguf_file=gguf_file,
        learning_rate=lr,
        global_batch_size=global_batch_size,
        per_device_batch_size=per_device_batch_size,
        epochs=epochs,
        max_steps=max_steps,
        max_length=max_length,
        weight_decay=weight_decay,
        warmup_ratio=warmup_ratio,
        lr_scheduler=lr_scheduler,
        optim=optim,
        precision=precision,
        gradient_checkpointing=gradient_checkpointing,
        batching=batching,
        max_tokens_per_batch=max_tokens_per_batch,
        liger=liger,
        max_examples=max_examples,
        seed=seed,
        lora=lora,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_target_modules=lora_targets,
        merge_lora=merge_lora,
        deepspeed=deepspeed,
        overwrite=overwrite,
    )
    with quiet_libraries(on_terminal=False):
        result = train(cfg)
    if not result.main_process:
        return  # one summary per run, from the main process
    console.print(train_summary(result.settings), highlight=False)
    out_console.print(str(result.out), highlight=False)


def train_summary(settings: dict) -> str:
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


def _answer(
    questions: Annotated[Path, Opt(help="Question file: question, std_answer, class, question_id.")],
    out: Annotated[Path, Opt("--out", "-o", help="Output JSONL: question_id, class, answer, model_id, settings.")],
    model: Annotated[
        str | None, Opt(help="Local model folder / .gguf / 'embedded'; with --base-url, the served model's name.")
    ] = None,
    base_url: Annotated[str | None, Opt(help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")] = None,
    gguf_file: Annotated[str | None, Opt(help="GGUF file name inside the --model folder.")] = None,
    api_key_env: Annotated[str | None, api_key_env_option("Environment variable holding the endpoint's key.")] = None,
    prompt_format: Annotated[
        str | None,
        Opt(
            help="auto, alpaca (the training template), chat (the tokenizer's template) or plain; auto: alpaca "
            "for a model `train` wrote, else its chat template if any (local), plain for an base_url."
        ),
    ] = None,
    temperature: Annotated[float, Opt(help="Sampling temperature; 0 is greedy.")] = 0.0,
    top_p: Annotated[float, Opt(help="Nucleus sampling mass.")] = 1.0,
    max_tokens: Annotated[int, Opt(help="Most tokens per answer.")] = 512,
    seed: Annotated[int, Opt(help="Sampling seed.")] = 0,
    batch_size: Annotated[int, Opt(help="Questions per generate() call (local model).")] = 8,
    max_concurrency: Annotated[int, Opt(help="Requests in flight (endpoint).")] = 8,
    retries: Annotated[int, Opt(help="Retries per request (endpoint).")] = 4,
    timeout: Annotated[float, Opt(help="Seconds per request (endpoint).")] = 120.0,
    cache: Annotated[Path | None, Opt(help="LLM cache file (endpoint); default beside --out.")] = None,
    model_id: Annotated[str | None, Opt(help="Name written as model_id (default: the model).")] = None,
) -> None:
    """Answer a question file with a local model or an OpenAI-compatible endpoint."""
    from explore_instruct.evaluate.answer import PROMPT_FORMATS, SamplingSettings
    from explore_instruct.evaluate.stages import EndpointSettings, answer_file, endpoint_backend

    if (model is None) and (base_url is None):
        raise UserError("give --model PATH (a local model) or --base-url URL --model NAME")
    fmt = prompt_format or "auto"
    if fmt not in PROMPT_FORMATS:
        raise UserError(f"--prompt-format {fmt}: expected one of {', '.join(PROMPT_FORMATS)}")
    if temperature < 0 or not 0 < top_p <= 1 or max_tokens < 1 or batch_size < 1:
        raise UserError("need --temperature >= 0, 0 < --top-p <= 1, --max-tokens >= 1, --batch-size >= 1")
    settings = SamplingSettings(temperature, top_p, max_tokens, seed, fmt)  # type: ignore[arg-type]
    if base_url:
        backend = endpoint_backend(base_url, model, api_key_env, timeout)
        summary = answer_file(
            questions,
            out,
            settings,
            backend=backend,
            model_id=model_id,
            endpoint=EndpointSettings(max_concurrency, retries, cache),
        )
    else:
        with quiet_libraries(on_terminal=False):  # model loading and generation bars: not for a log file
            summary = answer_file(
                questions, out, settings, model=model, gguf_file=gguf_file, model_id=model_id, batch_size=batch_size
            )
    console.print(
        f"{summary.answered} answers from {summary.model_id} ({summary.truncated} cut at "
        f"--max-tokens) -> {summary.out}",
        highlight=False,
    )


def _judge(
    questions: Annotated[Path, Opt(help="Question file.")],
    baseline: Annotated[Path, Opt(help="Baseline answers (JSONL from `answer`).")],
    candidate: Annotated[Path, Opt(help="Candidate answers (JSONL from `answer`).")],
    out: Annotated[Path, Opt("--out", "-o", help="Result JSON (summary + every pair's reviews).")],
    table: Annotated[Path | None, Opt(help="Markdown table; default: --out with .md.")] = None,
    base_url: Annotated[str | None, Opt(help="Judge endpoint (OpenAI-compatible base URL).")] = None,
    model: Annotated[str | None, Opt(help="Judge model name.")] = None,
    api_key_env: Annotated[str | None, api_key_env_option("Environment variable holding the judge's key.")] = None,
    config: Annotated[Path | None, Opt(help="A run config whose llm section names the judge.")] = None,
    temperature: Annotated[float, Opt(help="Judge sampling temperature.")] = 0.0,
    max_tokens: Annotated[int, Opt(help="Most tokens per review.")] = 1024,
    max_concurrency: Annotated[int, Opt(help="Judge calls in flight.")] = 8,
    retries: Annotated[int, Opt(help="Retries per call (errors and unparseable reviews).")] = 4,
    timeout: Annotated[float, Opt(help="Seconds per call.")] = 120.0,
    cache: Annotated[Path | None, Opt(help="LLM cache file; default beside --out.")] = None,
    bootstrap: Annotated[int, Opt(help="Bootstrap resamples for the 95 % interval.")] = 2000,
    seed: Annotated[int, Opt(help="Seed of the judge requests and the bootstrap.")] = 0,
    judge_format: Annotated[
        str,
        Opt(
            help="Verdict format: json (an explanation and two 1-10 scores, schema-constrained), text (a review "
            "ending in 'Assistant 1 > Assistant 2'), or auto (json where the judge supports structured output)."
        ),
    ] = "auto",
) -> None:
    """Judge candidate answers against baseline answers, every pair in both orders."""
    from explore_instruct.errors import RunStopped
    from explore_instruct.evaluate.judge import FORMAT_CHOICES, JudgeSettings, resolve_format
    from explore_instruct.evaluate.stages import EndpointSettings, judge_backend, judge_files

    if bootstrap < 100:
        raise UserError("--bootstrap must be at least 100")
    if judge_format not in FORMAT_CHOICES:
        raise UserError(f"--judge-format must be one of {', '.join(FORMAT_CHOICES)} (got {judge_format!r})")
    backend = judge_backend(base_url, model, api_key_env, config, timeout, judge_format)
    result = judge_files(
        questions,
        baseline,
        candidate,
        out,
        backend,
        JudgeSettings(
            temperature=temperature, max_tokens=max_tokens, seed=seed, format=resolve_format(judge_format, backend)
        ),
        table_path=table,
        endpoint=EndpointSettings(max_concurrency, retries, cache),
        bootstrap=bootstrap,
        seed=seed,
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
