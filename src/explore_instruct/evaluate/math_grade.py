"""MATH accuracy: extract final answers, compare them with math-verify, report by level and type.

math-verify bounds its parsing and comparison time with `signal.alarm`, which works only in a
process's main thread. Called from any other thread, the grading runs in a spawned child process,
whose main thread can use the alarm, so every item keeps its time limit either way.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from typing import Any

from explore_instruct.errors import MissingExtra
from explore_instruct.evaluate.math_extract import extract_answer, extract_reference, normalized_equal
from explore_instruct.evaluate.questions import Answer, Question


@dataclass(frozen=True)
class MathItem:
    question_id: str
    level: str
    type: str
    std_answer: str
    answer: str


@dataclass
class MathVerdict:
    question_id: str
    level: str
    type: str
    reference: str | None
    predicted: str | None
    extracted_by: str  # "boxed" | "answer-line" | "last-number" | "none"
    correct: bool | None  # None: the reference has no final answer to compare with
    method: str  # "math-verify" | "normalized" | "no-answer" | "no-reference"
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _require_math_verify() -> None:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        raise MissingExtra("eval", "math-verify") from None


def _mv_parse(text: str, timeout: int) -> list[Any] | None:
    """Parsed forms of one extracted answer, or None when math-verify found no mathematical object."""
    from math_verify import parse
    from sympy import Basic, MatrixBase

    try:
        parsed = parse("\\boxed{" + text + "}", parsing_timeout=timeout, raise_on_error=True)
    except Exception:  # a timeout or a parser error: leave it to the fallback
        return None
    return parsed if any(isinstance(p, Basic | MatrixBase) for p in parsed) else None


def compare(reference: str, predicted: str, timeout: int = 5) -> tuple[bool, str, str]:
    """(equal, method, note): math-verify where it parses both sides, else the normalised strings."""
    from math_verify import verify
    from math_verify.errors import TimeoutException

    gold, pred = _mv_parse(reference, timeout), _mv_parse(predicted, timeout)
    if gold is not None and pred is not None:
        try:
            return bool(verify(gold, pred, timeout_seconds=timeout, raise_on_error=True)), "math-verify", ""
        except TimeoutException:
            note = f"math-verify took over {timeout}s"
        except Exception as exc:
            note = f"math-verify failed: {type(exc).__name__}"
    else:
        note = "math-verify could not parse " + ("the reference" if gold is None else "the answer")
    return normalized_equal(reference, predicted), "normalized", note


def grade_item(item: MathItem, timeout: int = 5) -> MathVerdict:
    reference = extract_reference(item.std_answer)
    predicted, how = extract_answer(item.answer)

    def verdict(correct: bool | None, method: str, note: str) -> MathVerdict:
        return MathVerdict(item.question_id, item.level, item.type, reference, predicted, how, correct, method, note)

    if reference is None:
        return verdict(None, "no-reference", "no final answer in std_answer")
    if predicted is None:
        return verdict(False, "no-answer", "no final answer in the answer")
    return verdict(*compare(reference, predicted, timeout))


def _grade_in_this_process(items: Sequence[MathItem], timeout: int) -> list[MathVerdict]:
    return [grade_item(item, timeout) for item in items]


def grade_items(items: Sequence[MathItem], timeout: int = 5) -> list[MathVerdict]:
    """Grade every item with a per-operation time limit of `timeout` seconds (an integer: alarm)."""
    _require_math_verify()
    timeout = max(1, int(timeout))
    if threading.current_thread() is threading.main_thread():
        return _grade_in_this_process(items, timeout)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_grade_in_this_process, list(items), timeout).result()


def build_items(questions: Sequence[Question], answers: dict[str, Answer]) -> list[MathItem]:
    return [MathItem(q.question_id, q.level, q.type, q.std_answer, answers[q.question_id].answer) for q in questions]


@dataclass
class Accuracy:
    correct: int
    graded: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.graded if self.graded else None

    def to_dict(self) -> dict[str, Any]:
        return {"correct": self.correct, "graded": self.graded, "accuracy": self.accuracy}


def _accuracy(verdicts: Sequence[MathVerdict]) -> Accuracy:
    graded = [v for v in verdicts if v.correct is not None]
    return Accuracy(sum(bool(v.correct) for v in graded), len(graded))


def summarise(verdicts: Sequence[MathVerdict]) -> dict[str, Any]:
    """Accuracy overall, by level and by type, plus how answers were extracted and compared."""

    def by(key: str) -> dict[str, Any]:
        names = sorted({getattr(v, key) or "(none)" for v in verdicts})
        return {n: _accuracy([v for v in verdicts if (getattr(v, key) or "(none)") == n]).to_dict() for n in names}

    def counts(key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in verdicts:
            out[getattr(v, key)] = out.get(getattr(v, key), 0) + 1
        return dict(sorted(out.items()))

    return {
        "overall": _accuracy(verdicts).to_dict(),
        "by_level": by("level"),
        "by_type": by("type"),
        "items": len(verdicts),
        "no_reference": sum(v.correct is None for v in verdicts),
        "extracted_by": counts("extracted_by"),
        "method": counts("method"),
    }


def markdown_summary(summary: dict[str, Any]) -> str:
    def pct(acc: dict[str, Any]) -> str:
        value = acc["accuracy"]
        return "n/a" if value is None else f"{100 * value:.1f}"

    lines = ["| Group | Correct / graded | Accuracy (%) |", "| --- | --- | --- |"]
    o = summary["overall"]
    lines.append(f"| **overall** | {o['correct']} / {o['graded']} | {pct(o)} |")
    for section in ("by_level", "by_type"):
        for name, acc in summary[section].items():
            lines.append(f"| {name} | {acc['correct']} / {acc['graded']} | {pct(acc)} |")
    return "\n".join(lines) + "\n"
