"""Batch mode against a fake OpenAI Batch API: the same data as online, and no batch sent twice.

One fake server on 127.0.0.1 (`tests/batch_api.py`) answers chat completions and batch lines with
the same deterministic fake model. The script runs one config four ways and prints, for each, the
calls that went online, the batches submitted and lines sent, and whether the tree, every example
(by key), the sample and the logged replies equal the online run's:

1. online (the reference);
2. `provider: openai` (upload, create, poll, download);
3. `provider: files`: the run stops, `vllm run-batch` is emulated, `batch import`, `run --resume`;
4. `provider: openai` in a child process SIGKILLed after its batch was submitted, then `--resume`:
   batches submitted, and custom_ids sent more than once (goal: zero).

    .venv/bin/python bench/bench_batch.py [--breadth 6 4] [--examples 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.batch_api import MODEL, FakeOpenAI, vllm_run_batch
from tests.helpers import BASE, merge
from tests.test_batch import data_of
from tests.test_batch_resume import killed_after_submit

from explore_instruct.config import build_config
from explore_instruct.errors import RunStopped
from explore_instruct.llm.batch import import_results
from explore_instruct.pipeline import run_stages
from explore_instruct.runstore import RunStore
from explore_instruct.stages import generate


def config_dict(fake: FakeOpenAI, args: argparse.Namespace, **batch: Any) -> dict[str, Any]:
    llm: dict[str, Any] = {"backend": "openai", "base_url": fake.base_url, "model": MODEL, "max_concurrency": 16}
    if batch:
        llm["batch"] = {"enabled": True, "poll_interval": 0.05, **batch}
    return merge(
        BASE,
        {
            "explore": {"max_depth": 2, "breadth": args.breadth, "new_per_call": 3},
            "generate": {"examples_per_task": [args.examples], "per_call": 5},
            "sample": {"size": 200},
            "llm": llm,
        },
    )


def run(fake: FakeOpenAI, run_dir: Path, data: dict[str, Any], resume: bool = False) -> float:
    start = time.perf_counter()
    ctx, _ = run_stages(build_config(data, "bench"), run_dir, resume=resume)
    ctx.store.close()
    return time.perf_counter() - start


def report(
    name: str, fake: FakeOpenAI, seconds: float, got: dict[str, Any], online: dict[str, Any], files: Path | None = None
) -> bool:
    """One row; `files`: the run's batch folder, whose input files stand in for submissions. True when
    the data equals the online run's and no line went out twice."""
    ids = fake.submitted_custom_ids()
    batches = fake.submissions
    if files is not None:
        inputs = sorted(files.glob("*.input.jsonl"))
        ids = [json.loads(line)["custom_id"] for p in inputs for line in p.read_text().splitlines()]
        batches = len(inputs)
    same = {k: got[k] == online[k] for k in ("tree", "examples", "sample", "replies")}
    print(
        f"{name:<22} {fake.chat_calls:>12} {batches:>9} {len(ids):>6} {len(ids) - len(set(ids)):>10}"
        f" {seconds:>8.2f}  {'yes' if all(same.values()) else 'NO ' + str(same)}"
    )
    return all(same.values()) and len(ids) == len(set(ids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--breadth", type=int, nargs="+", default=[6, 4])
    parser.add_argument("--examples", type=int, default=20, help="examples per task (5 per call)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        good = True
        head = f"{'run':<22} {'online calls':>12} {'batches':>9} {'lines':>6} {'sent twice':>10} {'time (s)':>8}"
        print(f"{head}  same data")
        with FakeOpenAI() as fake:
            seconds = run(fake, work / "online", config_dict(fake, args))
            online = data_of(work / "online")
            report("online", fake, seconds, online, online)
        with FakeOpenAI() as fake:
            seconds = run(fake, work / "openai", config_dict(fake, args, provider="openai"))
            good &= report("batch: openai", fake, seconds, data_of(work / "openai"), online)
        with FakeOpenAI() as fake:
            data = config_dict(fake, args, provider="files")
            start = time.perf_counter()
            while True:
                try:
                    run(fake, work / "files", data, resume=True)
                    break
                except RunStopped:  # each round: emulate `vllm run-batch` on the open files, import, resume
                    for given in sorted((work / "files" / "batches").glob("*.input.jsonl")):
                        out = given.with_name(given.name.replace(".input.", ".output."))
                        if not out.exists():
                            vllm_run_batch(given, out)
                            store = RunStore.open(work / "files", write=True)
                            import_results(store, out, {generate.STAGE: generate.parse_reply})
                            store.close()
            seconds = time.perf_counter() - start
            good &= report(
                "batch: files + import", fake, seconds, data_of(work / "files"), online, work / "files" / "batches"
            )
        with FakeOpenAI(hold=True) as fake:
            data = config_dict(fake, args, provider="openai")
            start = time.perf_counter()
            _, run_dir = killed_after_submit(work, fake, data)
            submitted_before_kill = fake.submissions
            fake.release()
            run(fake, run_dir, data, resume=True)
            good &= report("batch: killed + resume", fake, time.perf_counter() - start, data_of(run_dir), online)
            print(
                f"  batches submitted before the SIGKILL: {submitted_before_kill}; after the resume: {fake.submissions}"
            )


if __name__ == "__main__":
    main()
