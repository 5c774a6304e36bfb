"""A study's data step takes the stages after generation as `run` takes them (through the pipeline),
so a quality control the run config enables (here the rate stage) shapes each cell's data too."""

from __future__ import annotations

from pathlib import Path

import yaml

from explore_instruct.datafile import read_records
from explore_instruct.experiment import load_plan
from explore_instruct.experiment.steps import (
    DATA_FILE,
    DATA_STAGES,
    GENERATION_STAGES,
    StepContext,
    StepInput,
    run_data,
    run_generate,
)
from explore_instruct.runstore import RunStore, load_ratings
from explore_instruct.stages import ALL_STAGES
from tests.test_experiment_helpers import backends, write_study


def test_the_steps_split_the_pipeline_between_them() -> None:
    assert GENERATION_STAGES + DATA_STAGES == ALL_STAGES


def test_a_cell_gets_the_run_configs_rating(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()  # never loaded: no step here trains
    spec = write_study(tmp_path / "spec", tmp_path / "model")
    run_yaml = tmp_path / "spec" / "run.yaml"
    run = yaml.safe_load(run_yaml.read_text())
    run["rate"] = {"enabled": True, "threshold": 6}
    run_yaml.write_text(yaml.safe_dump(run))
    plan = load_plan(spec)
    found = backends()
    generate = plan.steps["generate:explore"]
    pool = tmp_path / "generate"
    run_generate(generate, StepContext(plan, tmp_path, pool, generate.id, {}, found))
    data = plan.steps["data:explore"]
    inputs = {"generate:explore": StepInput(pool)}
    info = run_data(data, StepContext(plan, tmp_path, tmp_path / "data", data.id, inputs, found))
    records, _ = read_records(tmp_path / "data" / DATA_FILE)
    store = RunStore.open(pool)
    try:
        ratings = load_ratings(store.conn)
        sampled = {r["instruction"] for r in store.dataset("sample")}
        low = {r.instruction for r in store.examples() if r.key in ratings and ratings[r.key].score < 6}
        drops = store.drop_counts()
    finally:
        store.close()
    assert ratings and "rate" in drops and low  # the cell's pool was rated, and some examples fell below
    assert info["examples"] == len(records) > 0
    assert {r["instruction"] for r in records} <= sampled and not sampled & low
