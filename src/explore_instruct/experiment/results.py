"""The study's results: one row per cell, read from the files the steps wrote, in four formats.

`results.json` and `results.csv` hold every number with the file it came from (`sources`, relative
to the output folder); `results.md` lays them out like the paper's tables (main comparison, K, size
and filter ablations); the figures plot beat rate against K and size and verb–noun pairs per cell;
`report.html` is one page with the figures embedded and every number linked to its file.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from explore_instruct.analysis.render import Figure, RawHtml, Section, Table, Text, to_html, to_markdown
from explore_instruct.config import LLMConfig
from explore_instruct.datafile import atomic_write_text, read_records
from explore_instruct.errors import UserError
from explore_instruct.experiment.plan import Plan, judge_id
from explore_instruct.experiment.runner import StepState
from explore_instruct.experiment.steps import ANSWERS_FILE, DATA_FILE, MODEL_DIR
from explore_instruct.train.models import EMBEDDED

RESULTS_VERSION = 1
JUDGE_FIELDS = ("win", "tie", "lose", "unparsed", "failed", "beat_rate", "ci_low", "ci_high", "disagreement_rate")


def comparison_label(plan: Plan, baseline: str, qi: int) -> str:
    """`vs <baseline>`, plus the question file's name when there are several."""
    if len(plan.spec.evaluate.questions) > 1:
        return f"{baseline} [{Path(plan.spec.evaluate.questions[qi]).stem}]"
    return baseline


def _rel(out_dir: Path, path: Path) -> str:
    return str(path.relative_to(out_dir))


def _last_loss(log: Path) -> float | None:
    losses = [r["loss"] for r in (json.loads(x) for x in log.read_text().splitlines() if x.strip()) if "loss" in r]
    return float(losses[-1]) if losses else None


def cell_row(plan: Plan, states: dict[str, StepState], out_dir: Path, cell: str) -> dict[str, Any]:
    """One cell's numbers, each read from the output file of the step that made it."""
    c = next(x for x in plan.cells if x.name == cell)
    row: dict[str, Any] = {
        "cell": cell,
        "dataset": c.dataset,
        "kind": plan.spec.datasets[c.dataset].kind,
        "axis": c.axis,
        "value": c.value,
        "status": "ok",
        "problems": [],
        "examples": None,
        "requested": None,
        "decontaminated": None,
        "unique_verb_noun_pairs": None,
        "rouge_l_to_seeds": None,
        "vendi_score": None,
        "distinct_1": None,
        "distinct_2": None,
        "final_train_loss": None,
        "comparisons": {},
        "math_accuracy": None,
        "sources": {},
    }
    mine = [s for s in states.values() if cell in s.step.cells]
    for state in mine:
        if state.status in ("failed", "blocked"):
            row["problems"].append(f"{state.step.id}: {state.status}: {state.reason}")
        elif state.status not in ("done", "cached"):
            row["problems"].append(f"{state.step.id}: {state.status}")
    failed = any(s.status == "failed" for s in mine)
    row["status"] = "failed" if failed else ("incomplete" if row["problems"] else "ok")

    def done(step_id: str) -> StepState | None:
        s = states.get(step_id)
        return s if s is not None and s.status in ("done", "cached") and s.path is not None else None

    src = row["sources"]
    if (s := done(f"data:{cell}")) is not None:
        assert s.path is not None
        records, _ = read_records(s.path / DATA_FILE)
        row["examples"], row["requested"] = len(records), s.info.get("requested")
        row["decontaminated"] = s.info.get("decontaminated")  # removed: shared an n-gram with a question
        src["examples"] = _rel(out_dir, s.path / DATA_FILE)
        if row["status"] == "ok" and row["requested"] and row["examples"] < row["requested"]:
            row["status"] = "short"  # trained on fewer examples than the cell asked for
    if (s := done(f"analysis:{cell}")) is not None:
        assert s.path is not None
        summary = json.loads((s.path / "summary.json").read_text(encoding="utf-8"))["datasets"]["data"]
        row["unique_verb_noun_pairs"] = summary["verb_noun"]["unique_pairs"]
        row["rouge_l_to_seeds"] = (summary.get("seed_overlap") or {}).get("mean")
        src["unique_verb_noun_pairs"] = src["rouge_l_to_seeds"] = _rel(out_dir, s.path / "summary.json")
        diversity = summary.get("diversity") or {}  # absent from an analysis made before the measures
        for key in ("vendi_score", "distinct_1", "distinct_2"):
            row[key] = diversity.get(key)
            src[key] = src["rouge_l_to_seeds"]
    if (s := done(f"train:{cell}")) is not None:
        assert s.path is not None
        log = s.path / MODEL_DIR / "train_log.jsonl"
        row["final_train_loss"] = _last_loss(log)
        src["final_train_loss"] = _rel(out_dir, log)
    for cand, base, qi in plan.comparisons:
        if cand != cell or (s := done(judge_id(cand, base, qi))) is None:
            continue
        assert s.path is not None
        result = json.loads((s.path / "judge.json").read_text(encoding="utf-8"))
        overall = next(x for x in result["summary"] if x["cls"] == "overall")
        label = comparison_label(plan, base, qi)
        row["comparisons"][label] = {k: overall[k] for k in JUDGE_FIELDS}
        src[f"vs {label}"] = _rel(out_dir, s.path / "judge.json")
    if (s := done(f"math:{cell}")) is not None:
        assert s.path is not None
        row["math_accuracy"] = json.loads((s.path / "math.json").read_text(encoding="utf-8"))["overall"]["accuracy"]
        src["math_accuracy"] = _rel(out_dir, s.path / "math.json")
    for qi in range(len(plan.spec.evaluate.questions)):
        if (s := done(f"answer:{cell}:{qi}")) is not None and s.path is not None:
            src[f"answers {qi}"] = _rel(out_dir, s.path / ANSWERS_FILE)
    return row


