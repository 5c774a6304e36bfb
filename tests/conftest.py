from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real data the repository cannot ship (its licence differs): the released rewriting tree and sample
# evaluation questions, kept beside the repository for its developers.
FIXTURES = REPO.parent / "shared" / "fixtures"
NO_FIXTURES = (
    "needs the project's shared test data (the released rewriting tree, sample evaluation questions), "
    f"which a clone of the repository does not include (looked in {FIXTURES})"
)
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=NO_FIXTURES)


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(NO_FIXTURES)
    return FIXTURES


@pytest.fixture
def upstream_tree(fixtures_dir: Path) -> Path:
    return fixtures_dir / "upstream_rewriting_tree"


@pytest.fixture(scope="session", autouse=True)
def _hash_local_embeddings() -> Iterator[object]:
    """The embedded embedding model (SmolLM2 in-process) takes seconds per hundred texts on these
    machines: outside `integration` tests the local embedding backend is the hash embedder, which
    keeps near-copies close just the same. Session-wide, so module-scoped fixtures get it too; the
    fixture's value is the real class, which `integration` tests get back."""
    from explore_instruct.llm import local
    from explore_instruct.llm.embeddings import HashEmbedder

    real = local.LocalEmbedder
    patch = pytest.MonkeyPatch()
    patch.setattr(local, "LocalEmbedder", lambda *a, **k: HashEmbedder(model_id="local-embed:hash-in-tests"))
    yield real
    patch.undo()


@pytest.fixture(autouse=True)
def _real_embeddings_in_integration(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, _hash_local_embeddings: object
) -> None:
    if request.node.get_closest_marker("integration") is not None:
        from explore_instruct.llm import local

        monkeypatch.setattr(local, "LocalEmbedder", _hash_local_embeddings)
