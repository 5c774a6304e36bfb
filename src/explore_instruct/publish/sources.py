"""What `push` uploads: a run's hf export (written to its exports folder too), or a study's card and results."""

from __future__ import annotations

from pathlib import Path

from explore_instruct.errors import UserError
from explore_instruct.export import default_export_name
from explore_instruct.publish.folder import hf_files, write_folder
from explore_instruct.publish.options import CardOptions
from explore_instruct.runstore import RunStore


def is_experiment(folder: Path) -> bool:
    return not RunStore.exists(folder) and (folder / "results.json").is_file()


def _bytes(files: dict[str, bytes | str]) -> dict[str, bytes]:
    return {p: c.encode("utf-8") if isinstance(c, str) else c for p, c in files.items()}


def run_files(run_dir: Path, which: str, card: CardOptions) -> tuple[dict[str, bytes], Path]:
    """The hf export of `which` with its card, also written to `<run-dir>/exports/<which>.hf`."""
    store = RunStore.open(run_dir)
    try:
        files, _n = hf_files(store, which, card)  # type: ignore[arg-type]
    finally:
        store.close()
    target = run_dir / "exports" / default_export_name("hf", which)
    write_folder(target, files)
    return _bytes(files), target


def experiment_files(folder: Path, card: CardOptions) -> dict[str, bytes]:
    """The study's card (rewritten now, with the repository id) and its results files and figures."""
    from explore_instruct.experiment.card import CARD_FILE, RESULTS_FILES, write_study_card

    write_study_card(folder, license_id=card.license, repo_id=card.repo_id)
    names = [CARD_FILE, *RESULTS_FILES, *sorted(p.name for p in folder.glob("*.png"))]
    files = {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}
    if "results.csv" not in files:
        raise UserError(f"{folder}: the study has no results.csv yet; run the experiment first")
    return files
