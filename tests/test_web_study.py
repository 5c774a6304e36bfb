"""Human-evaluation studies: `human-eval create`, and every rater and owner route over HTTP."""

from __future__ import annotations

import sqlite3
import stat
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from explore_instruct.cli import main
from explore_instruct.web.study import Study, create_study
from explore_instruct.web.study_app import create_app
from tests.web_support import BASELINE_MODEL, CANDIDATE_MODEL, SCRIPT, form_token, read_links, study_inputs


def create(tmp_path: Path, *extra: str, raters: int = 3) -> Path:
    q, a, b = study_inputs(tmp_path / "in")
    out = tmp_path / "study"
    args = ["human-eval", "create", "--questions", str(q), "--baseline", str(a), "--candidate", str(b)]
    assert main([*args, "--raters", str(raters), "--out", str(out), *extra]) == 0
    return out


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return create(tmp_path)


@pytest.fixture
def client(study: Path):
    opened = Study(study)
    with TestClient(create_app(opened), follow_redirects=False) as c:
        yield c
    opened.close()


def rater_path(study: Path, n: int = 1) -> str:
    return read_links(study)[f"rater-{n}"]


def votes(study: Path) -> list[tuple]:
    with sqlite3.connect(study / "study.db") as conn:
        return conn.execute(
            "SELECT rater_id, item_id, choice, comment FROM votes ORDER BY rater_id, item_id"
        ).fetchall()


# --- create --------------------------------------------------------------------------------------


def test_create_writes_owner_only_links_with_128_bit_tokens(study: Path, capsys) -> None:
    links = read_links(study)
    assert list(links) == ["owner", "rater-1", "rater-2", "rater-3"]
    tokens = [path.rsplit("/", 1)[1] for path in links.values()]
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens) and len(set(tokens)) == 4
    assert stat.S_IMODE((study / "links.txt").stat().st_mode) == 0o600
    db = (study / "study.db").read_bytes()
    assert not any(t.encode() in db for t in tokens)  # only digests are stored


def test_create_prints_each_link_once(tmp_path: Path, capsys) -> None:
    study = create(tmp_path)
    printed = capsys.readouterr().out
    for path in read_links(study).values():
        assert printed.count(path) == 1


def test_every_item_gets_the_requested_votes_with_per_rater(tmp_path: Path) -> None:
    study = create(tmp_path, "--per-rater", "4", "--min-votes", "3", raters=5)
    with sqlite3.connect(study / "study.db") as conn:
        rows = conn.execute("SELECT rater_id, item_id FROM assignments").fetchall()
    per_rater = Counter(r for r, _ in rows)
    per_item = Counter(i for _, i in rows)
    assert set(per_rater.values()) == {4}
    assert len(per_item) == 6 and min(per_item.values()) >= 3
    assert len(set(rows)) == len(rows)  # nobody sees an item twice


