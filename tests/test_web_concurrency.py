"""Many raters at once against a real server on 127.0.0.1, and a server killed mid-study."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path

import httpx

from explore_instruct.web.study import create_study
from tests.web_support import form_token, free_port, read_links, serving, study_inputs

RATERS = 20


def make_study(tmp_path: Path, questions: int) -> Path:
    q, a, b = study_inputs(tmp_path / "in", n=questions)
    return create_study(q, a, b, tmp_path / "study", raters=RATERS, seed=1).path


def stored_votes(study: Path) -> list[tuple[int, int, str]]:
    with sqlite3.connect(study / "study.db") as conn:
        return conn.execute("SELECT rater_id, item_id, choice FROM votes").fetchall()


def rater_client(base: str, path: str) -> tuple[httpx.Client, str, str]:
    """A rater's own browser session: its cookie, its link's path, the form token of its session."""
    client = httpx.Client(base_url=base, timeout=30, follow_redirects=False)
    return client, path, form_token(client.get(f"{path}/1").text)


def run_threads(target, links: list[str], errors: list[str]) -> list[threading.Thread]:
    def guarded(link: str) -> None:
        try:
            target(link)
        except Exception as exc:  # a thread's exception would otherwise be lost
            errors.append(repr(exc))

    threads = [threading.Thread(target=guarded, args=(link,)) for link in links]
    for t in threads:
        t.start()
    return threads


def test_twenty_raters_voting_at_once_lose_nothing_and_duplicate_nothing(tmp_path: Path) -> None:
    items = 6
    study = make_study(tmp_path, items)
    links = [v for k, v in read_links(study).items() if k.startswith("rater-")]
    port = free_port()
    start = threading.Barrier(RATERS)
    failures: list[str] = []

    def rater(link: str) -> None:
        client, path, token = rater_client(f"http://127.0.0.1:{port}", link)
        start.wait(timeout=60)
        for choice in ("left", "right"):  # every vote twice: the second replaces the first
            for n in range(1, items + 1):
                r = client.post(f"{path}/{n}", data={"choice": choice, "csrf": token})
                if r.status_code != 303:
                    failures.append(f"{path}/{n}: {r.status_code}")
        client.close()

    with serving(["human-eval", "serve", str(study)], port):
        for t in run_threads(rater, links, failures):
            t.join(timeout=120)
    assert failures == []
    votes = stored_votes(study)
    assert len(votes) == RATERS * items
    assert len({(r, i) for r, i, _ in votes}) == RATERS * items
    assert {c for _, _, c in votes} == {"right"}


def test_a_killed_server_restarts_with_every_acknowledged_vote(tmp_path: Path) -> None:
    items = 24
    study = make_study(tmp_path, items)
    links = [v for k, v in read_links(study).items() if k.startswith("rater-")]
    port = free_port()
    acked: list[tuple[str, int]] = []
    lock = threading.Lock()
    enough = threading.Event()

    def rater(link: str) -> None:
        client, path, token = rater_client(f"http://127.0.0.1:{port}", link)
        for n in range(1, items + 1):
            try:
                r = client.post(f"{path}/{n}", data={"choice": "tie", "csrf": token})
            except httpx.TransportError:
                break  # the server is gone: this vote was never acknowledged
            if r.status_code == 303:
                with lock:
                    acked.append((path, n))
                    if len(acked) >= 120:
                        enough.set()
        client.close()

    errors: list[str] = []
    with serving(["human-eval", "serve", str(study)], port) as server:
        threads = run_threads(rater, links, errors)
        assert enough.wait(timeout=60), errors
        server.kill()  # SIGKILL: no shutdown handler runs
        server.wait(timeout=10)
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    with lock:
        acknowledged = set(acked)
    assert 120 <= len(acknowledged) < RATERS * items  # killed mid-study

    with serving(["human-eval", "serve", str(study)], port):
        seen = set()
        for link in links:
            overview = httpx.get(f"http://127.0.0.1:{port}{link}/done").text  # the rater's list of items
            voted = re.findall(r'href="[^"]+/(\d+)">Item \d+</a> <span class="ok">voted', overview)
            seen.update((link, int(n)) for n in voted)
    assert acknowledged <= seen
    assert len(stored_votes(study)) == len(seen)
