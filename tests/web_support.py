"""Shared pieces of the web app tests: study inputs, a small stored run, a live server, form tokens."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from explore_instruct.runstore import RunStore
from explore_instruct.tree import Example

SRC = Path(__file__).resolve().parents[1] / "src"
SCRIPT = "<script>document.title='pwned'</script>"
BASELINE_MODEL = "baseline-model-alpha"
CANDIDATE_MODEL = "candidate-model-omega"


def write_lines(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


EXAMPLES = [  # (class, question, baseline answer, candidate answer)
    (
        "rewriting",
        'Rewrite this sentence so it sounds more formal: "gonna be late, traffic is nuts"',
        "Gonna be late because of traffic.",
        "I apologise, but I will be late: the traffic is unusually heavy.",
    ),
    (
        "brainstorming",
        "Suggest three names for a bakery that only sells sourdough.",
        "Bread Shop, Sour Shop, Dough Place.",
        "1. The Patient Loaf\n2. Wild Yeast & Co.\n3. Crumb and Crust",
    ),
    (
        "rewriting",
        'Shorten without losing the meaning: "Due to the fact that the meeting ran late, we were not able to '
        'finish the agenda."',
        "Because the meeting ran late, we were not able to finish the agenda.",
        "The meeting ran late, so we did not finish the agenda.",
    ),
    (
        "brainstorming",
        "Give me ideas for a rainy-day activity with two small children.",
        "Watch a film.",
        "Build a blanket fort, bake simple biscuits together, or hold an indoor treasure hunt with drawn clues.",
    ),
    (
        "rewriting",
        'Turn this note into a polite email to a landlord: "heater broken again, pls fix"',
        "Hi, the heater is broken again, please fix it.",
        "Dear Ms Patel,\n\nThe heater has stopped working again. Could you arrange a repair this week?"
        "\n\nKind regards,\nSam",
    ),
    (
        "brainstorming",
        "List ways a small library could attract teenagers.",
        "Have more books.",
        "Host game nights, start a manga club, offer quiet study rooms during exams, and let teens pick new titles.",
    ),
]


def study_inputs(d: Path, n: int = 6) -> tuple[Path, Path, Path]:
    """Questions in two classes, and two answer files whose model names must never reach a rater.

    The first candidate answer carries a `<script>` that must stay inert text.
    """
    d.mkdir(parents=True, exist_ok=True)
    rows = EXAMPLES[:n] + [
        ("rewriting" if i % 2 else "brainstorming", f"Question number {i}?", f"Short reply {i}.", f"Longer reply {i}.")
        for i in range(len(EXAMPLES) + 1, n + 1)
    ]
    questions, baseline, candidate = [], [], []
    for i, (cls, question, base, cand) in enumerate(rows, start=1):
        questions.append({"question_id": f"q{i}", "question": question, "class": cls})
        baseline.append({"question_id": f"q{i}", "answer": base, "model_id": BASELINE_MODEL})
        candidate.append({"question_id": f"q{i}", "answer": cand, "model_id": CANDIDATE_MODEL})
    candidate[0]["answer"] += f" {SCRIPT}"
    return (
        write_lines(d / "questions.jsonl", questions),
        write_lines(d / "baseline.jsonl", baseline),
        write_lines(d / "candidate.jsonl", candidate),
    )


def read_links(study: Path) -> dict[str, str]:
    return dict(line.split("\t") for line in (study / "links.txt").read_text().splitlines())


def form_token(html: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def make_run(run_dir: Path) -> RunStore:
    """A stored run without any model: root with seeds, two tasks, a subtask, drops of both kinds, a sample."""
    store = RunStore.create(run_dir, "domain: generic\n")
    with store.transaction():
        root = store.add_node(key="r", parent_id=None, position=0, depth=0, name="Text editing", reason="")
        a = store.add_node(
            key="r.0",
            parent_id=root,
            position=0,
            depth=1,
            name="Formal rewriting",
            reason="Casual text often has to be put in a formal register.",
        )
        b = store.add_node(
            key="r.1",
            parent_id=root,
            position=1,
            depth=1,
            name="Grammar fixing",
            reason="Drafts contain grammatical errors worth fixing.",
        )
        store.add_node(
            key="r.0.0",
            parent_id=a,
            position=0,
            depth=2,
            name="Rewrite emails formally",
            reason="Emails are the most common formal text.",
        )
        store.add_example(key="s0", node_id=root, origin="seed", example=Example("Fix this.", "He go.", "He goes."))
        for i in range(4):
            store.add_example(
                key=f"a{i}",
                node_id=a,
                origin="generate",
                example=Example(f"Rewrite letter {i} formally", "", f"Dear Sir or Madam, I am writing about item {i}."),
            )
        store.add_example(
            key="a-bad", node_id=a, origin="generate", example=Example("Rewrite", "", ""), drop_reason="empty output"
        )
        store.add_example(key="b0", node_id=b, origin="generate", example=Example("Fix the grammar", "x", SCRIPT))
        store.add_example(
            key="b1",
            node_id=b,
            origin="generate",
            example=Example("Fix the grammar please", "She don't like it.", "She doesn't like it."),
        )
    ids = {r.key: r.id for r in store.examples()}
    with store.transaction():
        store.mark_dropped("filter", [(ids["b1"], "ROUGE-L > 0.7", ids["b0"], 0.875)])
        store.set_sample([ids["a0"], ids["a1"], ids["b0"]])
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(args: list[str], port: int) -> Iterator[subprocess.Popen]:
    """`explore-instruct ARGS --port PORT` in a child process, ready to answer; killed on exit."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "explore_instruct", *args, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/static/style.css", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
