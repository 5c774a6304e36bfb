"""A human-evaluation study: a folder with its own SQLite database (WAL) and an owner-only links file.

Each item is a question with a baseline and a candidate answer. Each rater gets a list of items
(all of them, or `per_rater` overlapping ones so every item gets at least `min_votes` votes), and
for every (rater, item) the side the candidate is shown on is drawn at random and recorded. A vote
is one row per (rater, item): voting again replaces it. Every vote is committed (synchronous=FULL)
before the rater's browser is told it was saved.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from explore_instruct.errors import UserError
from explore_instruct.evaluate.questions import match_answers, read_answers, read_questions
from explore_instruct.evaluate.stages import _label as answers_label
from explore_instruct.runstore.study_db import ItemRow, Placement, RaterProgress, RaterRow, StudyDB, write_study_db
from explore_instruct.web.common import new_token, token_digest

STUDY_DB = "study.db"
LINKS_FILE = "links.txt"
CHOICES = ("left", "right", "tie", "both_bad")
CHOICE_LABELS = {"left": "Left is better", "right": "Right is better", "tie": "Tie", "both_bad": "Both are bad"}


@dataclass(frozen=True)
class Rater:
    id: int
    name: str


@dataclass(frozen=True)
class Assignment:
    position: int
    item_id: int
    question_id: str
    cls: str
    question: str
    left: str
    right: str
    choice: str | None
    comment: str


@dataclass(frozen=True)
class CreatedStudy:
    path: Path
    items: int
    links: list[tuple[str, str]]  # (who, URL path) with the owner first
    min_votes: int


def assign(n_items: int, n_raters: int, per_rater: int, rng: random.Random) -> list[list[tuple[int, str]]]:
    """Item indices (and the candidate's side) for each rater.

    Raters take consecutive runs of `per_rater` items from one shuffled cycle over the items, so
    every item is given floor or ceil of raters * per_rater / items times and no rater sees an item
    twice. Each rater's own list is then shuffled.
    """
    cycle = list(range(n_items))
    rng.shuffle(cycle)
    lists = []
    for r in range(n_raters):
        picked = [cycle[(r * per_rater + j) % n_items] for j in range(per_rater)]
        rng.shuffle(picked)
        lists.append([(i, rng.choice(("left", "right"))) for i in picked])
    return lists


def create_study(
    questions_path: str | Path,
    baseline_path: str | Path,
    candidate_path: str | Path,
    out: str | Path,
    *,
    raters: int,
    per_rater: int | None = None,
    min_votes: int | None = None,
    seed: int = 0,
) -> CreatedStudy:
    """Validate the inputs, then write the study folder whole (built aside, then renamed into place)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not an empty folder; choose another --out")
    if raters < 1:
        raise UserError("raters must be at least 1", settings=("raters",))
    questions = read_questions(questions_path)
    baseline_answers, candidate_answers = read_answers(baseline_path), read_answers(candidate_path)
    baseline = match_answers(questions, baseline_answers, baseline_path)
    candidate = match_answers(questions, candidate_answers, candidate_path)
    n = len(questions)
    k = n if per_rater is None else per_rater
    if not 1 <= k <= n:
        raise UserError(f"per_rater {k}: must be between 1 and the number of questions ({n})", settings=("per_rater",))
    votes = min_votes if min_votes is not None else (raters if per_rater is None else max(1, raters * k // n))
    if not 1 <= votes <= raters:
        raise UserError(f"min_votes {votes}: must be between 1 and raters ({raters})", settings=("min_votes", "raters"))
    if raters * k < votes * n:
        raise UserError(
            f"{raters} raters x {k} items each cannot give each of the {n} questions {votes} vote(s); "
            f"raise per_rater to at least {-(-votes * n // raters)}",
            settings=("per_rater",),
        )
    rng = random.Random(seed)
    lists = assign(n, raters, k, rng)
    names = {"baseline": answers_label(baseline_answers, baseline_path)}
    names["candidate"] = answers_label(candidate_answers, candidate_path)
    tokens = [new_token() for _ in range(raters + 1)]

    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        meta = {
            "secret": new_token() + new_token(),
            "owner_sha256": token_digest(tokens[0]),
            "seed": str(seed),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "baseline_name": names["baseline"],
            "candidate_name": names["candidate"],
            "min_votes": str(votes),
        }
        items = [
            ItemRow(i + 1, q.question_id, q.cls, q.question, baseline[q.question_id].answer,
                    candidate[q.question_id].answer)
            for i, q in enumerate(questions)
        ]  # fmt: skip
        rater_rows = [RaterRow(r, f"rater-{r}", token_digest(tokens[r])) for r in range(1, raters + 1)]
        placements = [
            Placement(r, pos, i + 1, side)
            for r, picked in enumerate(lists, start=1)
            for pos, (i, side) in enumerate(picked, start=1)
        ]
        write_study_db(build / STUDY_DB, meta, items, rater_rows, placements)
        links = [("owner", f"/owner/{tokens[0]}")] + [(f"rater-{r}", f"/r/{tokens[r]}") for r in range(1, raters + 1)]
        _write_private(build / LINKS_FILE, "".join(f"{who}\t{path}\n" for who, path in links))
        for leftover in ("-wal", "-shm"):
            Path(f"{build / STUDY_DB}{leftover}").unlink(missing_ok=True)
        if out.exists():
            out.rmdir()
        os.replace(build, out)
        os.chmod(out, 0o700)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return CreatedStudy(out, n, links, votes)


def read_links(study: str | Path) -> list[tuple[str, str]]:
    """(who, URL path) from a study's owner-only links file, owner first; [] when the file was removed."""
    path = Path(study) / LINKS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    links = []
    for n, line in enumerate(text.splitlines(), start=1):
        who, tab, url_path = line.partition("\t")
        if not tab or not url_path.startswith("/"):
            raise UserError(f"{path}: line {n}: expected WHO, a tab, and a link path such as /r/TOKEN")
        links.append((who, url_path))
    return links


def _write_private(path: Path, text: str) -> None:
    """A file only its owner can read, created with that mode (never readable by others, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


class Study:
    """An open study database; every method is safe to call from several threads at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / STUDY_DB).is_file():
            raise UserError(f"{self.path}: not a study folder (no {STUDY_DB}); make one with 'human-eval create'")
        self.db = StudyDB(self.path / STUDY_DB)
        self.meta = self.db.meta()
        self._raters = {r.token_sha256: Rater(r.id, r.name) for r in self.db.raters()}

    def close(self) -> None:
        self.db.close()

    @property
    def secret(self) -> bytes:
        return self.meta["secret"].encode("ascii")

    def rater_digests(self) -> dict[str, Rater]:
        return self._raters

    def owner_digest(self) -> dict[str, bool]:
        return {self.meta["owner_sha256"]: True}

    def assignments(self, rater: Rater) -> list[Assignment]:
        """The rater's items in order, each with the two answers on the rater's sides and any vote."""
        out = []
        for r in self.db.assignments(rater.id):
            left, right = (r.candidate, r.baseline) if r.candidate_side == "left" else (r.baseline, r.candidate)
            out.append(
                Assignment(r.position, r.item_id, r.question_id, r.cls, r.question, left, right, r.choice, r.comment)
            )
        return out

    def vote(self, rater: Rater, position: int, choice: str, comment: str = "") -> bool:
        """Store (or replace) the rater's vote on their `position`-th item; False if no such item."""
        if choice not in CHOICES:
            raise ValueError(choice)
        return self.db.vote(rater.id, position, choice, comment, datetime.now(UTC).isoformat(timespec="milliseconds"))

    def progress(self) -> list[RaterProgress]:
        """Per rater: name, items assigned, items voted, time of the last vote."""
        return self.db.progress()
