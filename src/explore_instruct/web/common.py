"""What both web apps share: templates with autoescaping (and a sanitised `markdown` filter), the
fixed set of static files, security headers, the body guard, a plain 404 for anything unknown (a
wrong token or an id that is no id included), and the CSRF guard.

No URL path ever reaches the file system: static files are a fixed table read from the package
once, and every other route looks things up in SQLite by token or integer id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import RequestResponseEndpoint

from explore_instruct.web.guard import BodyGuard
from explore_instruct.web.markdown import render_markdown

T = TypeVar("T")

SESSION_COOKIE = "ei_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
STATIC_FILES = {
    "htmx.min.js": "text/javascript",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
# Scripts and styles only from this server (no inline script can run, whatever an answer contains);
# no referrer, so a secret link never leaks to another site.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
NOT_FOUND_PAGE = "<!doctype html><title>Not found</title><p>Not found.</p>\n"
# A row id in a URL: digits that fit SQLite's 64-bit signed integer, nothing else.
ROW_ID = re.compile(r"[0-9]{1,19}")
SQLITE_MAX_INT = 2**63 - 1


@cache
def templates() -> Environment:
    """Jinja templates of the package; autoescaping is on for every template, whatever its name."""
    env = Environment(
        loader=PackageLoader("explore_instruct.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["markdown"] = render_markdown
    return env


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(templates().get_template(name).render(**context), status_code=status_code)


@cache
def _static(name: str) -> bytes:
    return resources.files("explore_instruct.web").joinpath("static", name).read_bytes()


def not_found() -> HTTPException:
    return HTTPException(status_code=404)


def row_id(text: str) -> int:
    """The integer id a URL segment names; anything else (a word, a sign, a number SQLite cannot
    hold) is the plain 404 of an unknown page."""
    if not ROW_ID.fullmatch(text) or int(text) > SQLITE_MAX_INT:
        raise not_found()
    return int(text)


def make_app(title: str, may_post: Callable[[str], bool]) -> FastAPI:
    """A FastAPI app without docs pages, with the static table, security headers and a plain 404.

    Only a path for which `may_post` is true (a form under a valid secret link) may send a body;
    every other request with one gets the plain 404 before a byte of it is read (see `guard`).
    """
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyGuard, may_post=may_post, not_found=NOT_FOUND_PAGE.encode("utf-8"))

    @app.middleware("http")
    async def security_headers(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def plain_errors(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return HTMLResponse(NOT_FOUND_PAGE, status_code=404)
        text = exc.detail if isinstance(exc.detail, str) else "Request refused."
        return render("error.html", status_code=exc.status_code, message=text)

    @app.exception_handler(RequestValidationError)
    async def plain_form_errors(request: Request, exc: RequestValidationError) -> Response:
        return render("error.html", status_code=422, message="The form is incomplete: reload the page and try again.")

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)  # no icon, and no 404 in the browser's console

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise not_found()
        return Response(_static(name), media_type=STATIC_FILES[name], headers={"Cache-Control": "max-age=3600"})

    return app


def new_token() -> str:
    """A random 128-bit token, as 32 hex digits."""
    return secrets.token_hex(16)


def token_digest(token: str) -> str:
    """What the database keeps of a token: its SHA-256, so a copy of the database opens no link."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def find_token(token: str, digests: Mapping[str, T]) -> T | None:
    """The value whose digest matches `token`, comparing every digest in constant time; else None."""
    wanted = token_digest(token)
    found: T | None = None
    for digest, value in digests.items():
        if secrets.compare_digest(digest, wanted):
            found = value
    return found


class CsrfGuard:
    """Per-session CSRF tokens: a random session cookie, and a form token that is its HMAC.

    A page hands out `token_for(request)`; a POST is accepted only when it carries that token
    (form field or header) for the session cookie it arrives with.
    """

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def session_id(self, request: Request) -> str | None:
        sid = request.cookies.get(SESSION_COOKIE, "")
        return sid if len(sid) == 32 and all(c in "0123456789abcdef" for c in sid) else None

    def _sign(self, sid: str) -> str:
        return hmac.new(self._secret, sid.encode("ascii"), hashlib.sha256).hexdigest()

    def start(self, request: Request) -> tuple[str, str | None]:
        """(form token, new session id to set as a cookie or None when the request has one)."""
        sid = self.session_id(request)
        if sid is not None:
            return self._sign(sid), None
        sid = new_token()
        return self._sign(sid), sid

    def set_cookie(self, response: Response, new_sid: str | None) -> Response:
        if new_sid is not None:
            response.set_cookie(SESSION_COOKIE, new_sid, httponly=True, samesite="strict", path="/")
        return response

    def check(self, request: Request, submitted: str | None) -> None:
        """Refuse (403) a POST whose token does not belong to its session."""
        sid = self.session_id(request)
        token = submitted or request.headers.get(CSRF_HEADER, "")
        if sid is None or not token or not secrets.compare_digest(self._sign(sid), token):
            raise HTTPException(status_code=403, detail="This form has expired: reload the page and try again.")
