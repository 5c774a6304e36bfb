"""Everything a study needs, checked before its first step: `--dry-run` and a real run call the same
`preflight`, so a spec that would stop hours later (a missing extra, a judge without an endpoint, a
base model that is not there, a question file that does not parse) stops at once with one line.

The endpoints are not contacted: a judge server may well be started only once training is done.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from explore_instruct.config import LLMConfig
from explore_instruct.errors import UserError
from explore_instruct.experiment.plan import Plan, Step, generation_config, select_cells, steps_for
from explore_instruct.experiment.runner import DB_FILE, SPEC_FILE
from explore_instruct.experiment.steps import Backends

# Files an experiment folder holds before its spec is written (the process lock).
_BEFORE_SPEC = {".lock"}


def preflight(
    plan: Plan,
    source: str | Path,
    out_dir: str | Path,
    *,
    only: list[str] | None = None,
    backends: Backends | None = None,
    resume: bool = False,
    dry_run: bool = False,
) -> None:
    """Raise one UserError for the first thing the selected cells' steps would lack; write nothing."""
    source = Path(source)
    steps = steps_for(plan, select_cells(plan, only))
    kinds = {s.kind for s in steps}
    backends = backends or Backends()
    _check_questions(plan, kinds)
    if "train" in kinds:
        _check_base_model(plan, source)
    if "generate" in kinds:
        _check_generation(plan, [s for s in steps if s.kind == "generate"], backends)
    if "judge" in kinds and backends.judge is None:
        judge = plan.spec.evaluate.judge
        assert judge is not None  # comparisons exist only with a judge (checked with the spec)
        _check_llm(judge.llm, f"{source}: evaluate.judge")
    _check_extras(plan, kinds)
    check_out_dir(plan, Path(out_dir), resume=resume or dry_run)


def needed_extras(plan: Plan, kinds: set[str]) -> dict[str, tuple[str, ...]]:
    """Extra -> the modules the given step kinds (and the results' figures) import from it."""
    from explore_instruct.analysis.verbnoun import MODEL_PACKAGES, model_name
    from explore_instruct.experiment.results import draws_figures
    from explore_instruct.train.deps import TRAIN_MODULES

    needs: dict[str, tuple[str, ...]] = {}
    if "train" in kinds:
        t = plan.spec.train
        gguf = t.model == "embedded" or t.gguf_file is not None or t.model.endswith(".gguf")
        needs["train"] = TRAIN_MODULES + (("gguf",) if gguf else ())
    elif "answer" in kinds:
        needs["train"] = ("torch", "transformers")
    analysis: tuple[str, ...] = ()
    if "analysis" in kinds:  # the spaCy model is a package of the extra too
        analysis = ("spacy", model_name() or MODEL_PACKAGES[0], "matplotlib")
    elif draws_figures(plan):
        analysis = ("matplotlib",)
    if analysis:
        needs["analysis"] = analysis
    if "math" in kinds:
        needs["eval"] = ("math_verify",)
    return needs


def _check_extras(plan: Plan, kinds: set[str]) -> None:
    from explore_instruct.train.deps import require_extras

    require_extras(needed_extras(plan, kinds), needed_by=f"experiment {plan.spec.name}")


def _check_questions(plan: Plan, kinds: set[str]) -> None:
    """Every question file parses (its reader names the file and record)."""
    from explore_instruct.evaluate.questions import read_questions

    ev = plan.spec.evaluate
    if "answer" in kinds:
        for path in [*ev.questions, *([ev.math_questions] if ev.math_questions else [])]:
            if not read_questions(path):
                raise UserError(f"{path}: no questions")


def _check_base_model(plan: Plan, source: Path) -> None:
    """The base model resolves to local files. A path that does not exist was already reported by
    the spec (an error, or a warning in a dry run, where the model may live on the training machine)."""
    from explore_instruct.train.models import EMBEDDED, resolve_source

    t = plan.spec.train
    if t.model != EMBEDDED and not Path(t.model).exists():
        return
    try:
        resolve_source(t.model, t.gguf_file)
    except UserError as exc:
        raise UserError(f"{source}: train.model: {exc}") from None


def _check_generation(plan: Plan, steps: list[Step], backends: Backends) -> None:
    from explore_instruct.start import starting_tree

    for step in steps:
        cfg = generation_config(plan.spec, plan.config, step.id.split(":", 1)[1])
        try:
            starting_tree(cfg)
        except UserError as exc:
            raise UserError(f"{plan.spec.run}: {exc}") from None
        if backends.generator is None:
            _check_llm(cfg.llm, plan.spec.run)


def _check_llm(llm: LLMConfig, where: str | Path) -> None:
    """Build the backend the section describes (no request is sent): a missing base_url or model, an
    unset key variable (named, never its value) or a missing GGUF file is one line."""
    from explore_instruct.llm.factory import backend_from_config

    try:
        backend = backend_from_config(llm)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    asyncio.run(backend.aclose())


def check_out_dir(plan: Plan, out: Path, *, resume: bool) -> None:
    """`--out` must be new, empty, or a folder of this experiment (by its name: an edited spec of the
    same study resumes there); a finished or killed one needs `--resume`."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: not a folder")
    if not out.is_dir() or not {p.name for p in out.iterdir()} - _BEFORE_SPEC:
        return
    spec_file = out / SPEC_FILE
    if not spec_file.is_file():
        raise UserError(
            f"--out {out}: the folder holds other files and no experiment ({SPEC_FILE} is missing); "
            "choose a new or empty folder"
        )
    try:
        held = yaml.safe_load(spec_file.read_text(encoding="utf-8")) or {}
        name = held.get("name") if isinstance(held, dict) else None
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        name = None
    if name != plan.spec.name:
        held_by = f"the experiment {name!r}" if isinstance(name, str) else f"a {SPEC_FILE} without a name"
        raise UserError(f"--out {out}: holds {held_by}, not {plan.spec.name!r}; choose a new or empty folder")
    if (out / DB_FILE).exists() and not resume:
        raise UserError(f"{out}: already holds an experiment; pass resume to continue it", settings=("resume",))
