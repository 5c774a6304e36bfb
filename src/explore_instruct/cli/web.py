"""Web app commands: `human-eval create | serve | report` and `review`.

The apps need the `[web]` extra; the commands import it only when they run.
"""

from __future__ import annotations

import getpass
import ipaddress
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from explore_instruct.cli.vocabulary import AliasedCommand, Group, OldRunDir, RunDirOption, run_dir_given
from explore_instruct.errors import UserError

console = Console(stderr=True)
out_console = Console()

Opt = typer.Option
Host = Annotated[str, Opt(help="Address to listen on; anything but loopback lets other machines reach the app.")]
Port = Annotated[int, Opt(help="Port to listen on (0: any free port; the links printed name the real one).")]

human_eval_app = typer.Typer(
    cls=Group,
    name="human-eval",
    help="Blind pairwise human evaluation: make a study, serve it to raters, report the results.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _require_web() -> None:
    from explore_instruct.train.deps import require

    require("fastapi", "uvicorn", "python_multipart", "markdown_it", extra="web")


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port before anything is printed, so a busy port is one error line
    and the links printed name the port really listened on."""
    if not 0 <= port < 65536:
        raise UserError(f"--port {port}: choose a port between 1 and 65535 (or 0 for any free one)")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: {exc.strerror}") from None
    family, kind, proto, _, address = min(found, key=lambda info: info[0] != socket.AF_INET)  # IPv4 first
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"--host {host} --port {port}: cannot listen there ({exc.strerror})") from None
    return sock


def _serve(app: object, host: str, port: int, what: str, links: list[tuple[str, str]]) -> None:
    """Listen, print each secret link (`who`, URL path) with the real address, serve until Ctrl+C.

    The links go to stdout on purpose, once; the server logs no requests, so no token reaches a log.
    """
    sock = _listen(host, port)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if not (address.is_loopback if address is not None else host == "localhost"):
        console.print(f"warning: listening on {host}: anyone who can reach it and holds a link gets in")
    if address is not None and address.is_unspecified:
        console.print(f"the links below name {host}: give raters this machine's own address instead")
    real_port = sock.getsockname()[1]
    base = f"http://{host if ':' not in host else f'[{host}]'}:{real_port}"
    console.print(f"serving {what} on {base} (Ctrl+C stops)", highlight=False)
    for who, path in links:
        out_console.print(f"{who}\t{base}{path}" if who else f"{base}{path}", highlight=False, soft_wrap=True)
    try:
        _run(app, sock)
    finally:
        sock.close()


def _run(app: object, sock: socket.socket) -> None:
    """uvicorn on the bound socket until Ctrl+C; warnings only, and no access log."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])  # type: ignore[arg-type]


@human_eval_app.command("create", cls=AliasedCommand)
def create(
    questions: Annotated[Path, Opt(help="Question file (question_id, question, class).")],
    baseline: Annotated[Path, Opt(help="Baseline answers (JSONL from `answer`).")],
    candidate: Annotated[Path, Opt(help="Candidate answers (JSONL from `answer`).")],
    raters: Annotated[int, Opt(help="Number of raters (each gets a secret link).")],
    out: Annotated[Path, Opt("--out", "-o", help="The study folder to create.")],
    per_rater: Annotated[int | None, Opt(help="Items per rater (default: every item).")] = None,
    min_votes: Annotated[
        int | None, Opt(help="Votes every item must get (default: all raters, or what --per-rater allows).")
    ] = None,
    seed: Annotated[int, Opt(help="Seed of the assignment, the item order and the sides.")] = 0,
) -> None:
    """Make a study folder; print each secret link (also in STUDY/links.txt, owner-only; `serve` prints them again)."""
    _require_web()
    from explore_instruct.web.study import LINKS_FILE, create_study

    made = create_study(
        questions, baseline, candidate, out, raters=raters, per_rater=per_rater, min_votes=min_votes, seed=seed
    )
    console.print(
        f"study {made.path}: {made.items} items, {raters} raters, every item gets at least {made.min_votes} vote(s). "
        f"Secret links for the default address (kept in {made.path / LINKS_FILE}, mode 0600; "
        f"'human-eval serve {made.path}' prints them again with the address it listens on):",
        highlight=False,
    )
    for who, path in made.links:
        out_console.print(f"{who}\thttp://127.0.0.1:8000{path}", highlight=False, soft_wrap=True)


@human_eval_app.command("serve", cls=AliasedCommand)
def serve(
    study: Annotated[Path, typer.Argument(metavar="STUDY", help="The study folder.")],
    host: Host = "127.0.0.1",
    port: Port = 8000,
) -> None:
    """Serve the rater and owner pages of a study; print the owner's and each rater's link for this address."""
    _require_web()
    from explore_instruct.web.study import LINKS_FILE, Study, read_links
    from explore_instruct.web.study_app import create_app

    opened = Study(study)
    try:
        links = read_links(study)
        if not links:
            console.print(f"{study / LINKS_FILE} is gone: the links cannot be printed again", highlight=False)
        _serve(create_app(opened), host, port, f"study {study}", links)
    finally:
        opened.close()


@human_eval_app.command("report", cls=AliasedCommand)
def report(
    study: Annotated[Path, typer.Argument(metavar="STUDY", help="The study folder.")],
    judge: Annotated[
        Path | None, Opt(help="A `judge` result JSON: agreement of the LLM judge with the humans.")
    ] = None,
    out: Annotated[
        Path | None, Opt("--out", "-o", help="Result JSON (default STUDY/report.json); Markdown beside it.")
    ] = None,
    bootstrap: Annotated[int, Opt(help="Bootstrap resamples for the 95 % intervals.")] = 2000,
    seed: Annotated[int, Opt(help="Seed of the bootstrap.")] = 0,
) -> None:
    """Win:Tie:Lose and beat rate per rater, by majority and per class; rater agreement; judge agreement."""
    import json

    _require_web()
    from explore_instruct.datafile import atomic_write_text
    from explore_instruct.train.deps import require
    from explore_instruct.web.study import Study
    from explore_instruct.web.study_report import build_report, markdown

    require("statsmodels", "krippendorff", extra="web")
    if bootstrap < 100:
        raise UserError("--bootstrap must be at least 100")
    opened = Study(study)
    try:
        result = build_report(opened, judge_path=judge, resamples=bootstrap, seed=seed)
    finally:
        opened.close()
    target = out or study / "report.json"
    table = markdown(result)
    atomic_write_text(target, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(target.with_suffix(".md"), table)
    out_console.print(table, highlight=False, soft_wrap=True, markup=False)
    console.print(f"results -> {target}, table -> {target.with_suffix('.md')}", highlight=False)


def review(
    run_dir: RunDirOption = None,
    old_run_dir: OldRunDir = None,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    reviewer: Annotated[str | None, Opt(help="Name stored with each decision (default: your user name).")] = None,
) -> None:
    """Browse a run's task tree and examples; accept, reject or edit examples before export."""
    _require_web()
    from explore_instruct.web.common import new_token
    from explore_instruct.web.review_app import create_app
    from explore_instruct.web.review_data import RunReview

    run_dir = run_dir_given(run_dir, old_run_dir)
    name = reviewer or getpass.getuser()
    opened = RunReview(run_dir, name)
    token = new_token()
    try:
        _serve(create_app(opened, token), host, port, f"the review of {run_dir} as {name!r}", [("", f"/{token}/")])
    finally:
        opened.close()


def register(app: typer.Typer) -> None:
    app.add_typer(human_eval_app)
    app.command("review", cls=AliasedCommand)(review)