def test_too_few_slots_for_the_votes_is_one_line(tmp_path: Path, capsys) -> None:
    q, a, b = study_inputs(tmp_path / "in")
    args = ["human-eval", "create", "--questions", str(q), "--baseline", str(a), "--candidate", str(b)]
    code = main([*args, "--raters", "2", "--out", str(tmp_path / "s"), "--per-rater", "2", "--min-votes", "2"])
    assert code == 2
    assert "raise --per-rater to at least 6" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_answer_ids_that_do_not_match_the_questions_name_the_ids(tmp_path: Path, capsys) -> None:
    q, a, b = study_inputs(tmp_path / "in")
    b.write_text(b.read_text().replace('"q4"', '"q99"'))
    args = ["human-eval", "create", "--questions", str(q), "--baseline", str(a), "--candidate", str(b)]
    assert main([*args, "--raters", "2", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "q4" in err and "q99" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["in"]  # nothing half-built left beside it


def test_create_refuses_a_folder_in_use(study: Path, tmp_path: Path) -> None:
    q, a, b = study_inputs(tmp_path / "in")
    with pytest.raises(Exception, match="already exists"):
        create_study(q, a, b, study, raters=1)


# --- rater pages ---------------------------------------------------------------------------------


def test_rater_votes_goes_back_and_changes_the_vote(client: TestClient, study: Path) -> None:
    home = rater_path(study)
    first = client.get(home)
    assert first.status_code == 303 and first.headers["location"] == f"{home}/1"
    page = client.get(f"{home}/1")
    assert page.status_code == 200 and "Item 1 of 6" in page.text and "0 of 6 voted" in page.text
    token = form_token(page.text)
    r = client.post(f"{home}/1", data={"choice": "left", "comment": "clear", "csrf": token})
    assert r.status_code == 303 and r.headers["location"] == f"{home}/2"
    r = client.post(f"{home}/1", data={"choice": "both_bad", "csrf": token})  # back and change it
    assert votes(study) == [(1, votes(study)[0][1], "both_bad", "")]
    page = client.get(f"{home}/1")
    assert "1 of 6 voted" in page.text and 'value="both_bad" data-key="4" class="chosen"' in page.text


def test_rater_home_goes_to_the_first_open_item_then_to_done(client: TestClient, study: Path) -> None:
    home = rater_path(study)
    token = form_token(client.get(f"{home}/1").text)
    for n in (1, 2, 3, 4, 5, 6):
        client.post(f"{home}/{n}", data={"choice": "tie", "csrf": token})
        if n == 2:
            assert client.get(home).headers["location"] == f"{home}/3"
    assert client.get(home).headers["location"] == f"{home}/done"
    assert "6 of 6 voted" in client.get(f"{home}/done").text


def test_answers_are_escaped_and_inline_scripts_are_forbidden(client: TestClient, study: Path) -> None:
    home = rater_path(study)
    pages = [client.get(f"{home}/{n}") for n in range(1, 7)]
    text = "".join(p.text for p in pages)
    assert SCRIPT not in text
    assert "&lt;script&gt;document.title=" in text and "&lt;/script&gt;" in text  # shown as text
    csp = pages[0].headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert pages[0].headers["referrer-policy"] == "no-referrer"


def test_rater_pages_never_name_the_models(client: TestClient, study: Path) -> None:
    home = rater_path(study)
    token = form_token(client.get(f"{home}/1").text)
    bodies = [client.get(f"{home}/{n}").text for n in range(1, 7)]
    bodies.append(client.post(f"{home}/1", data={"choice": "left", "csrf": token}, follow_redirects=True).text)
    bodies.append(client.get(f"{home}/done").text)
    for body in bodies:
        for secret in (BASELINE_MODEL, CANDIDATE_MODEL, "baseline", "candidate"):
            assert secret not in body


def test_sides_are_randomised_and_recorded(tmp_path: Path) -> None:
    study = create(tmp_path, raters=4)
    with sqlite3.connect(study / "study.db") as conn:
        sides = Counter(r[0] for r in conn.execute("SELECT candidate_side FROM assignments"))
    assert sides["left"] > 0 and sides["right"] > 0


# --- refusals ------------------------------------------------------------------------------------


def test_a_wrong_token_is_the_same_plain_404_as_an_unknown_page(client: TestClient, study: Path) -> None:
    unknown = client.get("/no/such/page")
    home = rater_path(study)
    wrong = home[:-1] + ("0" if home[-1] != "0" else "1")
    for path in (wrong, f"{wrong}/1", f"{wrong}/done", "/owner/" + "0" * 32, "/r/short"):
        r = client.get(path)
        assert r.status_code == 404 and r.text == unknown.text
    assert client.post(f"{wrong}/1", data={"choice": "left", "csrf": "x"}).status_code == 404


def test_a_rater_cannot_reach_items_outside_their_list(tmp_path: Path) -> None:
    study = create(tmp_path, "--per-rater", "2", "--min-votes", "1", raters=3)
    opened = Study(study)
    with TestClient(create_app(opened), follow_redirects=False) as client:
        home = rater_path(study)
        token = form_token(client.get(f"{home}/1").text)
        assert client.get(f"{home}/3").status_code == 404
        assert client.get(f"{home}/0").status_code == 404
        assert client.post(f"{home}/3", data={"choice": "left", "csrf": token}).status_code == 404
    opened.close()
    assert votes(study) == []


def test_the_owner_page_needs_the_owner_token(client: TestClient, study: Path) -> None:
    links = read_links(study)
    owner = links["owner"]
    rater_token = rater_path(study).rsplit("/", 1)[1]
    assert client.get(f"/owner/{rater_token}").status_code == 404
    page = client.get(owner)
    assert page.status_code == 200 and "rater-3" in page.text
    assert client.get(f"/r/{owner.rsplit('/', 1)[1]}").status_code == 404  # the owner is no rater


def test_posts_without_the_session_token_are_refused(client: TestClient, study: Path) -> None:
    home = rater_path(study)
    token = form_token(client.get(f"{home}/1").text)
    assert client.post(f"{home}/1", data={"choice": "left"}).status_code == 403
    assert client.post(f"{home}/1", data={"choice": "left", "csrf": "0" * 64}).status_code == 403
    other = TestClient(client.app, follow_redirects=False)  # another browser: its own session cookie
    other.get(f"{home}/1")
    assert other.post(f"{home}/1", data={"choice": "left", "csrf": token}).status_code == 403
    assert client.post(f"{home}/1", data={"choice": "sideways", "csrf": token}).status_code == 422
    assert votes(study) == []


def test_no_url_reaches_the_file_system(client: TestClient) -> None:
    assert client.get("/static/htmx.min.js").status_code == 200
    for path in (
        "/static/../study.db",
        "/static/..%2fstudy.db",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static/templates",
        "/study.db",
        "/links.txt",
        "/docs",
        "/openapi.json",
    ):
        assert client.get(path).status_code == 404, path


def test_vendored_htmx_keeps_its_licence_header(client: TestClient) -> None:
    body = client.get("/static/htmx.min.js").text
    assert body.startswith("/*! htmx 2.") and "Zero-Clause BSD" in body.splitlines()[0]
