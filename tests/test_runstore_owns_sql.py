"""No SQL outside the run-store package: every table and query of a database lives in `runstore/`."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "explore_instruct"
SQL = re.compile(r"CREATE TABLE|\.execute\(|executemany\(|executescript\(")


def test_no_sql_outside_the_run_store_package() -> None:
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        name = path.relative_to(SRC).as_posix()
        if name.startswith("runstore/"):
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SQL.search(line):
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert not offenders, "SQL outside src/explore_instruct/runstore/:\n" + "\n".join(offenders)
