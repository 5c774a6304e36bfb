"""Question and answer files of the evaluation format, and matching them by `question_id`.

Questions carry `question`, `std_answer`, `class`, `question_id` (math adds `level`, `type`);
answers carry at least `question_id` and `answer`. A question without an answer, or an answer
without a question, is an error naming the ids: nothing is dropped silently.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explore_instruct.datafile import read_records, text_field
from explore_instruct.errors import UserError

_SHOWN_IDS = 5  # ids listed in an error message before "... and N more"


@dataclass(frozen=True)
class Question:
    question_id: str
    question: str
    cls: str = ""
    std_answer: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # level, type, anything else kept as is

    @property
    def level(self) -> str:
        return str(self.extra.get("level", "") or "")

    @property
    def type(self) -> str:
        return str(self.extra.get("type", "") or "")


@dataclass(frozen=True)
class Answer:
    question_id: str
    answer: str
    record: Mapping[str, Any] = field(default_factory=dict)


def _string(rec: Mapping[str, Any], name: str, where: str, *, required: bool) -> str:
    value = rec.get(name)
    if isinstance(value, int | float) and not isinstance(value, bool) and name == "question_id":
        return str(value)  # numeric ids are common; compare them as text
    return text_field(rec, name, where, required=required)


def _check_unique(ids: Sequence[str], path: Path) -> None:
    dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dupes:
        raise UserError(f"{path}: duplicate question_id {format_ids(dupes)}")


def read_questions(path: str | Path) -> list[Question]:
    """Questions of a JSON or JSONL file, validated, in file order."""
    p = Path(path)
    records, _ = read_records(p)
    questions = []
    core = {"question_id", "question", "class", "std_answer"}
    for i, rec in enumerate(records):
        where = f"{p}: record {i}"
        questions.append(
            Question(
                question_id=_string(rec, "question_id", where, required=True),
                question=_string(rec, "question", where, required=True),
                cls=_string(rec, "class", where, required=False),
                std_answer=_string(rec, "std_answer", where, required=False),
                extra={k: v for k, v in rec.items() if k not in core},
            )
        )
    if not questions:
        raise UserError(f"{p}: no questions")
    _check_unique([q.question_id for q in questions], p)
    return questions


def read_answers(path: str | Path) -> list[Answer]:
    """Answers of a JSON or JSONL file (`question_id`, `answer`), validated, in file order."""
    p = Path(path)
    records, _ = read_records(p)
    answers = []
    for i, rec in enumerate(records):
        where = f"{p}: record {i}"
        answers.append(
            Answer(
                question_id=_string(rec, "question_id", where, required=True),
                answer=_string(rec, "answer", where, required=True),
                record=rec,
            )
        )
    _check_unique([a.question_id for a in answers], p)
    return answers


def format_ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOWN_IDS])
    more = len(ids) - _SHOWN_IDS
    return shown + (f" ... and {more} more" if more > 0 else "")


def match_answers(
    questions: Sequence[Question],
    answers: Sequence[Answer],
    answers_path: str | Path,
) -> dict[str, Answer]:
    """Answers by question id; raises UserError naming ids missing on either side."""
    by_id = {a.question_id: a for a in answers}
    question_ids = {q.question_id for q in questions}
    missing = [q.question_id for q in questions if q.question_id not in by_id]
    unknown = [a.question_id for a in answers if a.question_id not in question_ids]
    problems = []
    if missing:
        problems.append(f"{len(missing)} question(s) have no answer: {format_ids(missing)}")
    if unknown:
        problems.append(f"{len(unknown)} answer(s) match no question: {format_ids(unknown)}")
    if problems:
        raise UserError(f"{answers_path}: " + "; ".join(problems))
    return by_id
