"""`export --format hf`: a folder `datasets.load_dataset(FOLDER)` reads as it is, and the Hub shows.

    <which>.hf/
      README.md                          the dataset card (YAML metadata + how the data was made)
      data/train-00000-of-00001.parquet  the records with provenance
      figures/*.png                      the card's analysis figures (when computed)

The folder is built beside the target and renamed into place, so a failed export leaves the previous
one (or nothing) and never half a folder. Exporting the same run twice gives the same bytes: the card's
dates come from the run's call log, never from the clock.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from explore_instruct.datafile import atomic_write
from explore_instruct.errors import UserError
from explore_instruct.publish.card import run_card
from explore_instruct.publish.options import CardOptions
from explore_instruct.publish.parquet import parquet_bytes
from explore_instruct.runstore import RunStore, Which

CARD_FILE = "README.md"
DATA_DIR = "data"
FIGURES_DIR = "figures"
TRAIN_FILE = f"{DATA_DIR}/train-00000-of-00001.parquet"
TRAIN_GLOB = f"{DATA_DIR}/train-*"


def _ours(folder: Path) -> bool:
    """True when every file under `folder` is one an hf export writes (so replacing it loses nothing else)."""
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.is_symlink() or (p.is_file() and rel.parts[0] not in (CARD_FILE, DATA_DIR, FIGURES_DIR)):
            return False
    return True


def write_folder(target: Path, files: dict[str, bytes | str]) -> None:
    """Make `target` a folder holding exactly `files` (relative path -> content), all at once."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise UserError(f"{target}: exists and is not a folder; choose another --out")
    if target.is_dir() and not _ours(target):
        raise UserError(f"{target}: holds files an export did not write; choose another --out")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    except OSError as exc:
        raise UserError(f"{target}: cannot write in {target.parent} ({exc.strerror})") from None
    old = staging.with_suffix(".old")
    try:
        for rel, content in files.items():
            atomic_write(staging / rel, content)
        staging.chmod(0o755)
        if target.exists():
            target.rename(old)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not target.exists():
            old.rename(target)  # put the previous export back
        raise
    shutil.rmtree(old, ignore_errors=True)


def hf_files(store: RunStore, which: Which, options: CardOptions) -> tuple[dict[str, bytes | str], int]:
    """The folder's files (relative path -> content) and the number of records."""
    records = store.dataset(which)
    card, figures = run_card(store, records, which, options, data_glob=TRAIN_GLOB)
    files: dict[str, bytes | str] = {CARD_FILE: card, TRAIN_FILE: parquet_bytes(records)}
    files.update({f"{FIGURES_DIR}/{name}": png for name, png in figures.items()})
    return files, len(records)


def write_hf_folder(store: RunStore, out: Path, which: Which, options: CardOptions) -> int:
    files, n = hf_files(store, which, options)
    write_folder(out, files)
    return n