def build_rows(plan: Plan, states: dict[str, StepState], out_dir: Path) -> list[dict[str, Any]]:
    cells = {c for s in states.values() for c in s.step.cells}
    return [cell_row(plan, states, out_dir, c.name) for c in plan.cells if c.name in cells]


# --- formatting ---------------------------------------------------------------------------------


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _wtl(c: dict[str, Any] | None) -> str:
    if c is None:
        return "–"
    missing = c["unparsed"] + c["failed"]  # pairs the judge gave no usable verdict for
    return f"{c['win']}:{c['tie']}:{c['lose']}" + (f" ({missing} not judged)" if missing else "")


def _beat(c: dict[str, Any] | None) -> str:
    if c is None or c["beat_rate"] is None:
        return "–"
    ci = "" if c["ci_low"] is None else f" [{_pct(c['ci_low'])}, {_pct(c['ci_high'])}]"
    return f"{_pct(c['beat_rate'])}{ci}"


def csv_text(rows: list[dict[str, Any]], labels: list[str]) -> str:
    buf = io.StringIO()
    cols = ["cell", "dataset", "kind", "axis", "value", "status", "examples", "requested", "unique_verb_noun_pairs"]
    cols += ["rouge_l_to_seeds", "final_train_loss", "math_accuracy", "decontaminated"]
    cols += ["vendi_score", "distinct_1", "distinct_2"]
    plain = len(cols)
    for label in labels:
        cols += [f"{f}_vs_{label}" for f in JUDGE_FIELDS]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for r in rows:
        line = [r.get(c) for c in cols[:plain]]
        for label in labels:
            comp = r["comparisons"].get(label) or {}
            line += [comp.get(f) for f in JUDGE_FIELDS]
        writer.writerow(["" if v is None else v for v in line])
    return buf.getvalue()


@dataclass
class Cell:
    text: str
    href: str | None = None


