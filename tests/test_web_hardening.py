"""Both web apps against hostile requests: bodies (forged links, uploads, oversize), ids that are no
ids, decisions the page does not offer; answers shown as sanitised Markdown; links printed at serve time."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from explore_instruct.cli import main
from explore_instruct.cli import web as web_cli
from explore_instruct.review import decide
from explore_instruct.runstore import RunStore
from explore_instruct.web import review_app, study_app
from explore_instruct.web.guard import BODY_LIMIT
from explore_instruct.web.markdown import render_markdown
from explore_instruct.web.review_data import RunReview
from explore_instruct.web.study import Study, create_study
from tests.web_support import form_token, free_port, make_run, read_links, serving, study_inputs

CHUNK = 64 * 1024
BIG = 8 * 1024 * 1024  # a body far over the cap: the app must not read it
REVIEW_TOKEN = "ab" * 16
FORGED = "cd" * 16
BOUNDARY = "xYzBoundary"


# --- driving an app at the ASGI level, counting the body bytes it reads ----------------------------


def multipart(total: int) -> Iterator[bytes]:
    """An upload of `total` bytes, as a browser would send a file field."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="choice"\r\n\r\nleft\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="f"; filename="a.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    for _ in range(total // CHUNK):
        yield b"a" * CHUNK
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def form_field(total: int) -> Iterator[bytes]:
    """A url-encoded vote whose comment is `total` bytes long."""
    yield b"choice=left&comment="
    for _ in range(total // CHUNK):
        yield b"a" * CHUNK


def drive(app, method: str, path: str, headers: dict[str, str], chunks: Iterable[bytes]) -> tuple[int, dict, int]:
    """(status, response headers, body bytes the app consumed) for one request streamed in chunks."""
    consumed = 0
    source = iter(chunks)
    ended = False
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal consumed, ended
        chunk = None if ended else next(source, None)
        if chunk is None:
            if ended:
                await asyncio.Event().wait()  # like a server: nothing more until the client goes
            ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        consumed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def run() -> None:
        await asyncio.wait_for(app(scope, receive, send), timeout=120)  # a guard against a hang only

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, consumed


MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "transfer-encoding": "chunked"}
CHUNKED_FORM = {"content-type": "application/x-www-form-urlencoded", "transfer-encoding": "chunked"}


@pytest.fixture
def study(tmp_path: Path) -> Path:
    q, a, b = study_inputs(tmp_path / "in")
    return create_study(q, a, b, tmp_path / "study", raters=2, seed=3).path


@pytest.fixture
def opened(study: Path) -> Iterator[Study]:
    s = Study(study)
    yield s
    s.close()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    make_run(tmp_path / "run").close()
    return tmp_path / "run"


@pytest.fixture
def review(run_dir: Path) -> Iterator[RunReview]:
    r = RunReview(run_dir, "ada")
    yield r
    r.close()


def stored_votes(study: Path) -> int:
    with sqlite3.connect(study / "study.db") as conn:
        return conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]


def example_ids(run_dir: Path) -> dict[str, int]:
    with sqlite3.connect(run_dir / "run.db") as conn:
        return dict(conn.execute("SELECT key, id FROM examples"))


def review_form_token(client: TestClient, run_dir: Path) -> str:
    """The form token of a task page (the tree has no forms)."""
    with sqlite3.connect(run_dir / "run.db") as conn:
        node = conn.execute("SELECT id FROM nodes WHERE name = 'Formal rewriting'").fetchone()[0]
    return form_token(client.get(f"/{REVIEW_TOKEN}/task/{node}").text)


def reviewed(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "run.db") as conn:
        return conn.execute("SELECT COUNT(*) FROM review").fetchone()[0]


# --- 7. bodies are checked before they are read ----------------------------------------------------


def test_a_forged_link_never_reads_the_body(opened: Study, study: Path) -> None:
    app = study_app.create_app(opened)
    forged = "/r/" + "0" * 32 + "/1"
    for headers, body in ((MULTIPART, multipart(BIG)), (CHUNKED_FORM, form_field(BIG))):
        status, _, consumed = drive(app, "POST", forged, headers, body)
        assert (status, consumed) == (404, 0)
    owner = read_links(study)["owner"]  # the owner's page takes no post either
    assert drive(app, "POST", f"{owner}/1", CHUNKED_FORM, form_field(BIG))[::2] == (404, 0)


