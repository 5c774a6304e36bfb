"""`push`: a folder of files to a Hugging Face dataset repository, as one commit or none.

The token is read from an environment variable at the moment of the push and handed to
`huggingface_hub` only: it is never written, logged or part of a message. The Hub is
`HF_ENDPOINT` when set (a mirror, or the fake Hub of the tests), else huggingface.co.

Before committing, the remote files are listed and compared by content (the git blob id of a regular
file, the sha256 of an LFS file): when every file is already there, no commit is made. Everything goes
in one `create_commit` call, so a failure anywhere leaves the repository's history as it was.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from explore_instruct.errors import MissingExtra, UserError
from explore_instruct.publish.parquet import HUB_EXTRA

DEFAULT_TOKEN_ENV = "HF_TOKEN"
DEFAULT_ENDPOINT = "https://huggingface.co"
# Remote paths a push manages: a file there that the new export lacks is deleted in the same commit.
MANAGED_PREFIXES = ("data/", "figures/")

# A progress hook: start(description, total) returns an advance(n) callable (cli.progress.hook_progress).
ProgressHook = Callable[[str, int], Callable[[int], None]]


@dataclass
class PushResult:
    url: str
    revision: str
    commit: str | None  # None: nothing changed, no commit made
    uploaded: list[str]
    deleted: list[str]


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def read_token(env_name: str) -> str:
    """The token in `env_name`; its absence is one line naming the variable (never a value).

    A name that is not a variable name (a token pasted there by mistake) is refused without echoing it.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_name) or env_name.startswith("hf_"):  # tokens: hf_...
        raise UserError(
            "token_env takes the NAME of an environment variable (e.g. HF_TOKEN), not a token", settings=("token_env",)
        )
    token = os.environ.get(env_name, "").strip()
    if not token:
        hint = "" if env_name != DEFAULT_TOKEN_ENV else " (or name another variable with token_env)"
        raise UserError(
            f"no Hugging Face token: set the environment variable {env_name}{hint}", settings=("token_env",)
        )
    return token


def git_blob_id(content: bytes) -> str:
    """The git object id of a file's content: what the Hub reports as a regular file's `oid`."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise MissingExtra(HUB_EXTRA, "huggingface_hub") from None
    return huggingface_hub


def _is_network_error(exc: BaseException) -> bool:
    """A connection that failed (refused, timed out, no route), whichever HTTP library raised it."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"TransportError", "ConnectionError", "ConnectError", "TimeoutException", "Timeout"})


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def hub_error(exc: BaseException, repo_id: str, url: str) -> UserError | None:
    """The one line a Hub failure becomes; None for an error that is not the Hub's (a bug: let it show)."""
    if _is_network_error(exc):
        return UserError(f"cannot reach the Hub at {url} ({type(exc).__name__}); nothing was pushed")
    status = _status(exc)
    if status == 401:
        return UserError(f"the Hub at {url} refused the token (401): check it, or make a new write token")
    if status == 403:
        return UserError(f"the token may not write to {repo_id} (403): the repository belongs to someone else")
    if status is not None:
        return UserError(f"the Hub at {url} answered {status} for {repo_id}; nothing was pushed")
    if isinstance(exc, ValueError) and "metadata" in str(exc):  # huggingface_hub's check of the card's YAML
        why = " ".join(str(exc).split())
        return UserError(f"the Hub rejected the card's YAML metadata ({why}); nothing was pushed")
    return None


def _remote_files(api: Any, repo_id: str, revision: str) -> dict[str, Any] | None:
    """Path -> RepoFile of the revision, or None when the branch does not exist yet."""
    hub = _hub()
    try:
        entries = api.list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True)
        return {e.path: e for e in entries if hasattr(e, "blob_id")}
    except hub.errors.RevisionNotFoundError:
        return None


def _same(remote: Any, content: bytes) -> bool:
    if remote.lfs is not None:
        return bool(remote.lfs.sha256 == hashlib.sha256(content).hexdigest())
    return bool(remote.blob_id == git_blob_id(content))


def _owner_check(api: Any, repo_id: str) -> str:
    """`repo_id` with the token owner's namespace when none was given; refuses another owner's namespace."""
    me = api.whoami()
    mine = [me.get("name", "")] + [o.get("name", "") for o in me.get("orgs", []) if isinstance(o, dict)]
    if "/" not in repo_id:
        return f"{mine[0]}/{repo_id}"
    owner = repo_id.split("/", 1)[0]
    if owner not in mine:
        raise UserError(
            f"{repo_id} belongs to {owner}, and the token is {mine[0]}'s"
            + (f" (member of {', '.join(mine[1:])})" if mine[1:] else "")
            + ": push to your own namespace or an organisation you belong to"
        )
    return repo_id


def push_files(
    files: dict[str, bytes],
    repo_id: str,
    *,
    token: str,
    revision: str = "main",
    private: bool = False,
    message: str,
    progress: ProgressHook | None = None,
) -> PushResult:
    """Create the dataset repository if needed and commit `files` (path -> bytes) in one commit, or none."""
    hub = _hub()
    url = endpoint()
    api = hub.HfApi(endpoint=url, token=token, library_name="explore-instruct")
    try:
        repo_id = _owner_check(api, repo_id)
        repo = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        remote = _remote_files(api, repo_id, revision)
        if remote is None:
            api.create_branch(repo_id, repo_type="dataset", branch=revision, exist_ok=True)
            remote = _remote_files(api, repo_id, revision) or {}
        advance = progress("comparing with the Hub", len(files)) if progress else None
        changed = []
        for path, content in files.items():
            if path not in remote or not _same(remote[path], content):
                changed.append(path)
            if advance:
                advance(1)
        stale = sorted(p for p in remote if p.startswith(MANAGED_PREFIXES) and p not in files)
        if not changed and not stale:
            return PushResult(str(repo), revision, None, [], [])
        operations = [hub.CommitOperationAdd(path_in_repo=p, path_or_fileobj=files[p]) for p in changed]
        operations += [hub.CommitOperationDelete(path_in_repo=p) for p in stale]
        advance = progress(f"uploading {len(changed)} files", sum(len(files[p]) for p in changed)) if progress else None
        info = api.create_commit(repo_id, operations, commit_message=message, repo_type="dataset", revision=revision)
        if advance:
            advance(sum(len(files[p]) for p in changed))
    except UserError:
        raise
    except Exception as exc:
        error = hub_error(exc, repo_id, url)
        if error is None:
            raise
        raise error from None
    return PushResult(str(repo), revision, info.oid, changed, stale)
