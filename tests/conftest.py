from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture
def upstream_tree(fixtures_dir: Path) -> Path:
    return fixtures_dir / "upstream_rewriting_tree"


@pytest.fixture(autouse=True)
def _hash_embeddings_unless_integration(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded embedding model (SmolLM2 in-process) takes seconds per hundred texts on these
    machines: outside `integration` tests, the local embedding backend is the hash embedder, which
    keeps near-copies close just the same. Tests of the real model are marked `integration`."""
    if request.node.get_closest_marker("integration") is not None:
        return
    from explore_instruct.llm import local
    from explore_instruct.llm.embeddings import HashEmbedder

    monkeypatch.setattr(local, "LocalEmbedder", lambda *a, **k: HashEmbedder(model_id="local-embed:hash-in-tests"))