def test_a_rater_link_refuses_uploads_and_bodies_over_the_cap(opened: Study, study: Path) -> None:
    app = study_app.create_app(opened)
    item = read_links(study)["rater-1"] + "/1"
    status, headers, consumed = drive(app, "POST", item, MULTIPART, multipart(BIG))
    assert (status, consumed) == (415, 0)
    assert "script-src 'self'" in headers["content-security-policy"] and headers["connection"] == "close"
    declared = {"content-type": "application/x-www-form-urlencoded", "content-length": str(BIG)}
    assert drive(app, "POST", item, declared, form_field(BIG))[::2] == (413, 0)
    status, _, consumed = drive(app, "POST", item, CHUNKED_FORM, form_field(BIG))  # no length: counted as it streams
    assert status == 413 and consumed <= BODY_LIMIT + CHUNK
    assert stored_votes(study) == 0


def test_the_review_app_checks_its_token_and_the_body_first(review: RunReview, run_dir: Path) -> None:
    app = review_app.create_app(review, REVIEW_TOKEN)
    target = f"/example/{example_ids(run_dir)['a1']}"
    assert drive(app, "POST", f"/{FORGED}{target}", MULTIPART, multipart(BIG))[::2] == (404, 0)
    assert drive(app, "POST", f"/{REVIEW_TOKEN}{target}", MULTIPART, multipart(BIG))[::2] == (415, 0)
    status, _, consumed = drive(app, "POST", f"/{REVIEW_TOKEN}{target}", CHUNKED_FORM, form_field(BIG))
    assert status == 413 and consumed <= BODY_LIMIT + CHUNK
    assert reviewed(run_dir) == 0


