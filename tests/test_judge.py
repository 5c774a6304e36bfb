"""Pairwise judge: the verdict parser, both-orders aggregation on a scripted judge, statistics,
resuming from the cache, and mismatched answer files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.errors import RunStopped, UserError
from explore_instruct.evaluate.judge import JudgeSettings, parse_verdict, render_prompt
from explore_instruct.evaluate.judge_report import (
    PairOutcome,
    bootstrap_ci,
    markdown_table,
    summarise,
)
from explore_instruct.evaluate.stages import EndpointSettings, judge_files
from explore_instruct.llm.base import Completion, CompletionRequest, ParseError, TransientLLMError, Usage
from explore_instruct.llm.scripted import ScriptedLLM

# --- parser ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("review", "verdict"),
    [
        ("Both are fine, but 1 is clearer.\nAssistant 1 > Assistant 2", 1),
        ("Assistant 1 < Assistant 2", -1),
        ("Equally good.\nAssistant 1 = Assistant 2", 0),
        ("Assistant 1 == Assistant 2", 0),
        ("Assistant 1>Assistant 2", 1),
        ("  assistant 1   <   ASSISTANT 2  ", -1),
        ("[Assistant 1] < [Assistant 2]", -1),
        ("(Assistant 1) > (Assistant 2)", 1),
        ("**Assistant 1 > Assistant 2**", 1),
        ("Final verdict: `Assistant 1 < Assistant 2`.", -1),
        ("Assistant 2 > Assistant 1", -1),  # reversed order
        ("Assistant 2 < Assistant 1", 1),
        ("Assistant 1 >= Assistant 2", 0),  # "at least as good" claims no win
        ("Assistant 2 ≥ Assistant 1", 0),
        ("Assistant [1] > Assistant [2]", 1),
        ("Answer 1 > Answer 2", 1),
        # The last ordering line wins over one quoted earlier in the reasoning.
        ("At first I thought Assistant 1 > Assistant 2.\nOn reflection:\nAssistant 1 < Assistant 2\n\n", -1),
    ],
)
def test_parser_reads_the_final_ordering(review: str, verdict: int) -> None:
    assert parse_verdict(review) == verdict


@pytest.mark.parametrize(
    "review",
    ["", "Both answers are good.", "Assistant 1 is better.", "Assistant 1 > Assistant 1", "1 > 2"],
)
def test_parser_refuses_reviews_without_an_ordering(review: str) -> None:
    with pytest.raises(ParseError):
        parse_verdict(review)


def test_prompt_places_answers_and_is_not_re_expanded() -> None:
    system, user = render_prompt("What is 2+2?", "It is {answer_2}.", "Four.")
    assert system
    assert "It is {answer_2}." in user  # a placeholder inside an answer stays literal
    assert user.index("It is {answer_2}.") < user.index("Four.")
    for criterion in ("helpfulness", "relevance", "accuracy", "level of detail"):
        assert criterion in user
    assert "Assistant 1 > Assistant 2" in user


# --- statistics ---------------------------------------------------------------------------------


def _outcomes(cls: str, wins: int, ties: int, losses: int) -> list[PairOutcome]:
    labels = ["win"] * wins + ["tie"] * ties + ["lose"] * losses
    return [PairOutcome(f"{cls}{i}", cls, label, False) for i, label in enumerate(labels)]


def test_beat_rate_interval_and_table() -> None:
    outcomes = _outcomes("rewrite", 6, 2, 2) + _outcomes("brainstorming", 3, 0, 0)
    summaries = {s.cls: s for s in summarise(outcomes, resamples=500)}
    overall = summaries["overall"]
    assert (overall.win, overall.tie, overall.lose) == (9, 2, 2)
    assert overall.beat_rate == pytest.approx(9 / 11)
    assert overall.ci_low is not None and overall.ci_high is not None
    assert overall.ci_low <= overall.beat_rate <= overall.ci_high
    assert summaries["brainstorming"].ci_low == summaries["brainstorming"].ci_high == 1.0
    table = markdown_table(list(summaries.values()), baseline="base", candidate="cand")
    assert "| rewrite | 6:2:2 | 75.0 |" in table
    assert "| **overall** | 9:2:2 | 81.8 |" in table


def test_interval_without_decisive_pairs() -> None:
    assert bootstrap_ci([0, 0, 0]) == (None, None)
    assert bootstrap_ci([]) == (None, None)
    low, high = bootstrap_ci([1, -1] * 20, resamples=1000)
    assert low is not None and high is not None and low < 0.5 < high


# --- both orders on a scripted judge ------------------------------------------------------------


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


QUALITY = {  # question_id -> (class, baseline answer, candidate answer)
    "q1": ("rewrite", "poor text", "great text"),
    "q2": ("rewrite", "great text", "poor text"),
    "q3": ("rewrite", "fine text", "okay text"),
    "q4": ("brainstorming", "poor ideas", "great ideas"),
    "q5": ("brainstorming", "okay ideas", "great ideas"),
}
SCORE = {"poor": 0, "fine": 1, "okay": 1, "great": 2}


@pytest.fixture
def eval_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    return write_eval_files(tmp_path)


def write_eval_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Questions, baseline and candidate answers of QUALITY under `tmp_path`."""
    q = _write(
        tmp_path / "q.jsonl",
        [
            {"question_id": k, "question": f"Question {k}?", "std_answer": "", "class": c}
            for k, (c, _, _) in QUALITY.items()
        ],
    )
    base = _write(
        tmp_path / "base.jsonl",
        [{"question_id": k, "answer": b, "class": c, "model_id": "base-model"} for k, (c, b, _) in QUALITY.items()],
    )
    cand = _write(
        tmp_path / "cand.jsonl",
        [{"question_id": k, "answer": a, "class": c, "model_id": "cand-model"} for k, (c, _, a) in QUALITY.items()],
    )
    return q, base, cand


