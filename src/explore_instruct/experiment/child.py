"""Running a step's command (`train`, `answer`) in a child process.

A model, its optimizer state and its answers take memory that a long-lived process never fully gets
back; in a child they are gone when the step ends, so a study's memory is that of its largest step,
not the sum of its cells. The child is `python -m explore_instruct COMMAND --flag value ...` (or a
launcher's command line for `train`), tied to this process by a lifeline (`lifeline.py`).

A child that fails gives the step its last line on stderr as the reason: the command line's one-line
errors (`training diverged at step 2: ...`) read as they are, without the `error:`/`stopped:` label.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from explore_instruct.experiment.steps import StepFailed
from explore_instruct.lifeline import ENV as LIFELINE_ENV

_LABEL = re.compile(r"^(error|stopped|interrupted): ")


def command_line(launcher: str | None, command: str, options: Mapping[str, Any]) -> list[str]:
    """`LAUNCHER -m explore_instruct COMMAND --flag value ...` (the launcher defaults to this Python).
    An option whose value is None is left out; a boolean is `--flag` or `--no-flag`."""
    prefix = shlex.split(launcher) if launcher else [sys.executable]
    args = [*prefix, "-m", "explore_instruct", command]
    for name, value in options.items():
        if value is None:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def run_child(args: list[str], what: str) -> float:
    """Run `args` to the end; returns the child's peak resident memory in GiB. A child that exits
    non-zero or is killed raises StepFailed with its last line on stderr."""
    env = {**os.environ, LIFELINE_ENV: str(os.getpid())}
    proc = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        encoding="utf-8",
        errors="replace",
    )
    try:
        assert proc.stderr is not None
        err = proc.stderr.read()
        _pid, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()  # an interrupted runner does not leave its child running
        proc.wait()
        raise
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.stderr is not None:
            proc.stderr.close()
    proc.returncode = code = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    if code != 0:
        raise StepFailed(_reason(what, code, err))
    return round(usage.ru_maxrss * _RSS_UNIT / (1 << 30), 3)


# ru_maxrss is in KiB on Linux, in bytes on macOS.
_RSS_UNIT = 1 if sys.platform == "darwin" else 1024


def _reason(what: str, code: int, stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"{what} was killed by {name}{hint}: {last}"
    if _LABEL.match(last):  # the command's own one-line message
        return _LABEL.sub("", last)
    return f"{what} exited with {code}: {last}"
