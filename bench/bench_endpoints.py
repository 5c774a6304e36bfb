"""Several endpoints against one, an endpoint killed mid-run, and the dry-run estimate against measured tokens.

Fake OpenAI-compatible servers run in this process on 127.0.0.1 (stdlib HTTP servers in threads), each
with a fixed latency per call and 8 slots (a ninth request waits for a slot, like a busy server). The
run goes through the real stack: the `openai` SDK per endpoint, the pool, the client, the stages. The
replies come from the test suite's deterministic fake model, so every configuration writes the same
data. Tokens are counted by the servers with a real BPE tokenizer (the embedded SmolLM2 GGUF's, loaded
vocabulary-only), so the estimate (4 characters per token) is compared against real token counts.

    .venv/bin/python bench/bench_endpoints.py [--latency 0.25]

The issue asks for 1 s per call; at 400 calls that is a minute for the single endpoint alone, so the
default here is 0.25 s (the ratios do not depend on it as long as latency dominates the per-call CPU).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fakes import fake_model
from tests.helpers import BASE, merge
from tests.test_llm_backends import FakeServer, Reply

from explore_instruct.config import build_config
from explore_instruct.estimate import estimate_run
from explore_instruct.llm.base import CompletionRequest
from explore_instruct.pipeline import run_stages
from explore_instruct.runstore import RunStore

SLOTS = 8
LLM_STAGES = ("explore", "prune", "generate")
# Seed examples shaped like the fake model's (a request of about ten words, a one-line input and
# output), so that the estimate's "completions are as long as the seeds" holds as it would for a real
# model writing examples like its seeds.
SEEDS = [
    {
        "instruction": "Summarise the following short report about rivers for busy readers",
        "input": "A short report on rivers and floods.",
        "output": "Rivers flood in spring; towns build walls. \\boxed{3}",
    },
    {
        "instruction": "Rewrite this product review in a friendlier tone for customers",
        "input": "The blender is loud and the lid leaks.",
        "output": "The blender works, though it is loud and leaks.",
    },
]


class Tokenizer:
    """The embedded SmolLM2 model's tokenizer (no weights loaded), shared by the server threads."""

    def __init__(self) -> None:
        import llama_cpp

        from explore_instruct.llm.local import find_bundled_gguf

        self._model = llama_cpp.Llama(model_path=str(find_bundled_gguf()), vocab_only=True, verbose=False)
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        with self._lock:
            return len(self._model.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def request_of(body: dict[str, Any]) -> CompletionRequest:
    return CompletionRequest.from_chat_body(body)


class Endpoint:
    """One fake server: `latency` seconds per call, SLOTS calls at once, real token counts."""

    def __init__(self, latency: float, tokenizer: Tokenizer | None, models: list[str]) -> None:
        self.server = FakeServer()
        self.server.models = models
        self.server.responder = self.reply
        self.slots = threading.Semaphore(SLOTS)
        self.latency = latency
        self.tokenizer = tokenizer
        self.calls = 0
        self.killed = False

    def kill(self) -> None:
        """Down for good: the port closes, and open keep-alive connections are dropped mid-request."""
        self.killed = True
        self.server.__exit__()

    def reply(self, body: dict[str, Any]) -> Reply:
        if self.killed:
            return Reply(drop=True)
        with self.slots:
            time.sleep(self.latency)
            self.calls += 1
        text = fake_model(request_of(body))
        # Counting tokens costs CPU in this process: only the token run does it, not the timed runs.
        count = self.tokenizer.count if self.tokenizer is not None else (lambda _: 0)
        prompt = sum(count(m["content"]) + 4 for m in body["messages"])
        return Reply(
            body={
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": prompt,
                    "completion_tokens": count(text),
                    "total_tokens": 0,
                },
            }
        )


def config(endpoints: list[Endpoint]) -> Any:
    data = merge(
        BASE,
        {
            "root": {"examples": SEEDS},
            # One exploration round (a fixed cost no endpoint count shortens), then 20 x 19 + 19 enrichment calls.
            "explore": {"max_depth": 1, "breadth": [20], "new_per_call": 20},
            "generate": {"examples_per_task": [95], "per_call": 5},
            "sample": {"size": 500},
            "llm": {
                "backend": "openai",
                "model": "fake-model",
                "retries": 4,
                "max_tokens": 1024,
                "endpoints": [{"base_url": e.server.url, "max_concurrency": SLOTS} for e in endpoints],
            },
        },
    )
    del data["llm"]["max_concurrency"]  # the sum of the endpoints' slots
    return build_config(data, "bench")