def _answers_in(request: CompletionRequest) -> tuple[str, str]:
    text = request.messages[-1].content
    first = text.split("[Assistant 1's answer begins]\n", 1)[1].split("\n[Assistant 1's answer ends]")[0]
    second = text.split("[Assistant 2's answer begins]\n", 1)[1].split("\n[Assistant 2's answer ends]")[0]
    return first, second


def fair_judge(request: CompletionRequest) -> str:
    first, second = _answers_in(request)
    a, b = SCORE[first.split()[0]], SCORE[second.split()[0]]
    op = ">" if a > b else "<" if a < b else "="
    return f"Both were read with care.\nAssistant 1 {op} Assistant 2"


def test_fair_judge_in_both_orders(eval_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    q, base, cand = eval_files
    backend = ScriptedLLM(fair_judge, model_id="judge")
    result = judge_files(q, base, cand, tmp_path / "res.json", backend, JudgeSettings(bootstrap=200))
    assert len(backend.requests) == 2 * len(QUALITY)  # every pair, both orders
    by_class = {s["cls"]: s for s in result.summaries}
    assert (by_class["rewrite"]["win"], by_class["rewrite"]["tie"], by_class["rewrite"]["lose"]) == (1, 1, 1)
    assert (by_class["brainstorming"]["win"], by_class["brainstorming"]["lose"]) == (2, 0)
    assert by_class["overall"]["beat_rate"] == pytest.approx(3 / 4)
    assert by_class["overall"]["disagreement_rate"] == 0
    saved = json.loads((tmp_path / "res.json").read_text())
    assert saved["baseline"] == "base-model" and saved["candidate"] == "cand-model"
    assert {p["question_id"]: p["outcome"] for p in saved["pairs"]} == {
        "q1": "win",
        "q2": "lose",
        "q3": "tie",
        "q4": "win",
        "q5": "win",
    }
    assert "| **overall** | 3:1:1 |" in (tmp_path / "res.md").read_text()


def test_position_biased_judge_yields_ties(eval_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    q, base, cand = eval_files
    backend = ScriptedLLM(lambda r: "Assistant 1 > Assistant 2", model_id="biased")
    result = judge_files(q, base, cand, tmp_path / "res.json", backend, JudgeSettings(bootstrap=200))
    overall = result.summaries[-1]
    assert (overall["win"], overall["tie"], overall["lose"]) == (0, 5, 0)
    assert overall["disagreement_rate"] == 1.0
    assert overall["beat_rate"] is None


def test_unparseable_reviews_are_retried_then_counted_apart(
    eval_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    q, base, cand = eval_files

    def judge(request: CompletionRequest) -> str:
        if "Question q2?" in request.messages[-1].content:
            return "I cannot decide."
        return fair_judge(request)

    backend = ScriptedLLM(judge, model_id="judge")
    result = judge_files(
        q,
        base,
        cand,
        tmp_path / "res.json",
        backend,
        JudgeSettings(bootstrap=200),
        endpoint=EndpointSettings(retries=2, retry_delay=0),
    )
    overall = result.summaries[-1]
    assert overall["unparsed"] == 1 and overall["failed"] == 0
    assert (overall["win"], overall["tie"], overall["lose"]) == (3, 1, 0)
    assert len(backend.requests) == 2 * 4 + 2 * 3  # q2's two orders: 3 attempts each
    assert result.failed_pairs == 0 and result.unparsed_pairs == 1
    saved = json.loads((tmp_path / "res.json").read_text())
    q2 = next(p for p in saved["pairs"] if p["question_id"] == "q2")
    assert q2["baseline_first"]["unparsed_reviews"] == ["I cannot decide."] * 3
    assert saved["not_judged"] == {"unparsed": 1, "failed": 0}
    assert "**Not judged: 1 of 5 pairs.** 1 unparsed" in result.table


def test_failing_endpoint_resumes_from_the_cache(eval_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    q, base, cand = eval_files
    out = tmp_path / "res.json"
    endpoint = EndpointSettings(retries=1, retry_delay=0)

    def flaky(request: CompletionRequest) -> str | BaseException:
        if "Question q4?" in request.messages[-1].content:
            return TransientLLMError("HTTP 503")
        return fair_judge(request)

    first = judge_files(
        q, base, cand, out, ScriptedLLM(flaky, model_id="judge"), JudgeSettings(bootstrap=200), endpoint=endpoint
    )
    assert first.failed_pairs == 1
    again = ScriptedLLM(fair_judge, model_id="judge")
    second = judge_files(q, base, cand, out, again, JudgeSettings(bootstrap=200), endpoint=endpoint)
    assert second.failed_pairs == 0
    assert len(again.requests) == 2  # only q4's two orders were asked again
    assert second.summaries[-1]["win"] == 3


def test_mismatched_answer_files_name_the_ids(
    eval_files: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    q, base, _ = eval_files
    short = _write(
        tmp_path / "short.jsonl",
        [
            {"question_id": "q1", "answer": "x"},
            {"question_id": "q2", "answer": "y"},
            {"question_id": "zz9", "answer": "stray"},
        ],
    )
    with pytest.raises(
        UserError,
        match=r"3 question\(s\) have no answer: q3, q4, q5; 1 answer\(s\) match no "
        r"question: zz9",
    ):
        judge_files(q, base, short, tmp_path / "r.json", ScriptedLLM(fair_judge), JudgeSettings(bootstrap=200))
    code = main(
        [
            "judge",
            "--questions",
            str(q),
            "--baseline",
            str(base),
            "--candidate",
            str(short),
            "--out",
            str(tmp_path / "r.json"),
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "j",
        ]
    )
    assert code == 2
    assert "q3, q4, q5" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_judge_needs_an_endpoint(
    eval_files: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    q, base, cand = eval_files
    args = [
        "judge",
        "--questions",
        str(q),
        "--baseline",
        str(base),
        "--candidate",
        str(cand),
        "--out",
        str(tmp_path / "r.json"),
    ]
    assert main(args) == 2
    assert "--base-url" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text("llm:\n  backend: openai\n", encoding="utf-8")
    assert main([*args, "--config", str(config)]) == 2
    assert "needs 'model'" in capsys.readouterr().err


# --- a judge that never follows the verdict format ------------------------------------------------


def _judge_args(q: Path, base: Path, cand: Path, out: Path) -> list[str]:
    return [
        "judge",
        "--questions",
        str(q),
        "--baseline",
        str(base),
        "--candidate",
        str(cand),
        "--out",
        str(out),
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "chatty",
        "--retries",
        "1",
    ]


def test_judge_without_verdicts_exits_1_keeps_reviews_and_reruns_free(
    eval_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from explore_instruct.evaluate import judge as judge_module
    from explore_instruct.llm import factory

    q, base, cand = eval_files
    out = tmp_path / "res.json"
    backends: list[ScriptedLLM] = []

    def chatty_backend(*args: object, **kwargs: object) -> ScriptedLLM:
        backends.append(ScriptedLLM(lambda r: f"Both answers have merit. (seed {r.seed})", model_id="openai:chatty"))
        return backends[-1]

    monkeypatch.setattr(factory, "build_backend", chatty_backend)
    assert main(_judge_args(q, base, cand, out)) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "no pair could be judged (5 of 5" in err[0]
    assert len(backends[0].requests) == 2 * 2 * len(QUALITY)  # both orders, a retry under a new seed each

    saved = json.loads(out.read_text())
    assert saved["not_judged"] == {"unparsed": 5, "failed": 0}
    first = saved["pairs"][0]["baseline_first"]
    assert first["verdict"] is None and first["error"].startswith("unparsed")
    assert first["unparsed_reviews"] == ["Both answers have merit. (seed 0)", "Both answers have merit. (seed 7919)"]
    assert "**Not judged: 5 of 5 pairs.** 5 unparsed" in (tmp_path / "res.md").read_text()

    # Every review is in the cache: a rerun makes no call at all.
    assert main(_judge_args(q, base, cand, out)) == 1
    assert backends[1].requests == []
    # ... and a rerun with a parser that reads these reviews (as ties) judges every pair for free.
    capsys.readouterr()
    monkeypatch.setattr(judge_module, "parse_verdict", lambda review: 0)
    assert main(_judge_args(q, base, cand, out)) == 0
    assert "warning" not in capsys.readouterr().err
    assert backends[2].requests == []
    assert json.loads(out.read_text())["summary"][-1]["tie"] == 5


def test_truncated_review_is_kept_and_named(eval_files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    q, base, cand = eval_files

    def long_winded(request: CompletionRequest) -> Completion:
        return Completion("Let me weigh each answer in great detail, starting", Usage(5, 5), "length")

    backend = ScriptedLLM(long_winded, model_id="judge")
    endpoint = EndpointSettings(retries=0, retry_delay=0)
    with pytest.raises(RunStopped, match="no pair could be judged"):
        judge_files(q, base, cand, tmp_path / "res.json", backend, JudgeSettings(bootstrap=200), endpoint=endpoint)
    assert len(backend.requests) == 2 * len(QUALITY)  # stored on arrival, not retried as a failed call
    pair = json.loads((tmp_path / "res.json").read_text())["pairs"][0]
    assert "cut at max_tokens" in pair["candidate_first"]["error"]
    assert pair["candidate_first"]["review"].startswith("Let me weigh")


def test_some_unparsed_pairs_exit_0_with_a_warning(
    eval_files: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from explore_instruct.llm import factory

    def judge(request: CompletionRequest) -> str:
        return "I cannot decide." if "Question q2?" in request.messages[-1].content else fair_judge(request)

    monkeypatch.setattr(factory, "build_backend", lambda *a, **k: ScriptedLLM(judge, model_id="openai:chatty"))
    q, base, cand = eval_files
    assert main(_judge_args(q, base, cand, tmp_path / "res.json")) == 0
    captured = capsys.readouterr()
    assert "warning: 1 pair(s) not judged" in captured.err
    assert "**Not judged: 1 of 5 pairs.** 1 unparsed" in captured.out
