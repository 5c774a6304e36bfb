"""The stage table: each row says what its stage needs, and the pipeline holds the stage to it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from explore_instruct.errors import UserError
from explore_instruct.pipeline import calls_llm, run_stages
from explore_instruct.stages import ALL_STAGES, STAGES, RunResults
from tests.helpers import fake_backend, make_config


def test_every_stage_reports_into_its_own_field() -> None:
    assert tuple(f.name for f in fields(RunResults)) == ALL_STAGES


@pytest.mark.parametrize("stage", [s.name for s in STAGES if s.needs.tree])
def test_a_stage_that_needs_a_tree_stops_before_it_runs_without_one(tmp_path: Path, stage: str) -> None:
    with pytest.raises(UserError, match="no tree yet"):
        run_stages(make_config(), tmp_path / "run", (stage,), backend=fake_backend())


def test_the_rate_stage_calls_the_llm_only_when_enabled() -> None:
    assert not calls_llm(make_config(), ("rate", "sample"))
    assert calls_llm(make_config(rate={"enabled": True}), ("rate", "sample"))
    assert calls_llm(make_config(), ("explore",))
