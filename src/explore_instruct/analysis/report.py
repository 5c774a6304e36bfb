"""`analyze`: compute every number for every dataset, draw the figures, write the report into one folder.

Output (all written atomically): `summary.json` (every number, per dataset), `report.md`, a
self-contained `report.html` (figures embedded, no network), the PNG figures, and for each dataset
with a tree a standalone `tree_<name>.html`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from explore_instruct.analysis import diversity, figures, stats
from explore_instruct.analysis.datasets import AnalysedDataset
from explore_instruct.analysis.render import Figure, RawHtml, Section, Table, Text, to_html, to_markdown
from explore_instruct.analysis.treeview import tree_fragment, tree_page
from explore_instruct.analysis.verbnoun import extract, is_mostly_latin, load_nlp, parse_keys
from explore_instruct.datafile import atomic_write
from explore_instruct.tree import slugify

SUMMARY_VERSION = 1
ROUGE_CHUNK = 500  # instructions per ROUGE-L call, so the progress bar moves


@dataclass
class AnalysisOptions:
    top_verbs: int = 20
    top_nouns: int = 4
    top_k: int = stats.TOP_K
    overlap_threshold: float = 0.7
    batch_size: int = 256
    n_process: int = 1


# A progress hook: start(description, total) returns an advance(n) callable.
ProgressHook = Callable[[str, int], Callable[[int], None]]


def _no_progress(_desc: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def seed_overlap_scores(texts: Sequence[str], seeds: Sequence[str], advance: Callable[[int], None]) -> list[float]:
    """Each text's highest ROUGE-L F1 against any seed instruction."""
    from explore_instruct.rouge import max_overlap

    scores: list[float] = []
    for start in range(0, len(texts), ROUGE_CHUNK):
        chunk = list(texts[start : start + ROUGE_CHUNK])
        scores.extend(score for score, _idx in max_overlap(chunk, list(seeds)))
        advance(len(chunk))
    return scores


# --- computing -----------------------------------------------------------------------------------


@dataclass
class DatasetResult:
    ds: AnalysedDataset
    summary: dict[str, Any]
    rings: list[tuple[str, list[tuple[str, int]]]]
    overlap: list[float] | None
    lengths: dict[str, list[int]]
    points: Any = None  # 2-D map of the embeddings (rows of `map_tasks`), None without embeddings
    map_tasks: list[str] | None = None
    map_method: str = "pca"


def compute(
    datasets: Sequence[AnalysedDataset],
    seeds: Sequence[str] | None,
    options: AnalysisOptions,
    progress: ProgressHook = _no_progress,
    nlp: Any | None = None,
    embed: EmbedTexts | None = None,
) -> list[DatasetResult]:
    """Every number per dataset; `embed` (texts -> unit vectors, model id) adds the diversity measures."""
    nlp = nlp if nlp is not None else load_nlp()
    results: list[DatasetResult] = []
    for ds in datasets:
        instructions = [r["instruction"] for r in ds.records]
        vn = extract(
            instructions,
            nlp,
            batch_size=options.batch_size,
            n_process=options.n_process,
            on_batch=progress(f"verb–noun pairs: {ds.name}", len(parse_keys(instructions))),
        )
        summary: dict[str, Any] = {
            "source": ds.source,
            "kind": ds.kind,
            "records": len(ds.records),
            "non_latin_instructions": sum(1 for t in instructions if not is_mostly_latin(t)),
            "verb_noun": stats.verb_noun_stats(vn, options.top_k),
        }
        overlap = None
        if seeds:
            overlap = seed_overlap_scores(
                instructions, seeds, progress(f"ROUGE-L to seeds: {ds.name}", len(instructions))
            )
        summary["seed_overlap"] = stats.overlap_stats(overlap, options.overlap_threshold) if overlap else None
        summary["lengths"] = stats.length_stats(ds.records)
        summary["tree"] = stats.tree_stats(ds.tree) if ds.tree is not None else None
        lengths = {f: [stats.word_count(r.get(f, "")) for r in ds.records] for f in ("instruction", "input", "output")}
        rings = stats.verb_noun_rings(vn, options.top_verbs, options.top_nouns)
        result = DatasetResult(ds, summary, rings, overlap, lengths)
        if embed is not None:
            _add_diversity(result, instructions, embed, progress)
        results.append(result)
    return results


