"""How this package was installed, for install hints that work: from a checkout or from an index.

pip records an install's origin in the distribution's `direct_url.json` (PEP 610): an editable
install from a clone has `dir_info.editable` and the clone's `file://` URL. There `pip install
'explore-instruct[x]'` would look for a distribution on the index; `pip install -e '<clone>[x]'` works.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

DISTRIBUTION = "explore-instruct"
# The make target that installs the study's extras with the CPU build of torch (see the Makefile).
STUDY_DEPS_TARGET = "study-deps"
STUDY_EXTRAS = frozenset({"analysis", "train", "eval"})  # what that target installs


def checkout_path() -> Path | None:
    """The clone this package is installed from in editable mode, or None (an index or wheel install)."""
    try:
        raw = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        origin = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return None
    url = urlparse(str(origin.get("url", "")))
    if not (origin.get("dir_info") or {}).get("editable") or url.scheme != "file":
        return None
    return Path(unquote(url.path))


def install_command(extras: Sequence[str]) -> str:
    """The pip line that adds `extras` to this installation."""
    names = ",".join(extras)
    clone = checkout_path()
    if clone is None:
        return f"pip install '{DISTRIBUTION}[{names}]'"
    line = f"pip install -e '{clone}[{names}]'"
    # The make target installs into the clone's own .venv: offered only when that is the one running.
    same_venv = Path(sys.prefix).resolve() == (clone / ".venv").resolve()
    if set(extras) <= STUDY_EXTRAS and (clone / "Makefile").is_file() and same_venv:
        line += f" (or, with the CPU build of torch: make -C {clone} {STUDY_DEPS_TARGET})"
    return line
