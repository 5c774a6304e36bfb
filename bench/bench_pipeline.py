"""Exploration + enrichment against a model with fixed latency: speed-up from concurrency, and resume cost.

The fake model answers every request after `--latency` seconds (like a server under no load), so
wall time is set by how many calls the pipeline keeps in flight. For each concurrency c the ideal
time is max(calls x latency / c, T_inf), where T_inf is the time with unbounded concurrency (the
chain of sequential exploration rounds cannot be shortened). The script prints the measured time,
the ideal, and their ratio; then it re-runs a finished run and counts repeated calls (goal: zero).

    .venv/bin/python bench/bench_pipeline.py [--latency 0.05]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes import fake_model
from tests.helpers import make_config

from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.pipeline import run_stages


def timed_run(concurrency: int, latency: float, workdir: Path) -> tuple[float, int]:
    cfg = make_config(
        explore={"max_depth": 2, "breadth": [6, 4], "new_per_call": 3},
        generate={"examples_per_task": [20], "per_call": 5},
        sample={"size": 200},
        llm={"max_concurrency": concurrency},
    )
    backend = ScriptedLLM(fake_model, latency=latency)
    start = time.perf_counter()
    run_stages(cfg, workdir / f"c{concurrency}", backend=backend)
    return time.perf_counter() - start, len(backend.requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per fake call")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t_inf, calls = timed_run(512, args.latency, work)
        print(f"{calls} calls of {args.latency * 1000:.0f} ms; concurrency 512 (unbounded here): {t_inf:.2f} s")
        print(f"{'concurrency':>11} {'time (s)':>9} {'ideal (s)':>9} {'ideal/time':>10} {'speed-up':>9}")
        base = None
        for c in (1, 4, 16, 64):
            t, n = timed_run(c, args.latency, work)
            ideal = max(n * args.latency / c, t_inf)
            base = base or t
            print(f"{c:>11} {t:>9.2f} {ideal:>9.2f} {ideal / t:>10.2f} {base / t:>8.1f}x")

        # Resume: the same config over the finished run sends nothing again.
        cfg_run = work / "c4"
        backend = ScriptedLLM(fake_model, latency=args.latency)
        cfg = make_config(
            explore={"max_depth": 2, "breadth": [6, 4], "new_per_call": 3},
            generate={"examples_per_task": [20], "per_call": 5},
            sample={"size": 200},
            llm={"max_concurrency": 4},
        )
        start = time.perf_counter()
        run_stages(cfg, cfg_run, backend=backend)
        print(f"resumed finished run: {len(backend.requests)} repeated calls, {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
    main()