# Texts -> (unit vectors, model id); `progress` is told of each text embedded.
EmbedTexts = Callable[[Sequence[str], Callable[[int], None]], tuple[Any, str]]


def _add_diversity(result: DatasetResult, instructions: list[str], embed: EmbedTexts, progress: ProgressHook) -> None:
    vectors, model_id = embed(instructions, progress(f"embeddings: {result.ds.name}", len(instructions)))
    result.summary["diversity"] = diversity.diversity_summary(instructions, vectors, model_id)
    shown = diversity.map_sample(len(instructions))
    result.points, result.map_method = diversity.project_2d(vectors[shown])
    result.map_tasks = [diversity.top_level_task(result.ds.records[i]) for i in shown]
    result.summary["diversity"]["map"] = result.map_method


# --- presenting ----------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _f(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


def _first_table(results: Sequence[DatasetResult], k: int, threshold: float) -> Table:
    """The datasets side by side, as in the paper's data-centric analysis table."""
    headers = [
        "Dataset",
        "Instructions",
        "Unique verb–noun pairs",
        "Unique verbs",
        "Pair entropy (norm.)",
        f"Top-{k} pair share",
        "ROUGE-L to seeds (mean)",
        f"ROUGE-L > {threshold}",
        "Tasks",
    ]
    rows = []
    for r in results:
        s = r.summary
        vn, ov, tr = s["verb_noun"], s["seed_overlap"], s["tree"]
        rows.append(
            [
                r.ds.name,
                str(s["records"]),
                str(vn["unique_pairs"]),
                str(vn["unique_verbs"]),
                _f(vn["pair_entropy_norm"]),
                _pct(vn[f"top{k}_pair_share"]),
                _f(ov["mean"]) if ov else "–",
                _pct(ov[f"share_above_{threshold}"]) if ov else "–",
                str(tr["tasks"]) if tr else "–",
            ]
        )
    return Table(headers, rows)


def _figure_name(kind: str, name: str) -> str:
    return f"{kind}_{slugify(name)}.png"


def _pruned_note(pruned: int) -> str:
    """The examples-per-task caption's key: it promises grey bars only when some are drawn."""
    if not pruned:
        return "no task was pruned"
    return f"grey, hatched: {pruned} pruned {'task' if pruned == 1 else 'tasks'}"


