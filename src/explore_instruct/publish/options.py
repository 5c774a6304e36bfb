"""What a dataset card is written with, besides the run itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CardOptions:
    license: str | None = None  # overrides the run config's publish.license
    analysis: bool | None = None  # the figures and diversity measures; None: when the analysis extra is installed
    repo_id: str | None = None  # the Hub repository, for the card's loading example
