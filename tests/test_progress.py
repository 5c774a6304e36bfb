"""The one progress module: the first-reply hint, bars drawn only for long inputs, plain lines off a terminal."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from rich.console import Console

from explore_instruct.cli import progress as progress_module
from explore_instruct.cli.progress import (
    LOCAL_FIRST_REPLY_HINT,
    StageProgress,
    StepTable,
    count_progress,
    hook_progress,
    quiet_libraries,
)
from tests.helpers import BASE

REPO = Path(__file__).resolve().parents[1]


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


# --- off a terminal: plain lines, written as the work moves (issue 20, item 7) -----------------------------


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """The progress console writing to a file, as under `make demo > log 2>&1`."""
    buffer = io.StringIO()
    monkeypatch.setattr(progress_module, "console", Console(file=buffer, width=80))
    return buffer


def counts(text: str, label: str) -> list[int]:
    return [int(n) for n in re.findall(rf"^{label}: (\d+)/\d+ \d+:\d\d:\d\d", text, re.MULTILINE)]


def test_off_a_terminal_each_stage_prints_a_line_per_tenth(log: io.StringIO) -> None:
    with StageProgress(llm_stages=frozenset({"generate"}), first_reply_hint="wait") as p:
        p.start("generate", 40)
        assert log.getvalue().startswith("generate: 0/40 0:00:00 (wait)\n")  # the line is there at once
        for _ in range(40):
            p.advance("generate")
        p.start("filter", 3)
        p.advance("filter", 2)
        p.finish("filter")  # two of three: the stage ends short, its last line says so
    assert counts(log.getvalue(), "generate") == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    assert counts(log.getvalue(), "filter") == [0, 2, 2]
    assert re.search(r"^filter: 2/3 .*\nfilter: 2/2 ", log.getvalue(), re.MULTILINE)
    assert "━" not in log.getvalue()  # no bar drawn


def test_off_a_terminal_hooks_and_counts_print_lines_too(log: io.StringIO) -> None:
    with hook_progress() as start:
        advance = start("parsing", 5)
        advance(5)
    with count_progress("filtering") as update:
        update(50, 100)
        update(100, 100)
    assert counts(log.getvalue(), "parsing") == [0, 5]
    assert counts(log.getvalue(), "filtering") == [0, 50, 100]


def test_off_a_terminal_the_study_prints_a_line_per_step(log: io.StringIO) -> None:
    def state(step_id: str, status: str, reason: str | None = None) -> SimpleNamespace:
        return SimpleNamespace(step=SimpleNamespace(id=step_id), status=status, reason=reason)

    with StepTable([("explore", "data:explore"), ("explore", "train:explore")]) as table:
        table(state("data:explore", "queued"))
        table(state("data:explore", "running"))
        table(state("data:explore", "done"))
        table(state("train:explore", "failed", "loss was nan"))
    assert log.getvalue().splitlines() == [
        "experiment 0/2: data:explore (explore) running",
        "experiment 1/2: data:explore (explore) done",
        "experiment 2/2: train:explore (explore) failed: loss was nan",
    ]


def test_quiet_libraries_silences_them_and_puts_everything_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "0")  # the user's own setting wins
    logging.getLogger("transformers").setLevel(logging.INFO)
    try:
        with quiet_libraries():
            assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TQDM_DISABLE"] == "0"
            assert logging.getLogger("transformers").level == logging.ERROR
        assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
        assert logging.getLogger("transformers").level == logging.INFO
    finally:
        logging.getLogger("transformers").setLevel(logging.NOTSET)


# The real CLI with the scripted fake model; every enrichment call waits for the test's gate file, so
# the run is held, alive, right after exploration.
CLI_HELD_AFTER_EXPLORE = """
import sys, time
from pathlib import Path
sys.path[:0] = [{src!r}, {repo!r}]
from explore_instruct import pipeline
from explore_instruct.cli import main
from explore_instruct.llm.scripted import ScriptedLLM
from tests.fakes import fake_model
gate = Path({gate!r})

def held(request):
    while request.schema_name != "subtasks" and not gate.exists():
        time.sleep(0.01)
    return fake_model(request)

pipeline.build_backend = lambda config: ScriptedLLM(held)
sys.exit(main(sys.argv[1:]))
"""


def test_a_run_logging_to_a_file_shows_progress_while_it_runs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = tmp_path / "cli.py"
    script.write_text(CLI_HELD_AFTER_EXPLORE.format(src=str(REPO / "src"), repo=str(REPO), gate=str(gate)))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(BASE))
    log_file = tmp_path / "log"
    with log_file.open("w") as out:  # `explore-instruct run ... > log 2>&1`
        proc = subprocess.Popen(
            [sys.executable, str(script), "run", str(config), "-r", str(tmp_path / "run")],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120  # a guard against a hang, not a measurement
        while "generate: 0/" not in log_file.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        held = log_file.read_text()
        assert proc.poll() is None, held  # still held at the gate: what the file holds was written live
        assert re.search(r"^explore: 9/9 ", held, re.MULTILINE), held
        gate.touch()
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    final = log_file.read_text()
    assert re.search(r"^generate: 20/20 ", final, re.MULTILINE), final
    assert "wrote tree.json" in final