def build_sections(
    results: Sequence[DatasetResult], seeds_note: str | None, options: AnalysisOptions
) -> tuple[list[Section], dict[str, str], dict[str, str]]:
    """The report's sections, the figures (file name → dataset or 'all') and tree pages (file → html)."""
    k, thr = options.top_k, options.overlap_threshold
    fig_index: dict[str, str] = {}
    tree_pages: dict[str, str] = {}
    overview = Section("Datasets side by side", [_first_table(results, k, thr)])
    overview.blocks.append(
        Text(
            "Unique verb–noun pairs: distinct (main verb, direct-object noun) lemmas. "
            "Pair entropy: entropy of the pair distribution over its maximum, 1 = pairs spread evenly. "
            f"Top-{k} pair share: how much of the data the most common pairs take (lower = more diverse). "
            "ROUGE-L to seeds: each instruction's highest ROUGE-L F1 against the seed instructions "
            "(lower = further from the seeds)."
        )
    )

    vn_sec = Section("Verb–noun pairs")
    vn_sec.blocks.append(
        Table(
            [
                "Dataset",
                "Instructions",
                "With a pair",
                "Unique pairs",
                "Unique verbs",
                "Unique nouns",
                "Pair entropy (norm.)",
                f"Top-{k} share",
                "Non-Latin (no pair)",
            ],
            [
                [
                    r.ds.name,
                    str(v["instructions"]),
                    f"{v['with_pair']} ({_pct(v['with_pair_share'])})",
                    str(v["unique_pairs"]),
                    str(v["unique_verbs"]),
                    str(v["unique_nouns"]),
                    _f(v["pair_entropy_norm"]),
                    _pct(v[f"top{k}_pair_share"]),
                    str(r.summary["non_latin_instructions"]),
                ]
                for r in results
                for v in [r.summary["verb_noun"]]
            ],
        )
    )
    for r in results:
        top = r.summary["verb_noun"]["top_pairs"][:10]
        vn_sec.blocks.append(
            Table(
                ["Verb", "Noun", "Count"],
                [[v, o, str(c)] for v, o, c in top],
                caption=f"{r.ds.name}: most common pairs",
            )
        )
        png = figures.verb_noun_sunburst(r.rings, f"{r.ds.name}: top verbs (inner) and their nouns (outer)")
        name = _figure_name("verbnoun", r.ds.name)
        fig_index[name] = r.ds.name
        vn_sec.blocks.append(
            Figure(
                name,
                png,
                f"{r.ds.name}: top {options.top_verbs} verbs and their top {options.top_nouns} direct-object nouns",
            )
        )

    sections = [overview, vn_sec]
    div_sec = _diversity_section(results, fig_index)
    if div_sec is not None:
        sections.append(div_sec)
    with_overlap = [r for r in results if r.overlap is not None]
    ov_sec = Section("Overlap with the seed instructions")
    if with_overlap:
        ov_sec.blocks.append(Text(seeds_note or ""))
        ov_sec.blocks.append(
            Table(
                ["Dataset", "Mean", "Median", "p90", "Max", f"Share > {thr}"],
                [
                    [
                        r.ds.name,
                        _f(o["mean"]),
                        _f(o["median"]),
                        _f(o["p90"]),
                        _f(o["max"]),
                        _pct(o[f"share_above_{thr}"]),
                    ]
                    for r in with_overlap
                    for o in [r.summary["seed_overlap"]]
                ],
            )
        )
        fig_index["seed_overlap.png"] = "all"
        ov_sec.blocks.append(
            Figure(
                "seed_overlap.png",
                figures.overlap_histogram({r.ds.name: r.overlap or [] for r in with_overlap}),
                "highest ROUGE-L F1 of each instruction against the seeds",
            )
        )
    else:
        ov_sec.blocks.append(
            Text(
                "No seed instructions: give seeds (a record file or a tree directory) "
                "or analyse a tree, whose root examples are its seeds."
            )
        )
    sections.append(ov_sec)

    len_sec = Section("Lengths (words)")
    rows = []
    for r in results:
        ln = r.summary["lengths"]
        rows.append(
            [r.ds.name]
            + [
                f"{_f(ln[f]['mean'], 1)} / {ln[f]['median']:g} / {ln[f]['p90']:g}"
                for f in ("instruction", "input", "output")
            ]
            + [_pct(ln["input"]["empty_share"])]
        )
    len_sec.blocks.append(
        Table(
            [
                "Dataset",
                "Instruction mean / median / p90",
                "Input mean / median / p90",
                "Output mean / median / p90",
                "Empty inputs",
            ],
            rows,
        )
    )
    fig_index["lengths.png"] = "all"
    len_sec.blocks.append(
        Figure(
            "lengths.png",
            figures.length_boxplots({r.ds.name: r.lengths for r in results}),
            "lengths in words (boxes: quartiles, whiskers: 1.5 IQR)",
        )
    )
    sections.append(len_sec)

    trees = [r for r in results if r.ds.tree is not None]
    if trees:
        tree_sec = Section("Task trees")
        for r in trees:
            t = r.summary["tree"]
            ept = t["examples_per_task"]
            depth_cells = ", ".join(f"depth {d}: {n}" for d, n in t["tasks_per_depth"].items())
            tree_sec.blocks.append(
                Table(
                    [
                        "Tasks",
                        "Max depth",
                        "Leaves",
                        "Tasks per depth",
                        "Examples per task (min / mean / median / max)",
                        "Pruned tasks",
                    ],
                    [
                        [
                            str(t["tasks"]),
                            str(t["max_depth"]),
                            str(t["leaves"]),
                            depth_cells,
                            f"{ept['min']:g} / {ept['mean']:.1f} / {ept['median']:g} / {ept['max']:g}",
                            str(t["pruned_tasks"]),
                        ]
                    ],
                    caption=f"{r.ds.name}",
                )
            )
            assert r.ds.tree is not None
            tasks = [
                (n.name, len(n.examples), n.pruned)
                for n, d, _ in r.ds.tree.level_order()
                if not (d == 0 and n.children)
            ]
            name = _figure_name("tasks", r.ds.name)
            fig_index[name] = r.ds.name
            tree_sec.blocks.append(
                Figure(
                    name,
                    figures.examples_per_task(tasks, f"{r.ds.name}: examples per task"),
                    f"{r.ds.name}: examples per task ({_pruned_note(sum(p for _, _, p in tasks))})",
                )
            )
            page = f"tree_{slugify(r.ds.name)}.html"
            tree_pages[page] = tree_page(r.ds.tree, f"{r.ds.name}: task tree")
            tree_sec.blocks.append(
                RawHtml(
                    f"<p>{escape(r.ds.name)}: the tree (click a task to open it; also in {escape(page)})</p>"
                    + tree_fragment(r.ds.tree),
                    f"The tree, collapsible: [{page}]({page})",
                )
            )
        sections.append(tree_sec)
    return sections, fig_index, tree_pages


