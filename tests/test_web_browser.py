"""Both apps in a real browser: Playwright driving Debian's chromium (never a downloaded browser).

Set EI_SCREENSHOTS=DIR to keep the screenshots (the README's come from `EI_SCREENSHOTS=docs`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from explore_instruct.cli import main
from explore_instruct.web.study import create_study
from tests.web_support import free_port, make_run, read_links, serving, study_inputs

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (apt-get install chromium; .ci/run installs it)",
)


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def shot(page, tmp_path: Path, name: str) -> None:
    keep = os.environ.get("EI_SCREENSHOTS")
    page.screenshot(path=str(Path(keep) / name if keep else tmp_path / name))


def test_rater_votes_with_the_keyboard_changes_a_vote_and_the_report_shows_it(browser, tmp_path: Path) -> None:
    q, a, b = study_inputs(tmp_path / "in")
    study = create_study(q, a, b, tmp_path / "study", raters=3, seed=5).path
    port = free_port()
    base = f"http://127.0.0.1:{port}{read_links(study)['rater-1']}"
    with serving(["human-eval", "serve", str(study)], port):
        page = browser.new_page(viewport={"width": 1100, "height": 720})
        page.goto(base)
        page.wait_for_url(f"{base}/1")
        page.keyboard.press("1")  # left is better
        page.wait_for_url(f"{base}/2")
        assert "1 of 6 voted" in page.inner_text("#progress")
        page.keyboard.press("2")  # right is better
        page.wait_for_url(f"{base}/3")
        page.keyboard.press("ArrowLeft")  # back to item 2
        page.wait_for_url(f"{base}/2")
        assert "Right is better" in page.inner_text("#current-vote")
        page.keyboard.press("3")  # change it to a tie
        page.wait_for_url(f"{base}/3")
        page.keyboard.press("ArrowLeft")
        page.wait_for_url(f"{base}/2")
        assert "Tie" in page.inner_text("#current-vote")
        page.fill("#comment", "both fine")  # typing in the comment box is not a shortcut
        assert page.url == f"{base}/2"
        for n in range(1, 7):  # the answer holding a <script> shows as text and never runs
            page.goto(f"{base}/{n}")
            assert page.title() != "pwned"
            if "<script>" in page.inner_text("main"):
                break
        else:
            pytest.fail("the <script> answer was not shown as text")
        page.goto(f"{base}/2")
        shot(page, tmp_path, "human-eval.png")

    assert main(["human-eval", "report", str(study), "--bootstrap", "200"]) == 0
    rater = json.loads((study / "report.json").read_text())["per_rater"][0]
    assert rater["name"] == "rater-1" and rater["tie"] == 1 and rater["win"] + rater["lose"] == 1


def test_reviewer_rejects_an_example_and_the_export_leaves_it_out(browser, tmp_path: Path) -> None:
    store = make_run(tmp_path / "run")
    rejected = next(r for r in store.examples() if r.key == "a0")
    store.close()
    port = free_port()
    with serving(["review", str(tmp_path / "run"), "--reviewer", "ada"], port) as server:
        assert server.stdout is not None
        url = next(m.group(0) for line in server.stdout if (m := re.search(r"http://\S+/[0-9a-f]{32}/", line)))
        page = browser.new_page(viewport={"width": 1100, "height": 720})
        page.goto(url)
        assert "5 written" in page.inner_text(".tree")
        shot(page, tmp_path, "review-tree.png")
        page.click("text=Formal rewriting")
        page.wait_for_selector(f"#ex-{rejected.id}")
        page.click(f"#ex-{rejected.id} button[value=reject]")
        page.wait_for_selector(f"#ex-{rejected.id}.rejected")
        assert "rejected by ada" in page.inner_text(f"#ex-{rejected.id}")
        page.fill("#search", "letter 2")
        page.wait_for_selector("text=1 instruction(s)")
        page.go_back()
        page.wait_for_selector(f"#ex-{rejected.id}")
        shot(page, tmp_path, "review-task.png")

    out = tmp_path / "sample.jsonl"
    assert main(["export", "-r", str(tmp_path / "run"), "-f", "jsonl", "--which", "sample", "--out", str(out)]) == 0
    exported = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert rejected.id not in exported and len(exported) == 2
