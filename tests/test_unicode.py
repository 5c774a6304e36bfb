"""Text that is not valid Unicode never wedges a run or crashes a command (issue 16, item 1).

A JSON escape such as `\\udcff` decodes to a lone surrogate, which no SQLite database and no UTF-8
file can hold. Model text (replies online or in a batch, answers, reviews) is repaired on arrival
(U+FFFD) and an example or task name holding invalid text is dropped as "invalid text"; an input
file, a config or a value on the command line holding one is refused with one line naming it.
The property tests at the end drive replies, input files and the web apps' forms with random
unicode: surrogates, NULs, right-to-left marks.
"""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from explore_instruct.cli import main
from explore_instruct.config import build_config
from explore_instruct.errors import UserError
from explore_instruct.llm.base import Completion, CompletionRequest, Usage
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.pipeline import run_stages
from explore_instruct.review import decide, reviewable
from explore_instruct.runstore import CallLog, RunStore
from explore_instruct.text import invalid_char, repair
from explore_instruct.web.review_app import create_app as review_app
from explore_instruct.web.review_data import RunReview
from explore_instruct.web.study import Study
from explore_instruct.web.study_app import create_app as study_app
from tests.fakes import fake_model
from tests.helpers import make_config
from tests.web_support import form_token, make_run, read_links, study_inputs, write_lines

ESCAPE = "\\udcff"  # the six characters a server lets through in a JSON string
LONE = "\udcff"  # what they decode to

SMALL = {
    "explore": {"max_depth": 1, "breadth": [2], "new_per_call": 2},
    "generate": {"examples_per_task": [2], "per_call": 2, "max_extra_calls": 0},
    "sample": {"size": 10},
}


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def poisoned(field: str, text: str, *, raw: bool = False, schema: str = "examples") -> ScriptedLLM:
    """The fake model, with `text` put in front of `field` of the first record of every `schema` reply.

    `raw=False` writes it into the reply's JSON as JSON escapes (what a model writes); `raw=True`
    puts the characters themselves in the reply text (what a server's JSON body decodes to).
    """

    def reply(request: CompletionRequest) -> str:
        body = fake_model(request)
        if request.schema_name != schema:
            return body
        escaped = json.dumps(text)[1:-1]  # ensure_ascii: a surrogate becomes its escape
        return body.replace(f'"{field}": "', f'"{field}": "{text if raw else escaped}', 1)

    return ScriptedLLM(reply)


def run_with(run_dir: Path, backend: ScriptedLLM) -> RunStore:
    ctx, _ = run_stages(make_config(**SMALL), run_dir, backend=backend)
    ctx.store.close()
    return RunStore.open(run_dir)


def invalid_drops(store: RunStore) -> list[Any]:
    return [e for e in store.examples(status="dropped") if e.drop_reason == "invalid text"]


# --------------------------------------------------------------------------- model replies


@pytest.mark.parametrize("raw", [False, True], ids=["json-escape", "raw-in-reply"])
def test_a_reply_with_a_lone_surrogate_drops_the_example_and_resume_finishes(tmp_path: Path, raw: bool) -> None:
    store = run_with(tmp_path / "r", poisoned("output", f"bad {LONE} text ", raw=raw))
    try:
        dropped = invalid_drops(store)
        assert dropped and all("\ufffd" in e.output for e in dropped)
        assert all(invalid_char(e.output) is None for e in store.examples(status="ok"))
        summary = store.conn.execute("SELECT COUNT(*) FROM llm_calls WHERE status = 'ok'").fetchone()[0]
    finally:
        store.close()
    # The reply is in the call log: a resume reads it back and finishes without a call.
    again = ScriptedLLM(fake_model)
    run_with(tmp_path / "r", again).close()
    assert again.requests == []
    assert summary > 0
    lines = (tmp_path / "r" / "data" / "dropped.jsonl").read_text(encoding="utf-8").splitlines()
    assert any(json.loads(x)["drop_reason"] == "invalid text" for x in lines)


def test_a_task_name_with_a_lone_surrogate_is_dropped_and_a_reason_is_repaired(tmp_path: Path) -> None:
    names = run_with(tmp_path / "n", poisoned("name", f"{LONE}Bad ", schema="subtasks"))
    try:
        reasons = [r["reason"] for r in names.conn.execute("SELECT reason FROM dropped_tasks")]
    finally:
        names.close()
    assert "invalid text" in reasons
    store = run_with(tmp_path / "w", poisoned("reason", f"Why {LONE} ", schema="subtasks"))
    try:
        node_reasons = [n.reason for n in store.nodes()]
    finally:
        store.close()
    assert any("\ufffd" in r for r in node_reasons)


