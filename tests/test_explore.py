import json

from explore_instruct.llm.scripted import ScriptedLLM
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
