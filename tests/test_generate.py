import json

from explore_instruct.llm.scripted import ScriptedLLM
from tests.fakes import fake_model
from tests.helpers import make_config, run_fake


def gen_prompts(backend):
    return [r.messages[-1].content for r in backend.requests if r.schema_name == "examples"]


def test_each_task_gets_n_examples_in_calls_of_per_call(tmp_path):
    cfg = make_config(generate={"examples_per_task": [6, 4, 2], "per_call": 4})
    ctx, _results, backend = run_fake(tmp_path / "run", cfg, stages=("explore", "generate"))
    per_node = {}
    for e in ctx.store.examples(origins=["generate"], status="ok"):
        per_node[e.node_id] = per_node.get(e.node_id, 0) + 1
    depth = {n.id: n.depth for n in ctx.store.nodes()}
    for node_id, count in per_node.items():
        assert count == [6, 4, 2][depth[node_id]]
    sizes = [
        r.json_schema["properties"]["examples"]["maxItems"] for r in backend.requests if r.schema_name == "examples"
    ]
    # root: 4 + 2, depth 1: 4 each, depth 2: 2 each
    assert sorted(sizes) == sorted([4, 2] + [4] * 3 + [2] * 6)


def test_demonstrations_come_from_the_parent(tmp_path):
    cfg = make_config(explore={"max_depth": 1, "breadth": [2]}, generate={"examples_per_task": [2], "per_call": 2})
    ctx, _, backend = run_fake(tmp_path / "run", cfg, stages=("explore", "generate"))
    seeds = [e.instruction for e in ctx.store.examples(origins=["seed"])]
    child = next(n for n in ctx.store.nodes() if n.depth == 1)
    prompt = next(p for p in gen_prompts(backend) if f"Task: {child.name}" in p)
    assert "Parent task: Assistance for text editing" in prompt
    assert sum(s in prompt for s in seeds) == 2  # two demonstrations, both from the root's examples


def test_top_up_when_replies_fall_short(tmp_path):
    def half_bad(request):
        reply = json.loads(fake_model(request))
        if request.schema_name == "examples":
            for ex in reply["examples"][1::2]:
                ex["instruction"] = "Draw a picture of the text"  # blacklisted: dropped by quality
        return json.dumps(reply)

    cfg = make_config(
        explore={"max_depth": 0}, generate={"examples_per_task": [4], "per_call": 2, "max_extra_calls": 5}
    )
    ctx, _, backend = run_fake(tmp_path / "run", cfg, stages=("generate",), backend=ScriptedLLM(half_bad))
    kept = ctx.store.examples(origins=["generate"], status="ok")
    dropped = ctx.store.examples(origins=["generate"], status="dropped")
    assert len(kept) == 4 and len(backend.requests) == 4
    assert {d.drop_reason for d in dropped} == {"blacklisted word 'draw'"}


def test_exact_duplicates_are_dropped(tmp_path):
    def repetitive(request):
        reply = json.loads(fake_model(request))
        for ex in reply.get("examples", []):
            ex.update(instruction="Rewrite the following text politely", input="Give me that.")
        return json.dumps(reply)

    cfg = make_config(
        explore={"max_depth": 0}, generate={"examples_per_task": [4], "per_call": 2, "max_extra_calls": 1}
    )
    ctx, _, _ = run_fake(tmp_path / "run", cfg, stages=("generate",), backend=ScriptedLLM(repetitive))
    kept = ctx.store.examples(origins=["generate"], status="ok")
    dups = [e for e in ctx.store.examples(status="dropped") if e.drop_stage == "duplicate"]
    assert len(kept) == 1 and len(dups) == 5  # 2 calls of 2, then one top-up call of 2
    assert all(d.dup_of == kept[0].id for d in dups)


def test_math_prompts_ask_for_boxed_answers(tmp_path):
    cfg = make_config(domain="math", explore={"max_depth": 0}, generate={"examples_per_task": [2], "per_call": 2})
    _, _, backend = run_fake(tmp_path / "run", cfg, stages=("generate",))
    assert "\\boxed{answer}" in gen_prompts(backend)[0]


def test_text_mode_prompts_ask_for_labelled_format(tmp_path):
    cfg = make_config(
        explore={"max_depth": 1, "breadth": [1]},
        generate={"examples_per_task": [1], "per_call": 1},
        llm={"structured_output": "text"},
    )

    def labelled(request):
        if request.schema_name == "subtasks":
            return (
                "Subtask: Shorten long emails\nReason: People are busy.\n"
                "Instruction: Shorten this email please.\nInput: A long email.\nOutput: Short."
            )
        return "Instruction: Shorten the message below.\nInput: Long message.\nOutput: Short message."

    ctx, _, backend = run_fake(tmp_path / "run", cfg, stages=("explore", "generate"), backend=ScriptedLLM(labelled))
    assert "Subtask: <name>" in backend.requests[0].messages[-1].content
    assert [n.name for n in ctx.store.nodes()][1] == "Shorten long emails"
    assert len(ctx.store.examples(origins=["generate"], status="ok")) == 2


def test_bootstrap_draws_demonstrations_from_the_growing_pool(tmp_path):
    cfg = make_config(
        explore={"max_depth": 0},
        generate={"examples_per_task": [8], "per_call": 2, "bootstrap": True},
        llm={"max_concurrency": 2},
    )
    ctx, _, backend = run_fake(tmp_path / "run", cfg, stages=("generate",))
    prompts = gen_prompts(backend)
    assert len(prompts) == 4
    generated = [e.instruction for e in ctx.store.examples(origins=["generate"])]
    # the first batch can only show seeds; a later batch may show examples generated before it
    assert not any(g in p for g in generated for p in prompts[:2])
    assert all("Parent task" not in p for p in prompts)


def test_bootstrap_top_up_spends_every_extra_call(tmp_path):
    def repetitive(request):
        reply = json.loads(fake_model(request))
        for ex in reply["examples"]:
            ex.update(instruction="Rewrite the following text politely", input="Give me that.")
        return json.dumps(reply)

    cfg = make_config(
        explore={"max_depth": 0},
        generate={"examples_per_task": [6], "per_call": 2, "bootstrap": True, "max_extra_calls": 4},
        llm={"max_concurrency": 1},
    )
    _, _, backend = run_fake(tmp_path / "run", cfg, stages=("generate",), backend=ScriptedLLM(repetitive))
    assert len(backend.requests) == 3 + 4  # the first batch, then every top-up call, one per batch