def test_the_call_log_stores_any_reply_and_error_text(tmp_path: Path) -> None:
    log = CallLog.open(tmp_path / "c.db")
    request = CompletionRequest.chat("hi")
    log.record(
        key="k",
        stage="s",
        model="m",
        request=request,
        completion=None,
        attempts=1,
        error=f"TransientLLMError: body {LONE}",
    )
    log.record(key="k", stage="s", model="m", request=request, completion=Completion(f"a{LONE}b", Usage()), attempts=1)
    cached = log.lookup("k")
    assert cached is not None and cached.completion.text == "a\ufffdb"


def test_repair_joins_pairs_and_replaces_lone_halves() -> None:
    assert repair("\ud83d\ude00 \udcff \ud83d") == "\U0001f600 \ufffd \ufffd"
    assert repair("plain \u202e text\x00") == "plain \u202e text\x00"
    assert invalid_char("ok \u200f \u202e\t\n") is None
    assert invalid_char("a\x00b") == "\x00" and invalid_char("a\ufffdb") == "\ufffd"


# --------------------------------------------------------------------------- judge and answer


def _eval_files(d: Path, answer: str = "An answer.") -> tuple[Path, Path, Path]:
    q = write_lines(d / "q.jsonl", [{"question_id": "q1", "question": "Why?", "class": "c"}])
    a = write_lines(d / "a.jsonl", [{"question_id": "q1", "answer": answer}])
    b = write_lines(d / "b.jsonl", [{"question_id": "q1", "answer": "Another answer."}])
    return q, a, b


def _with_backend(monkeypatch: pytest.MonkeyPatch, responder: Any) -> None:
    from explore_instruct.llm import factory

    monkeypatch.setattr(factory, "build_backend", lambda *a, **k: ScriptedLLM(responder, model_id="openai:m"))


def _endpoint(out: Path) -> list[str]:
    return ["--out", str(out), "--base-url", "http://127.0.0.1:9/v1", "--model", "m"]


def test_a_judge_review_with_a_lone_surrogate_is_kept_repaired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q, a, b = _eval_files(tmp_path)
    _with_backend(monkeypatch, lambda r: f"Fine {LONE} both.\nAssistant 1 > Assistant 2")
    out = tmp_path / "j.json"
    assert main(["judge", "--questions", str(q), "--baseline", str(a), "--candidate", str(b), *_endpoint(out)]) == 0
    assert "\ufffd" in out.read_text(encoding="utf-8")


