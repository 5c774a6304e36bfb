"""The rater and owner pages of a human-evaluation study.

A rater's secret link `/r/TOKEN` leads to their items one by one (`/r/TOKEN/N`); a vote is a plain
form POST, so the pages work without JavaScript, and htmx (hx-boost) only saves full reloads.
Pages show "left" and "right" answers and never which model wrote them. The owner's link
`/owner/TOKEN` shows each rater's progress. Any other token, an item outside the rater's own list,
or an item number that is no number, is the same plain 404 as an unknown page. The answers are
shown as sanitised Markdown.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response

from explore_instruct.web.common import CSRF_FIELD, CsrfGuard, find_token, make_app, not_found, render, row_id
from explore_instruct.web.study import CHOICE_LABELS, CHOICES, Rater, Study

COMMENT_LIMIT = 2000


def create_app(study: Study) -> FastAPI:
    def may_post(path: str) -> bool:  # a vote, `/r/TOKEN/N`, under a rater's own token
        parts = path.split("/")
        return len(parts) == 4 and parts[1] == "r" and find_token(parts[2], study.rater_digests()) is not None

    app = make_app("explore-instruct human evaluation", may_post)
    csrf = CsrfGuard(study.secret)

    def rater_for(token: str) -> Rater:
        rater: Rater | None = find_token(token, study.rater_digests())
        if rater is None:
            raise not_found()
        return rater

    @app.get("/r/{token}")
    def rater_home(token: str) -> Response:
        items = study.assignments(rater_for(token))
        first_open = next((a.position for a in items if a.choice is None), None)
        target = f"/r/{token}/{first_open}" if first_open is not None else f"/r/{token}/done"
        return RedirectResponse(target, status_code=303)

    @app.get("/r/{token}/done")
    def rater_done(token: str) -> Response:
        items = study.assignments(rater_for(token))
        voted = sum(a.choice is not None for a in items)
        return render("rater_done.html", token=token, items=items, voted=voted)

    @app.get("/r/{token}/{position}")
    def rater_item(token: str, position: str, request: Request) -> Response:
        items = study.assignments(rater_for(token))
        n = row_id(position)
        if not 1 <= n <= len(items):
            raise not_found()
        form_token, new_sid = csrf.start(request)
        page = render(
            "rater_item.html",
            token=token,
            item=items[n - 1],
            items=items,
            voted=sum(a.choice is not None for a in items),
            choices=[(c, CHOICE_LABELS[c]) for c in CHOICES],
            labels=CHOICE_LABELS,
            csrf=form_token,
            csrf_field=CSRF_FIELD,
        )
        return csrf.set_cookie(page, new_sid)

    @app.post("/r/{token}/{position}")
    def rater_vote(
        token: str,
        position: str,
        request: Request,
        choice: Annotated[str, Form()],
        comment: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form(alias=CSRF_FIELD)] = "",
    ) -> Response:
        rater = rater_for(token)
        n = row_id(position)
        csrf.check(request, csrf_token)
        if choice not in CHOICES:
            return render("error.html", status_code=422, message="Choose one of the four answers.")
        if not study.vote(rater, n, choice, comment.strip()[:COMMENT_LIMIT]):
            raise not_found()
        items = study.assignments(rater)
        after = [a.position for a in items[n:] if a.choice is None]
        before = [a.position for a in items[: n - 1] if a.choice is None]
        pending = after or before
        following = pending[0] if pending else None
        target = f"/r/{token}/{following}" if following is not None else f"/r/{token}/done"
        return RedirectResponse(target, status_code=303)

    @app.get("/owner/{token}")
    def owner(token: str) -> Response:
        if find_token(token, study.owner_digest()) is None:
            raise not_found()
        progress = study.progress()
        return render(
            "owner.html",
            progress=progress,
            items=study.db.item_count(),
            min_votes=study.meta.get("min_votes", ""),
            study=study.path.name,
        )

    return app
