"""One run directory, one writing process: an exclusive `flock` on a lock file beside `run.db`.

The lock is taken when a process opens a run for writing and held until the last store it opened
on the run is closed, or the process ends. The kernel drops it when the process ends, however it
ends, so a killed run never leaves a stale lock behind. The holder's pid is written into the file
so that a second process can say who has it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from explore_instruct.errors import UserError

LOCK_FILE = "run.lock"

# Lock file -> [the descriptor holding it, how many open stores use it]. A run opened again by this
# process (the stages, then an export) shares the lock it already holds.
_held: dict[Path, list[int]] = {}


def lock_run_dir(run_dir: Path) -> Path:
    """Take the run directory's lock, or raise UserError naming the process that holds it.

    Returns the lock's path, for `unlock_run_dir`.
    """
    path = (run_dir / LOCK_FILE).resolve()
    if path in _held:
        _held[path][1] += 1
        return path
    try:
        # O_CLOEXEC: a program this process starts must not inherit (and keep) the lock.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UserError(f"run dir {run_dir} is not writable ({exc.strerror}): this command must write to it") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise UserError(f"run dir {run_dir} is in use by pid {holder}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    _held[path] = [fd, 1]
    return path


def unlock_run_dir(path: Path) -> None:
    """One user of the lock is done; the last one releases it."""
    held = _held.get(path)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _held[path]
        os.close(held[0])  # closing the only descriptor releases the flock
