"""The study's card: `README.md` in the experiment folder, what `push` publishes with the results.

It is built from what the study wrote (`results.json`, `results.md` and its figures,
`spec.resolved.yaml`), so it says what the results files say; `results.csv` is the card's data file,
which `datasets.load_dataset` reads as the `results` config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from explore_instruct.analysis.render import RawHtml, Section, Table, Text, to_markdown
from explore_instruct.config import load_config
from explore_instruct.datafile import atomic_write_text
from explore_instruct.errors import UserError
from explore_instruct.publish.frontmatter import CITATION, card_text, fenced, portable, size_category

CARD_FILE = "README.md"
RESULTS_FILES = ("results.json", "results.csv", "results.md", "report.html", "spec.resolved.yaml")


def _generator(spec: dict[str, Any]) -> tuple[str, list[str]]:
    """The model that wrote the generated datasets, and the card's languages (from the run config)."""
    try:
        config = load_config(spec["run"])
    except (UserError, KeyError, TypeError):
        return f"as set in the run config ({Path(str(spec.get('run', '?'))).name})", ["en"]
    name = config.llm.model or ("the embedded SmolLM2-135M-Instruct" if config.llm.backend == "local" else "?")
    return name, list(config.publish.language)


def study_card(out_dir: Path, *, license_id: str | None = None, repo_id: str | None = None) -> str:
    results_path, spec_path = out_dir / "results.json", out_dir / "spec.resolved.yaml"
    if not results_path.is_file() or not spec_path.is_file():
        raise UserError(f"{out_dir}: not an experiment folder with results (no results.json or spec.resolved.yaml)")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
    generator, languages = _generator(spec)
    judge = ((spec.get("evaluate") or {}).get("judge") or {}).get("llm") or {}
    datasets = spec.get("datasets") or {}
    cells = results.get("cells", [])
    meta = {
        "license": license_id or "unknown",
        "language": languages,
        "task_categories": ["text-generation"],
        "size_categories": [size_category(len(cells))],
        "tags": ["synthetic", "explore-instruct", "evaluation"],
        "pretty_name": f"Explore-Instruct study {results.get('experiment', '')}",
        "configs": [{"config_name": "results", "data_files": [{"split": "train", "path": "results.csv"}]}],
    }
    models = Table(
        ["Role", "Model"],
        [
            ["Wrote the generated datasets", generator],
            ["Fine-tuned for every cell", str((spec.get("train") or {}).get("model", "?"))],
            ["Judge (pairwise)", str(judge.get("model") or judge.get("backend") or "none")],
        ],
    )
    compared = Table(
        ["Dataset", "Kind", "Settings"],
        [
            [name, str(d.get("kind")), ", ".join(f"{k}={v}" for k, v in portable(d).items() if k != "kind" and v)]
            for name, d in datasets.items()
        ],
    )
    axes = [
        f"{a['dataset']}: {k} = {a[k]}" for a in spec.get("axes") or [] for k in ("depth", "size", "filter") if a.get(k)
    ]
    results_md = (out_dir / "results.md").read_text(encoding="utf-8") if (out_dir / "results.md").is_file() else ""
    # results.md's own sections, one level down under this card's "Results".
    body = "\n".join(("#" + line if line.startswith("## ") else line) for line in results_md.splitlines()[1:])
    where = repr(repo_id) if repo_id else '"path/to/this/folder"'
    sections = [
        Section(
            "What this is",
            [
                Text(
                    f"The results of the study `{results.get('experiment')}`: {len(cells)} cells (datasets and "
                    "ablations), each fine-tuned, answered and judged against the baselines "
                    f"({', '.join(results.get('baselines') or []) or 'none'}), as in the Explore-Instruct paper. "
                    "`results.csv` holds one row per cell; `results.json` every number with the file it came from."
                ),
                Text("Ablation axes: " + ("; ".join(axes) if axes else "none") + "."),
            ],
        ),
        Section("Models", [models]),
        Section("Datasets compared", [compared]),
        Section("Results", [RawHtml("", body.strip() or "No results yet.")]),
        Section("The spec", [RawHtml("", fenced("yaml", yaml.safe_dump(portable(spec), sort_keys=False)))]),
        Section(
            "How to load it",
            [
                RawHtml(
                    "",
                    fenced("python", f"from datasets import load_dataset\n\nrows = load_dataset({where}, 'results')"),
                )
            ],
        ),
        Section("Citation", [RawHtml("", fenced("bibtex", CITATION))]),
        Section(
            "Limitations",
            [
                Text(
                    "Judged by a language model: its verdicts carry its biases (order, length, style), which the "
                    "two answer orders only partly cancel. Small question sets give wide intervals. The data was "
                    "machine-written, and the generator's licence terms apply to it."
                )
            ],
        ),
    ]
    return card_text(meta, to_markdown(f"Explore-Instruct study: {results.get('experiment')}", sections))


def write_study_card(out_dir: str | Path, **options: Any) -> Path:
    """Write `README.md` into the study folder; returns its path."""
    path = Path(out_dir) / CARD_FILE
    atomic_write_text(path, study_card(Path(out_dir), **options))
    return path