def test_an_answer_with_a_lone_surrogate_is_written_repaired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q, _, _ = _eval_files(tmp_path)
    _with_backend(monkeypatch, lambda r: f"It is {LONE} so.")
    out = tmp_path / "ans.jsonl"
    assert main(["answer", "--questions", str(q), *_endpoint(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["answer"] == "It is \ufffd so."


# --------------------------------------------------------------------------- input files


def _bad_jsonl(path: Path, good: dict[str, Any], field: str) -> Path:
    """`good` on line 1, then the same record with a lone surrogate escape in `field` on line 2."""
    bad = {**good, "question_id": "q2", field: f"x {LONE}"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    assert ESCAPE in path.read_text()
    return path


@pytest.mark.parametrize("command", ["filter-file", "judge", "answer", "human-eval create"])
def test_an_input_file_with_a_lone_surrogate_is_one_line_naming_file_and_line(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_backend(monkeypatch, lambda r: "Assistant 1 > Assistant 2")
    q, a, _ = _eval_files(tmp_path)
    if command == "filter-file":
        bad = _bad_jsonl(tmp_path / "data.jsonl", {"instruction": "Do it", "output": "ok"}, "instruction")
        argv = ["filter-file", str(bad), "--out", str(tmp_path / "kept.jsonl")]
    elif command == "answer":
        bad = _bad_jsonl(tmp_path / "q2.jsonl", {"question_id": "q1", "question": "Why?"}, "question")
        argv = ["answer", "--questions", str(bad), *_endpoint(tmp_path / "ans.jsonl")]
    else:
        bad = _bad_jsonl(tmp_path / "b2.jsonl", {"question_id": "q1", "answer": "fine"}, "answer")
        files = ["--questions", str(q), "--baseline", str(a), "--candidate", str(bad)]
        if command == "judge":
            argv = ["judge", *files, *_endpoint(tmp_path / "j.json")]
        else:
            argv = ["human-eval", "create", *files, "--raters", "1", "--out", str(tmp_path / "study")]
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert str(bad) in line and "line 2" in line and "surrogate" in line
    assert not (tmp_path / "study").exists() and not (tmp_path / "kept.jsonl").exists()


def test_a_json_list_with_a_lone_surrogate_names_the_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": "fine"}, {"instruction": "ok", "meta": {"tags": ["a", LONE]}}]))
    assert main(["filter-file", str(data), "--out", str(tmp_path / "k.json")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "record 1" in line and "meta.tags[1]" in line and "U+DCFF" in line


def test_a_surrogate_pair_written_as_escapes_is_ordinary_text(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "Smile \U0001f600 please"}) + "\n")  # \ud83d\ude00 in the file
    assert "\\ud83d" in data.read_text()
    assert main(["filter-file", str(data), "--out", str(tmp_path / "k.jsonl")]) == 0


def test_a_seed_tree_config_or_flag_with_a_lone_surrogate_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "tree_meta_info.json").write_text(json.dumps({"raw_task_name": "Root", "config_filename": "r.json"}))
    (tree / "r.json").write_text(json.dumps({"examples": [{"instruction": f"Do {LONE}", "output": "x"}]}))
    assert main(["import-tree", str(tree), "--run-dir", str(tmp_path / "run")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "r.json" in line and "examples[0].instruction" in line
    assert not (tmp_path / "run").exists()

    config = tmp_path / "c.yaml"
    config.write_text('domain: generic\nroot:\n  name: "Bad \\udcff name"\n  description: d\n')
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    assert "root.name" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()

    # Bytes that are not UTF-8 on the command line arrive as lone surrogates (surrogateescape).
    config.write_text(json.dumps({"domain": "generic", "root": {"name": "Fine", "description": "d"}}))
    for flag in (["--set", f"root.name=Bad{LONE}"], ["--model", f"m{LONE}"]):
        assert main(["run", str(config), "--run-dir", str(tmp_path / "run"), *flag]) == 2
        assert f"{flag[1][:-1]}\\udcff" in one_line(capsys.readouterr().err)
        assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match=r"root\.name \(given on the command line\)"):
        build_config({}, "api", {"root.name": LONE})


def test_a_judge_file_with_a_lone_surrogate_is_refused_by_the_report(tmp_path: Path) -> None:
    from explore_instruct.web.study_report import read_judge

    path = tmp_path / "j.json"
    path.write_text(json.dumps({"pairs": [{"question_id": f"q{LONE}", "outcome": "win"}]}))
    with pytest.raises(UserError, match="surrogate"):
        read_judge(path)


# --------------------------------------------------------------------------- review edits


def first_reviewable(review: RunReview) -> int:
    """A kept generated example: the page offers no decision on seeds or dropped ones."""
    return next(e.id for e in review.store.examples(status="ok") if reviewable(e.origin, e.status))


def test_a_review_edit_with_invalid_text_is_refused(tmp_path: Path) -> None:
    make_run(tmp_path / "run").close()
    review = RunReview(tmp_path / "run", "ada")
    try:
        example_id = first_reviewable(review)
        with TestClient(review_app(review, "ab" * 16), follow_redirects=False) as client:
            token = form_token(client.get(f"/{'ab' * 16}/example/{example_id}").text)
            fields = {"action": "edit", "instruction": "Fix\x00 this", "output": "ok", "csrf": token}
            assert client.post(f"/{'ab' * 16}/example/{example_id}", data=fields).status_code == 422
        with pytest.raises(UserError, match="not valid text"):
            decide(review.store.conn, example_id, "edit", "ada", edited=(f"Fix {LONE}", "", "ok"))
    finally:
        review.close()


# --------------------------------------------------------------------------- property tests

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# Any code point, surrogates included (st.text never draws them), with NULs and right-to-left marks drawn often.
odd_char = st.characters(categories=("L", "M", "N", "P", "S", "Z", "C")) | st.sampled_from(
    ["\x00", "\u202e", "\u200f", LONE, "\ud83d"]
)
odd_text = st.lists(odd_char, max_size=12).map("".join)


@PROPERTY
@given(
    data=st.data(),
    schema=st.sampled_from(["examples", "subtasks"]),
    field=st.sampled_from(["instruction", "input", "output", "name", "reason"]),
    raw=st.booleans(),
)
def test_property_random_unicode_in_replies_never_wedges_a_run(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, schema: str, field: str, raw: bool
) -> None:
    text = data.draw(odd_text)
    run_dir = tmp_path_factory.mktemp("prop") / "r"
    store = run_with(run_dir, poisoned(field, text, raw=raw, schema=schema))
    try:
        for e in store.examples(status="ok"):
            assert invalid_char(e.instruction + e.input + e.output) is None
        for n in store.nodes():
            assert invalid_char(n.name) is None
        answered = {r["key"] for r in store.conn.execute("SELECT key FROM llm_calls WHERE status = 'ok'")}
    finally:
        store.close()
    # A resume finishes too, and sends nothing the call log answered (a raw control character in
    # the reply's JSON makes it unparseable: such a call failed and is asked again).
    again = poisoned(field, text, raw=raw, schema=schema)
    run_with(run_dir, again).close()
    assert not {r.key(again.model_id) for r in again.requests} & answered
    for name in ("kept.jsonl", "dropped.jsonl"):
        for line in (run_dir / "data" / name).read_text(encoding="utf-8").splitlines():
            json.loads(line)


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


@PROPERTY
@example(text="\ud800\udc00", field="question", command="judge", as_list=False)  # a pair JSON joins: valid
@given(
    text=odd_text,
    field=st.sampled_from(["question", "answer", "class", "instruction"]),
    command=st.sampled_from(["judge", "filter-file", "human-eval create"]),
    as_list=st.booleans(),
)
def test_property_random_unicode_in_input_files(
    tmp_path_factory: pytest.TempPathFactory, text: str, field: str, command: str, as_list: bool
) -> None:
    from explore_instruct.llm import factory

    d = tmp_path_factory.mktemp("files")
    rows = [
        {"question_id": "q1", "question": "Why?", "answer": "Because.", "class": "c", "instruction": "Do it"},
        {"question_id": "q2", "question": "How?", "answer": "Thus.", "class": "c", "instruction": "Do that"},
    ]
    rows[1][field] = text
    path = d / ("rows.json" if as_list else "rows.jsonl")
    body = json.dumps(rows) if as_list else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(body, encoding="utf-8")
    other = write_lines(d / "other.jsonl", [{**r, "answer": "Fine."} for r in rows])
    files = ["--questions", str(path), "--baseline", str(path), "--candidate", str(other)]
    if command == "judge":
        argv = ["judge", *files, *_endpoint(d / "j.json")]
    elif command == "filter-file":
        argv = ["filter-file", str(path), "--out", str(d / "kept.jsonl")]
    else:
        argv = ["human-eval", "create", *files, "--raters", "1", "--out", str(d / "study")]
    backend = ScriptedLLM(lambda r: f"Hm {text}\nAssistant 1 > Assistant 2", model_id="openai:m")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(factory, "build_backend", lambda *a, **k: backend)
        code, err = run_cli(argv)
    assert code in (0, 2), err
    if code == 2:
        line = one_line(err)
        assert str(path) in line or str(other) in line
    # JSON joins an escaped high + low surrogate into one valid character: only lone ones are invalid.
    if any("\ud800" <= c <= "\udfff" for c in json.loads(json.dumps(text))):
        assert code == 2 and ("line 2" in err or "record 1" in err)


def _form(fields: dict[str, str]) -> bytes:
    """A urlencoded body with each value's UTF-8 bytes as they are, surrogates included (as a browser never sends)."""
    return "&".join(
        f"{k}={urllib.parse.quote_from_bytes(v.encode('utf-8', 'surrogatepass'))}" for k, v in fields.items()
    ).encode()


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("web")
    make_run(d / "run").close()
    q, a, b = study_inputs(d / "in")
    assert main(["human-eval", "create", "--questions", str(q), "--baseline", str(a), "--candidate", str(b),
                 "--raters", "1", "--out", str(d / "study")]) == 0  # fmt: skip
    return {"run": d / "run", "study": d / "study"}


@PROPERTY
@given(instruction=odd_text, output=odd_text, comment=odd_text, query=odd_text)
def test_property_random_unicode_in_web_forms(
    web: dict[str, Any], instruction: str, output: str, comment: str, query: str
) -> None:
    headers = {"content-type": "application/x-www-form-urlencoded"}
    review = RunReview(web["run"], "ada")
    try:
        example_id = first_reviewable(review)
        with TestClient(review_app(review, "ab" * 16), follow_redirects=False) as client:
            token = form_token(client.get(f"/{'ab' * 16}/example/{example_id}").text)
            fields = {"action": "edit", "instruction": f"Do {instruction}", "output": output, "csrf": token}
            r = client.post(f"/{'ab' * 16}/example/{example_id}", content=_form(fields), headers=headers)
            assert r.status_code in (303, 422)
            page = client.get(f"/{'ab' * 16}/search?{_form({'q': query}).decode()}")
            assert page.status_code == 200
            assert client.get(f"/{'ab' * 16}/task/{review.store.examples(status='ok')[0].node_id}").status_code == 200
    finally:
        review.close()
    for row in sqlite3.connect(web["run"] / "run.db").execute("SELECT instruction, output FROM review"):
        assert invalid_char("".join(row)) is None

    study = Study(web["study"])
    try:
        with TestClient(study_app(study), follow_redirects=False) as client:
            home = read_links(web["study"])["rater-1"]
            token = form_token(client.get(f"{home}/1").text)
            fields = {"choice": "left", "comment": comment, "csrf": token}
            r = client.post(f"{home}/1", content=_form(fields), headers=headers)
            assert r.status_code in (303, 422)
            assert client.get(f"{home}/1").status_code == 200
    finally:
        study.close()
