"""The analysis report built from the fixture tree, a run directory and a chat-format file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from explore_instruct.analysis import stats
from explore_instruct.analysis.treeview import tree_fragment, tree_page
from explore_instruct.analysis.verbnoun import VerbNoun
from explore_instruct.cli import main
from explore_instruct.tree import DomainTree, Example, TaskNode, save_upstream
from tests.conftest import FIXTURES, NO_FIXTURES

pytest.importorskip("spacy")
pytest.importorskip("matplotlib")

TREE = FIXTURES / "upstream_rewriting_tree"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_tree() -> DomainTree:
    ex = [Example("Rewrite the sentence in a formal tone.", "gonna go", "I am going to leave.")]
    kids = [
        TaskNode(
            "Shorten text",
            "Brevity helps.",
            [Example(f"Shorten the paragraph number {i}.", "a b c", "a") for i in range(3)],
            [TaskNode("Shorten headlines", "", [Example("Shorten this headline.", "x", "y")])],
        ),
        TaskNode(
            "Fix <grammar> & spelling",
            "Errors distract.",
            [Example("Correct the grammar mistakes in the text.", "He go.", "He goes.")],
        ),
    ]
    return DomainTree(TaskNode("Text editing", "", ex, kids))


def chat_records() -> list[dict]:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "be nice"},
                {"role": "user", "content": f"Write a poem about {t}."},
                {"role": "assistant", "content": "Roses..."},
            ]
        }
        for t in ("cats", "dogs", "rain", "the sea")
    ]
    rows.append(
        {"messages": [{"role": "user", "content": "请改写下面的句子。"}, {"role": "assistant", "content": "好"}]}
    )
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    if not TREE.is_dir():
        pytest.skip(NO_FIXTURES)
    base = tmp_path_factory.mktemp("analysis")
    chat = base / "chat.jsonl"
    chat.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in chat_records()), encoding="utf-8")
    save_upstream(small_tree(), base / "small_tree")
    try:
        from explore_instruct.pipeline import import_tree
    except ImportError:  # pragma: no cover - the run store ships with the pipeline
        pytest.skip("explore_instruct.pipeline.import_tree is not available")
    import_tree(base / "small_tree", base / "run").close()
    out = base / "report"
    rc = main(["analyze", f"explore={TREE}", f"chat={chat}", f"small run={base / 'run'}", "--out", str(out)])
    return out, rc


def test_cli_succeeds(report):
    assert report[1] == 0


def test_every_output_file_exists(report):
    out, _ = report
    for name in (
        "report.html",
        "report.md",
        "summary.json",
        "seed_overlap.png",
        "lengths.png",
        "verbnoun_explore.png",
        "verbnoun_chat.png",
        "verbnoun_small_run.png",
        "tasks_explore.png",
        "tasks_small_run.png",
        "tree_explore.html",
        "tree_small_run.html",
    ):
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        assert png.read_bytes().startswith(PNG_MAGIC), png.name
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


def test_summary_has_every_number(report):
    summary = json.loads((report[0] / "summary.json").read_text())
    ds = summary["datasets"]
    assert list(ds) == ["explore", "chat", "small run"]
    explore = ds["explore"]
    assert explore["records"] == 4431  # the root's 2 examples are the seeds, not data
    vn = explore["verb_noun"]
    assert vn["with_pair"] > 0.8 * vn["instructions"]
    assert 0 < vn["unique_verbs"] <= vn["unique_pairs"]
    assert 0 < vn["pair_entropy_norm"] <= 1 and 0 < vn["top20_pair_share"] <= 1
    assert ["rewrite", "sentence"] in [p[:2] for p in vn["top_pairs"]]
    ov = explore["seed_overlap"]
    assert summary["seeds"]["count"] == 2
    assert 0 <= ov["mean"] <= ov["max"] <= 1
    assert sum(ov["histogram"]["counts"]) == 4431
    assert set(explore["lengths"]) == {"instruction", "input", "output"}
    tree = explore["tree"]
    assert tree["tasks"] == 9 and tree["tasks_per_depth"] == {"0": 1, "1": 8}
    assert tree["examples_per_task"]["min"] == 512 and tree["pruned_tasks"] == 0
    chat = ds["chat"]
    assert chat["tree"] is None and chat["non_latin_instructions"] == 1
    assert chat["verb_noun"]["with_pair"] == 4 and chat["verb_noun"]["unique_pairs"] == 1
    run = ds["small run"]
    assert run["kind"] == "run" and run["tree"]["tasks_per_depth"] == {"0": 1, "1": 2, "2": 1}


def test_html_is_self_contained(report):
    html = (report[0] / "report.html").read_text()
    resources = re.findall(r"""(?:src|href|url)\s*[=(]\s*["']?\s*([^"' )>]+)""", html, flags=re.I)
    assert resources and all(r.startswith(("data:", "#")) for r in resources), resources
    assert not re.search(r"https?://", html)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    summary = json.loads((report[0] / "summary.json").read_text())
    assert html.count("data:image/png;base64,") == len(summary["figures"])
    assert "<details" in html and "Paraphrase" in html
    assert "Fix &lt;grammar&gt; &amp; spelling" in html


def test_markdown_first_table_lays_datasets_side_by_side(report):
    md = (report[0] / "report.md").read_text()
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Dataset"))
    assert "Unique verb–noun pairs" in lines[start] and "ROUGE-L to seeds" in lines[start]
    assert [r.split("|")[1].strip() for r in lines[start + 2 : start + 5]] == ["explore", "chat", "small run"]
    for png in report[0].glob("*.png"):
        assert f"]({png.name})" in md


def test_explicit_seed_file(tmp_path):
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps([{"instruction": "Write a poem about cats.", "input": "", "output": ""}]))
    data = tmp_path / "data.json"
    data.write_text(json.dumps([{"instruction": "Write a poem about cats."}, {"instruction": "Fix the bug."}]))
    assert main(["analyze", str(data), "--seeds", str(seeds), "--out", str(tmp_path / "o")]) == 0
    ov = json.loads((tmp_path / "o" / "summary.json").read_text())["datasets"]["data"]["seed_overlap"]
    assert ov["max"] == 1.0 and ov["share_above_0.7"] == 0.5


def test_tree_stats_counts_pruned_tasks():
    tree = small_tree()
    tree.root.children[1].pruned = True
    t = stats.tree_stats(tree)
    assert t["tasks"] == 4 and t["max_depth"] == 2 and t["leaves"] == 2
    assert t["pruned_tasks"] == 1 and t["pruned_names"] == ["Fix <grammar> & spelling"]
    assert t["examples_per_task"]["max"] == 3 and t["examples_per_task"]["min"] == 1


def test_tree_view_escapes_and_marks_pruned():
    tree = small_tree()
    tree.root.children[0].examples[0] = Example("<script>alert(1)</script>", "", "ok")
    tree.root.children[1].pruned = True
    html = tree_fragment(tree)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert html.count("<details") == 4 and 'class="pruned"' in html
    assert tree_page(tree, "t").startswith("<!DOCTYPE html>")


def test_entropy_and_top_share():
    assert stats.normalised_entropy([5, 5, 5, 5]) == pytest.approx(1.0)
    assert stats.normalised_entropy([7]) == 0.0 and stats.normalised_entropy([]) == 0.0
    assert 0 < stats.normalised_entropy([100, 1, 1]) < 0.2
    from collections import Counter

    assert stats.top_k_share(Counter({"a": 6, "b": 3, "c": 1}), 2) == pytest.approx(0.9)


def test_verb_noun_stats_and_rings():
    items = [VerbNoun("write", "poem")] * 3 + [
        VerbNoun("write", "story"),
        VerbNoun("fix", "bug"),
        VerbNoun("think", None),
        VerbNoun(None, None),
    ]
    s = stats.verb_noun_stats(items)
    assert (s["instructions"], s["with_pair"], s["unique_pairs"], s["unique_verbs"], s["with_verb"]) == (7, 5, 3, 2, 6)
    assert stats.verb_noun_rings(items, top_verbs=1, top_nouns=1) == [("write", [("poem", 3)])]


def test_overlap_histogram_edges():
    s = stats.overlap_stats([0.0, 0.05, 0.5, 1.0])
    assert s["histogram"]["counts"][0] == 1 and s["histogram"]["counts"][1] == 1
    assert s["histogram"]["counts"][-1] == 1 and sum(s["histogram"]["counts"]) == 4


def test_model_text_in_a_markdown_table_cannot_open_html() -> None:
    """A task name or instruction is model output: in report.md, results.md or a dataset card it
    stays text, whatever a Markdown renderer does with raw HTML."""
    from explore_instruct.analysis.render import Section, Table, to_markdown

    hostile = '<img src=x onerror="alert(1)"> | <script>alert(2)</script>\nnext'
    md = to_markdown("t", [Section("s", [Table(["Task"], [[hostile]])])])
    row = next(line for line in md.splitlines() if "alert(1)" in line)
    assert "<" not in row and row.count("|") == 3 and "&lt;script>" in row  # one cell: the pipe is escaped
