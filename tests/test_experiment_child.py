"""Steps run as child processes (`experiment/child.py`): their command lines, the reason a failed
child gives, and the lifeline that ends a child when the experiment's process is killed."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explore_instruct.experiment.child import command_line, run_child
from explore_instruct.experiment.steps import StepFailed

REPO = Path(__file__).resolve().parents[1]


def test_command_line_spells_every_option_as_the_cli_does() -> None:
    args = command_line(None, "train", {"data": Path("d.json"), "lr": 1e-05, "lora": True, "merge_lora": False})
    assert args[:4] == [sys.executable, "-m", "explore_instruct", "train"]
    assert args[4:] == ["--data", "d.json", "--lr", "1e-05", "--lora", "--no-merge-lora"]
    assert command_line("torchrun --nproc_per_node 2", "train", {"seed": None})[:3] == [
        "torchrun",
        "--nproc_per_node",
        "2",
    ]


def test_a_failing_child_gives_its_one_line_as_the_reason() -> None:
    one_line = (
        "import sys; print('noise', file=sys.stderr); print('stopped: it diverged', file=sys.stderr); sys.exit(1)"
    )
    with pytest.raises(StepFailed, match=r"^it diverged$"):
        run_child([sys.executable, "-c", one_line], "train")
    with pytest.raises(StepFailed, match=r"^answer exited with 3: ValueError: boom$"):
        run_child(
            [sys.executable, "-c", "raise SystemExit(__import__('sys').stderr.write('ValueError: boom\\n') and 3)"],
            "answer",
        )
    with pytest.raises(StepFailed, match=r"^train was killed by SIGKILL \(out of memory\?\)"):
        run_child([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"], "train")


def test_peak_memory_is_the_childs_own() -> None:
    grow = "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"  # touch 300 MiB
    assert run_child([sys.executable, "-c", grow], "x") >= 0.29


_GRANDCHILD = """
import fcntl, os, sys, time
from explore_instruct.lifeline import watch_parent
watch_parent()
held = open(sys.argv[1], "w")
fcntl.flock(held, fcntl.LOCK_EX)
held.write(str(os.getpid()))
held.flush()
time.sleep(300)
"""

_PARENT = """
import sys
from explore_instruct.experiment.child import run_child
run_child([sys.executable, "-c", sys.argv[1], sys.argv[2]], "train")
"""


def test_a_child_ends_when_the_experiment_process_is_killed(tmp_path: Path) -> None:
    """SIGKILL the process that started a step's child: the child exits too (its lock file frees),
    instead of writing on into a folder that the resumed run resets."""
    lock = tmp_path / "child.lock"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, _GRANDCHILD, str(lock)], env=env)
    pid = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
            time.sleep(0.05)
        pid = int(lock.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        with lock.open() as fh:
            deadline = time.monotonic() + 60
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break  # the child is gone
                except BlockingIOError:
                    assert time.monotonic() < deadline, "the child outlived the process that started it"
                    time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
