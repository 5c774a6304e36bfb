"""Benchmark: `train`'s real tokens per second against a reference training loop, same model, data
and device, in the same process; and how much of what each computes is padding.

    .venv/bin/python bench/bench_train.py                 # CPU: tiny model, 256 fixture examples, 4 steps
    python bench/bench_train.py --random-model 1b         # a GPU: the README figure (1.1B, all 4,433 examples)
    python bench/bench_train.py --model /models/llama-7b --data sample.json    # any model folder and data

The reference is the fastest plain loop we know for this job, without any of `train`'s duties: all
examples' tokens (prompt and response) concatenated into one stream and cut into full rows of
`--max-length` tokens, so it computes no padding at all; `--global-batch` rows per optimizer step, in
micro-batches of as many rows as `train`'s token budget holds; bf16 autocast and fused AdamW on CUDA;
gradient clipping at 1.0 like the trainer; the loss on every token. Its real tokens/s are counted from
the end of step 2 to the end of the last step (CUDA synchronised).

`train` runs with its defaults for the device (no flag but the step count and where to write) on the
Alpaca records, and reports its own real tokens/s over the same window (`train_settings.json`). The
padding fractions printed: `train`'s measured one, and what the padded trainer (random micro-batches of
4, 32 and `--per-device-batch-size` examples) would compute on the same data, by the same arithmetic.

Data: `--data` (Alpaca JSON or JSONL), else the 4,433 examples of the shared fixture tree.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from explore_instruct.datafile import read_records
from explore_instruct.train.batching import padded_stats
from explore_instruct.train.config import TrainConfig
from explore_instruct.train.models import ModelSource, load_model, load_tokenizer, resolve_source
from explore_instruct.train.prompting import build_pairs
from explore_instruct.train.sft import resolve_precision, train
from explore_instruct.train.tokenize import tokenize_pairs

ROOT = Path(__file__).resolve().parents[1]
# shared/ lies beside the checkout (or inside it, on the GPU machines)
FIXTURE = next((p for p in (ROOT.parent / "shared", ROOT / "shared") if p.is_dir()), ROOT.parent / "shared") / (
    "fixtures/upstream_rewriting_tree"
)


def fixture_records() -> list[dict[str, str]]:
    from explore_instruct.tree import load_upstream

    tree = load_upstream(FIXTURE)
    return [ex.to_dict() for node, _, _ in tree.level_order() for ex in node.examples]


def random_model(shape: str, folder: Path, records: list[dict[str, str]], tokenizer_dir: str | None = None) -> Path:
    """A random Llama: `tiny` (with its own small tokenizer), `tiny-smollm` (the same tiny shape with
    the embedded SmolLM2 tokenizer, so lengths and padding are the real ones), or `1b` (TinyLlama's
    shape with the SmolLM2 tokenizer, saved in bf16). `tokenizer_dir`: a saved tokenizer to use instead
    of the embedded one (a GPU machine may lack the package that ships the GGUF)."""
    from explore_instruct.train.tiny import LLAMA_1B, build_random_llama, build_tiny_llama

    if shape == "tiny":
        return build_tiny_llama(folder, [r["instruction"] + " " + r["output"] for r in records[:2000]])
    import torch

    if tokenizer_dir:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    else:
        tokenizer = load_tokenizer(resolve_source("embedded"))
    if shape == "tiny-smollm":
        tiny = {"hidden_size": 64, "intermediate_size": 128, "layers": 2, "heads": 4, "kv_heads": 2}
        return build_random_llama(folder, tokenizer, **tiny)  # type: ignore[arg-type]
    return build_random_llama(folder, tokenizer, **LLAMA_1B, dtype=torch.bfloat16)  # type: ignore[arg-type]


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def reference_tokens_per_second(
    src: ModelSource,
    stream: list[int],
    *,
    max_length: int,
    rows_per_step: int,
    rows_per_micro: int,
    steps: int,
    precision: str,
) -> dict[str, Any]:
    """The reference loop (module doc): full rows, no padding, fused AdamW on CUDA. It builds the full
    logits, which `train`'s fused head does not, so when a micro-batch of `rows_per_micro` rows runs out
    of GPU memory it is measured again with half as many rows."""
    import torch

    while True:
        try:
            return _reference(
                src,
                stream,
                max_length=max_length,
                rows_per_step=rows_per_step,
                rows_per_micro=rows_per_micro,
                steps=steps,
                precision=precision,
            )
        except torch.cuda.OutOfMemoryError:
            if rows_per_micro == 1:
                raise
        # Outside the handler, so the failed attempt's model and tensors can be freed.
        rows_per_micro //= 2
        gc.collect()
        torch.cuda.empty_cache()
        print(f"reference: out of memory, retrying with {rows_per_micro} rows per micro-batch", flush=True)


def _reference(
    src: ModelSource,
    stream: list[int],
    *,
    max_length: int,
    rows_per_step: int,
    rows_per_micro: int,
    steps: int,
    precision: str,
) -> dict[str, Any]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(src, dtype=torch.float32).to(device)
    model.config.use_cache = False
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0, fused=device == "cuda")
    rows = torch.tensor(stream[: len(stream) // max_length * max_length]).view(-1, max_length)
    if len(rows) == 0:
        raise SystemExit(f"the data holds fewer than {max_length} tokens")
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device, dtype=half) if half is not None else nullcontext()
    micro_per_step = math.ceil(rows_per_step / rows_per_micro)
    marks, cursor = [], 0
    for _ in range(steps):
        for _ in range(micro_per_step):
            index = torch.arange(cursor, cursor + rows_per_micro) % len(rows)
            cursor += rows_per_micro
            batch = rows[index].to(device, non_blocking=True)
            with autocast:
                loss = model(input_ids=batch, labels=batch).loss / micro_per_step
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        marks.append(time.monotonic())
    tokens_per_step = micro_per_step * rows_per_micro * max_length
    window = marks[-1] - marks[1] if steps > 2 else 0.0
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    return {
        "tokens_per_second": round(tokens_per_step * (steps - 2) / window, 1) if window > 0 else None,
        "tokens_per_step": tokens_per_step,
        "rows_per_micro_batch": rows_per_micro,
        "optimizer": "AdamW fused" if device == "cuda" else "AdamW",
        "device": device,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available() and args.limit is None:
        # A CPU cannot do the full figure in reasonable time; keep it to a smoke run of the harness.
        args.limit, args.steps = 256, min(args.steps, 4)
        print(f"no GPU: {args.limit} examples, {args.steps} steps (pass --limit to change)", flush=True)
    records = read_records(Path(args.data))[0] if args.data else fixture_records()
    records = records[: args.limit] if args.limit else records
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_train_"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    folder = work / f"model-{args.random_model}"
    model = args.model or str(random_model(args.random_model, folder, records, args.tokenizer))
    src = resolve_source(model)
    tokenizer = load_tokenizer(src)
    examples = tokenize_pairs(build_pairs(records, str(data)), tokenizer, args.max_length).examples
    lengths = [len(e["input_ids"]) for e in examples]

    cfg = TrainConfig(
        data=data,
        model=model,
        out=work / "trained",
        max_steps=args.steps,
        max_length=args.max_length,
        global_batch_size=args.global_batch,
        overwrite=True,
    )
    if args.max_tokens_per_batch:
        cfg.max_tokens_per_batch = args.max_tokens_per_batch
    ours = train(cfg).settings
    budget = ours["batch"]["max_tokens_per_batch"]

    stream = [t for e in examples for t in e["input_ids"]]
    reference = reference_tokens_per_second(
        src,
        stream,
        max_length=args.max_length,
        rows_per_step=args.global_batch,
        rows_per_micro=max(1, min(args.global_batch, budget // args.max_length)),
        steps=args.steps,
        precision=resolve_precision("auto"),
    )
    padded = {
        n: round(padded_stats(lengths, args.global_batch, n, seed=42).padding_fraction, 4)
        for n in sorted({4, 32, args.per_device_batch_size})
    }
    train_tps = ours["result"]["tokens_per_second_after_step_2"]
    ref_tps = reference["tokens_per_second"]
    return {
        "model": src.describe(),
        "examples": len(lengths),
        "mean_tokens_per_example": round(sum(lengths) / len(lengths), 1),
        "device": ours["device"],
        "precision": ours["precision"],
        "steps": args.steps,
        "reference": reference,
        "train": {
            "tokens_per_second": train_tps,
            "batch": ours["batch"],
            "runtime": ours["runtime"],
            "padding_fraction": ours["result"]["padding_fraction"],
        },
        "ratio": round(train_tps / ref_tps, 3) if train_tps and ref_tps else None,
        "padded_trainer_padding_fraction": padded,  # by --per-device-batch-size
    }


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", help="a model folder (default: a random one, see --random-model)")
    p.add_argument("--random-model", choices=["tiny", "tiny-smollm", "1b"], default="tiny")
    p.add_argument("--tokenizer", help="a saved tokenizer folder for tiny-smollm and 1b (default: the embedded one)")
    p.add_argument("--data", help="Alpaca JSON/JSONL (default: the shared fixture tree)")
    p.add_argument("--work", help="folder for the data copy, the random model and the trained model")
    p.add_argument("--steps", type=int, default=10, help="optimizer steps of each side (at least 3)")
    p.add_argument("--global-batch", type=int, default=128)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--max-tokens-per-batch", type=int, help="pass to train (default: its own choice)")
    p.add_argument("--per-device-batch-size", type=int, default=4, help="also give the padded trainer's padding here")
    p.add_argument("--limit", type=int, help="use the first N records only")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    if args.steps < 3:
        p.error("--steps must be at least 3 (the window starts after step 2)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    t, r = result["train"], result["reference"]
    print(f"model {result['model']}, {result['examples']} examples, {result['device']} {result['precision']}")
    print(f"reference loop: {r['tokens_per_second']} real tokens/s ({r['rows_per_micro_batch']} rows per micro-batch)")
    print(
        f"train ({t['batch']['layout']}, {t['batch']['max_tokens_per_batch']} tokens per micro-batch): "
        f"{t['tokens_per_second']} real tokens/s"
    )
    print(f"ratio train / reference: {result['ratio']}")
    padded = ", ".join(
        f"{100 * v:.1f} % with {k} per device" for k, v in result["padded_trainer_padding_fraction"].items()
    )
    print(f"padding: train {100 * (t['padding_fraction'] or 0):.1f} %; padded trainer {padded}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
