"""A child process that ends with the process that started it.

The experiment runner trains and answers in child processes (`experiment/child.py`). It starts each
with a pipe on stdin that it never writes to and names its own pid in `ENV`. When the runner dies,
even by SIGKILL, the pipe closes; the child reads end-of-file and exits at once, instead of writing
on into a `.partial` folder that the resumed run has already reset. Only the direct child watches
(its parent's pid must match): processes a launcher starts may have their stdin closed for them.
"""

from __future__ import annotations

import os
import threading

ENV = "EXPLORE_INSTRUCT_LIFELINE"
EXIT_CODE = 1
STDIN = 0


def watch_parent() -> None:
    """Exit when stdin closes, if the process that started this one asked for it (see module doc)."""
    wanted = os.environ.get(ENV)
    if not wanted or wanted != str(os.getppid()):
        return

    def wait() -> None:
        # The raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader makes
        # the interpreter abort at shutdown.
        try:
            while os.read(STDIN, 1 << 16):
                pass  # the runner writes nothing; read to the end all the same
        except OSError:
            pass
        os._exit(EXIT_CODE)

    threading.Thread(target=wait, name="lifeline", daemon=True).start()
