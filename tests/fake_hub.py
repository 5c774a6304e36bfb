"""A fake Hugging Face Hub on 127.0.0.1 that records every commit, for the `push` tests.

It answers the endpoints `huggingface_hub` calls for a dataset push: whoami-v2, repos/create,
validate-yaml (parsing the card's YAML for real), tree listing, branch creation, preupload (every file
"regular", so content arrives inline in the commit's NDJSON; the real Hub sends large and binary
files through LFS/Xet instead) and commit. Tokens are checked: an unknown one is a 401, a namespace
the token's user does not own a 403.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml


def blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})


@dataclass
class Commit:
    repo: str
    revision: str
    summary: str
    files: dict[str, bytes]  # added or changed in this commit
    deleted: list[str]


class FakeHub:
    def __init__(self, users: dict[str, str], orgs: dict[str, list[str]] | None = None) -> None:
        self.users = users  # token -> user name
        self.orgs = orgs or {}  # user -> organisations
        self.repos: dict[str, Repo] = {}
        self.commits: list[Commit] = []
        self.requests: list[str] = []
        self.fail_commits = False  # answer every commit with a 500, as a Hub in trouble would
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes] | None = None) -> None:
        self.repos[repo_id] = Repo(private=False, branches={"main": dict(files or {})})

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        return self.repos[repo_id].branches[revision]

    # --- the HTTP side ------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _user(self) -> str | None:
                auth = self.headers.get("Authorization", "")
                return hub.users.get(auth.removeprefix("Bearer ").strip())

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def _route(self, method: str) -> None:
                path = unquote(urlsplit(self.path).path)
                with hub.lock:
                    hub.requests.append(f"{method} {path}")
                    user = self._user()
                    if user is None:
                        return self._reply(401, {"error": "Invalid credentials in Authorization header"})
                    body = self._body() if method == "POST" else b""
                    if path == "/api/whoami-v2":
                        orgs = [{"name": o} for o in hub.orgs.get(user, [])]
                        return self._reply(200, {"type": "user", "name": user, "orgs": orgs})
                    if path == "/api/validate-yaml":
                        return self._validate(json.loads(body))
                    if path == "/api/repos/create":
                        return self._create(user, json.loads(body))
                    parts = path.split("/")  # /api/datasets/{owner}/{name}/{verb}/{revision}[/...]
                    if len(parts) < 7 or parts[:3] != ["", "api", "datasets"]:
                        return self._reply(404, {"error": f"no route {path}"})
                    repo_id, verb, revision = f"{parts[3]}/{parts[4]}", parts[5], parts[6]
                    repo = hub.repos.get(repo_id)
                    if repo is None:
                        return self._reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    if method == "POST" and parts[3] != user and parts[3] not in hub.orgs.get(user, []):
                        return self._reply(403, {"error": "You don't have the rights to write here"})
                    if verb == "branch":
                        repo.branches.setdefault(revision, dict(repo.branches["main"]))
                        return self._reply(200, {})
                    if revision not in repo.branches:
                        return self._reply(404, {"error": "Revision not found"}, {"X-Error-Code": "RevisionNotFound"})
                    if verb == "tree":
                        return self._tree(repo.branches[revision])
                    if verb == "preupload":
                        paths = [f["path"] for f in json.loads(body)["files"]]
                        modes = [{"path": p, "uploadMode": "regular", "shouldIgnore": False} for p in paths]
                        return self._reply(200, {"files": modes})
                    if verb == "commit":
                        if hub.fail_commits:
                            return self._reply(500, {"error": "Internal Error"})
                        return self._commit(repo_id, revision, body)
                    return self._reply(404, {"error": f"no route {path}"})

            def _validate(self, payload: dict[str, Any]) -> None:
                text = payload["content"]
                try:
                    head = text.split("---\n")[1]
                    meta = yaml.safe_load(head)
                    assert isinstance(meta, dict)
                except Exception:
                    return self._reply(400, {"errors": [{"message": "metadata is not valid YAML"}]})
                return self._reply(200, {"errors": [], "warnings": []})

            def _create(self, user: str, payload: dict[str, Any]) -> None:
                owner = payload.get("organization") or user
                if owner != user and owner not in hub.orgs.get(user, []):
                    return self._reply(403, {"error": f"You don't have the rights to create a dataset under {owner}"})
                repo_id = f"{owner}/{payload['name']}"
                if repo_id in hub.repos:
                    # The real Hub names the repository in its 409 too; huggingface_hub reads that url.
                    url = f"{hub.url}/datasets/{repo_id}"
                    return self._reply(409, {"error": "You already created this dataset repo", "url": url})
                hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
                return self._reply(200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id})

            def _tree(self, files: dict[str, bytes]) -> None:
                entries = [
                    {"type": "file", "path": p, "size": len(c), "oid": blob_id(c)} for p, c in sorted(files.items())
                ]
                return self._reply(200, entries)

            def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
                lines = [json.loads(x) for x in body.decode().splitlines() if x.strip()]
                header = next(x["value"] for x in lines if x["key"] == "header")
                added = {
                    x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"
                }
                deleted = [x["value"]["path"] for x in lines if x["key"] == "deletedFile"]
                state = hub.repos[repo_id].branches[revision]
                state.update(added)
                for p in deleted:
                    state.pop(p, None)
                hub.commits.append(Commit(repo_id, revision, header["summary"], added, deleted))
                oid = hashlib.sha1(f"{len(hub.commits)}".encode()).hexdigest()
                return self._reply(
                    200, {"commitUrl": f"{hub.url}/datasets/{repo_id}/commit/{oid}", "commitOid": oid, "success": True}
                )

        return Handler