def _linked_table(headers: list[str], rows: list[list[Cell]], caption: str = "") -> RawHtml:
    """A table whose numbers link to the files they came from (HTML); the same table in Markdown."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td><a href="{escape(c.href)}">{escape(c.text)}</a></td>' if c.href else f"<td>{escape(c.text)}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    html = f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    md = [caption, ""] if caption else []
    md.append("| " + " | ".join(headers) + " |")
    md.append("|" + "|".join("---" for _ in headers) + "|")
    md += ["| " + " | ".join(c.text.replace("|", "\\|") for c in row) + " |" for row in rows]
    return RawHtml(html, "\n".join(md))


def _examples_text(r: dict[str, Any]) -> str:
    """`5`, or `5 of 20` when the cell got fewer examples than it asked for."""
    short = r["requested"] and r["examples"] is not None and r["examples"] < r["requested"]
    return _num(r["examples"]) + (f" of {r['requested']}" if short else "")


def _status_note(r: dict[str, Any]) -> str:
    """What a cell's name carries in the tables: nothing when ok, else its status (a short cell's
    Examples column beside it says how short: `5 of 20`)."""
    return "" if r["status"] == "ok" else f" ({r['status']})"


def _comparison_cells(r: dict[str, Any], labels: list[str]) -> list[Cell]:
    out = []
    for label in labels:
        comp, href = r["comparisons"].get(label), r["sources"].get(f"vs {label}")
        out += [Cell(_wtl(comp), href), Cell(_beat(comp), href)]
    return out


def _comparison_headers(labels: list[str]) -> list[str]:
    return [h for label in labels for h in (f"W:T:L vs {label}", f"Beat rate vs {label} (%) [95 % CI]")]


# The final training loss is not a column: it is each cell's loss on its own 1 to 10,000 rows, so it
# compares nothing across cells (results.json keeps it per cell as a training record).
def _main_table(rows: list[dict[str, Any]], labels: list[str], with_math: bool) -> RawHtml:
    headers = ["Cell", "Examples", "Removed as contaminated", "Unique verb–noun pairs", "ROUGE-L to seeds"]
    headers += ["Vendi score", "distinct-2"]
    headers += _comparison_headers(labels) + (["MATH accuracy (%)"] if with_math else [])
    table = []
    for r in rows:
        s = r["sources"]
        line = [
            Cell(r["cell"] + _status_note(r)),
            Cell(_examples_text(r), s.get("examples")),
            Cell(_num(r.get("decontaminated"))),
            Cell(_num(r["unique_verb_noun_pairs"]), s.get("unique_verb_noun_pairs")),
            Cell(_num(r["rouge_l_to_seeds"]), s.get("rouge_l_to_seeds")),
            Cell(_num(r["vendi_score"]), s.get("vendi_score")),
            Cell(_num(r["distinct_2"]), s.get("distinct_2")),
            *_comparison_cells(r, labels),
        ]
        if with_math:
            line.append(Cell(_pct(r["math_accuracy"]), s.get("math_accuracy")))
        table.append(line)
    return _linked_table(headers, table)


def _ablation_table(rows: list[dict[str, Any]], axis: str, labels: list[str], with_math: bool) -> RawHtml:
    title = {"depth": "Max depth K", "size": "Size asked", "filter": "Diversity filter"}[axis]
    headers = ["Dataset", title, "Examples", "Unique verb–noun pairs"]
    headers += _comparison_headers(labels) + (["MATH accuracy (%)"] if with_math else [])
    table = []
    for r in rows:
        value = ("on" if r["value"] else "off") if axis == "filter" else str(r["value"])
        s = r["sources"]
        line = [
            Cell(r["dataset"] + _status_note(r)),
            Cell(value),
            Cell(_examples_text(r), s.get("examples")),
            Cell(_num(r["unique_verb_noun_pairs"]), s.get("unique_verb_noun_pairs")),
            *_comparison_cells(r, labels),
        ]
        if with_math:
            line.append(Cell(_pct(r["math_accuracy"]), s.get("math_accuracy")))
        table.append(line)
    return _linked_table(headers, table)


def _with_reference_rows(
    plan: Plan, axis: str, ablation: list[dict[str, Any]], base_rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """An ablation's table also shows the cells it is read against: for K, the self-instruct
    baseline as K = 0 and the dataset's own cell at the run's K; for the filter, the dataset's own cell
    at the run's filter setting (unless the axis lists those values itself)."""
    listed = {(r["dataset"], r["value"]) for r in ablation}
    extra: list[dict[str, Any]] = []
    if axis == "depth":
        extra += [
            {**r, "value": 0, "dataset": f"{r['cell']} (baseline)"} for r in base_rows if r["kind"] == "self_instruct"
        ]
        k = plan.config.explore.max_depth
    for dataset in dict.fromkeys(r["dataset"] for r in ablation):
        own = next((r for r in base_rows if r["cell"] == dataset), None)
        if own is None or axis == "size":
            continue
        value = k if axis == "depth" else plan.config.filter.enabled
        if (dataset, value) not in listed:
            extra.append({**own, "value": value})
    rows = extra + ablation
    return sorted(rows, key=lambda r: (r["value"] is not None, r["value"])) if axis == "depth" else rows


# --- figures ------------------------------------------------------------------------------------


