"""`run --resume` keeps the settings of the first run, flags included; new flags change them (with the warning)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from explore_instruct import pipeline
from explore_instruct.cli import main
from explore_instruct.config import load_config
from tests.helpers import BASE, fake_backend


@pytest.fixture
def backends(monkeypatch):
    """Every run gets a fresh fake backend; the list lets a test count the calls each one received."""
    made = []

    def build(_config):
        made.append(fake_backend())
        return made[-1]

    monkeypatch.setattr(pipeline, "build_backend", build)
    return made


def first_run(tmp_path: Path) -> tuple[Path, Path]:
    config = tmp_path / "domain.yaml"
    config.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    run_dir = tmp_path / "run"
    flags = ["--max-depth", "1", "--sample-size", "5", "--set", "generate.examples_per_task=[3]"]
    assert main(["run", str(config), "-r", str(run_dir), *flags]) == 0
    return config, run_dir


def test_resume_without_flags_keeps_the_first_runs_settings(tmp_path, backends, caplog, capsys):
    config, run_dir = first_run(tmp_path)
    stored = (run_dir / "config.yaml").read_text(encoding="utf-8")
    sample = json.loads((run_dir / "data" / "sample.json").read_text(encoding="utf-8"))
    assert len(sample) == 5

    with caplog.at_level(logging.WARNING):
        assert main(["run", str(config), "-r", str(run_dir), "--resume"]) == 0
    assert "differs" not in caplog.text
    assert "resuming with the settings in" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_text(encoding="utf-8") == stored
    assert json.loads((run_dir / "data" / "sample.json").read_text(encoding="utf-8")) == sample
    assert backends[1].requests == []  # nothing to do again: the YAML's depth 2 was not picked up


def test_flags_given_on_resume_change_only_what_they_name(tmp_path, backends, caplog):
    config, run_dir = first_run(tmp_path)
    with caplog.at_level(logging.WARNING):
        assert main(["run", str(config), "-r", str(run_dir), "--resume", "--sample-size", "4"]) == 0
    assert "config differs" in caplog.text
    resumed = load_config(run_dir / "config.yaml")
    assert resumed.sample.size == 4
    assert resumed.explore.max_depth == 1 and resumed.generate.examples_per_task == [3]
    assert len(json.loads((run_dir / "data" / "sample.json").read_text(encoding="utf-8"))) == 4
