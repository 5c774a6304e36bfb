"""What a request may send before the app reads it: a body only under a valid secret link, small,
and never an upload.

A pure ASGI layer in front of FastAPI: it answers before the form parser ever runs, so a forged
link or a huge body costs the server no memory. For a request that may carry a body, the body is
read here (at most the cap, counted as it streams, whatever Content-Length says) and handed on.
A refusal asks the server to close the connection, so the rest of the body is never read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A vote with its comment or an edited example is a few kilobytes; nothing the pages send comes near.
BODY_LIMIT = 64 * 1024
BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyGuard:
    """Refuse, before reading a byte of the body: a path `may_post` does not accept (the plain 404),
    an upload (`multipart/*`, 415), a Content-Length over `limit` (413). Then read the body, and
    refuse it (413) as soon as it streams past `limit`."""

    def __init__(
        self, app: ASGIApp, *, may_post: Callable[[str], bool], not_found: bytes, limit: int = BODY_LIMIT
    ) -> None:
        self.app = app
        self.may_post = may_post
        self.not_found = not_found
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in BODILESS_METHODS:
            await self.app(scope, receive, send)  # the routes of these methods never read a body
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not self.may_post(scope["path"]):
            await _refuse(send, 404, self.not_found, "text/html; charset=utf-8")
            return
        if headers.get("content-type", "").strip().lower().startswith("multipart/"):
            await _refuse(send, 415, b"Uploads are not accepted.\n")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _refuse(send, 413, b"Request body too large.\n")
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await _refuse(send, 413, b"Request body too large.\n")
                return
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay(bytes(body), receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands out the body already read, then whatever the server says next."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _refuse(send: Send, status: int, text: bytes, media_type: str = "text/plain; charset=utf-8") -> None:
    headers = [
        (b"content-type", media_type.encode("latin-1")),
        (b"content-length", str(len(text)).encode("latin-1")),
        (b"connection", b"close"),  # the unread body is never read: the connection ends here
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text, "more_body": False})
