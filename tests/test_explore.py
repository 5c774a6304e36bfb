import json

import pytest

from explore_instruct.errors import RunStopped
from explore_instruct.llm.base import FatalLLMError
from explore_instruct.llm.scripted import ScriptedLLM
from explore_instruct.prompting import PromptBuilder
from explore_instruct.runstore import RunStore
from explore_instruct.summary import run_summary
from explore_instruct.tree import normalise_task_name
from tests.fakes import fake_model
from tests.helpers import make_config, run_fake


def explore_prompts(backend):
    return [r.messages[-1].content for r in backend.requests if r.schema_name == "subtasks"]


def test_tree_shape_follows_breadth_and_depth(tmp_path):
    ctx, _, _backend = run_fake(tmp_path / "run", stages=("explore",))
    nodes = ctx.store.nodes()
    depths = [n.depth for n in nodes]
    assert depths.count(0) == 1 and depths.count(1) == 3 and depths.count(2) == 6
    # every node's children have distinct normalised names
    by_parent = {}
    for n in nodes:
        by_parent.setdefault(n.parent_id, []).append(normalise_task_name(n.name))
    assert all(len(v) == len(set(v)) for v in by_parent.values())
    # each new subtask brought its example triples along
    explored = ctx.store.examples(origins=["explore"])
    assert len(explored) == 9 * 2


def test_backtracking_prompt_lists_existing_children_and_peers(tmp_path):
    ctx, _, backend = run_fake(tmp_path / "run", stages=("explore",))
    prompts = explore_prompts(backend)
    root_rounds = [p for p in prompts if "Target task: Assistance for text editing" in p]
    assert len(root_rounds) == 2  # breadth 3 with 2 per call: a lookahead, then one backtracking round
    assert "already has these subtasks" not in root_rounds[0]
    children = [n.name for n in ctx.store.nodes() if n.depth == 1]
    assert "already has these subtasks" in root_rounds[1]
    assert children[0] in root_rounds[1] and children[1] in root_rounds[1]
    # a child's lookahead sees its full list of siblings as peers
    child_prompt = next(p for p in prompts if f"Target task: {children[0]}" in p)
    assert children[1] in child_prompt and children[2] in child_prompt


def test_duplicate_names_are_dropped_and_round_repeated(tmp_path):
    calls = {"n": 0}

    def repeats_first(request):
        calls["n"] += 1
        reply = json.loads(fake_model(request))
        if request.schema_name == "subtasks" and calls["n"] <= 2:
            for s in reply["subtasks"]:
                s["name"] = "assistance for TEXT editing!"  # the root's own name, normalised
        return json.dumps(reply)

    cfg = make_config(explore={"max_depth": 1, "breadth": [2]})
    ctx, _, backend = run_fake(tmp_path / "run", cfg, stages=("explore",), backend=ScriptedLLM(repeats_first))
    assert len([n for n in ctx.store.nodes() if n.depth == 1]) == 2
    assert len(explore_prompts(backend)) == 3


def test_fruitless_rounds_are_capped(tmp_path):
    def always_same(request):
        reply = json.loads(fake_model(request))
        if request.schema_name == "subtasks":
            for s in reply["subtasks"]:
                s["name"] = "Same task"
        return json.dumps(reply)

    cfg = make_config(explore={"max_depth": 1, "breadth": [5], "max_fruitless_rounds": 2})
    ctx, _, backend = run_fake(tmp_path / "run", cfg, stages=("explore",), backend=ScriptedLLM(always_same))
    assert [n.name for n in ctx.store.nodes() if n.depth == 1] == ["Same task"]
    assert len(explore_prompts(backend)) == 3  # one useful round, then two fruitless ones


def test_depth_zero_explores_nothing(tmp_path):
    cfg = make_config(explore={"max_depth": 0})
    ctx, _, backend = run_fake(tmp_path / "run", cfg, stages=("explore",))
    assert len(ctx.store.nodes()) == 1 and backend.requests == []


