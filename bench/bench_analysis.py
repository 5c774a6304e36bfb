"""Benchmark: the whole `analyze` on 10,000 distinct instructions, and the verb–noun stage against a naive reference.

Data: the fixture tree's instructions plus two edited variants of each ("Please …", "… Keep the
meaning."), de-duplicated and cut to 10,000, so every instruction is a distinct parse (the analysis
parses each distinct text once; repeats would flatter it).

Reference: what one would write first: the full default pipeline (NER included) called once per
instruction, `nlp(text)`, then the same verb–noun rules. It runs on a sample (default 2,000) in the
same process and is scaled to 10,000; both sides produce the same pairs (checked on the sample).

    .venv/bin/python bench/bench_analysis.py [--n 10000] [--reference-sample 2000] [--processes 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from explore_instruct.analysis.datasets import AnalysedDataset
from explore_instruct.analysis.report import AnalysisOptions, analyze
from explore_instruct.analysis.verbnoun import _clip, extract, from_doc, load_nlp, model_name
from explore_instruct.tree import load_upstream

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "upstream_rewriting_tree"


def build_instructions(n: int) -> tuple[list[dict[str, str]], list[str]]:
    tree = load_upstream(FIXTURE)
    base = [(ex, node) for node, _, _ in tree.level_order() if node is not tree.root for ex in node.examples]
    seen: dict[str, dict[str, str]] = {}
    for ex, node in base:
        ins = ex.instruction.strip()
        variants = (ins, f"Please {ins[:1].lower()}{ins[1:]}", f"{ins.rstrip('.')}. Keep the meaning.")
        for text in variants:
            seen.setdefault(text, {"instruction": text, "input": ex.input, "output": ex.output, "task": node.name})
    rows = list(seen.values())
    random.Random(0).shuffle(rows)
    if len(rows) < n:
        sys.exit(f"only {len(rows)} distinct instructions could be built, fewer than --n {n}")
    return rows[:n], [e.instruction for e in tree.root.examples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--reference-sample", type=int, default=2_000)
    ap.add_argument("--processes", type=int, default=1)
    args = ap.parse_args()
    if not FIXTURE.is_dir():
        sys.exit(f"fixture tree not found at {FIXTURE}")
    rows, seeds = build_instructions(args.n)
    texts = [r["instruction"] for r in rows]
    print(f"{len(texts)} distinct instructions; spaCy model: {model_name()}")

    # 1. The whole command: model load, parse, ROUGE-L to seeds, stats, figures, report files.
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        summary = analyze(
            [AnalysedDataset("bench", rows)],
            out,
            seeds=seeds,
            seeds_note="fixture root",
            options=AnalysisOptions(n_process=args.processes),
        )
    total = time.perf_counter() - t0
    vn = summary["datasets"]["bench"]["verb_noun"]
    print(
        f"analyze, end to end:        {total:6.1f} s  ({vn['unique_pairs']} unique pairs, "
        f"{vn['with_pair']} instructions with a pair)  budget 60 s: {'OK' if total < 60 else 'OVER'}"
    )

    # 2. The verb–noun stage alone, ours vs the naive reference, same process.
    nlp = load_nlp()
    t0 = time.perf_counter()
    ours = extract(texts, nlp, n_process=args.processes)
    t_ours = time.perf_counter() - t0

    import spacy

    full = spacy.load(model_name())  # every component on, as `spacy.load` gives it
    sample = texts[: args.reference_sample]
    t0 = time.perf_counter()
    ref = [from_doc(full(_clip(t))) for t in sample]
    t_ref_sample = time.perf_counter() - t0
    t_ref = t_ref_sample * len(texts) / len(sample)
    agree = sum(a == b for a, b in zip(ref, ours[: len(sample)], strict=True)) / len(sample)
    print(f"verb–noun, ours (nlp.pipe, unused components off): {t_ours:6.1f} s for {len(texts)}")
    print(
        f"verb–noun, reference (nlp(text) each, all components): {t_ref_sample:6.1f} s for {len(sample)}, "
        f"scaled to {len(texts)}: {t_ref:6.1f} s"
    )
    print(f"speed-up of the verb–noun stage: {t_ref / t_ours:.2f}x   (same pairs on the sample: {agree:.1%})")


if __name__ == "__main__":
    main()
