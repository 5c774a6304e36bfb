"""What the summary, the progress bars and the report's captions show agrees with what the run holds."""

import io
import json

import pytest

from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.pipeline import run_stages
from explore_instruct.summary import run_summary
from tests.fakes import fake_model
from tests.helpers import make_config, run_fake

TWO_INSTRUCTIONS = ["Rewrite the following text politely please", "Summarise the contract below in two lines"]


def two_instructions(request):
    """Every generated example repeats one of two instructions (with its own input)."""
    reply = json.loads(fake_model(request))
    for i, ex in enumerate(reply.get("examples", [])):
        ex["instruction"] = TWO_INSTRUCTIONS[i % 2]
    return json.dumps(reply)


def test_summary_shows_distinct_collisions(tmp_path):
    cfg = make_config(explore={"max_depth": 0}, generate={"examples_per_task": [8], "per_call": 4})
    ctx, _, _ = run_fake(tmp_path / "run", cfg, backend=ScriptedLLM(two_instructions))
    summary = run_summary(ctx.store)
    assert summary["examples"]["dropped_filter"] > 3  # many copies of the same two instructions
    shown = summary["filter_collisions"]
    assert sorted(c["dropped"] for c in shown) == sorted(TWO_INSTRUCTIONS)
    assert len({c["dup_of"] for c in shown}) == len(shown)


class RecordingProgress:
    def __init__(self) -> None:
        self.total: dict[str, int | None] = {}
        self.done: dict[str, int] = {}

    def start(self, stage: str, total: int | None) -> None:
        self.total[stage], self.done[stage] = total, 0

    def advance(self, stage: str, amount: int = 1, *, total: int | None = None) -> None:
        self.done[stage] += amount

    def finish(self, stage: str) -> None:
        pass


def test_filter_bar_counts_what_the_summary_counts(tmp_path):
    progress = RecordingProgress()
    ctx, results = run_stages(make_config(), tmp_path / "run", backend=ScriptedLLM(fake_model), progress=progress)
    e = run_summary(ctx.store)["examples"]
    judged = e["kept"] + e["dropped_filter"]
    assert progress.total["filter"] == judged == results.filter.judged
    assert progress.done["filter"] == judged  # the three seeds ahead of them are not counted


def test_stats_json_counts_dropped_task_names(tmp_path, capsys):
    from explore_instruct.cli import main

    def junk_names(request):
        reply = json.loads(fake_model(request))
        if request.schema_name == "subtasks" and "already has these subtasks" not in request.messages[-1].content:
            reply["subtasks"][0]["name"] = "Designated Task 1"
        return json.dumps(reply)

    cfg = make_config(explore={"max_depth": 1, "breadth": [2]})
    run_fake(tmp_path / "run", cfg, stages=("explore",), backend=ScriptedLLM(junk_names))
    assert main(["stats", "--run-dir", str(tmp_path / "run"), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)["dropped_task_names"]
    assert counts and set(counts) == {"placeholder name"}


GREY = (0xBB / 255, 0xBB / 255, 0xBB / 255)


def grey_pixels(png: bytes) -> int:
    image = pytest.importorskip("matplotlib.image").imread(io.BytesIO(png))
    rgb = image[..., :3]
    return int(((abs(rgb - GREY) < 0.01).all(axis=-1)).sum())


def test_pruned_tasks_are_drawn_as_the_caption_says():
    pytest.importorskip("matplotlib")
    from explore_instruct.analysis import figures
    from explore_instruct.analysis.report import _pruned_note

    pruned = figures.examples_per_task([("Paraphrase", 10, False), ("Paraphrasing", 2, True)], "t")
    none_pruned = figures.examples_per_task([("Paraphrase", 10, False), ("Simplify", 2, False)], "t")
    assert grey_pixels(pruned) > 1000 > grey_pixels(none_pruned)  # antialiased text has a few grey pixels
    assert _pruned_note(1) == "grey, hatched: 1 pruned task"
    assert "grey" not in _pruned_note(0)
