"""The web apps: blind pairwise human evaluation (`human-eval`) and data review (`review`).

FastAPI + Jinja2 + htmx (vendored in `static/`), served by uvicorn, state in SQLite (WAL).
Needs the `[web]` extra.
"""
