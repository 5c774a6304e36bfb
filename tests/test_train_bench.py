"""The training benchmark's harness on CPU with a tiny random model (figures checked for shape and
consistency, never for speed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_train.py"
WORDS = ["apple", "river", "stone", "cloud", "green", "light", "table", "music"]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_harness_runs_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.json"
    records = [
        {"instruction": f"Say {w} " + "again " * (i % 5), "input": "", "output": " ".join([w] * (1 + i % 6))}
        for i, w in enumerate(WORDS * 3)
    ]
    data.write_text(json.dumps(records), encoding="utf-8")
    out = tmp_path / "figures.json"
    args = ["--data", str(data), "--work", str(tmp_path / "work"), "--steps", "3", "--global-batch", "4"]
    assert _bench().main([*args, "--max-length", "96", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["examples"] == len(records) and figures["device"] == "cpu"
    assert figures["reference"]["tokens_per_second"] > 0 and figures["train"]["tokens_per_second"] > 0
    assert figures["ratio"] == pytest.approx(
        figures["train"]["tokens_per_second"] / figures["reference"]["tokens_per_second"], abs=1e-3
    )
    assert figures["train"]["batch"]["layout"] == "packed"
    assert 0 <= figures["train"]["padding_fraction"] < figures["padded_trainer_padding_fraction"]["4"]
    printed = capsys.readouterr().out
    assert "ratio train / reference" in printed and "padding: train" in printed