def test_failed_calls_are_reported_and_run_goes_on(tmp_path):
    from explore_instruct.llm.base import TransientLLMError

    def flaky(request):
        if request.schema_name == "subtasks" and "Target task: Assistance" not in request.messages[-1].content:
            return TransientLLMError("500 server error")
        return fake_model(request)

    cfg = make_config(llm={"retries": 0})
    ctx, _, _ = run_fake(tmp_path / "run", cfg, backend=ScriptedLLM(flaky))
    usage = ctx.store.calls.usage_by_stage()
    assert usage["explore"]["failed"] == 3 * 3  # each child: its fruitless-round cap
    assert len(ctx.store.nodes()) == 4
    assert ctx.store.sample_ids()  # the later stages still ran


def test_seed_tree_is_extended(tmp_path, upstream_tree):
    cfg = make_config(
        root=None, seed_tree=str(upstream_tree), explore={"max_depth": 2, "breadth": [8, 1]}, domain="rewriting"
    )
    ctx, _, backend = run_fake(tmp_path / "run", cfg, stages=("explore",))
    depths = [n.depth for n in ctx.store.nodes()]
    # the root already has its 8 children: only one child per subtask is explored
    assert depths.count(1) == 8 and depths.count(2) == 8
    assert not any("Target task: Assistance for text editting" in p for p in explore_prompts(backend))


BAD_NAMES = ["Designated Task 1", "1.1.1.2.2", "{<em>improving the town's infrastructure…"]


def first_rounds(cfg) -> set[int]:
    """The request seeds of every node's first round (keys are child-position paths)."""
    prompts = PromptBuilder.of(cfg)  # no run needed: a seed is a function of the config
    keys = ["root", *(f"root/{i}" for i in range(3)), *(f"root/{i}/{j}" for i in range(3) for j in range(2))]
    return {prompts.stable_seed("explore", key, 0) for key in keys}


def junk_name_first(cfg):
    """A pure function of the request: each node's first round proposes one junk name before a good one."""
    seeds = first_rounds(cfg)

    def reply(request):
        out = json.loads(fake_model(request))
        if request.schema_name == "subtasks" and request.seed in seeds:
            out["subtasks"][0]["name"] = BAD_NAMES[request.seed % len(BAD_NAMES)]
        return json.dumps(out)

    return reply


def tree_snapshot(store):
    return [(n.key, n.name) for n in store.nodes()], store.dropped_tasks()


def test_bad_names_are_dropped_counted_and_take_no_position(tmp_path):
    cfg = make_config()
    ctx, _, backend = run_fake(tmp_path / "run", cfg, stages=("explore",), backend=ScriptedLLM(junk_name_first(cfg)))
    nodes = ctx.store.nodes()
    assert [n.depth for n in nodes].count(1) == 3 and [n.depth for n in nodes].count(2) == 6
    assert not any(n.name in BAD_NAMES for n in nodes)
    # the good name of a mixed reply takes the first free position: keys have no gaps
    assert [n.key for n in nodes if n.depth == 1] == ["root/0", "root/1", "root/2"]
    dropped = ctx.store.dropped_tasks()
    assert len(dropped) == 4 and {name for _, name, _ in dropped} <= set(BAD_NAMES)
    counts = run_summary(ctx.store)["dropped_task_names"]
    assert sum(counts.values()) == 4
    assert set(counts) <= {"placeholder name", "name has no letters", "markup in name"}
    # a dropped name does not count toward breadth: each child needs a second round for its second subtask
    assert len(explore_prompts(backend)) == 2 + 3 * 2


def test_resume_after_bad_names_gives_the_same_tree(tmp_path):
    cfg = make_config()
    responder = junk_name_first(cfg)
    calls = {"n": 0}

    def dies_midway(request):
        calls["n"] += 1
        return FatalLLMError("endpoint went away") if calls["n"] > 4 else responder(request)

    with pytest.raises(RunStopped):
        run_fake(tmp_path / "run", cfg, stages=("explore",), backend=ScriptedLLM(dies_midway))
    killed = RunStore.open(tmp_path / "run")
    assert 0 < len(killed.nodes()) < 10 and killed.dropped_tasks()
    killed.close()
    resumed, _, _ = run_fake(tmp_path / "run", cfg, stages=("explore",), backend=ScriptedLLM(responder))
    clean, _, _ = run_fake(tmp_path / "clean", cfg, stages=("explore",), backend=ScriptedLLM(responder))
    assert tree_snapshot(resumed.store) == tree_snapshot(clean.store)
    assert len(clean.store.dropped_tasks()) == 4
