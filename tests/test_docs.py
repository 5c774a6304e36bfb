"""The README and docs show what a user has: current flag names, no path outside the repository, and
commands that write under `runs/` (git-ignored), never into the repository itself (issue 20, item 9)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_cli_vocabulary import FORBIDDEN

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
IDS = [str(p.relative_to(REPO)) for p in DOCS]
# Where a command's output goes: these options name a file or folder it writes.
WRITES = re.compile(r"(?:^|\s)(?:--out|-o|--run-dir|-r|--explain|--table|--verdicts|--cache)[ =](\S+)")


def commands(text: str) -> list[str]:
    """Each `explore-instruct ...` command of the fenced code blocks, continuation lines joined."""
    blocks: list[list[str]] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
            if inside:
                blocks.append([])
        elif inside:
            blocks[-1].append(line)
    joined = [re.sub(r"\\\n\s*", " ", "\n".join(block)) for block in blocks]
    return [line for block in joined for line in block.splitlines() if "explore-instruct " in line]


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_no_old_flag_spelling(doc: Path) -> None:
    assert not FORBIDDEN.findall(doc.read_text(encoding="utf-8"))


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_no_path_outside_the_repository(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/fixtures" not in text
    assert not re.findall(r"(?<![\w.])/(?:work|home|Users|root|tmp)/", text)


@pytest.mark.parametrize("doc", DOCS, ids=IDS)
def test_commands_write_under_runs(doc: Path) -> None:
    wrong = []
    for command in commands(doc.read_text(encoding="utf-8")):
        for target in WRITES.findall(command):
            target = target.strip("\"'")
            # runs/..., a variable, a placeholder such as RUN_DIR, or `-` (stdout)
            if not (target.startswith(("runs/", "$", "<")) or target.isupper() or target in ("-", "…", "...")):
                wrong.append(f"{target}  in  {command.strip()}")
    assert not wrong, "\n".join(wrong)
