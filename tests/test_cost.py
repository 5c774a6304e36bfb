"""Cost before and during a run: the dry run's estimate, the estimate kept for `stats`, and the budget."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from explore_instruct.cli import main
from explore_instruct.config import BudgetConfig, PricingConfig
from explore_instruct.cost import Budget, BudgetReached, estimate_tokens, price, prompt_tokens
from explore_instruct.errors import RunStopped
from explore_instruct.estimate import estimate_run, load_estimate
from explore_instruct.llm.base import Completion, CompletionRequest, Usage
from explore_instruct.llm.client import LLMClient
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.runstore import CallLog, RunStore
from tests.fakes import fake_model
from tests.helpers import BASE, make_config, merge, run_fake
from tests.test_llm_backends import FakeServer


def cli(argv: list[str]) -> tuple[int, str]:
    """Exit code and everything printed (stats' table goes to stdout, the dry run's to stderr)."""
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
        code = main(argv)
    return code, printed.getvalue()


def records(store: RunStore) -> list[tuple[str, ...]]:
    return sorted((r["task_path"], r["instruction"], r["input"], r["output"]) for r in store.dataset("kept"))


# --------------------------------------------------------------------------- tokens and prices


def test_token_estimate_is_four_characters_each_plus_message_overhead() -> None:
    assert estimate_tokens("") == 0 and estimate_tokens("abcd") == 1 and estimate_tokens("abcde") == 2
    request = CompletionRequest.chat("x" * 40, system="y" * 8)
    assert prompt_tokens(request) == (10 + 4) + (2 + 4)


def test_price_per_million_and_batch_discount() -> None:
    pricing = PricingConfig(input_per_mtok=2.0, output_per_mtok=8.0, batch_discount=0.5)
    usage = Usage(1_000_000, 500_000)
    assert price(usage, pricing) == pytest.approx(6.0)
    assert price(usage, pricing, batch=True) == pytest.approx(3.0)
    assert price(usage, None) == 0.0


# --------------------------------------------------------------------------- estimate


def test_estimate_counts_the_calls_the_config_implies() -> None:
    cfg = make_config(
        explore={"max_depth": 2, "breadth": [6, 4], "new_per_call": 3},
        generate={"examples_per_task": [20], "per_call": 5},
    )
    est = {s.stage: s for s in estimate_run(cfg).stages}
    # Root: ceil(6/3) rounds; each of 6 children: ceil(4/3) rounds.
    assert est["explore"].calls == 2 + 6 * 2
    # 1 + 6 + 24 tasks, 20 examples each, 5 per call.
    assert est["generate"].calls == 31 * 4
    # Completion: per_call examples of about the seeds' size per enrichment call.
    assert 5 * 10 < est["generate"].completion_tokens / est["generate"].calls < 5 * 60


def test_estimate_matches_the_calls_of_a_fake_run(tmp_path: Path) -> None:
    cfg = make_config()
    ctx, _, _ = run_fake(tmp_path / "run", cfg)
    spent = ctx.store.calls.usage_by_stage()
    est = {s.stage: s for s in estimate_run(cfg).stages}
    assert est["explore"].calls == spent["explore"]["calls"]
    assert est["generate"].calls == spent["generate"]["calls"]
    # Deeper prompts are longer (path, peers, existing children): the estimate renders them.
    first = estimate_run(cfg).first_prompts
    assert "Decompose" in first["explore"] and "Assistance for text editing" in first["generate"]


def test_dry_run_prints_prompts_and_costs_and_sends_and_writes_nothing(tmp_path: Path) -> None:
    with FakeServer() as server:
        data = merge(
            BASE,
            {
                "llm": {
                    "backend": "openai",
                    "model": "fake-model",
                    "endpoints": [{"base_url": server.url}],
                    "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
                    "budget": {"max_cost": 0.01},
                }
            },
        )
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(data))
        code, err = cli(["run", str(path), "-r", str(tmp_path / "run"), "--dry-run"])
    assert code == 0, err
    assert server.requests == [] and server.auth_headers == []
    assert not (tmp_path / "run").exists()
    assert "first explore prompt" in err and "first generate prompt" in err
    assert "dry run: nothing was sent" in err
    est = {s.stage: s for s in estimate_run(make_config()).stages}
    total_cost = sum(
        price(Usage(s.prompt_tokens, s.completion_tokens), PricingConfig(input_per_mtok=1.0, output_per_mtok=4.0))
        for s in est.values()
    )
    assert f"{total_cost:.4f}" in err
    assert "batch API (50% off)" in err
    assert "llm.budget 0.01: the estimate" in err and "is above" in err


def test_estimate_is_kept_at_run_start_and_stats_shows_it_beside_the_spend(tmp_path: Path) -> None:
    cfg = make_config(llm={"pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}})
    ctx, _, _ = run_fake(tmp_path / "run", cfg)
    kept = load_estimate(ctx.store.conn)
    assert set(kept) == {"explore", "generate"}
    ctx.store.close()
    code, err = cli(["stats", "-r", str(tmp_path / "run")])
    assert code == 0, err
    line = next(line for line in err.splitlines() if "estimate: generate" in line)
    assert f"{kept['generate']['calls']} calls" in line and "; spent " in line and ", cost " in line


# --------------------------------------------------------------------------- budget


def test_budget_holds_back_a_call_whose_worst_case_could_cross_it() -> None:
    budget = Budget(BudgetConfig(max_tokens=1000), None, Usage(400, 100))
    small = CompletionRequest.chat("hi", max_tokens=400)
    held = budget.reserve(small)  # 500 spent + ~5 + 400 fits
    with pytest.raises(BudgetReached, match="rerun with resume to go on"):
        budget.reserve(small)  # a second one in flight could cross it
    budget.settle(held, Usage(5, 50))
    assert budget.spent.total_tokens == 555
    with pytest.raises(BudgetReached):  # once reached, nothing starts again in this run
        budget.reserve(CompletionRequest.chat("hi", max_tokens=16))


async def test_client_sends_nothing_once_the_budget_is_reached(tmp_path: Path) -> None:
    backend = ScriptedLLM(lambda r: Completion("ok", Usage(100, 100), "stop"))
    log = CallLog.open(tmp_path / "calls.db")
    budget = Budget(BudgetConfig(max_cost=1.0), PricingConfig(input_per_mtok=1000.0, output_per_mtok=1000.0), Usage())
    client = LLMClient(backend, log, budget=budget)
    # A call costs 0.2 and its worst case (5 + 300 tokens at 0.001) about 0.31: after four calls (0.8
    # spent) the fifth could cross 1.0, so it is never sent.
    for i in range(4):
        result = await client.call(CompletionRequest.chat(f"q{i}", max_tokens=300), stage="s", parse=lambda c: c.text)
        assert not result.failed
    with pytest.raises(BudgetReached, match=r"0\.8000 spent \(800 tokens\) of llm.budget.max_cost 1"):
        await client.call(CompletionRequest.chat("q4", max_tokens=300), stage="s", parse=lambda c: c.text)
    assert len(backend.requests) == 4
    assert math.isclose(budget.cost(), 0.8)


def budget_config(tmp_path: Path, max_tokens: int) -> Path:
    path = tmp_path / f"c{max_tokens}.yaml"
    path.write_text(yaml.safe_dump(merge(BASE, {"llm": {"budget": {"max_tokens": max_tokens}, "max_tokens": 64}})))
    return path


def test_budget_stops_the_run_consistently_and_resume_with_more_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from explore_instruct import pipeline

    # The CLI builds the backend from the config: give it the scripted fake model instead.
    monkeypatch.setattr(pipeline, "build_backend", lambda config: ScriptedLLM(fake_model))
    full, _, _ = run_fake(tmp_path / "full", make_config(llm={"max_tokens": 64}))
    full_calls = sum(s["calls"] for s in full.store.calls.usage_by_stage().values())

    code, err = cli(["run", str(budget_config(tmp_path, 3000)), "-r", str(tmp_path / "run")])
    lines = [line for line in err.splitlines() if "budget reached" in line]
    assert code == 1 and len(lines) == 1, err
    assert "--resume" in lines[0] and "llm.budget.max_tokens" in lines[0]
    store = RunStore.open(tmp_path / "run")
    spent = store.calls.spent()
    assert 0 < spent.total_tokens <= 3000
    stopped_calls = sum(s["calls"] for s in store.calls.usage_by_stage().values())
    assert 0 < stopped_calls < full_calls
    # Consistent: every example came from a logged, successful call, and the exports match the store.
    ok_ids = {r[0] for r in store.conn.execute("SELECT id FROM llm_calls WHERE status = 'ok'")}
    used = {r[0] for r in store.conn.execute("SELECT call_id FROM examples WHERE call_id IS NOT NULL")}
    assert used <= ok_ids
    assert (tmp_path / "run" / "tree.json").is_file()
    store.close()

    more = ["--resume", "--set", "llm.budget.max_tokens=10000000"]
    code, err = cli(["run", str(budget_config(tmp_path, 3000)), "-r", str(tmp_path / "run"), *more])
    assert code == 0, err
    done = RunStore.open(tmp_path / "run")
    assert records(done) == records(full.store)
    # Nothing paid twice: the resumed run's calls add up to the uninterrupted run's.
    assert sum(s["calls"] for s in done.calls.usage_by_stage().values()) == full_calls


def test_budget_counts_what_earlier_sessions_spent(tmp_path: Path) -> None:
    ctx, _, _ = run_fake(tmp_path / "run", make_config())
    spent = ctx.store.calls.spent().total_tokens
    ctx.store.close()
    # Resuming the finished run with a budget below what it already spent: the cached calls cost
    # nothing, but a call that is not cached cannot start.
    cfg: Any = make_config(llm={"budget": {"max_tokens": spent}}, generate={"examples_per_task": [6]})
    with pytest.raises(RunStopped, match="budget reached"):
        run_fake(tmp_path / "run", cfg)


def test_stats_shows_costs_only_when_the_config_has_prices(tmp_path: Path) -> None:
    ctx, _, _ = run_fake(tmp_path / "run", make_config())  # no llm.pricing
    ctx.store.close()
    code, err = cli(["stats", "-r", str(tmp_path / "run")])
    assert code == 0, err
    line = next(line for line in err.splitlines() if "estimate: generate" in line)
    assert "; spent " in line and "cost" not in line
