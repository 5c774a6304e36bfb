"""Decontamination: find examples that share a word n-gram with an evaluation question or its answer.

Texts are compared as words: lower-cased, every Unicode punctuation character (category P*) turned
into a space, split on whitespace. So "What is 2+2?" and "what is 2+2" are the same words, in any
script. A question file of the evaluation format (`evaluate/questions.py`) is indexed by the n-grams
(default 13 words) of each question's `question` and `std_answer`; an example matches when its
instruction, input or output holds one of them.

Shorter texts: a question of fewer than n words is matched as a whole (its full word sequence found
anywhere in a field); a reference answer of fewer than n words is not checked, since a short answer
("4", "Paris") turns up in unrelated text all the time. Where several questions share an n-gram the
first one (in the order the files and questions are given) is named.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explore_instruct.datafile import format_for_path, read_records, text_field, write_records
from explore_instruct.errors import UserError
from explore_instruct.evaluate.questions import read_questions

DEFAULT_NGRAM = 13
FIELDS = ("instruction", "input", "output")


def _punctuation_to_space(ch: str) -> str:
    return " " if unicodedata.category(ch).startswith("P") else ch


def words(text: str) -> list[str]:
    """`text` lower-cased, punctuation removed (any script), split into words."""
    return "".join(_punctuation_to_space(ch) for ch in text.lower()).split()


@dataclass(frozen=True)
class Match:
    source: str  # the question file, as given
    question_id: str


@dataclass
class ContaminationIndex:
    """Word sequences of evaluation questions and answers, each naming the first question that has it."""

    ngram: int
    # sequence length -> word sequence -> the question it came from
    by_length: dict[int, dict[tuple[str, ...], Match]] = field(default_factory=dict)

    def add(self, text: str, match: Match, *, whole_when_short: bool) -> None:
        w = words(text)
        n = self.ngram
        grams: Iterator[tuple[str, ...]]
        if len(w) >= n:
            grams = (tuple(w[i : i + n]) for i in range(len(w) - n + 1))
        elif w and whole_when_short:
            grams = iter([tuple(w)])
        else:
            return
        for gram in grams:
            self.by_length.setdefault(len(gram), {}).setdefault(gram, match)

    def match(self, texts: Iterable[str]) -> Match | None:
        """The first question any of `texts` shares a sequence with (text by text, left to right)."""
        for text in texts:
            w = words(text)
            for i in range(len(w)):
                for length, grams in self.by_length.items():
                    if i + length <= len(w) and (hit := grams.get(tuple(w[i : i + length]))) is not None:
                        return hit
        return None


def build_index(sources: Sequence[str | Path], ngram: int = DEFAULT_NGRAM) -> ContaminationIndex:
    """The index of every question file in `sources` (read and checked by `read_questions`)."""
    if ngram < 1:
        raise UserError(f"ngram must be at least 1, not {ngram}", settings=("ngram",))
    index = ContaminationIndex(ngram)
    for source in sources:
        for q in read_questions(source):
            found = Match(str(source), q.question_id)
            index.add(q.question, found, whole_when_short=True)
            index.add(q.std_answer, found, whole_when_short=False)
    return index


def example_texts(record: dict[str, Any], where: str) -> list[str]:
    """The instruction (required), input and output of a record, as text."""
    return [text_field(record, name, where, required=name == "instruction") for name in FIELDS]


@dataclass(frozen=True)
class DecontaminateResult:
    total: int
    kept: int
    removed: dict[str, int]  # per question file, in the order given (zeros included)


def decontaminate_file(
    records_path: Path, against: Sequence[Path], out: Path, ngram: int = DEFAULT_NGRAM
) -> DecontaminateResult:
    """Write the records of `records_path` that match no question of `against` to `out` (input order).

    The output format follows `out`'s suffix (.json, .jsonl), else the input's. Every file is read and
    checked before anything is written.
    """
    index = build_index(against, ngram)
    records, input_format = read_records(records_path)
    kept, removed = decontaminate_records(records, index, str(records_path))
    write_records(out, kept, format_for_path(out, default=input_format))
    return DecontaminateResult(len(records), len(kept), {str(s): removed[str(s)] for s in against})


def decontaminate_records(
    records: Sequence[dict[str, Any]], index: ContaminationIndex, where: str
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The records that match no question (in order), and how many were removed per question file."""
    kept: list[dict[str, Any]] = []
    removed: Counter[str] = Counter()
    for i, rec in enumerate(records):
        hit = index.match(example_texts(rec, f"{where}: record {i}"))
        if hit is None:
            kept.append(rec)
        else:
            removed[hit.source] += 1
    return kept, removed