def _diversity_section(results: Sequence[DatasetResult], fig_index: dict[str, str]) -> Section | None:
    measured = [r for r in results if "diversity" in r.summary]
    if not measured:
        return None
    sec = Section("Diversity of the instructions")
    sec.blocks.append(
        Table(
            ["Dataset", "Vendi score", "distinct-1", "distinct-2", "Embedding model"],
            [
                [r.ds.name, _f(d["vendi_score"], 2), _f(d["distinct_1"]), _f(d["distinct_2"]), d["embedding_model"]]
                for r in measured
                for d in [r.summary["diversity"]]
            ],
        )
    )
    sec.blocks.append(
        Text(
            "Vendi score: exp of the entropy of the eigenvalues of K/n, K the cosine similarities of the "
            "instructions' embeddings; an effective number of distinct instructions (1 = all alike, "
            "n = all unrelated). distinct-n: distinct word n-grams over all n-grams (higher = less repetition)."
        )
    )
    for r in measured:
        name = _figure_name("embeddings", r.ds.name)
        fig_index[name] = r.ds.name
        caption = f"{r.ds.name}: instructions' embeddings ({r.map_method.upper()}), coloured by top-level task"
        png = figures.embedding_map(r.points, r.map_tasks or [], caption, r.map_method)
        sec.blocks.append(Figure(name, png, caption))
    return sec


def write_report(
    out_dir: Path,
    results: Sequence[DatasetResult],
    seeds: Sequence[str] | None,
    seeds_note: str | None,
    options: AnalysisOptions,
) -> dict[str, Any]:
    """Write every output file into `out_dir` and return the summary that went into summary.json."""
    sections, fig_index, tree_pages = build_sections(results, seeds_note, options)
    out_dir.mkdir(parents=True, exist_ok=True)
    for sec in sections:
        for b in sec.blocks:
            if isinstance(b, Figure):
                atomic_write(out_dir / b.filename, b.png)
    for page, html in tree_pages.items():
        atomic_write(out_dir / page, html)
    summary = {
        "version": SUMMARY_VERSION,
        "seeds": {"count": len(seeds), "source": seeds_note} if seeds else None,
        "options": {
            "top_verbs": options.top_verbs,
            "top_nouns": options.top_nouns,
            "top_k": options.top_k,
            "overlap_threshold": options.overlap_threshold,
        },
        "datasets": {r.ds.name: r.summary for r in results},
        "figures": fig_index,
        "tree_pages": sorted(tree_pages),
    }
    atomic_write(out_dir / "summary.json", json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    title = "Explore-Instruct data analysis"
    atomic_write(out_dir / "report.md", to_markdown(title, sections))
    atomic_write(out_dir / "report.html", to_html(title, sections))
    return summary


def analyze(
    datasets: Sequence[AnalysedDataset],
    out_dir: str | Path,
    *,
    seeds: Sequence[str] | None = None,
    seeds_note: str | None = None,
    options: AnalysisOptions | None = None,
    progress: ProgressHook = _no_progress,
    nlp: Any | None = None,
    embed: EmbedTexts | None = None,
) -> dict[str, Any]:
    """The whole analysis: compute, draw, write. Returns the summary."""
    options = options or AnalysisOptions()
    results = compute(datasets, seeds, options, progress, nlp, embed)
    return write_report(Path(out_dir), results, seeds, seeds_note, options)
