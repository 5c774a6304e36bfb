"""The study runner: a spec of datasets, ablation axes, training and evaluation, run as one command.

Python API: `run_experiment(spec_path, out_dir)`; the CLI is `explore-instruct experiment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from explore_instruct.errors import UserError
from explore_instruct.experiment.plan import Plan, build_plan
from explore_instruct.experiment.runner import ProgressHook, Runner, StepState, recorded_states
from explore_instruct.experiment.spec import load_spec
from explore_instruct.experiment.steps import Backends


def load_plan(spec_path: str | Path, *, strict: bool = True) -> Plan:
    """Validate the spec (and the run config it names) and expand it into cells and steps.

    `strict=False` (for --dry-run) lets the base model and a SuperNI copy be missing: `plan.warnings`."""
    spec, config, warnings = load_spec(spec_path, strict=strict)
    try:
        plan = build_plan(spec, config)
    except UserError as exc:
        raise UserError(f"{spec_path}: {exc}") from None
    plan.warnings = warnings
    return plan


def default_out(spec_path: str | Path) -> Path:
    return Path("runs") / f"experiment-{Path(spec_path).stem}"


def run_experiment(
    spec_path: str | Path,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    only: list[str] | None = None,
    backends: Backends | None = None,
    progress: ProgressHook | None = None,
) -> tuple[Plan, dict[str, StepState], dict[str, Any]]:
    """Run (or resume) the study; returns the plan, each step's final state and the results."""
    from explore_instruct.experiment.card import write_study_card
    from explore_instruct.experiment.preflight import preflight
    from explore_instruct.experiment.results import write_results

    plan = load_plan(spec_path)
    out = Path(out_dir) if out_dir is not None else default_out(spec_path)
    preflight(plan, spec_path, out, only=only, backends=backends, resume=resume)  # before the first step
    states = Runner(plan, out, backends=backends, only=only, progress=progress).run()
    # The results cover every cell the folder holds, not only those this invocation ran.
    result = write_results(plan, recorded_states(plan, out), out)
    write_study_card(out, license_id=plan.config.publish.license)
    return plan, states, result


__all__ = ["Backends", "Plan", "load_plan", "run_experiment"]