def push(port: int, path: str, content_type: str, total: int) -> int:
    """POST a chunked body of `total` bytes over a raw socket; the bytes the server let us send."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(60)  # a guard against a server that stops reading without closing
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        sock.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
        frame = f"{CHUNK:x}\r\n".encode() + b"a" * CHUNK + b"\r\n"
        try:
            while sent < total:
                sock.sendall(frame)
                sent += CHUNK
            sock.sendall(b"0\r\n\r\n")
            sock.recv(4096)
        except (ConnectionError, TimeoutError):
            pass  # the server closed (or stopped reading): what it took is what was sent before
    return sent


def peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the server's memory")
def test_a_live_server_stops_reading_and_stays_flat(study: Path) -> None:
    total = 64 * 1024 * 1024
    port = free_port()
    with serving(["human-eval", "serve", str(study)], port) as server:
        before = peak_rss_kib(server.pid)
        forged = push(port, "/r/" + "0" * 32 + "/1", f"multipart/form-data; boundary={BOUNDARY}", total)
        rater = push(port, read_links(study)["rater-1"] + "/1", "application/x-www-form-urlencoded", total)
        grown = peak_rss_kib(server.pid) - before
    # What was sent beyond the cap sits in the kernel's socket buffers (a few MiB on loopback); a
    # server that reads the body takes all of it.
    assert forged < total // 2 and rater < total // 2
    assert grown < 16 * 1024  # KiB of peak RSS: nothing held the bodies
    assert stored_votes(study) == 0


# --- 8. ids that are not ids -----------------------------------------------------------------------

NOT_IDS = ("abc", "1.5", "-1", "+1", "1_0", str(2**63), "9" * 40, "%20")


def test_study_ids_that_are_no_ids_are_the_plain_404(opened: Study, study: Path) -> None:
    with TestClient(study_app.create_app(opened), follow_redirects=False) as client:
        unknown = client.get("/no/such/page").text
        home = read_links(study)["rater-1"]
        token = form_token(client.get(f"{home}/1").text)
        forged = "/r/" + "0" * 32
        for bad in NOT_IDS:
            for base in (home, forged):
                page = client.get(f"{base}/{bad}")
                assert (page.status_code, page.text) == (404, unknown), (base, bad)
                post = client.post(f"{base}/{bad}", data={"choice": "left", "csrf": token})
                assert (post.status_code, post.text) == (404, unknown), (base, bad)
        assert client.get(f"{home}/{2**63 - 1}").status_code == 404  # the largest id SQLite holds: no such item
    assert stored_votes(study) == 0


def test_review_ids_that_are_no_ids_are_the_plain_404(review: RunReview, run_dir: Path) -> None:
    with TestClient(review_app.create_app(review, REVIEW_TOKEN), follow_redirects=False) as client:
        unknown = client.get("/no/such/page").text
        token = review_form_token(client, run_dir)
        for bad in NOT_IDS:
            for t in (REVIEW_TOKEN, FORGED):
                for path in (f"/{t}/task/{bad}", f"/{t}/example/{bad}"):
                    page = client.get(path)
                    assert (page.status_code, page.text) == (404, unknown), path
                post = client.post(f"/{t}/example/{bad}", data={"action": "reject", "csrf": token})
                assert (post.status_code, post.text) == (404, unknown), (t, bad)
        assert client.get(f"/{REVIEW_TOKEN}/task/{2**63 - 1}").status_code == 404
    assert reviewed(run_dir) == 0


def test_a_form_missing_a_field_is_a_plain_page(opened: Study, study: Path) -> None:
    with TestClient(study_app.create_app(opened), follow_redirects=False) as client:
        home = read_links(study)["rater-1"]
        token = form_token(client.get(f"{home}/1").text)
        r = client.post(f"{home}/1", data={"csrf": token})
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html") and "reload" in r.text


# --- 9. decisions only where the page offers them --------------------------------------------------


def test_seed_and_dropped_examples_take_no_decision(review: RunReview, run_dir: Path) -> None:
    e = example_ids(run_dir)
    with TestClient(review_app.create_app(review, REVIEW_TOKEN), follow_redirects=False) as client:
        token = review_form_token(client, run_dir)
        for key in ("s0", "a-bad", "b1"):  # a seed, a quality drop, a diversity-filter drop
            for action in ("accept", "reject", "edit", "undo"):
                fields = {"action": action, "instruction": "changed", "output": "changed", "csrf": token}
                r = client.post(f"/{REVIEW_TOKEN}/example/{e[key]}", data=fields)
                assert r.status_code == 422 and "takes no review decision" in r.text, (key, action)
            assert client.get(f"/{REVIEW_TOKEN}/example/{e[key]}").status_code == 404  # no edit form either
        assert client.post(f"/{REVIEW_TOKEN}/example/{e['a1']}", data={"action": "reject", "csrf": token}).is_redirect
    with sqlite3.connect(run_dir / "run.db") as conn:
        assert conn.execute("SELECT example_id FROM review").fetchall() == [(e["a1"],)]
        assert conn.execute("SELECT COUNT(*) FROM review_history").fetchone()[0] == 1


def test_the_review_library_refuses_them_too(run_dir: Path) -> None:
    e = example_ids(run_dir)
    store = RunStore.open(run_dir, write=True)
    try:
        with pytest.raises(Exception, match="a seed example takes no review decision"):
            decide(store.conn, e["s0"], "reject", "ada")
        with pytest.raises(Exception, match="a dropped example takes no review decision"):
            decide(store.conn, e["b1"], "accept", "ada")
    finally:
        store.close()
    assert reviewed(run_dir) == 0


# --- 10. answers as sanitised Markdown -------------------------------------------------------------

HOSTILE = (
    "**bold** and *soft*\n\n- first\n- second\n\n"
    "[run](javascript:alert(1)) [run2](JaVaScRiPt:alert(2)) [run3](java&#115;cript:alert(3)) "
    "[vb](vbscript:msgbox(1)) <javascript:alert(4)> ![img](data:image/png;base64,AAAA) "
    "[data](data:text/html;base64,PHNjcmlwdD4=) <img src=x onerror=alert(5)> <b onclick=alert(6)>b</b> "
    '[site](https://example.org "t") <https://example.org/auto> <mailto:someone@example.org>\n\n'
    "```\n<script>alert(7)</script>\n```\n"
)


def assert_safe(html: str) -> None:
    lower = html.lower()
    if "<main>" in lower:  # a page: its own scripts are in the head
        lower = lower.split("<main>", 1)[1]
    for bad in ("<script", "<img", "<b ", "onerror=alert(5)>", 'javascript:alert(1)"', 'vbscript:msgbox(1)"'):
        assert bad not in lower, bad
    hrefs = [h.split('"')[1] for h in lower.split("href=")[1:]]
    hrefs = [h for h in hrefs if not h.startswith("/")]  # the page's own navigation
    assert hrefs and all(h.startswith(("https://", "mailto:")) for h in hrefs), hrefs


def test_markdown_is_rendered_and_sanitised() -> None:
    html = str(render_markdown(HOSTILE))
    assert "<strong>bold</strong>" in html and "<em>soft</em>" in html and "<li>first</li>" in html
    assert '<a href="https://example.org" title="t" rel="noopener noreferrer nofollow" target="_blank">' in html
    assert "&lt;script&gt;alert(7)&lt;/script&gt;" in html and "&lt;img src=x onerror=alert(5)&gt;" in html
    assert "[run](javascript:alert(1))" in html  # not a link: shown as written
    assert_safe(html)


def test_raters_read_answers_as_markdown(tmp_path: Path) -> None:
    q, a, b = study_inputs(tmp_path / "in")
    answers = [json.loads(line) for line in b.read_text().splitlines()]
    answers[2]["answer"] = HOSTILE
    b.write_text("".join(json.dumps(r) + "\n" for r in answers))
    made = create_study(q, a, b, tmp_path / "study", raters=1, seed=1).path
    opened = Study(made)
    with TestClient(study_app.create_app(opened), follow_redirects=False) as client:
        home = read_links(made)["rater-1"]
        pages = [client.get(f"{home}/{n}").text for n in range(1, 7)]
    opened.close()
    hostile = next(p for p in pages if "<strong>bold</strong>" in p)
    assert "<ol>\n<li>The Patient Loaf</li>" in "".join(pages)  # a numbered list in another answer
    assert_safe(hostile)


def test_reviewers_read_outputs_as_markdown(review: RunReview, run_dir: Path) -> None:
    e = example_ids(run_dir)
    with TestClient(review_app.create_app(review, REVIEW_TOKEN), follow_redirects=False) as client:
        token = review_form_token(client, run_dir)
        fields = {"action": "edit", "instruction": "Rewrite", "input": "", "output": HOSTILE, "csrf": token}
        assert client.post(f"/{REVIEW_TOKEN}/example/{e['a0']}", data=fields).is_redirect
        with sqlite3.connect(run_dir / "run.db") as conn:
            node = conn.execute("SELECT node_id FROM examples WHERE id = ?", (e["a0"],)).fetchone()[0]
        page = client.get(f"/{REVIEW_TOKEN}/task/{node}").text
    assert "<strong>bold</strong>" in page and "<li>first</li>" in page
    assert_safe(page)


# --- 11. serve prints the links with the address it listens on -------------------------------------


@pytest.fixture
def no_serving(monkeypatch: pytest.MonkeyPatch) -> list:
    """Stand in for the server: record the port of the socket it would serve, return at once."""
    served: list[int] = []
    monkeypatch.setattr(web_cli, "_run", lambda app, sock: served.append(sock.getsockname()[1]))
    return served


def printed_links(lines: Iterable[str]) -> dict[str, str]:
    """WHO and URL of every printed `WHO  http://...` line."""
    pairs = (line.split() for line in lines)
    return {p[0]: p[1] for p in pairs if len(p) == 2 and p[1].startswith("http://")}


def test_serve_prints_every_link_with_the_real_port(study: Path, no_serving: list, capsys) -> None:
    capsys.readouterr()
    port = free_port()
    assert main(["human-eval", "serve", str(study), "--port", str(port)]) == 0
    links = read_links(study)
    wanted = {w: f"http://127.0.0.1:{port}{p}" for w, p in links.items()}
    assert printed_links(capsys.readouterr().out.splitlines()) == wanted
    assert main(["human-eval", "serve", str(study), "--port", "0"]) == 0  # any free port: the one it got
    real = no_serving[-1]
    assert real != 0
    assert printed_links(capsys.readouterr().out.splitlines())["owner"] == f"http://127.0.0.1:{real}{links['owner']}"


def test_serve_on_a_busy_port_is_one_line(study: Path, no_serving: list, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["human-eval", "serve", str(study), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert f"--port {port}: cannot listen there" in captured.err and "/r/" not in captured.out
    assert no_serving == []


def test_serve_without_the_links_file_says_so(study: Path, no_serving: list, capsys) -> None:
    (study / "links.txt").unlink()
    assert main(["human-eval", "serve", str(study), "--port", "0"]) == 0
    captured = capsys.readouterr()
    assert "links.txt is gone" in captured.err.replace("\n", "") and "/r/" not in captured.out


def test_a_live_serve_prints_the_links_of_its_port(study: Path) -> None:
    port = free_port()
    with serving(["human-eval", "serve", str(study)], port) as server:
        assert server.stdout is not None
        wanted = {w: f"http://127.0.0.1:{port}{p}" for w, p in read_links(study).items()}
        fd = server.stdout.fileno()
        os.set_blocking(fd, False)  # all was printed before it listened: read what is there, never wait
        printed = b""
        while chunk := os.read(fd, 65536) if select.select([fd], [], [], 0)[0] else b"":
            printed += chunk
    assert printed_links(printed.decode().splitlines()) == wanted