def _line_figure(rows: list[dict[str, Any]], axis: str, labels: list[str]) -> bytes:
    from explore_instruct.analysis.figures import _plt, _png

    series = []
    for label in labels:
        points = sorted(
            (r["value"], r["comparisons"][label]["beat_rate"])
            for r in rows
            if label in r["comparisons"] and r["comparisons"][label]["beat_rate"] is not None
        )
        if points:
            series.append((label, points))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    if not series:  # the table still has its cells; say why the plot has no points
        ax.text(0.5, 0.65, no_points_reason(rows, labels), ha="center", va="center", transform=ax.transAxes)
    for label, points in series:
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", label=f"vs {label}")
    ax.set_xlabel("max depth K" if axis == "depth" else "examples")
    if axis == "size":
        ax.set_xscale("log", base=2)
    ax.set_ylabel("beat rate (%)")
    ax.set_ylim(0, 100)
    ax.axhline(50, color="#999", lw=0.8, ls="--")
    if series:
        ax.legend()
    return _png(fig)


def no_points_reason(rows: list[dict[str, Any]], labels: list[str]) -> str:
    """Why a beat-rate plot is empty: nothing judged yet, or every judged pair a tie or without a verdict."""
    judged = [r["comparisons"][label] for r in rows for label in labels if label in r["comparisons"]]
    if not judged:
        return "no comparison judged yet"
    pairs = sum(c["win"] + c["tie"] + c["lose"] + c["unparsed"] + c["failed"] for c in judged)
    ties = sum(c["tie"] for c in judged)
    if ties == pairs:
        return f"no decisive judgement: all {pairs} pairs tied"
    return f"no decisive judgement: {ties} of {pairs} pairs tied, {pairs - ties} without a verdict"


def _pairs_figure(rows: list[dict[str, Any]]) -> bytes | None:
    from explore_instruct.analysis.figures import _plt, _png

    shown = [r for r in rows if r["unique_verb_noun_pairs"] is not None]
    if not shown:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(shown) + 2), 4))
    ax.bar([r["cell"] for r in shown], [r["unique_verb_noun_pairs"] for r in shown], color="#4c72b0")
    ax.set_ylabel("unique verb–noun pairs")
    ax.tick_params(axis="x", labelrotation=45)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    return _png(fig)


# --- setup --------------------------------------------------------------------------------------


def _configured(llm: LLMConfig) -> str:
    """An llm section in words, for before any of its calls was recorded."""
    name = llm.model if llm.backend == "openai" else (Path(llm.model_path).name if llm.model_path else "embedded")
    return f"{llm.backend}:{name} (configured)"


def _generators(plan: Plan, states: dict[str, StepState]) -> str:
    """The models whose replies the generated pools hold (as the run stores record them)."""
    from explore_instruct.runstore import RunStore

    models: list[str] = []
    for s in states.values():
        if s.step.kind == "generate" and s.status in ("done", "cached") and s.path is not None:
            store = RunStore.open(s.path)
            try:
                models += store.calls.models()
            finally:
                store.close()
    return ", ".join(dict.fromkeys(models)) or _configured(plan.config.llm)


def _judge(plan: Plan, states: dict[str, StepState]) -> str:
    judge = plan.spec.evaluate.judge
    if judge is None or not plan.comparisons:
        return "none (no comparisons)"
    recorded = [
        json.loads((s.path / "judge.json").read_text(encoding="utf-8"))
        for s in states.values()
        if s.step.kind == "judge" and s.status in ("done", "cached") and s.path is not None
    ]
    named = ", ".join(dict.fromkeys(r["judge_model"] for r in recorded if r.get("judge_model")))
    # The verdict format `auto` resolved to, as the judge files record it.
    formats = ", ".join(dict.fromkeys(r.get("settings", {}).get("format") or judge.format for r in recorded))
    return (
        f"{named or _configured(judge.llm)}, {formats or judge.format} verdicts, temperature {judge.temperature:g}, "
        "each pair judged in both orders"
    )


def _embedded_name() -> str:
    from explore_instruct.llm.local import find_bundled_gguf

    try:
        return f"embedded ({find_bundled_gguf().name})"
    except UserError:  # the model package is gone since: the spec still said embedded
        return EMBEDDED


def _training(plan: Plan) -> str:
    t = plan.spec.train
    length = f"{t.max_steps} optimizer steps" if t.max_steps > 0 else f"{t.epochs:g} epochs"
    lora = f", LoRA r = {t.lora_r}" if t.lora else ""
    return (
        f"{length}, global batch {t.global_batch_size}, learning rate {t.learning_rate:g}, "
        f"max length {t.max_length}, precision {t.precision}{lora}, seed {t.seed}"
    )


def _questions(plan: Plan) -> str:
    from explore_instruct.evaluate.questions import read_questions

    ev = plan.spec.evaluate
    files = [f"{Path(q).name}: {len(read_questions(q))} questions (judged)" for q in ev.questions]
    if ev.math_questions:
        files.append(f"{Path(ev.math_questions).name}: {len(read_questions(ev.math_questions))} problems (graded)")
    return "; ".join(files) or "none"


