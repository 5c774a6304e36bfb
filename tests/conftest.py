from __future__ import annotations

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
