"""The review app over HTTP, and exports that honour its decisions."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from explore_instruct.cli import main
from explore_instruct.review import decide
from explore_instruct.runstore import RunStore
from explore_instruct.web.review_app import create_app
from explore_instruct.web.review_data import RunReview
from tests.web_support import SCRIPT, form_token, make_run

TOKEN = "ab" * 16


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    make_run(tmp_path / "run").close()
    return tmp_path / "run"


@pytest.fixture
def client(run_dir: Path):
    review = RunReview(run_dir, "ada")
    with TestClient(create_app(review, TOKEN), follow_redirects=False) as c:
        yield c
    review.close()


def ids(run_dir: Path) -> dict[str, int]:
    with sqlite3.connect(run_dir / "run.db") as conn:
        return dict(conn.execute("SELECT key, id FROM examples"))


def node_ids(run_dir: Path) -> dict[str, int]:
    with sqlite3.connect(run_dir / "run.db") as conn:
        return dict(conn.execute("SELECT name, id FROM nodes"))


def export(run_dir: Path, which: str, tmp_path: Path) -> list[dict]:
    out = tmp_path / f"{which}.jsonl"
    assert main(["export", "-r", str(run_dir), "--format", "jsonl", "--which", which, "--out", str(out)]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_tree_shows_every_task_with_its_counts(client: TestClient) -> None:
    page = client.get(f"/{TOKEN}/")
    assert page.status_code == 200
    for name in ("Text editing", "Formal rewriting", "Grammar fixing", "Rewrite emails formally"):
        assert name in page.text
    assert "<details open>" in page.text  # collapsible, open at the root
    assert (
        '<span class="n">5</span> written · <span class="n">4</span> kept · <span class="n">2</span> sampled'
        in page.text
    )
    assert "quality: empty output ×1" in page.text and "filter: ROUGE-L &gt; 0.7 ×1" in page.text


def test_task_page_shows_reason_parent_drops_and_the_collision(client: TestClient, run_dir: Path) -> None:
    nodes = node_ids(run_dir)
    page = client.get(f"/{TOKEN}/task/{nodes['Grammar fixing']}").text
    assert "errors" in page and f'href="/{TOKEN}/task/{nodes["Text editing"]}">Text editing' in page
    assert "dropped by filter: ROUGE-L &gt; 0.7" in page
    assert "Too close to the kept instruction “Fix the grammar” (ROUGE-L F1 0.875)" in page
    assert SCRIPT not in page and "&lt;script&gt;" in page
    assert client.get(f"/{TOKEN}/task/999").status_code == 404


def test_search_finds_instructions(client: TestClient) -> None:
    page = client.get(f"/{TOKEN}/search", params={"q": "LETTER 2"}).text
    assert "Rewrite letter 2 formally" in page and "Rewrite letter 1" not in page
    assert "1 instruction(s)" in page
    assert "0 instruction(s)" in client.get(f"/{TOKEN}/search", params={"q": "%"}).text  # a literal %, no wildcard


def test_decisions_are_stored_with_reviewer_and_time(client: TestClient, run_dir: Path) -> None:
    e = ids(run_dir)
    nodes = node_ids(run_dir)
    page = client.get(f"/{TOKEN}/task/{nodes['Formal rewriting']}")
    token = form_token(page.text)
    r = client.post(f"/{TOKEN}/example/{e['a1']}", data={"action": "reject", "csrf": token})
    assert r.status_code == 303 and r.headers["location"] == f"/{TOKEN}/task/{nodes['Formal rewriting']}#ex-{e['a1']}"
    edit = client.get(f"/{TOKEN}/example/{e['a0']}")
    assert "Rewrite letter 0 formally" in edit.text
    fields = {
        "action": "edit",
        "instruction": "Rewrite letter zero formally",
        "input": "",
        "output": "Dear Sir",
        "csrf": token,
    }
    assert client.post(f"/{TOKEN}/example/{e['a0']}", data=fields).status_code == 303
    fragment = client.post(
        f"/{TOKEN}/example/{e['a2']}", data={"action": "accept", "csrf": token}, headers={"HX-Request": "true"}
    )
    assert fragment.status_code == 200 and fragment.text.lstrip().startswith("<article")
    assert "accepted by ada" in fragment.text
    with sqlite3.connect(run_dir / "run.db") as conn:
        rows = conn.execute(
            "SELECT example_id, decision, reviewer, decided_at FROM review ORDER BY example_id"
        ).fetchall()
        original = conn.execute("SELECT instruction FROM examples WHERE id = ?", (e["a0"],)).fetchone()[0]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (e["a0"], "edit", "ada"),
        (e["a1"], "reject", "ada"),
        (e["a2"], "accept", "ada"),
    ]
    assert all(r[3] for r in rows)
    assert original == "Rewrite letter 0 formally"  # the edit keeps the original


def test_review_refusals(client: TestClient, run_dir: Path) -> None:
    e = ids(run_dir)
    token = form_token(client.get(f"/{TOKEN}/task/{node_ids(run_dir)['Formal rewriting']}").text)
    assert client.get("/" + "cd" * 16 + "/").status_code == 404
    assert client.post(f"/{'cd' * 16}/example/{e['a1']}", data={"action": "reject", "csrf": token}).status_code == 404
    assert client.post(f"/{TOKEN}/example/{e['a1']}", data={"action": "reject"}).status_code == 403
    assert client.post(f"/{TOKEN}/example/{e['a1']}", data={"action": "burn", "csrf": token}).status_code == 422
    empty = {"action": "edit", "instruction": " ", "csrf": token}
    assert client.post(f"/{TOKEN}/example/{e['a1']}", data=empty).status_code == 422
    assert client.post(f"/{TOKEN}/example/99999", data={"action": "reject", "csrf": token}).status_code == 404
    with sqlite3.connect(run_dir / "run.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM review").fetchone()[0] == 0


def test_exports_honour_the_review(run_dir: Path, tmp_path: Path) -> None:
    e = ids(run_dir)
    store = RunStore.open(run_dir, write=True)
    decide(store.conn, e["a0"], "reject", "ada")  # sampled
    decide(store.conn, e["a1"], "edit", "ada", edited=("Rewrite letter one formally", "", "Dear Madam"))  # sampled
    decide(store.conn, e["a2"], "accept", "bo")
    store.close()

    sample = export(run_dir, "sample", tmp_path)
    assert [r["id"] for r in sample] == [e["a1"], e["b0"]]
    edited = sample[0]
    assert edited["instruction"] == "Rewrite letter one formally" and edited["output"] == "Dear Madam"
    assert edited["review"]["decision"] == "edited" and edited["review"]["reviewer"] == "ada"
    assert edited["review"]["original"]["instruction"] == "Rewrite letter 1 formally"
    assert "review" not in sample[1]

    kept = export(run_dir, "kept", tmp_path)
    assert e["a0"] not in [r["id"] for r in kept] and len(kept) == 4
    reviewed = export(run_dir, "reviewed", tmp_path)
    assert [(r["id"], r["review"]["decision"]) for r in reviewed] == [(e["a1"], "edited"), (e["a2"], "accepted")]

    alpaca = tmp_path / "sample.json"
    assert main(["export", "-r", str(run_dir), "--which", "sample", "--out", str(alpaca)]) == 0
    text = alpaca.read_text()
    assert "Rewrite letter 0" not in text and "Rewrite letter 1" not in text  # neither rejected nor pre-edit text
    assert "Rewrite letter one formally" in text


def test_undo_restores_the_example(run_dir: Path, tmp_path: Path) -> None:
    e = ids(run_dir)
    store = RunStore.open(run_dir, write=True)
    decide(store.conn, e["a0"], "reject", "ada")
    decide(store.conn, e["a0"], "undo", "ada")
    history = store.conn.execute("SELECT decision FROM review_history ORDER BY id").fetchall()
    store.close()
    assert [h[0] for h in history] == ["reject", "undo"]
    assert e["a0"] in [r["id"] for r in export(run_dir, "sample", tmp_path)]


def test_a_run_never_reviewed_exports_as_before(run_dir: Path, tmp_path: Path) -> None:
    assert [r["id"] for r in export(run_dir, "sample", tmp_path)] == [ids(run_dir)[k] for k in ("a0", "a1", "b0")]
    assert export(run_dir, "reviewed", tmp_path) == []
    assert main(["export", "-r", str(run_dir), "--which", "bogus"]) == 2


def test_serving_commands_refuse_what_they_cannot_open(tmp_path: Path, capsys) -> None:
    assert main(["review", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    RunStore.create(tmp_path / "empty", "domain: generic\n").close()
    assert main(["review", str(tmp_path / "empty")]) == 2
    assert "no tree yet" in capsys.readouterr().err
    assert main(["human-eval", "serve", str(tmp_path / "nowhere")]) == 2
    assert "not a study folder" in capsys.readouterr().err
