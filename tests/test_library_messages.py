"""Library messages name settings, not flags: the CLI writes the flag (`cli/vocabulary.flag_words`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from explore_instruct.cli.vocabulary import flag_words
from explore_instruct.config import BudgetConfig
from explore_instruct.cost import Budget, BudgetReached
from explore_instruct.llm.base import CompletionRequest, Usage

SRC = Path(__file__).resolve().parents[1] / "src" / "explore_instruct"
# How a message tells the user to change a setting; a flag there belongs to the CLI.
ADVICE_WITH_FLAG = re.compile(r"(rerun with|pass|set|check|raise) --[a-z]")


def test_no_library_message_advises_a_flag() -> None:
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in sorted(SRC.rglob("*.py"))
        if "cli" not in path.relative_to(SRC).parts
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ADVICE_WITH_FLAG.search(line) and not line.lstrip().startswith("#")
    ]
    assert offenders == []


def test_budget_stop_names_the_setting_and_the_cli_prints_the_flag() -> None:
    budget = Budget(BudgetConfig(max_tokens=10), None, Usage(0, 0))
    with pytest.raises(BudgetReached) as stopped:
        budget.reserve(CompletionRequest.chat("hi", max_tokens=400))
    message = str(stopped.value)
    assert "--" not in message and "rerun with resume" in message
    assert "rerun with --resume" in flag_words(message, stopped.value.settings)
