"""The one progress module: the first-reply hint, and bars drawn only for long inputs."""

from __future__ import annotations

from explore_instruct.cli import progress as progress_module
from explore_instruct.cli.progress import LOCAL_FIRST_REPLY_HINT, StageProgress, count_progress


def notes(progress: StageProgress) -> dict[str, str]:
    return {str(t.description): t.fields["note"] for t in progress._bars.tasks}


def test_first_model_stage_shows_the_hint_until_its_first_reply():
    p = StageProgress(llm_stages=frozenset({"explore", "generate"}), first_reply_hint=LOCAL_FIRST_REPLY_HINT)
    p.start("explore", 10)
    assert notes(p)["explore"] == LOCAL_FIRST_REPLY_HINT
    p.advance("explore", 0)  # a resumed run reports what it already had: still waiting
    assert notes(p)["explore"] == LOCAL_FIRST_REPLY_HINT
    p.advance("explore", 1)
    assert notes(p)["explore"] == ""
    p.start("filter", 5)  # no model call: no hint
    p.start("generate", 5)  # the model is loaded by now: no hint again
    assert notes(p) == {"explore": "", "filter": "", "generate": ""}


def test_a_stage_without_model_calls_gets_no_hint():
    p = StageProgress(llm_stages=frozenset({"generate"}), first_reply_hint="wait")
    p.start("prune", 3)
    p.start("generate", 3)
    assert notes(p) == {"prune": "", "generate": "wait"}


def test_count_progress_draws_nothing_below_its_minimum(monkeypatch):
    started: list[bool] = []
    monkeypatch.setattr(progress_module.Progress, "start", lambda self: started.append(True))
    monkeypatch.setattr(progress_module.Progress, "stop", lambda self: None)
    with count_progress("x", min_total=100) as update:
        update(0, 99)
        update(99, 99)
    assert started == []
    with count_progress("x", min_total=100) as update:
        update(0, 100)
    assert started == [True]
