"""Batch mode for enrichment (issue 11, part 2), against a fake OpenAI server with a Batch API.

The fake answers chat completions and batch lines with the same deterministic fake model, so a
batch run must give exactly the tree, examples and sample of the online run.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from explore_instruct.cli import main
from explore_instruct.errors import RunStopped, UserError
from explore_instruct.llm.batch import split_lines
from explore_instruct.pipeline import run_stages
from explore_instruct.runstore import RunStore
from tests.batch_api import MODEL, FakeOpenAI, vllm_run_batch
from tests.helpers import make_config

KEY_ENV = "BATCH_TEST_KEY"
SECRET = "sk-batch-test-secret-0123456789"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv(KEY_ENV, SECRET)
    monkeypatch.setenv("OPENAI_ORG_ID", "org-from-the-environment")  # must not reach the server
    with FakeOpenAI() as server:
        yield server


def llm(fake: FakeOpenAI, **batch: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"backend": "openai", "base_url": fake.base_url, "model": MODEL, "api_key_env": KEY_ENV}
    if batch:
        section["batch"] = {"enabled": True, "poll_interval": 0.02, **batch}
    return section


def run(run_dir: Path, fake: FakeOpenAI, resume: bool = False, **over: Any) -> Any:
    ctx, _ = run_stages(make_config(**over), run_dir, resume=resume)
    ctx.store.close()
    return ctx


def data_of(run_dir: Path) -> dict[str, Any]:
    """What a run produced, free of row ids (which follow the order replies were committed in)."""
    store = RunStore.open(run_dir)
    try:
        examples = {
            e.key: (e.instruction, e.input, e.output, e.status, e.drop_stage, e.drop_reason) for e in store.examples()
        }
        sample = [{k: v for k, v in r.items() if k != "id"} for r in store.dataset("sample")]
        replies = {
            r["key"]: r["response"] for r in store.conn.execute("SELECT key, response FROM llm_calls WHERE status='ok'")
        }
        usage = store.calls.usage_by_stage()
    finally:
        store.close()
    return {
        "tree": json.loads((run_dir / "tree.json").read_text()),
        "examples": examples,
        "sample": sample,
        "replies": replies,
        "usage": usage,
    }


@pytest.fixture
def online(tmp_path: Path, fake: FakeOpenAI) -> dict[str, Any]:
    run(tmp_path / "online", fake, llm=llm(fake))
    fake.chat_calls = 0
    return data_of(tmp_path / "online")


def generate_lines(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "run.db") as conn:
        return conn.execute("SELECT COUNT(*) FROM llm_calls WHERE stage = 'generate' AND status = 'ok'").fetchone()[0]


def test_openai_batch_gives_the_same_tree_and_data_as_online(tmp_path: Path, fake: FakeOpenAI, online: dict) -> None:
    ctx = run(tmp_path / "b2", fake, llm=llm(fake, provider="openai"))
    assert data_of(tmp_path / "b2") == online
    calls = generate_lines(tmp_path / "b2")
    # Exploration went online (5 rounds); every enrichment call went in one batch.
    assert fake.chat_calls == 5 and fake.submissions == 1
    assert len(fake.submitted_custom_ids()) == calls == 20
    stats = ctx.client.stats.stages["generate"]
    assert (stats.calls, stats.cache_hits) == (20, 0)  # sent by batch this session, not "from cache"
    # The key reached the server as the Authorization header only: not the files, not the run dir.
    assert all(SECRET.encode() not in upload for upload in fake.uploads)
    assert all(SECRET.encode() not in p.read_bytes() for p in (tmp_path / "b2").rglob("*") if p.is_file())
    assert all(h.get("Authorization") == f"Bearer {SECRET}" for h in fake.headers)
    assert not any("OpenAI-Organization" in h for h in fake.headers)


def test_batch_lines_are_chat_requests_with_stable_custom_ids(tmp_path: Path, fake: FakeOpenAI) -> None:
    run(tmp_path / "r", fake, llm=llm(fake, provider="openai"))
    lines = [json.loads(x) for x in (tmp_path / "r" / "batches" / "1.input.jsonl").read_text().splitlines()]
    assert {(x["method"], x["url"]) for x in lines} == {("POST", "/v1/chat/completions")}
    assert all(x["body"]["model"] == MODEL and x["body"]["response_format"]["type"] == "json_schema" for x in lines)
    with sqlite3.connect(tmp_path / "r" / "run.db") as conn:
        keys = dict(conn.execute("SELECT custom_id, cache_key FROM batch_requests"))
    assert all(cid == f"{keys[cid][:40]}-1" for cid in (x["custom_id"] for x in lines))


def test_failed_lines_go_in_a_new_batch_and_the_data_matches(tmp_path: Path, fake: FakeOpenAI, online: dict) -> None:
    failing: set[str] = set()

    def fault(custom_id: str) -> dict[str, Any] | None:
        if (custom_id.endswith("-1") and len(failing) < 3) or custom_id in failing:
            failing.add(custom_id)
            return {"response": {"status_code": 500, "body": {"error": {"message": "overloaded"}}}, "error": None}
        return None

    fake.line_fault = fault
    ctx = run(tmp_path / "r", fake, llm=llm(fake, provider="openai"))
    assert fake.submissions == 2 and len(failing) == 3
    stats = ctx.client.stats.stages["generate"]
    assert (stats.calls, stats.retries, dict(stats.retry_reasons)) == (20, 3, {"5xx": 3})
    ids = fake.submitted_custom_ids()
    assert len(ids) == 23 and len(set(ids)) == 23  # the three failed lines again, as attempt 2
    assert fake.chat_calls == 5  # none of them went online
    got = data_of(tmp_path / "r")
    assert got["tree"] == online["tree"] and got["examples"] == online["examples"] and got["sample"] == online["sample"]
    with sqlite3.connect(tmp_path / "r" / "run.db") as conn:
        retried = conn.execute("SELECT attempts, retry_reasons FROM llm_calls WHERE attempts > 1").fetchall()
    assert retried == [(2, '{"5xx": 1}')] * 3


def test_lines_that_keep_failing_are_logged_as_failed_calls(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.line_fault = lambda cid: {"response": None, "error": {"code": "server_error", "message": "down"}}
    ctx = run(tmp_path / "r", fake, generate={"max_extra_calls": 0}, llm={**llm(fake, provider="openai"), "retries": 1})
    assert fake.submissions == 2  # the first attempt and one retry, then given up
    assert fake.chat_calls == 5  # never online
    usage = RunStore.open(tmp_path / "r").calls.usage_by_stage()["generate"]
    assert (usage["calls"], usage["failed"], usage["attempts"]) == (0, 20, 40)
    stats = ctx.client.stats.stages["generate"]
    assert (stats.failed, stats.retries, dict(stats.retry_reasons)) == (20, 20, {"5xx": 40})


def test_retry_online_sends_failed_lines_through_the_client(tmp_path: Path, fake: FakeOpenAI, online: dict) -> None:
    fake.line_fault = lambda cid: {"response": None, "error": {"code": "x", "message": "y"}} if cid < "4" else None
    run(tmp_path / "r", fake, llm=llm(fake, retry="online"))
    failed = sum(cid < "4" for cid in fake.submitted_custom_ids())
    assert failed and fake.submissions == 1 and fake.chat_calls == 5 + failed
    got = data_of(tmp_path / "r")
    assert got["examples"] == online["examples"] and got["sample"] == online["sample"]


def test_an_expired_batch_keeps_its_finished_lines_and_retries_the_rest(
    tmp_path: Path, fake: FakeOpenAI, online: dict
) -> None:
    fake.expire_after = 8
    run(tmp_path / "r", fake, llm=llm(fake, provider="openai"))
    ids = fake.submitted_custom_ids()
    assert fake.submissions == 2 and len(ids) == 20 + 12 and len(set(ids)) == len(ids)
    got = data_of(tmp_path / "r")
    assert got["examples"] == online["examples"] and got["sample"] == online["sample"]


def test_a_round_over_the_request_limit_is_split(tmp_path: Path, fake: FakeOpenAI, online: dict) -> None:
    run(tmp_path / "r", fake, llm=llm(fake, max_requests=7))
    assert fake.submissions == 3
    assert sorted(len(p.read_text().splitlines()) for p in (tmp_path / "r" / "batches").glob("*.input.jsonl")) == [
        6,
        7,
        7,
    ]
    assert data_of(tmp_path / "r")["examples"] == online["examples"]


def test_an_unparseable_line_is_asked_again_with_another_seed(tmp_path: Path, fake: FakeOpenAI) -> None:
    bad = {"choices": [{"message": {"content": "no json here"}, "finish_reason": "stop"}], "usage": {}}
    first: list[str] = []

    def fault(cid: str) -> dict[str, Any] | None:
        if not first:
            first.append(cid)
        return {"response": {"status_code": 200, "body": bad}, "error": None} if cid == first[0] else None

    fake.line_fault = fault
    run(tmp_path / "r", fake, llm=llm(fake, provider="openai"))
    batches = tmp_path / "r" / "batches"
    lines = {json.loads(x)["custom_id"]: json.loads(x) for p in batches.glob("*.input.jsonl") for x in p.open()}
    again = lines[first[0][:-2] + "-2"]
    assert again["body"]["seed"] == lines[first[0]]["body"]["seed"] + 7919
    with sqlite3.connect(tmp_path / "r" / "run.db") as conn:
        assert conn.execute("SELECT retry_reasons FROM llm_calls WHERE attempts = 2").fetchone() == (
            '{"unparseable": 1}',
        )


def test_batch_mode_needs_the_openai_backend() -> None:
    with pytest.raises(UserError, match="batch mode needs backend 'openai'"):
        make_config(llm={"batch": {"enabled": True}})


# ------------------------------------------------------------------------------ files provider


def test_files_provider_stops_with_the_file_then_import_and_resume_match_online(
    tmp_path: Path, fake: FakeOpenAI, online: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "r"
    with pytest.raises(RunStopped) as stopped:
        run(run_dir, fake, llm=llm(fake, provider="files"))
    given = run_dir / "batches" / "1.input.jsonl"
    assert str(given) in str(stopped.value) and "vllm run-batch -i" in str(stopped.value)
    assert fake.chat_calls == 5 and fake.submissions == 0
    assert SECRET not in given.read_text()

    # Resumed before the results came back: the same file is named again, no second one is written.
    with pytest.raises(RunStopped, match=r"1\.input\.jsonl"):
        run(run_dir, fake, resume=True, llm=llm(fake, provider="files"))
    assert sorted(p.name for p in (run_dir / "batches").iterdir()) == ["1.input.jsonl"]

    vllm_run_batch(given, tmp_path / "out.jsonl")
    assert main(["batch", "import", "-r", str(run_dir), str(tmp_path / "out.jsonl")]) == 0
    assert "20 replies kept, 0 lines to send again" in " ".join(capsys.readouterr().err.split())
    run(run_dir, fake, resume=True, llm=llm(fake, provider="files"))
    assert fake.chat_calls == 5
    assert data_of(run_dir) == online


def test_import_with_missing_lines_sends_them_again_in_a_new_file(tmp_path: Path, fake: FakeOpenAI) -> None:
    run_dir = tmp_path / "r"
    with pytest.raises(RunStopped):
        run(run_dir, fake, llm=llm(fake, provider="files"))
    vllm_run_batch(run_dir / "batches" / "1.input.jsonl", tmp_path / "out.jsonl", skip=4)
    assert main(["batch", "import", str(run_dir), str(tmp_path / "out.jsonl")]) == 0
    with pytest.raises(RunStopped, match=r"2\.input\.jsonl"):
        run(run_dir, fake, resume=True, llm=llm(fake, provider="files"))
    second = (run_dir / "batches" / "2.input.jsonl").read_text().splitlines()
    assert len(second) == 4 and all(json.loads(x)["custom_id"].endswith("-2") for x in second)


def _files_run(tmp_path: Path, fake: FakeOpenAI, name: str, seed: int = 7) -> tuple[Path, Path]:
    run_dir = tmp_path / name
    with pytest.raises(RunStopped):
        run(run_dir, fake, seed=seed, llm=llm(fake, provider="files"))
    out = tmp_path / f"{name}.out.jsonl"
    vllm_run_batch(run_dir / "batches" / "1.input.jsonl", out)
    return run_dir, out


def _nothing_imported(run_dir: Path) -> None:
    with sqlite3.connect(run_dir / "run.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM llm_calls WHERE stage = 'generate'").fetchone() == (0,)
        assert conn.execute("SELECT status FROM batches").fetchall() == [("written",)]


@pytest.mark.parametrize("problem", ["another run", "duplicate", "unknown", "no custom_id"])
def test_import_refuses_a_bad_results_file_and_imports_nothing(
    tmp_path: Path, fake: FakeOpenAI, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    run_dir, out = _files_run(tmp_path, fake, "a")
    lines = out.read_text().splitlines()
    if problem == "another run":
        _, out = _files_run(tmp_path, fake, "b", seed=8)
        expected = "is not a request of this run (results of another run?)"
    elif problem == "duplicate":
        out.write_text("\n".join([*lines, lines[3]]) + "\n")
        expected = "record 21: custom_id"
    elif problem == "unknown":
        record = json.loads(lines[0])
        record["custom_id"] = "0" * 40 + "-1"
        out.write_text("\n".join([*lines[1:], json.dumps(record)]) + "\n")
        expected = "record 20: custom_id '0000"
    else:
        out.write_text("\n".join([*lines, json.dumps({"response": None})]) + "\n")
        expected = "record 21 has no custom_id"
    capsys.readouterr()
    assert main(["batch", "import", str(run_dir), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "nothing imported" in err, err
    if problem == "duplicate":
        assert "appears twice" in err
    _nothing_imported(run_dir)


def test_import_refuses_results_already_imported(
    tmp_path: Path, fake: FakeOpenAI, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir, out = _files_run(tmp_path, fake, "a")
    assert main(["batch", "import", "-r", str(run_dir), str(out)]) == 0
    capsys.readouterr()
    assert main(["batch", "import", str(run_dir), str(out)]) == 2  # the old form, RUN_DIR first, still works
    assert "was already imported (batch 1); nothing imported" in capsys.readouterr().err
    assert main(["batch", "status", "-r", str(run_dir)]) == 0
    assert "imported" in capsys.readouterr().err
    assert main(["batch", "status", str(run_dir)]) == 0  # the old form
    assert "imported" in capsys.readouterr().err


@pytest.mark.parametrize("top_ups", ["batch", "online"])
def test_top_ups_go_in_the_next_batch_or_online(tmp_path: Path, fake: FakeOpenAI, top_ups: str) -> None:
    one = {"examples": [{"instruction": "Shorten the text below in plain words.", "input": "", "output": "Done."}]}
    short = {"choices": [{"message": {"content": json.dumps(one)}, "finish_reason": "stop"}], "usage": {}}
    # Some first calls bring one example of the two asked for: their tasks fall short and top up.
    fake.line_fault = lambda cid: (
        {"response": {"status_code": 200, "body": short}} if cid < "3" and fake.submissions == 1 else None
    )
    run(tmp_path / "r", fake, llm=llm(fake, top_ups=top_ups))
    shorted = sum(cid < "3" for cid in fake.submitted_custom_ids()[:20])
    assert shorted
    if top_ups == "batch":
        assert fake.submissions == 2 and fake.chat_calls == 5
    else:
        assert fake.submissions == 1 and fake.chat_calls > 5


def test_a_batch_the_api_fails_stops_the_run_and_the_resume_sends_a_new_one(
    tmp_path: Path, fake: FakeOpenAI, online: dict
) -> None:
    fake.fail_next = True
    with pytest.raises(RunStopped, match="the Batch API failed batch batch_1: invalid_model: no such model"):
        run(tmp_path / "r", fake, llm=llm(fake, provider="openai"))
    run(tmp_path / "r", fake, resume=True, llm=llm(fake, provider="openai"))
    assert fake.submissions == 2
    assert data_of(tmp_path / "r")["examples"] == online["examples"]


def test_split_lines_respects_both_limits() -> None:
    lines = [f"{i:03d}" + "x" * 96 + "\n" for i in range(10)]  # 100 bytes each
    assert [len(c) for c in split_lines(lines, max_requests=4, max_bytes=10_000)] == [4, 4, 2]
    assert [len(c) for c in split_lines(lines, max_requests=50, max_bytes=350)] == [3, 3, 3, 1]
    assert [x for c in split_lines(lines, 4, 350) for x in c] == lines
    with pytest.raises(UserError, match=r"over llm\.batch\.max_bytes"):
        split_lines(lines, 4, 99)


# ------------------------------------------------------------------------------ structured-output mode


def batch_formats(path: Path) -> set[str]:
    return {json.loads(line)["body"]["response_format"]["type"] for line in path.read_text().splitlines()}


def test_a_resumed_run_sends_no_json_schema_to_a_server_that_refused_it(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.refuse_json_schema = True
    run_dir = tmp_path / "r"
    ctx, _ = run_stages(make_config(llm=llm(fake)), run_dir, ("explore",))
    ctx.store.close()
    assert fake.formats[:2] == ["json_schema", "json_object"]  # found once, by the first process
    sent_before = len(fake.formats)
    run(run_dir, fake, resume=True, llm=llm(fake))
    assert len(fake.formats) > sent_before and "json_schema" not in fake.formats[sent_before:]


def test_batches_written_by_a_resumed_process_use_the_mode_online_calls_found(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.refuse_json_schema = True
    run_dir = tmp_path / "r"
    with pytest.raises(RunStopped):
        run(run_dir, fake, llm=llm(fake, provider="files"))
    assert batch_formats(run_dir / "batches" / "1.input.jsonl") == {"json_object"}
    vllm_run_batch(run_dir / "batches" / "1.input.jsonl", tmp_path / "out.jsonl", skip=4)
    assert main(["batch", "import", str(run_dir), str(tmp_path / "out.jsonl")]) == 0
    with pytest.raises(RunStopped, match=r"2\.input\.jsonl"):
        run(run_dir, fake, resume=True, llm=llm(fake, provider="files"))
    assert batch_formats(run_dir / "batches" / "2.input.jsonl") == {"json_object"}


def test_a_run_from_before_the_modes_table_still_opens_and_resumes(tmp_path: Path, fake: FakeOpenAI) -> None:
    run_dir = tmp_path / "r"
    run(run_dir, fake, llm=llm(fake))
    with sqlite3.connect(run_dir / "run.db") as conn:  # as 0.1.0 left it: no schema version, no modes yet
        conn.execute("DROP TABLE structured_modes")
        conn.execute("PRAGMA user_version = 0")
    store = RunStore.open(run_dir)  # read-only: the run is upgraded (the table is created), nothing is remembered
    try:
        assert store.calls.structured_mode(fake.base_url, MODEL) is None
    finally:
        store.close()
    assert main(["stats", "--run-dir", str(run_dir), "--json"]) == 0
    run(run_dir, fake, resume=True, llm=llm(fake))
    store = RunStore.open(run_dir)
    try:
        assert store.conn.execute("SELECT COUNT(*) FROM structured_modes").fetchone()[0] == 0
    finally:
        store.close()


def test_a_batch_reply_with_a_lone_surrogate_imports(tmp_path: Path, fake: FakeOpenAI) -> None:
    """A reply is repaired (U+FFFD) on arrival, so the import stores it and the example is dropped (issue 16)."""
    run_dir = tmp_path / "r"
    no_top_ups = {"max_extra_calls": 0}
    with pytest.raises(RunStopped):
        run(run_dir, fake, llm=llm(fake, provider="files"), generate=no_top_ups)
    out = tmp_path / "out.jsonl"
    vllm_run_batch(run_dir / "batches" / "1.input.jsonl", out)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    for n, row in enumerate(rows):
        message = row["response"]["body"]["choices"][0]["message"]
        inserted = "\udcff" if n % 2 else "\\udcff"  # raw in the body, or an escape inside the model's JSON
        message["content"] = message["content"].replace('"output": "', f'"output": "{inserted}', 1)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["batch", "import", str(run_dir), str(out)]) == 0
    run(run_dir, fake, resume=True, llm=llm(fake, provider="files"), generate=no_top_ups)
    store = RunStore.open(run_dir)
    try:
        assert [e for e in store.examples(status="dropped") if e.drop_reason == "invalid text"]
    finally:
        store.close()
