"""A reviewer's decisions on a run's examples: accept, reject or edit, stored in the run's database
(`runstore.review`).

The examples table is never changed: an edit lives beside the original, and every decision is
also appended to a history with its time and reviewer. Exports read the current decisions through
`apply_review`: a rejected example never reaches a training file, an edited one goes out edited
with provenance naming the reviewer and keeping the original text.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any, Literal

from explore_instruct.errors import UserError
from explore_instruct.runstore.connection import transaction
from explore_instruct.runstore.review import decisions, origin_and_status, record_decision
from explore_instruct.text import invalid_char

Decision = Literal["accept", "reject", "edit"]
DECISIONS: tuple[str, ...] = ("accept", "reject", "edit")
# How a decision reads in an exported record's provenance.
EXPORTED_AS = {"accept": "accepted", "edit": "edited"}


def reviewable(origin: str, status: str) -> bool:
    """Only generated examples the filters kept take a decision: seeds are the user's own examples
    and never exported, dropped ones never reach a training file."""
    return origin != "seed" and status == "ok"


def decide(
    conn: sqlite3.Connection,
    example_id: int,
    decision: str,
    reviewer: str,
    *,
    edited: tuple[str, str, str] | None = None,
) -> None:
    """Record `decision` on an example (replacing an earlier one) and append it to the history.

    `undo` removes the current decision. An `edit` needs the new (instruction, input, output).
    A seed or dropped example is refused (see `reviewable`).
    """
    if decision not in (*DECISIONS, "undo"):
        raise UserError(f"decision {decision!r}: choose accept, reject, edit or undo")
    if decision == "edit" and (edited is None or not edited[0].strip()):
        raise UserError("an edit needs a non-empty instruction")
    if not reviewer.strip():
        raise UserError("a decision needs a reviewer name")
    # An edit goes into the training data: it is held to the rule model text is held to (text.py).
    checked = {"reviewer": reviewer}
    if decision == "edit" and edited is not None:
        checked.update(zip(("instruction", "input", "output"), edited, strict=True))
    for name, value in checked.items():
        if (bad := invalid_char(value)) is not None:
            why = "a control character, or bytes that were not UTF-8"
            raise UserError(f"the {name} holds U+{ord(bad):04X}, which is not valid text ({why})")
    text: tuple[str | None, str | None, str | None] = edited if decision == "edit" else (None, None, None)  # type: ignore[assignment]
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with transaction(conn):
        found = origin_and_status(conn, example_id)
        if found is None:
            raise UserError(f"example {example_id}: no such example in this run")
        if not reviewable(*found):
            what = "a seed example" if found[0] == "seed" else "a dropped example"
            raise UserError(f"example {example_id}: {what} takes no review decision; only kept, generated ones do")
        record_decision(conn, example_id, decision, text, reviewer, now)


def apply_review(
    conn: sqlite3.Connection, records: list[dict[str, Any]], *, only_reviewed: bool = False
) -> list[dict[str, Any]]:
    """Records (from `RunStore.dataset`) with the review applied.

    Rejected records are left out; edited ones carry the edited text and a `review` field with the
    decision, reviewer, time and the original text; accepted ones a `review` field. With
    `only_reviewed`, records nobody accepted or edited are left out too.
    """
    current = decisions(conn)
    if not current and not only_reviewed:
        return records
    out = []
    for rec in records:
        d = current.get(rec["id"])
        if d is None:
            if not only_reviewed:
                out.append(rec)
            continue
        if d.decision == "reject":
            continue
        review: dict[str, Any] = {"decision": EXPORTED_AS[d.decision], "reviewer": d.reviewer, "at": d.decided_at}
        rec = dict(rec)
        if d.decision == "edit":
            review["original"] = {k: rec[k] for k in ("instruction", "input", "output")}
            rec.update(instruction=d.instruction or "", input=d.input or "", output=d.output or "")
        rec["review"] = review
        out.append(rec)
    return out