def setup_table(plan: Plan, states: dict[str, StepState]) -> Table:
    """What was measured, at the top of every report: the models, the data, the training, the questions."""
    cfg, t = plan.config, plan.spec.train
    base = _embedded_name() if t.model == EMBEDDED else Path(t.model).name
    rows = [
        ["Generator", _generators(plan, states)],
        [
            "Data",
            f"{Path(plan.spec.run).name}: domain {cfg.domain}, tree depth K = {cfg.explore.max_depth}, "
            f"{cfg.sample.size} examples per dataset unless its spec sets a size",
        ],
        ["Base model", base + (f" ({t.gguf_file})" if t.gguf_file else "")],
        ["Training (every cell)", _training(plan)],
        ["Questions", _questions(plan)],
        ["Judge", _judge(plan, states)],
        ["Written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")],
    ]
    return Table(["Setting", "Value"], rows)


def draws_figures(plan: Plan) -> bool:
    """Whether the results need matplotlib: a verb–noun figure (analysis) or a beat-rate plot."""
    return plan.spec.analysis.enabled or any(_plots_beat_rate(plan, a.name) for a in plan.spec.axes)


def _plots_beat_rate(plan: Plan, axis: str) -> bool:
    return axis in ("depth", "size") and bool(plan.comparisons)


# --- writing ------------------------------------------------------------------------------------


def write_results(plan: Plan, states: dict[str, StepState], out_dir: str | Path) -> dict[str, Any]:
    """Write results.json / .csv / .md, the figures and report.html; returns what went into the JSON."""
    from explore_instruct.datafile import atomic_write

    out = Path(out_dir).resolve()
    rows = build_rows(plan, states, out)
    labels = list(dict.fromkeys(comparison_label(plan, b, qi) for _c, b, qi in plan.comparisons))
    with_math = plan.spec.evaluate.math_questions is not None
    base_rows = [r for r in rows if r["axis"] is None]
    main = Section("Main comparison", [_main_table(base_rows, labels, with_math)])
    main.blocks.append(
        Text(
            'Examples: the records the cell trained on ("5 of 20": it asked for 20; such a cell is marked '
            "short). W:T:L: the cell's wins, ties and losses against the baseline, each question judged in both "
            "answer orders (a pair counts as a win or loss only when both orders agree). Beat rate = wins / "
            "(wins + losses), with a 95 % bootstrap interval. Pairs without a usable verdict in either order "
            "are counted apart as not judged."
        )
    )
    main.blocks.append(
        RawHtml(
            "<p>Each number links to the file it was read from.</p>",
            "results.json lists the file each number was read from (`sources`); report.html links to them.",
        )
    )
    setup = setup_table(plan, states)
    sections = [Section("Setup", [setup]), main]
    figures: dict[str, bytes] = {}
    for axis, title in (("depth", "K ablation"), ("size", "Size ablation"), ("filter", "Filter ablation")):
        ablation = [r for r in rows if r["axis"] == axis]
        if not ablation:
            continue
        ablation = _with_reference_rows(plan, axis, ablation, base_rows)
        sec = Section(title, [_ablation_table(ablation, axis, labels, with_math)])
        if _plots_beat_rate(plan, axis) and labels:
            png = _line_figure(ablation, axis, labels)
            name = f"beat_rate_vs_{'k' if axis == 'depth' else 'size'}.png"
            figures[name] = png
            sec.blocks.append(Figure(name, png, f"beat rate against {'K' if axis == 'depth' else 'data size'}"))
        sections.append(sec)
    if (pairs_png := _pairs_figure(rows)) is not None:
        figures["verb_noun_pairs.png"] = pairs_png
        sections.append(Section("Data", [Figure("verb_noun_pairs.png", pairs_png, "unique verb–noun pairs per cell")]))
    problems = [p for r in rows for p in r["problems"]]
    if problems:
        sections.append(Section("Problems", [Text(p) for p in problems]))
    for name, png in figures.items():
        atomic_write(out / name, png)
    result = {
        "version": RESULTS_VERSION,
        "experiment": plan.spec.name,
        "setup": dict(setup.rows),
        "baselines": labels,
        "cells": rows,
    }
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "results.csv", csv_text(rows, labels))
    title = f"Experiment {plan.spec.name}"
    atomic_write_text(out / "results.md", to_markdown(title, sections))
    atomic_write_text(out / "report.html", to_html(title, sections))
    return result
