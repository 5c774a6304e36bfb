"""The data-review pages of a run: the task tree, a task's examples, search, accept / reject / edit.

Every page lives under the secret `/TOKEN/` printed when the app starts; anything else (an id that
is no id included) is a plain 404. A decision is a form POST (works without JavaScript, answered by
a redirect back to the task); under htmx it answers with the example's card alone, swapped in place.
Only kept, generated examples take decisions: a seed or dropped one has neither buttons nor an edit
form, and a decision posted for one is refused.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response

from explore_instruct.errors import UserError
from explore_instruct.web.common import (
    CSRF_FIELD,
    CsrfGuard,
    find_token,
    make_app,
    not_found,
    render,
    row_id,
    token_digest,
)
from explore_instruct.web.review_data import RunReview

ACTIONS = ("accept", "reject", "edit", "undo")
SEARCH_MAX_CHARS = 200


def create_app(review: RunReview, token: str) -> FastAPI:
    digests = {token_digest(token): True}

    def may_post(path: str) -> bool:  # a decision, `/TOKEN/example/N`, under the token
        parts = path.split("/")
        return len(parts) == 4 and parts[2] == "example" and find_token(parts[1], digests) is not None

    app = make_app("explore-instruct data review", may_post)
    csrf = CsrfGuard(secrets.token_bytes(32))

    def check(t: str) -> None:
        if find_token(t, digests) is None:
            raise not_found()

    def page(request: Request, name: str, **context: Any) -> Response:
        form_token, new_sid = csrf.start(request)
        response = render(name, t=context.pop("t"), csrf=form_token, csrf_field=CSRF_FIELD, **context)
        return csrf.set_cookie(response, new_sid)

    @app.get("/{t}/")
    def tree(t: str, request: Request) -> Response:
        check(t)
        view, counts = review.tree()
        return page(
            request, "review_tree.html", t=t, view=view, counts=counts, run=review.store.run_dir.name,
            decided=review.stats(),
        )  # fmt: skip

    @app.get("/{t}")
    def tree_no_slash(t: str) -> Response:
        check(t)
        return RedirectResponse(f"/{t}/", status_code=303)

    @app.get("/{t}/task/{node_id}")
    def task(t: str, node_id: str, request: Request, sort: str = "") -> Response:
        check(t)
        by_score = sort == "score"  # anything else: row order
        found = review.task(row_id(node_id), by_score=by_score)
        if found is None:
            raise not_found()
        view, node, examples = found
        return page(request, "review_task.html", t=t, view=view, node=node, examples=examples, by_score=by_score)

    @app.get("/{t}/search")
    def search(t: str, request: Request, q: str = "") -> Response:
        check(t)
        q = q.strip()[:SEARCH_MAX_CHARS]
        view, examples, more = review.search(q) if q else (None, [], False)
        return page(request, "review_search.html", t=t, q=q, view=view, examples=examples, more=more)

    @app.get("/{t}/example/{example_id}")
    def edit_form(t: str, example_id: str, request: Request) -> Response:
        check(t)
        found = review.example(row_id(example_id))
        if found is None or not found[1].reviewable:
            raise not_found()
        view, ex = found
        return page(request, "review_edit.html", t=t, view=view, ex=ex)

    @app.post("/{t}/example/{example_id}")
    def decide(
        t: str,
        example_id: str,
        request: Request,
        action: Annotated[str, Form()],
        instruction: Annotated[str | None, Form()] = None,
        input_text: Annotated[str, Form(alias="input")] = "",
        output: Annotated[str, Form()] = "",
        csrf_token: Annotated[str, Form(alias=CSRF_FIELD)] = "",
    ) -> Response:
        check(t)
        ex_id = row_id(example_id)
        csrf.check(request, csrf_token)
        found = review.example(ex_id)
        if found is None:
            raise not_found()
        if action not in ACTIONS:
            return render("error.html", status_code=422, message="Unknown action.")
        edited = (instruction or "", input_text, output) if action == "edit" else None
        try:
            review.decide(ex_id, action, edited)
        except UserError as exc:
            return render("error.html", status_code=422, message=str(exc))
        view, ex = review.example(ex_id) or found
        if request.headers.get("hx-request") and not request.headers.get("hx-boosted"):
            form_token, _ = csrf.start(request)
            return render("review_example.html", t=t, view=view, ex=ex, csrf=form_token, csrf_field=CSRF_FIELD)
        return RedirectResponse(f"/{t}/task/{ex.row.node_id}#ex-{ex_id}", status_code=303)

    return app
