"""The rate stage: an LLM judge scores each kept example; low scores are dropped; ratings are exported."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from explore_instruct.cli import main
from explore_instruct.config import build_config
from explore_instruct.errors import UserError
from explore_instruct.estimate import estimate_run
from explore_instruct.llm.base import CompletionRequest, ParseError
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.parse import parse_rating
from explore_instruct.pipeline import run_stages
from explore_instruct.runstore import RunStore, load_ratings
from explore_instruct.stages.sample import pool
from explore_instruct.summary import run_summary
from tests.fakes import fake_model, rating_reply
from tests.helpers import BASE, make_config, merge, run_fake
from tests.test_llm_backends import FakeServer, chat_reply
from tests.test_pipeline import snapshot
from tests.test_reliability import python, wait_for

RATE = {"enabled": True, "threshold": 5}


def rated_config(**over: Any):
    return make_config(rate=RATE, **over)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def everything(run_dir: Path) -> tuple:
    """What a run decided, ratings included, and its exported files."""
    store = RunStore.open(run_dir)
    ratings = sorted((k, r.score, r.reason) for k, r in load_ratings(store.conn).items())
    store.close()
    names = ("kept.jsonl", "dropped.jsonl", "sample.json")
    files = [(run_dir / "data" / n).read_text() if (run_dir / "data" / n).exists() else None for n in names]
    return snapshot(run_dir), ratings, files


def test_parse_rating_reads_json_and_labelled_text_and_refuses_the_rest() -> None:
    assert parse_rating('```json\n{"score": 8, "reason": "Clear and correct."}\n```') == (8, "Clear and correct.")
    assert parse_rating('{"Score": "3", "Reason": "Wrong."}') == (3, "Wrong.")
    assert parse_rating("Score: 6\nReason: Mostly right.") == (6, "Mostly right.")
    for bad in ('{"score": 11, "reason": "x"}', '{"score": 7}', "no rating here", '{"score": 7.5, "reason": "x"}'):
        with pytest.raises(ParseError, match=r"score|reason"):
            parse_rating(bad)


def test_rate_scores_every_kept_example_drops_the_low_ones_and_exports_ratings(tmp_path: Path) -> None:
    ctx, results, backend = run_fake(tmp_path / "run", rated_config())
    rated, dropped = results.rate.rated, results.rate.dropped
    rating_requests = [r for r in backend.requests if r.schema_name == "rating"]
    assert rated == len(rating_requests) > 0 and dropped > 0
    # the rubric comes from the profile and the request is held to the rating schema
    assert "correct" in rating_requests[0].messages[-1].content
    assert rating_requests[0].json_schema["required"] == ["score", "reason"]
    kept = jsonl(tmp_path / "run" / "data" / "kept.jsonl")
    low = [r for r in jsonl(tmp_path / "run" / "data" / "dropped.jsonl") if r["drop_stage"] == "rate"]
    assert len(low) == dropped and all(r["rating"]["score"] < 5 for r in low)
    assert all(r["score"] == r["rating"]["score"] for r in low)
    assert all(r["rating"]["score"] >= 5 and r["rating"]["reason"] for r in kept)
    assert len(kept) + len(low) == rated
    summary = run_summary(ctx.store)
    assert summary["examples"]["dropped_rate"] == dropped and summary["ratings"]["rated"] == rated
    ctx.store.close()


def test_a_rerun_sends_no_request_and_disabling_rate_undoes_its_drops(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_fake(run_dir, rated_config())[0].store.close()
    first = everything(run_dir)
    ctx, _, backend = run_fake(run_dir, rated_config())
    ctx.store.close()
    assert backend.requests == [] and everything(run_dir) == first
    ctx, _, _ = run_fake(run_dir, make_config())  # rate off
    assert not load_ratings(ctx.store.conn) and "rate" not in ctx.store.drop_counts()
    ctx.store.close()
    ctx, _, backend = run_fake(run_dir, rated_config())  # on again: every rating comes from the call log
    ctx.store.close()
    assert backend.requests == [] and everything(run_dir) == first


def test_rate_comes_after_the_filter_and_before_the_sample_and_only_kept_examples_are_rated(tmp_path) -> None:
    ctx, _, _ = run_fake(tmp_path / "run", rated_config(filter={"threshold": 0.3}))
    assert ctx.store.drop_counts().get("filter")
    keys = set(load_ratings(ctx.store.conn))
    rated_rows = [r for r in ctx.store.examples() if r.key in keys]
    assert all(r.status == "ok" or r.drop_stage == "rate" for r in rated_rows)
    assert set(ctx.store.sample_ids()) <= {r.id for r in ctx.store.examples(status="ok")}
    ctx.store.close()


KILLED_RUN = """
import sys
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.pipeline import run_stages
from tests.fakes import fake_model
from tests.helpers import make_config