def records(store: RunStore) -> list[tuple[str, ...]]:
    return sorted((r["task_path"], r["instruction"], r["input"], r["output"]) for r in store.dataset("kept"))


def timed_run(endpoints: list[Endpoint], run_dir: Path, kill_after: int | None = None) -> tuple[float, RunStore]:
    killer = None
    if kill_after is not None:
        victim = endpoints[0]

        def kill() -> None:
            while victim.calls < kill_after:
                time.sleep(0.01)
            victim.kill()

        killer = threading.Thread(target=kill, daemon=True)
        killer.start()
    start = time.perf_counter()
    # The LLM stages only: the filter and sample stages after them are CPU work no endpoint count changes.
    ctx, _ = run_stages(config(endpoints), run_dir, LLM_STAGES, resume=False)
    return time.perf_counter() - start, ctx.store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.25, help="seconds per fake call")
    args = parser.parse_args()
    models = ["fake-model"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        one = [Endpoint(args.latency, None, models)]
        four = [Endpoint(args.latency, None, models) for _ in range(4)]
        spare = [Endpoint(args.latency, None, models) for _ in range(4)]
        counting = [Endpoint(0.0, Tokenizer(), models)]
        for e in one + four + spare + counting:
            e.server.__enter__()
        try:
            t_one, store_one = timed_run(one, work / "one")
            calls = sum(s["calls"] for s in store_one.calls.usage_by_stage().values())
            t_four, store_four = timed_run(four, work / "four")
            ideal = args.latency + (calls - 1) * args.latency / (4 * SLOTS)  # one exploration round first
            print(f"{calls} calls of {args.latency * 1000:.0f} ms, {SLOTS} slots per endpoint")
            print(f"one endpoint:   {t_one:6.2f} s  ({calls / t_one:5.1f} calls/s)")
            print(f"four endpoints: {t_four:6.2f} s  ({calls / t_four:5.1f} calls/s)  ideal {ideal:.2f} s")
            print(f"throughput four / one: {t_one / t_four:.2f}x (goal >= 3x, ideal 4x)")
            same = records(store_one) == records(store_four)
            print(f"same data with one and four endpoints: {same}")

            t_kill, store_kill = timed_run(spare, work / "killed", kill_after=20)
            per_endpoint = store_kill.calls.usage_by_endpoint()
            failed = sum(s["failed"] for s in store_kill.calls.usage_by_stage().values())
            killed_calls = spare[0].calls
            print(
                f"one of four killed after {killed_calls} calls: {t_kill:.2f} s, {failed} failed calls, "
                f"same data: {records(store_kill) == records(store_four)}"
            )
            for name, e in per_endpoint.items():
                print(f"  {name}: {e['calls']} ok, {e['failed']} failed")

            _, store_tokens = timed_run(counting, work / "tokens")
            estimate = {s.stage: s for s in estimate_run(config(counting)).stages}
            spent = store_tokens.calls.usage_by_stage()
            print(f"{'stage':>9} {'tokens':>10} {'estimate':>10} {'measured':>10} {'est/meas':>9}")
            for stage, est in estimate.items():
                for kind in ("prompt_tokens", "completion_tokens"):
                    measured = spent[stage][kind]
                    guess = getattr(est, kind)
                    print(f"{stage:>9} {kind[:-7]:>10} {guess:>10} {measured:>10} {guess / measured:>9.2f}")
            total_est = sum(s.prompt_tokens + s.completion_tokens for s in estimate.values())
            total_meas = sum(s["prompt_tokens"] + s["completion_tokens"] for s in spent.values())
            print(f"total tokens estimate / measured: {total_est / total_meas:.2f} (goal within 0.75-1.25)")
            for s in (store_one, store_four, store_kill, store_tokens):
                s.close()
        finally:
            for e in one + four + spare + counting:
                if not e.killed:
                    e.server.__exit__()


if __name__ == "__main__":
    main()
