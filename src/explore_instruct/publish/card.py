"""The dataset card of a run: what the data is, how it was made, what was dropped and why, what it cost.

Every number comes from the run store (`stats --json`'s summary, the tree, the call log) and the
card's YAML metadata repeats the summary's counts under `explore_instruct`, so a program can check the
card against the run. Dates are the run's first and last model call, never the time of the export.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import yaml

from explore_instruct.analysis.render import Figure, RawHtml, Section, Table, Text, to_markdown
from explore_instruct.config import RunConfig, load_config
from explore_instruct.cost import price
from explore_instruct.llm.base import Usage
from explore_instruct.publish.frontmatter import CITATION, card_text, fenced, portable, size_category
from explore_instruct.publish.options import CardOptions
from explore_instruct.runstore import CONFIG_FILE, RunStore
from explore_instruct.summary import run_summary

WHICH_MEANS = {
    "sample": "the sampled dataset (an even share of examples per task; what `run` writes as data/sample.json)",
    "kept": "every example that passed the quality rules and the diversity filter",
    "reviewed": "the kept examples a reviewer accepted or edited",
    "dropped": "the examples the quality rules, the exact-duplicate check or the diversity filter dropped",
    "all": "every example the run holds, kept and dropped, seeds included",
}
STEP_NAMES = {"quality": "quality rules", "duplicate": "exact duplicates", "filter": "diversity filter (ROUGE-L)"}


def _date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _reasons(counts: dict[str, int], top: int = 4) -> str:
    shown = ", ".join(f"{reason} ({n})" for reason, n in list(counts.items())[:top])
    more = len(counts) - top
    return shown + (f", and {more} more" if more > 0 else "")


def _per_depth(values: Sequence[int], depths: int) -> str:
    return ", ".join(f"depth {d}: {values[min(d, len(values) - 1)]}" for d in range(depths))


NOT_RECORDED = "not recorded: this run made no model calls (its tree and examples were imported)"


def _models(store: RunStore) -> str | None:
    """The models whose replies the run holds, from its call log; None when it made no calls."""
    logged = store.calls.models()
    return ", ".join(logged) if logged else None


def _made(store: RunStore, config: RunConfig, summary: dict[str, Any]) -> Section:
    ex, ge, span = config.explore, config.generate, store.calls.time_span()
    depths = max(summary["tasks_per_depth"], default=0) + 1
    root = config.root.name if config.root else store.tree_view().root.name
    breadth = _per_depth(ex.breadth, ex.max_depth) if ex.max_depth else "none (K = 0: no exploration)"
    rows = [
        ["Generator model", _models(store) or NOT_RECORDED],
        ["Backend", config.llm.backend + (" (batch API for enrichment)" if config.llm.batch.enabled else "")],
        ["Domain profile", config.domain],
        ["Root task", root],
        ["Max depth K", str(ex.max_depth)],
        ["Breadth B (children per task)", breadth],
        ["New subtasks per exploration call M", str(ex.new_per_call)],
        ["Examples per task N", _per_depth(ge.examples_per_task, depths)],
        ["Task pruning (ROUGE-L of names)", f"threshold {config.prune.threshold}" if config.prune.enabled else "off"],
        [
            "Diversity filter (ROUGE-L of instructions)",
            f"threshold {config.filter.threshold}, {config.filter.scope} scope" if config.filter.enabled else "off",
        ],
        ["Sample size", f"{config.sample.size:,}"],
        ["Seed", str(config.seed)],
        ["Sampling", f"temperature {config.llm.temperature}, top_p {config.llm.top_p}"],
        [
            "Generated",
            f"{_date(span[0])} to {_date(span[1])} (first and last model call, UTC)"
            if span
            else "no model calls recorded (the tree was imported)",
        ],
    ]
    intro = Text(
        "An LLM explored the domain as a tree of tasks (lookahead: split a task into subtasks; backtracking: "
        "ask for more subtasks different from the existing ones), then wrote N examples for every task "
        "(enrichment). Task names too close to an earlier one were pruned, examples were checked by the domain "
        "profile's quality rules and a diversity filter, and the dataset was sampled evenly across tasks."
    )
    blocks: list[Any] = [intro, Table(["Setting", "Value"], rows)]
    if span is None:
        blocks.append(
            Text(
                "This run imported its tree (`import-tree`): the settings above are the run's, but the examples "
                "were written elsewhere, by whatever made the imported tree."
            )
        )
    return Section("How it was made", blocks)


def _tree(store: RunStore, records: Sequence[dict[str, Any]]) -> Section:
    view = store.tree_view()
    kept = Counter(r.node_id for r in store.examples(status="ok") if r.origin != "seed")
    here = Counter(r["task_path"] for r in records)
    rows = []
    for row in view.rows:
        parent = view.by_id[row.parent_id].name if row.parent_id is not None else "–"
        rows.append(
            [
                str(row.depth),
                row.name,
                parent,
                str(kept[row.id]),
                str(here[" > ".join(view.path(row.id))]),
                "yes" if row.pruned else "",
            ]
        )
    return Section(
        "The task tree",
        [
            Text(f"{len(view.rows)} tasks, in level order. Pruned tasks get no examples of their own."),
            Table(["Depth", "Task", "Parent", "Kept examples", "In this dataset", "Pruned"], rows),
        ],
    )


def _drops(summary: dict[str, Any], records: Sequence[dict[str, Any]]) -> Section:
    e = summary["examples"]
    rows = []
    if summary["dropped_task_names"]:
        n = sum(summary["dropped_task_names"].values())
        rows.append(["exploration: proposed task names", str(n), _reasons(summary["dropped_task_names"])])
    rows.append(["task pruning: tasks", str(summary["pruned_tasks"]), "name too close to an earlier task's"])
    for stage, name in STEP_NAMES.items():
        rows.append([name, str(e[f"dropped_{stage}"]), _reasons(summary["drop_reasons"].get(stage, {}))])
    line = (
        f"{e['written']} examples written → {e['dropped_quality']} failed the quality rules, "
        f"{e['dropped_duplicate']} exact duplicates, {e['dropped_filter']} too similar to a kept one → "
        f"{e['kept']} kept → {e['sampled']} sampled."
    )
    blocks: list[Any] = [Text(line), Table(["Step", "Dropped", "Why (most frequent first)"], rows)]
    reviewed = sum(1 for r in records if "review" in r)
    if reviewed:
        blocks.append(Text(f"{reviewed} records of this dataset carry a reviewer's decision (`review` column)."))
    for c in summary["filter_collisions"]:
        blocks.append(Text(f"Dropped by the filter: “{c['dropped']}” ~ kept “{c['kept']}” (ROUGE-L {c['score']:.2f})"))
    return Section("What each step dropped, and why", blocks)


def _tokens(usage: Usage) -> list[str]:
    return [f"{usage.prompt_tokens:,}", f"{usage.completion_tokens:,}"]


def _cost(summary: dict[str, Any], config: RunConfig) -> Section:
    pricing = config.llm.pricing
    rows, total = [], Usage(0, 0)
    calls = failed = 0
    for stage, c in summary["calls"].items():
        usage = Usage(c["prompt_tokens"], c["completion_tokens"])
        total += usage
        calls, failed = calls + c["calls"], failed + c["failed"]
        cost = f"{price(usage, pricing):.4f}" if pricing else "–"
        rows.append([stage, str(c["calls"]), str(c["failed"]), *_tokens(usage), cost])
    rows.append(["total", str(calls), str(failed), *_tokens(total), f"{price(total, pricing):.4f}" if pricing else "–"])
    note = (
        f"Cost at the config's prices ({pricing.input_per_mtok:g} per million prompt tokens, "
        f"{pricing.output_per_mtok:g} per million completion tokens; batch discounts not applied)."
        if pricing
        else "The config sets no prices (llm.pricing), so no cost is given."
    )
    headers = ["Stage", "Calls", "Failed", "Prompt tokens", "Completion tokens", "Cost"]
    return Section("Tokens and cost", [Table(headers, rows), Text(note)])


def analysis_available() -> bool:
    """True when the analysis extra (spaCy, an English model, matplotlib) is installed."""
    from explore_instruct.analysis.verbnoun import model_name

    have = all(importlib.util.find_spec(m) is not None for m in ("spacy", "matplotlib"))
    return have and model_name() is not None


def _analysis(
    records: Sequence[dict[str, Any]], seeds: list[str], enabled: bool | None
) -> tuple[Section, dict[str, bytes]]:
    """The verb–noun chart, the overlap with the seeds, and the diversity measures (the `analyze` numbers)."""
    sec = Section("Analysis")
    if enabled is False or (enabled is None and not analysis_available()):
        why = "--no-analysis was given" if enabled is False else "the analysis extra is not installed"
        sec.blocks.append(Text(f"Not computed ({why}): `explore-instruct analyze` on the run gives these numbers."))
        return sec, {}
    if not records:
        sec.blocks.append(Text("Not computed: the dataset is empty."))
        return sec, {}
    from explore_instruct.analysis import figures
    from explore_instruct.analysis.datasets import AnalysedDataset
    from explore_instruct.analysis.report import AnalysisOptions, compute
    from explore_instruct.export import alpaca_record

    options = AnalysisOptions()
    ds = AnalysedDataset("data", [alpaca_record(r) for r in records])
    (result,) = compute([ds], seeds or None, options)
    vn, ov = result.summary["verb_noun"], result.summary["seed_overlap"]
    k, thr = options.top_k, options.overlap_threshold
    rows = [
        ["Instructions", str(vn["instructions"])],
        ["Unique verb–noun pairs", str(vn["unique_pairs"])],
        ["Unique verbs", str(vn["unique_verbs"])],
        ["Pair entropy (normalised; 1 = even)", f"{vn['pair_entropy_norm']:.3f}"],
        [f"Share of the top-{k} pairs", f"{100 * vn[f'top{k}_pair_share']:.1f} %"],
    ]
    if ov:
        rows += [
            ["ROUGE-L to the seeds (mean)", f"{ov['mean']:.3f}"],
            [f"Instructions with ROUGE-L > {thr} to a seed", f"{100 * ov[f'share_above_{thr}']:.1f} %"],
        ]
    sec.blocks.append(Table(["Measure", "Value"], rows))
    pngs = {"verbnoun.png": figures.verb_noun_sunburst(result.rings, "top verbs (inner) and their nouns (outer)")}
    sec.blocks.append(Figure("figures/verbnoun.png", pngs["verbnoun.png"], "verb–noun pairs of the instructions"))
    if result.overlap:
        pngs["seed_overlap.png"] = figures.overlap_histogram({"this dataset": result.overlap})
        sec.blocks.append(
            Figure(
                "figures/seed_overlap.png", pngs["seed_overlap.png"], "highest ROUGE-L of each instruction to the seeds"
            )
        )
    return sec, pngs


def _columns_text(records: Sequence[dict[str, Any]]) -> Text:
    fields = {
        "instruction, input, output": "the example (input may be empty)",
        "task, task_path, depth": "the task it was written for, its path from the root, and its depth",
        "id, origin": "the example's id in the run and how it was made (generate, explore, seed, import)",
    }
    present = {k for r in records for k in r}
    if "drop_stage" in present:
        fields["drop_stage, drop_reason, dup_of, score"] = (
            "why it was dropped; for the diversity filter, the kept example it collided with and the ROUGE-L"
        )
    if "review" in present:
        fields["review"] = "a reviewer's decision (accepted or edited, who, when, and the original text of an edit)"
    others = sorted(present - {"instruction", "input", "output", "task", "task_path", "depth", "id", "origin"}
                    - {"drop_stage", "drop_reason", "dup_of", "score", "review"})  # fmt: skip
    if others:
        fields[", ".join(others)] = "further fields the records carry"
    return Text("Columns: " + "; ".join(f"`{k}`: {v}" for k, v in fields.items()) + ".")


def _loading(repo_id: str | None) -> RawHtml:
    where = repr(repo_id) if repo_id else '"path/to/this/folder"'
    note = "" if repo_id else "# this folder, or its Hub repository id once pushed\n"
    code = f"from datasets import load_dataset\n\n{note}ds = load_dataset({where})\nprint(ds['train'][0])"
    return RawHtml("", fenced("python", code))


def _limitations(models: str, license_id: str | None) -> Text:
    unlicensed = (
        ""
        if license_id
        else " No licence was chosen for this data (the card says `unknown`): set one with --license or "
        "publish.license before sharing it."
    )
    return Text(
        "Machine-written data: every task name and example was written by a language model "
        f"({models}) and checked only by heuristics (quality rules, a lexical ROUGE-L diversity filter), not by "
        "people unless the `review` column says so. Outputs can be wrong, shallow or biased, and instructions "
        "can ask for things the answers only pretend to do. The generator's licence and terms of use apply to "
        "its outputs, and may restrict using this data (for instance to train competing models): check them "
        "before you use it. The tree covers what the model could think of for the root task, not the whole "
        "domain." + unlicensed
    )


def run_card(
    store: RunStore, records: Sequence[dict[str, Any]], which: str, options: CardOptions, *, data_glob: str
) -> tuple[str, dict[str, bytes]]:
    """The card (README.md text) and its figures (file name -> PNG) for `records`, exported as `which`."""
    config = load_config(store.run_dir / CONFIG_FILE)
    summary = run_summary(store)
    models = _models(store) or "a model the import does not name"
    license_id = options.license or config.publish.license
    seeds = [ex.instruction for ex in store.examples(origins=["seed"])]
    root = config.root.name if config.root else store.tree_view().root.name
    # The counts as `stats --json` prints them (JSON keys are strings).
    counted = ("tasks_per_depth", "pruned_tasks", "dropped_task_names", "examples")
    counts = json.loads(json.dumps({k: summary[k] for k in counted}))
    meta: dict[str, Any] = {
        "license": license_id or "unknown",
        "language": list(config.publish.language),
        "task_categories": ["text-generation"],
        "size_categories": [size_category(len(records))],
        "tags": ["synthetic", "explore-instruct", config.domain],
        "pretty_name": f"{root} (Explore-Instruct)",
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_glob}]}],
        "explore_instruct": {"which": which, "records": len(records), **counts},
    }
    analysis, pngs = _analysis(records, seeds, options.analysis)
    about = Section(
        "What the data is",
        [
            Text(
                f"{len(records):,} instruction-following examples (instruction, input, output) for the task "
                f"“{root}” and the subtasks an LLM found under it, made with the Explore-Instruct method. "
                f"This is `{which}`: {WHICH_MEANS.get(which, which)}. One split, `train`."
            ),
            _columns_text(records),
        ],
    )
    config_yaml = yaml.safe_dump(portable(config.model_dump(mode="json")), sort_keys=False, allow_unicode=True)
    sections = [
        about,
        _made(store, config, summary),
        _tree(store, records),
        _drops(summary, records),
        _cost(summary, config),
        analysis,
        Section(
            "The run config",
            [
                Text(
                    "As the run resolved it (keys are read from environment variables, never stored; "
                    "paths on the machine that ran it are cut to their last part)."
                ),
                RawHtml("", fenced("yaml", config_yaml)),
            ],
        ),
        Section("How to load it", [_loading(options.repo_id)]),
        Section(
            "Citation",
            [
                Text("The method (this dataset was made with an independent implementation of it):"),
                RawHtml("", fenced("bibtex", CITATION)),
            ],
        ),
        Section("Limitations", [_limitations(models, license_id)]),
    ]
    body = to_markdown(f"{root}: an Explore-Instruct dataset", sections)
    return card_text(meta, body), pngs
