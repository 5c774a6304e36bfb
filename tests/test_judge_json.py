"""The JSON verdict (an explanation and two 1-10 scores under a JSON schema): its parser, the choice of
format per backend, judging in both orders with it, the cache, the CLI's --judge-format and the
experiment spec's judge.format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.errors import RunStopped, UserError
from explore_instruct.evaluate.judge import (
    SCORE_KEYS,
    VERDICT_SCHEMA,
    JudgeSettings,
    parse_scores,
    render_prompt,
    resolve_format,
)
from explore_instruct.evaluate.stages import EndpointSettings, judge_files
from explore_instruct.llm.base import Capabilities, CompletionRequest, ParseError
from explore_instruct.llm.local import LocalLLM
from explore_instruct.llm.openai_compat import OpenAICompatLLM
from explore_instruct.llm.scripted import ScriptedLLM
from tests.test_judge import QUALITY, SCORE, _answers_in, write_eval_files

JSON = JudgeSettings(format="json", bootstrap=200)


@pytest.fixture
def eval_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_eval_files(tmp_path)


# --- parser ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("review", "verdict"),
    [
        ('{"explanation": "1 is clearer.", "assistant_1_score": 8, "assistant_2_score": 5}', 1),
        ('{"explanation": "2 answers it.", "assistant_1_score": 2, "assistant_2_score": 9}', -1),
        ('{"explanation": "Same.", "assistant_1_score": 6, "assistant_2_score": 6}', 0),
        ('{"assistant_2_score": 3, "assistant_1_score": 4}', 1),  # key order and a missing explanation
        ('Here is my verdict:\n```json\n{"assistant_1_score": 1, "assistant_2_score": 10}\n```', -1),
        ('{"assistant_1_score": "7", "assistant_2_score": "3"}', 1),  # quoted by a server in text mode
        ('{"assistant_1_score": 7.0, "assistant_2_score": 3}', 1),
        ('{"explanation": "Both fine.\n\nSee above.", "assistant_1_score": 5, "assistant_2_score": 6}', -1),
        # An object without the scores is skipped for the first one that holds them.
        ('{"note": "draft"} then {"assistant_1_score": 2, "assistant_2_score": 5}', -1),
    ],
)
def test_parser_reads_the_two_scores(review: str, verdict: int) -> None:
    assert parse_scores(review) == verdict


@pytest.mark.parametrize(
    ("review", "problem"),
    [
        ("", "no JSON object"),
        ("Assistant 1 > Assistant 2", "no JSON object"),
        ('{"assistant_1_score": 8}', "no JSON object"),
        ('{"assistant_1_score": 11, "assistant_2_score": 5}', "outside 1-10"),
        ('{"assistant_1_score": 0, "assistant_2_score": 5}', "outside 1-10"),
        ('{"assistant_1_score": 7.5, "assistant_2_score": 5}', "whole number"),
        ('{"assistant_1_score": true, "assistant_2_score": 5}', "whole number"),
        ('{"explanation": "cut short", "assistant_1_score": 8, "assis', "no JSON object"),
    ],
)
def test_parser_refuses_reviews_without_two_valid_scores(review: str, problem: str) -> None:
    with pytest.raises(ParseError, match=problem):
        parse_scores(review)


def test_schema_bounds_the_scores_and_the_explanation() -> None:
    props = VERDICT_SCHEMA["properties"]
    assert VERDICT_SCHEMA["required"] == ["explanation", *SCORE_KEYS]
    assert list(props) == ["explanation", *SCORE_KEYS]  # the explanation comes before the scores
    for key in SCORE_KEYS:
        assert props[key]["type"] == "integer"
        assert (props[key]["minimum"], props[key]["maximum"]) == (1, 10)
        assert props[key]["enum"] == list(range(1, 11))
    assert props["explanation"]["maxLength"] <= 400


def test_json_prompt_places_answers_and_names_the_keys() -> None:
    system, user = render_prompt("What is 2+2?", "It is {answer_2}.", "Four.", "json")
    assert system == render_prompt("q", "a", "b")[0]
    assert "It is {answer_2}." in user and user.index("It is {answer_2}.") < user.index("Four.")
    for word in ("helpfulness", "relevance", "accuracy", "level of detail", *SCORE_KEYS, "1 to 10"):
        assert word in user
    assert "Assistant 1 > Assistant 2" not in user  # the text format's verdict line is not asked for
    assert user != render_prompt("What is 2+2?", "It is {answer_2}.", "Four.")[1]


# --- which format ----------------------------------------------------------------------------------


def test_auto_picks_json_where_the_backend_has_structured_output() -> None:
    local = LocalLLM()  # not loaded until the first call
    endpoint = OpenAICompatLLM(base_url="http://127.0.0.1:9/v1", model="m")
    plain = OpenAICompatLLM(base_url="http://127.0.0.1:9/v1", model="m", structured_output="text")
    scripted = ScriptedLLM(lambda r: "")
    assert [resolve_format("auto", b) for b in (local, endpoint, plain, scripted)] == ["json", "json", "text", "text"]
    assert resolve_format("text", local) == "text"
    assert resolve_format("json", scripted) == "json"
    with pytest.raises(ValueError, match="auto, json, text"):
        resolve_format("xml", local)


# --- both orders with a scripted JSON judge ---------------------------------------------------------


def scoring_judge(request: CompletionRequest) -> str:
    """Scores by the first word's quality, like tests/test_judge.py's fair judge, as a JSON review."""
    first, second = _answers_in(request)
    one, two = (3 + 3 * SCORE[answer.split()[0]] for answer in (first, second))
    return json.dumps({"explanation": "Read with care.", "assistant_1_score": one, "assistant_2_score": two})


def test_json_judge_in_both_orders_and_rerun_is_free(eval_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    q, base, cand = eval_files
    out = tmp_path / "res.json"
    backend = ScriptedLLM(scoring_judge, model_id="judge")
    result = judge_files(q, base, cand, out, backend, JSON)
    assert len(backend.requests) == 2 * len(QUALITY)
    assert all(r.json_schema == VERDICT_SCHEMA for r in backend.requests)
    assert all("assistant_1_score" in r.messages[-1].content for r in backend.requests)
    saved = json.loads(out.read_text())
    assert {p["question_id"]: p["outcome"] for p in saved["pairs"]} == {
        "q1": "win",
        "q2": "lose",
        "q3": "tie",
        "q4": "win",
        "q5": "win",
    }
    assert saved["settings"]["format"] == "json"
    assert json.loads(saved["pairs"][0]["baseline_first"]["review"])["explanation"] == "Read with care."
    assert result.summaries[-1]["beat_rate"] == pytest.approx(3 / 4)

    again = ScriptedLLM(scoring_judge, model_id="judge")
    judge_files(q, base, cand, out, again, JSON)
    assert again.requests == []  # every review comes from the cache


def test_json_and_text_reviews_are_cached_apart(eval_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    q, base, cand = eval_files
    out = tmp_path / "res.json"
    judge_files(q, base, cand, out, ScriptedLLM(scoring_judge, model_id="judge"), JSON)
    text_judge = ScriptedLLM(lambda r: "Assistant 1 = Assistant 2", model_id="judge")
    result = judge_files(q, base, cand, out, text_judge, JudgeSettings(format="text", bootstrap=200))
    assert len(text_judge.requests) == 2 * len(QUALITY)  # a text request is another request
    assert all(r.json_schema is None for r in text_judge.requests)
    assert result.summaries[-1]["tie"] == len(QUALITY)


def test_scoreless_json_reviews_are_kept_and_counted_unparsed(
    eval_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    q, base, cand = eval_files

    def judge(request: CompletionRequest) -> str:
        if "Question q2?" in request.messages[-1].content:
            return '{"explanation": "Both fine.", "assistant_1_score": 12, "assistant_2_score": 3}'
        return scoring_judge(request)

    backend = ScriptedLLM(judge, model_id="judge")
    endpoint = EndpointSettings(retries=1, retry_delay=0)
    result = judge_files(q, base, cand, tmp_path / "res.json", backend, JSON, endpoint=endpoint)
    assert result.unparsed_pairs == 1 and result.failed_pairs == 0
    assert len(backend.requests) == 2 * 4 + 2 * 2  # q2's orders: the first seed and one retry each
    q2 = next(p for p in json.loads((tmp_path / "res.json").read_text())["pairs"] if p["question_id"] == "q2")
    assert len(q2["baseline_first"]["unparsed_reviews"]) == 2
    assert "outside 1-10" in q2["baseline_first"]["error"]
    assert "**Not judged: 1 of 5 pairs.** 1 unparsed" in result.table

    with pytest.raises(RunStopped, match="no pair could be judged"):
        judge_files(
            q,
            base,
            cand,
            tmp_path / "none.json",
            ScriptedLLM(lambda r: "I like both.", model_id="judge"),
            JSON,
            endpoint=EndpointSettings(retries=0, retry_delay=0),
        )


# --- the CLI -----------------------------------------------------------------------------------


def _cli_args(q: Path, base: Path, cand: Path, out: Path, *extra: str) -> list[str]:
    files = ["--questions", str(q), "--baseline", str(base), "--candidate", str(cand), "--out", str(out)]
    return ["judge", *files, "--base-url", "http://127.0.0.1:9/v1", "--model", "j", "--retries", "0", *extra]


@pytest.mark.parametrize(
    ("flag", "structured_output", "schema_sent"),
    [
        ([], "auto", True),  # auto: the endpoint may use structured output, so the verdict is JSON
        (["--judge-format", "json"], "auto", True),
        (["--judge-format", "text"], "text", False),
    ],
)
def test_cli_judge_format(
    eval_files: tuple[Path, Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: list[str],
    structured_output: str,
    schema_sent: bool,
) -> None:
    from explore_instruct.llm import factory

    built: list[tuple[dict, ScriptedLLM]] = []

    def fake_backend(*args: object, **kwargs: object) -> ScriptedLLM:
        def reply(r: CompletionRequest) -> str:
            return scoring_judge(r) if r.json_schema else "Assistant 1 = Assistant 2"

        # As an endpoint has: structured output unless it was built for text.
        structured = Capabilities(structured_output=kwargs["structured_output"] != "text")
        judge = ScriptedLLM(reply, model_id="openai:j", capabilities=structured)
        built.append((kwargs, judge))
        return judge

    monkeypatch.setattr(factory, "build_backend", fake_backend)
    q, base, cand = eval_files
    assert main(_cli_args(q, base, cand, tmp_path / "r.json", *flag)) == 0
    kwargs, judge = built[0]
    assert kwargs["structured_output"] == structured_output
    assert all((r.json_schema is not None) == schema_sent for r in judge.requests)
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["format"] == ("json" if schema_sent else "text")


def test_cli_refuses_an_unknown_judge_format(
    eval_files: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    q, base, cand = eval_files
    assert main(_cli_args(q, base, cand, tmp_path / "r.json", "--judge-format", "xml")) == 2
    err = capsys.readouterr().err
    assert "--judge-format must be one of auto, json, text" in err
    assert not (tmp_path / "r.json").exists()


# --- the experiment spec ---------------------------------------------------------------------------


def test_experiment_judge_format_is_part_of_the_judge_key(tmp_path: Path) -> None:
    from explore_instruct.experiment.plan import build_plan
    from explore_instruct.experiment.spec import load_spec
    from tests.test_experiment_helpers import write_study

    keys = {}
    for fmt in ("auto", "json", "text"):
        path = write_study(tmp_path / fmt, tmp_path / "model", evaluate={"judge": {"format": fmt}})
        spec, config, _ = load_spec(path, strict=False)
        assert spec.evaluate.judge is not None and spec.evaluate.judge.format == fmt
        plan = build_plan(spec, config)
        keys[fmt] = [s.params for s in plan.steps.values() if s.kind == "judge"]
        assert keys[fmt] and all(p["format"] == fmt for p in keys[fmt])

    bad = write_study(tmp_path / "bad", tmp_path / "model", evaluate={"judge": {"format": "xml"}})
    with pytest.raises(UserError, match=r"evaluate\.judge\.format"):
        load_spec(bad, strict=False)
