"""A judge's rating of one example: a score from 1 to 10 and a one-sentence reason (stored by `runstore.ratings`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rating:
    score: int
    reason: str

    def as_record(self) -> dict[str, int | str]:
        """The `rating` field of an exported record."""
        return {"score": self.score, "reason": self.reason}
