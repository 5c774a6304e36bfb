"""Math grading: answer extraction, equivalent and non-equivalent pairs, the normalising fallback,
grading away from the main thread, the fixture's own solutions, and the math-eval command."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.evaluate.math_extract import (
    extract_answer,
    extract_reference,
    last_boxed,
    normalize_latex,
    normalized_equal,
)

pytest.importorskip("math_verify")

from explore_instruct.evaluate import math_grade
from explore_instruct.evaluate.math_grade import MathItem, compare, grade_items

# --- extraction --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "answer", "how"),
    [
        (r"First \boxed{1} then \boxed{\frac{1}{2}}.", r"\frac{1}{2}", "boxed"),
        (r"nested \boxed{\frac{\sqrt{3}}{3}} end", r"\frac{\sqrt{3}}{3}", "boxed"),
        (r"\fbox{7}", "7", "boxed"),
        (r"The result is $\boxed 5$.", "5", "boxed"),
        (r"broken \boxed{3 and then Answer: 4", "4", "answer-line"),
        ("Work...\nAnswer: 42", "42", "answer-line"),
        (r"The final answer is $\frac{3}{4}$.", r"\frac{3}{4}", "answer-line"),
        ("Answer: the total number of apples is 12.", "12", "answer-line"),
        (r"answer: \(x = 3\)", "x = 3", "answer-line"),
        ("we get 12 apples and 1,000 more.", "1000", "last-number"),
        ("the slope is -3/4 here", "-3/4", "last-number"),
        ("no idea", None, "none"),
    ],
)
def test_extract_answer(text: str, answer: str | None, how: str) -> None:
    assert extract_answer(text) == (answer, how)


def test_reference_extraction() -> None:
    assert extract_reference(r"So $x=\boxed{2}$.") == "2"
    assert extract_reference("  17 ") == "17"  # a bare short reference is taken whole
    assert extract_reference("") is None
    assert last_boxed(r"\boxed{unclosed") is None


# --- equivalence -------------------------------------------------------------------------------

EQUIVALENT = [
    (r"\frac{1}{2}", "0.5"),
    (r"\dfrac{1}{2}", r"\frac12"),
    (r"\tfrac{3}{4}", "3/4"),
    (r"\frac{-1}{2}", r"-\frac12"),
    (r"\frac{\sqrt{3}}{3}", r"\frac{1}{\sqrt{3}}"),
    (r"2\sqrt{2}", r"\sqrt{8}"),
    (r"(-\infty, -2] \cup [2, \infty)", r"(-\infty,-2]\cup[2,\infty)"),
    ("[2, 5)", "[2,5)"),
    (r"5\text{ inches}", "5"),
    (r"12 \text{ cm}^2", "12"),
    (r"90^\circ", "90"),
    (r"10\%", "10"),
    (r"\$18.90", "18.90"),
    ("1,000", "1000"),
    ("x=5", "5"),
    (r"\text{Monday}", "Monday"),
    (r"\text{even}", "even"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
]
NOT_EQUIVALENT = [
    (r"\frac{1}{2}", r"\frac{1}{3}"),
    (r"(-\infty, 3]", r"(-\infty,3)"),
    ("[2,5)", "(2,5)"),
    (r"\sqrt{2}", "2"),
    (r"2\sqrt{2}", r"\sqrt{2}"),
    ("5", "-5"),
    (r"5\text{ inches}", "6"),
    (r"\text{Monday}", "Tuesday"),
    (r"\text{even}", "odd"),
]


@pytest.mark.parametrize(("reference", "predicted"), EQUIVALENT)
def test_equivalent_answers(reference: str, predicted: str) -> None:
    equal, method, _ = compare(reference, predicted)
    assert equal, method


@pytest.mark.parametrize(("reference", "predicted"), NOT_EQUIVALENT)
def test_different_answers(reference: str, predicted: str) -> None:
    assert not compare(reference, predicted)[0]


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (r"\dfrac{1}{2}", r"\frac12", True),
        (r"\frac1{13}", r"\frac{1}{13}", True),
        ("0.5", r"\frac{1}{2}", True),
        (r"5\text{ inches}", "5", True),
        ("5 inches", "5", True),
        (r"90^{\circ}", "90", True),
        (r"\text{Monday}", "monday", True),
        (r"\left[ 1, 2 \right)", "[1,2)", True),
        ("x = 7", "7", True),
        (r"\sqrt2", r"\sqrt{2}", True),
        (r"\frac{1}{2}", r"\frac{1}{3}", False),
        ("[1,2)", "(1,2)", False),
        (r"\text{Monday}", "Tuesday", False),
        ("", "", False),
    ],
)
def test_normalising_fallback(a: str, b: str, equal: bool) -> None:
    assert normalized_equal(a, b) is equal


def test_fallback_is_used_where_math_verify_cannot_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(math_grade, "_mv_parse", lambda text, timeout: None)
    equal, method, note = compare(r"\dfrac{1}{2}", "0.5")
    assert (equal, method) == (True, "normalized") and "could not parse" in note
    assert compare(r"\text{Monday}", "Tuesday")[:2] == (False, "normalized")
    assert normalize_latex(r"\$ 1,000") == "1000"


# --- grading -----------------------------------------------------------------------------------


def _items(std: list[str], answers: list[str]) -> list[MathItem]:
    pairs = zip(std, answers, strict=True)
    return [MathItem(f"q{i}", "Level 1", "Algebra", s, a) for i, (s, a) in enumerate(pairs)]


def test_grade_items_verdicts() -> None:
    std = [r"so $\boxed{\frac{1}{2}}$", r"$\boxed{3}$", r"$\boxed{4}$", "no box at all, long " * 9]
    answers = [r"I get \boxed{0.5}", "Answer: 5", "I do not know", r"\boxed{1}"]
    verdicts = grade_items(_items(std, answers))
    assert [v.correct for v in verdicts] == [True, False, False, None]
    assert [v.method for v in verdicts] == ["math-verify", "math-verify", "no-answer", "no-reference"]
    assert verdicts[1].predicted == "5" and verdicts[1].extracted_by == "answer-line"
    summary = math_grade.summarise(verdicts)
    assert summary["overall"] == {"correct": 1, "graded": 3, "accuracy": pytest.approx(1 / 3)}
    assert summary["no_reference"] == 1


@pytest.mark.slow
def test_grading_off_the_main_thread_keeps_working() -> None:
    std = [r"$\boxed{\frac{1}{2}}$", r"$\boxed{2}$"]
    items = _items(std, [r"\boxed{0.5}", r"\boxed{3}"])
    box: dict[str, object] = {}
    thread = threading.Thread(target=lambda: box.update(v=grade_items(items)))
    thread.start()
    thread.join(timeout=120)
    verdicts = box["v"]
    assert [v.correct for v in verdicts] == [True, False]  # type: ignore[attr-defined]


@pytest.fixture
def math_sample(fixtures_dir: Path) -> Path:
    return fixtures_dir / "eval_questions" / "math_sample.jsonl"


def test_fixture_solutions_grade_as_correct(
    math_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [json.loads(line) for line in math_sample.read_text().splitlines() if line.strip()]
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        "".join(json.dumps({"question_id": r["question_id"], "answer": r["std_answer"]}) + "\n" for r in rows),
        encoding="utf-8",
    )
    out = tmp_path / "math.json"
    assert main(["math-eval", "--questions", str(math_sample), "--answers", str(answers), "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["overall"] == {"correct": len(rows), "graded": len(rows), "accuracy": 1.0}
    assert set(summary["by_level"]) == {r["level"] for r in rows}
    assert set(summary["by_type"]) == {r["type"] for r in rows}
    verdicts = [json.loads(line) for line in (tmp_path / "math.verdicts.jsonl").read_text().splitlines()]
    assert len(verdicts) == len(rows) and all(v["correct"] for v in verdicts)
    assert "| **overall** | 12 / 12 | 100.0 |" in capsys.readouterr().out


def test_wrong_answers_on_the_fixture(math_sample: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in math_sample.read_text().splitlines() if line.strip()]
    answers = tmp_path / "answers.jsonl"
    wrong = [{"question_id": r["question_id"], "answer": "After some work, the answer is \\boxed{-999}."} for r in rows]
    answers.write_text("".join(json.dumps(a) + "\n" for a in wrong), encoding="utf-8")
    out = tmp_path / "m.json"
    assert (
        main(
            [
                "math-eval",
                "--questions",
                str(math_sample),
                "--answers",
                str(answers),
                "--out",
                str(out),
                "--verdicts",
                str(tmp_path / "v.jsonl"),
            ]
        )
        == 0
    )
    assert json.loads(out.read_text())["overall"]["correct"] == 0


def test_mismatched_ids_are_reported(math_sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "not-a-question", "answer": "1"}) + "\n", encoding="utf-8")
    out = tmp_path / "m.json"
    assert main(["math-eval", "--questions", str(math_sample), "--answers", str(answers), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "12 question(s) have no answer" in err and "not-a-question" in err
    assert not out.exists()
