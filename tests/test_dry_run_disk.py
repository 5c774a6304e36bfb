"""`run --dry-run` renders the first prompts and the estimate from the config alone: it creates no
file or folder anywhere (no run directory, no temporary store), and opens no database."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from explore_instruct.cli import main
from tests.helpers import BASE, merge


def listing(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_the_dry_run_creates_no_file_or_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(merge(BASE, {"rate": {"enabled": True}})), encoding="utf-8")
    cwd, temp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    temp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    made: list[Any] = []
    real_mkdir, real_connect = os.mkdir, sqlite3.connect

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        made.append(path)
        real_mkdir(path, *args, **kwargs)

    def connect(path: Any, *args: Any, **kwargs: Any) -> Any:
        made.append(path)
        return real_connect(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(sqlite3, "connect", connect)
    before = listing(tmp_path)
    assert main(["run", str(config), "--dry-run"]) == 0
    assert main(["run", str(config), "--run-dir", str(cwd / "runs" / "r"), "--dry-run"]) == 0
    assert made == [] and listing(tmp_path) == before
    err = capsys.readouterr().err
    assert "first explore prompt" in err and "first rate prompt" in err and "dry run: nothing was sent" in err