class SlowJudge(ScriptedLLM):
    async def complete(self, request):
        if request.schema_name == "rating":
            import asyncio
            await asyncio.sleep(0.3)
        return await super().complete(request)

config = make_config(rate={"enabled": True, "threshold": 5}, llm={"max_concurrency": 2})
run_stages(config, sys.argv[1], backend=SlowJudge(fake_model))
"""


def test_a_kill_while_rating_and_resume_give_the_uninterrupted_data(tmp_path: Path) -> None:
    run_dir = tmp_path / "killed"
    proc = python(KILLED_RUN, str(run_dir))

    def rated() -> int:
        try:
            with sqlite3.connect(run_dir / "run.db") as conn:
                return conn.execute("SELECT COUNT(*) FROM llm_calls WHERE stage = 'rate'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    try:
        assert wait_for(lambda: rated() >= 3, seconds=120)
    finally:
        proc.kill()
        proc.wait()
    done = rated()
    config = make_config(rate=RATE, llm={"max_concurrency": 2})
    ctx, _, backend = run_fake(run_dir, config)
    ctx.store.close()
    resumed = [r for r in backend.requests if r.schema_name == "rating"]
    assert resumed and all(r.schema_name == "rating" for r in backend.requests)  # nothing before rate again
    run_fake(tmp_path / "clean", config)[0].store.close()
    assert everything(run_dir) == everything(tmp_path / "clean")
    with sqlite3.connect(run_dir / "run.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM llm_calls WHERE stage = 'rate'").fetchone()[0] == done + len(resumed)


def test_a_judge_of_its_own_behind_an_openai_compatible_server(tmp_path: Path) -> None:
    with FakeServer() as judge:
        judge.models = ["judge-model"]

        def reply(body: dict) -> Any:
            request = CompletionRequest.chat(body["messages"][-1]["content"])
            return chat_reply(rating_reply(request))

        judge.responder = reply
        # an evaluation question that a generated instruction copies (the fake model writes the same without rating)
        plain = run_fake(tmp_path / "plain")[0].store
        leaked = plain.dataset("kept")[2]["instruction"]
        plain.close()
        questions = tmp_path / "eval.jsonl"
        questions.write_text(json.dumps({"question": leaked.upper() + "?", "question_id": "g1"}))
        judge_llm = {"backend": "openai", "base_url": judge.url, "model": "judge-model"}
        over = {"rate": {**RATE, "llm": judge_llm}, "decontaminate": {"against": [str(questions)]}}
        config = build_config(merge(BASE, over), "test")
        ctx, results, backend = run_fake(tmp_path / "run", config)
        contaminated = [r for r in ctx.store.examples() if r.drop_stage == "decontaminate"]
        ctx.store.close()
        sent = len(judge.requests)
        assert sent == results.rate.rated > 0
        assert contaminated and all("g1" in (r.drop_reason or "") for r in contaminated)
        rated_texts = {m["content"] for body in judge.requests for m in body["messages"]}
        assert not any(r.instruction in text for r in contaminated for text in rated_texts)  # no call spent on them
        assert not any(r.schema_name == "rating" for r in backend.requests)  # the run's model wrote, the judge rated
        assert judge.requests[0]["model"] == "judge-model"
        assert "json_schema" in json.dumps(judge.requests[0].get("response_format"))
        first = everything(tmp_path / "run")
        ctx, _, backend = run_fake(tmp_path / "run", config)  # another model in the call log is not refused
        ctx.store.close()
        assert len(judge.requests) == sent and backend.requests == []
        assert everything(tmp_path / "run") == first


def test_sample_order_score_prefers_high_ratings_and_breaks_ties_by_tree_position(tmp_path: Path) -> None:
    config = make_config(rate={"enabled": True, "threshold": 1}, sample={"size": 6, "order": "score"})
    ctx, _, _ = run_fake(tmp_path / "run", config)
    ratings = load_ratings(ctx.store.conn)
    rows = {r.id: r for r in ctx.store.examples(status="ok")}
    found = pool(ctx)
    chosen = set(ctx.store.sample_ids())
    for task in found.tasks:
        ids = found.ids.get(task, [])
        taken = [i for i in ids if i in chosen]
        best = sorted(ids, key=lambda i: (-ratings[rows[i].key].score, ids.index(i)))[: len(taken)]
        assert sorted(taken) == sorted(best)
    assert len(chosen) == 6
    ctx.store.close()
    random_order = make_config(rate={"enabled": True, "threshold": 1}, sample={"size": 6})
    other, _, _ = run_fake(tmp_path / "random", random_order)
    keys = {r.id: r.key for r in other.store.examples()}
    assert {keys[i] for i in other.store.sample_ids()} != {rows[i].key for i in chosen}
    other.store.close()


def test_config_estimate_and_stats_name_the_rate_calls(tmp_path: Path, capsys) -> None:
    with pytest.raises(UserError, match=r"rate\.threshold"):
        make_config(rate={"enabled": True, "threshold": 11})
    with pytest.raises(UserError, match=r"sample\.order"):
        make_config(sample={"order": "best"})
    estimate = {s.stage: s for s in estimate_run(rated_config()).stages}
    generate = make_config().generate
    assert "rate" not in {s.stage for s in estimate_run(make_config()).stages}
    assert estimate["rate"].calls >= generate.examples_per_task[0]
    run_fake(tmp_path / "run", rated_config())[0].store.close()
    assert main(["stats", "--run-dir", str(tmp_path / "run")]) == 0
    table = "".join(capsys.readouterr().out.replace("│", " ").split())
    assert "ratedtoolow" in table and "calls:rate" in table and "estimate:rate" in table and "rated,mean" in table


def test_rate_command_alone_rates_a_finished_run(tmp_path: Path) -> None:
    run_fake(tmp_path / "run")[0].store.close()
    config = rated_config()
    ctx, results = run_stages(config, tmp_path / "run", ("rate", "sample"), backend=ScriptedLLM(fake_model))
    assert results.rate.rated > 0 and load_ratings(ctx.store.conn)
    ctx.store.close()


def test_review_app_shows_the_rating_and_sorts_a_task_by_it(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from explore_instruct.ratings import Rating
    from explore_instruct.runstore import save_rating
    from explore_instruct.web.review_app import create_app
    from explore_instruct.web.review_data import RunReview
    from tests.web_support import make_run

    store = make_run(tmp_path / "run")
    with store.transaction():
        for key, score in (("a0", 3), ("a1", 9), ("a2", 6)):
            save_rating(store.conn, key, Rating(score, f"Reason for {key} <b>."), None)
    task = next(n.id for n in store.nodes() if n.name == "Formal rewriting")
    store.close()
    review = RunReview(tmp_path / "run", "ada")
    token = "cd" * 16
    with TestClient(create_app(review, token)) as client:
        plain = client.get(f"/{token}/task/{task}").text
        ranked = client.get(f"/{token}/task/{task}?sort=score").text
    review.close()
    assert "rated 9/10" in plain and "Reason for a1 &lt;b&gt;." in plain and "?sort=score" in plain
    order = [ranked.index(f"letter {i} formally") for i in (1, 2, 0, 3)]  # 9, 6, 3, then the unrated one
    assert order == sorted(order)
    assert plain.index("letter 0 formally") < plain.index("letter 1 formally")


@pytest.mark.integration
def test_rate_and_decontaminate_on_the_embedded_model(tmp_path: Path) -> None:
    import yaml

    from tests.test_pipeline_integration import SMALL

    questions = tmp_path / "eval.jsonl"
    questions.write_text(json.dumps({"question": "Rewrite this sentence to sound more formal.", "question_id": "e1"}))
    config = merge(BASE, {**SMALL, "llm": {**SMALL["llm"], "backend": "local"}})
    config.update(rate=RATE, decontaminate={"against": [str(questions)]})
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--run-dir", str(tmp_path / "run")]) == 0
    store = RunStore.open(tmp_path / "run")
    calls = store.calls.usage_by_stage()
    ratings = load_ratings(store.conn)
    rated = {r.key for r in store.examples() if r.status == "ok" or r.drop_stage == "rate"} - {
        r.key for r in store.examples(origins=["seed"])
    }
    assert calls["rate"]["calls"] >= 1 and set(ratings) <= rated
    store.close()
    first = everything(tmp_path / "run")
    assert main(["run", str(path), "--run-dir", str(tmp_path / "run"), "--resume"]) == 0
    store = RunStore.open(tmp_path / "run")
    assert store.calls.usage_by_stage() == calls  # the resume sent nothing
    store.close()
    assert everything(tmp_path / "run") == first


def test_a_rerun_of_the_filter_after_rating_makes_the_same_decisions(tmp_path: Path) -> None:
    """The filter judges the examples the rating dropped too: one it dropped for colliding with a
    since-rated-out example stays dropped, rather than coming back and needing a new rating."""
    config = make_config(filter={"threshold": 0.3}, rate={"enabled": True, "threshold": 8})
    ctx, _, _ = run_fake(tmp_path / "run", config)
    drops = ctx.store.drop_counts()
    ctx.store.close()
    assert drops.get("filter") and drops.get("rate")
    first = everything(tmp_path / "run")
    ctx, _, backend = run_fake(tmp_path / "run", config)
    ctx.store.close()
    assert backend.requests == [] and everything(tmp_path / "run") == first
