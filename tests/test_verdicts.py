"""One quality verdict: a rule that changed between sessions is applied the same way to the stored
records and to the top-up decision, `stats` says how many verdicts changed, and the resume sends no
call that is already in the call log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from explore_instruct.cli.pipeline import print_summary
from explore_instruct.profiles import Profile, load_profile
from explore_instruct.runstore import RunStore
from explore_instruct.stages import RunResults
from tests.helpers import fake_backend, make_config, run_fake

# The fake model writes the root's examples as "Assistance ... for" (the first words of its task
# name); no explored task's examples start so, so this word drops the root's generated records only.
WORD = "assistance"
STAGES = ("explore", "prune", "generate")
CONFIG = make_config(explore={"max_depth": 1, "breadth": [2]}, generate={"max_extra_calls": 2})


@pytest.fixture
def rule(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The words the generic profile blacklists: append to it to change the rule for the next session."""
    extra: list[str] = []

    def profile(name: str) -> Profile:
        base = load_profile(name)
        quality = base.quality.model_copy(update={"blacklist": [*base.quality.blacklist, *extra]})
        return base.model_copy(update={"quality": quality})

    monkeypatch.setattr("explore_instruct.prompting.load_profile", profile)
    yield extra


def stored_kept(store: RunStore) -> dict[str, int]:
    """Kept generated records per task key, as the database holds them."""
    keys = {n.id: n.key for n in store.nodes()}
    return dict(Counter(keys[r.node_id] for r in store.examples(status="ok", origins=["generate"])))


def session(run_dir: Path) -> tuple[RunResults, set[str], set[str], dict[str, int], Counter[str | None]]:
    """Run the generation stages; returns the results, the call keys logged before and the ones sent,
    the stored kept counts and the stored drop reasons of the root's records."""
    before = set()
    if RunStore.exists(run_dir):
        store = RunStore.open(run_dir)
        before = {r[0] for r in store.conn.execute("SELECT key FROM llm_calls WHERE status = 'ok'")}
        store.close()
    backend = fake_backend()
    ctx, results, _ = run_fake(run_dir, CONFIG, STAGES, backend)
    sent = {request.key(backend.model_id) for request in backend.requests}
    root = next(n.id for n in ctx.store.nodes() if n.parent_id is None)
    reasons = Counter(r.drop_reason for r in ctx.store.examples(node_id=root, origins=["generate"]))
    kept = stored_kept(ctx.store)
    ctx.store.close()
    return results, before, sent, kept, reasons


def kept_per_task(results: RunResults) -> dict[str, int]:
    assert results.generate is not None
    return {key: n for key, n in results.generate.kept.items() if n}


def test_a_stricter_rule_drops_stored_records_and_tops_up_from_that_verdict(tmp_path: Path, rule: list[str]) -> None:
    first, _, _, _, reasons = session(tmp_path / "run")
    assert first.generate is not None and first.generate.kept["root"] == 4 and reasons == {None: 4}
    rule.append(WORD)
    results, logged, sent, kept, reasons = session(tmp_path / "run")
    assert results.generate is not None and results.generate.kept["root"] == 0
    assert kept == kept_per_task(results)  # the database holds the verdict the top-ups were decided by
    assert reasons == {f"blacklisted word '{WORD}'": sum(reasons.values())} and sum(reasons.values()) > 4
    assert results.generate.verdicts_changed == 4
    assert sent and not sent & logged  # only the root's top-ups went out; nothing logged was sent again


def test_a_looser_rule_keeps_the_stored_records_and_sends_nothing(tmp_path: Path, rule: list[str]) -> None:
    rule.append(WORD)
    first, _, _, _, reasons = session(tmp_path / "run")
    assert first.generate is not None and first.generate.kept["root"] == 0
    topped_up = sum(reasons.values())
    assert topped_up > 4  # the first session topped the root up
    rule.clear()
    results, _, sent, kept, reasons = session(tmp_path / "run")
    assert kept == kept_per_task(results)
    assert reasons == {None: topped_up}  # every stored record of the root is kept now, top-ups too
    assert results.generate is not None and results.generate.verdicts_changed == topped_up
    assert not sent  # the stored records are enough: no call, and none sent again


def test_stats_says_how_many_verdicts_changed(tmp_path: Path, rule: list[str]) -> None:
    """`stats` is a later process: the count is kept in the run, not only in the session's results."""

    def stats_line() -> str | None:
        store = RunStore.open(tmp_path / "run")
        console = Console(record=True, width=200)
        print_summary(store, to=console)
        store.close()
        return next((line for line in console.export_text().splitlines() if "quality verdicts" in line), None)

    session(tmp_path / "run")
    assert stats_line() is None
    rule.append(WORD)
    session(tmp_path / "run")
    assert "recomputed with the current rules: 4 changed" in (stats_line() or "")
    again, *_ = session(tmp_path / "run")  # unchanged rules: nothing more to recompute
    assert again.generate is not None and again.generate.verdicts_changed == 0
    assert "recomputed with the current rules: 4 changed" in (stats_line() or "")
