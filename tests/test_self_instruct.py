from explore_instruct.baselines.self_instruct import self_instruct_config
from explore_instruct.pipeline import run_stages
from tests.helpers import fake_backend, make_config


def test_self_instruct_baseline_is_the_root_alone_bootstrapped(tmp_path):
    explore_cfg = make_config(generate={"per_call": 5}, llm={"max_concurrency": 2})
    cfg = self_instruct_config(explore_cfg, num=30)
    assert cfg.explore.max_depth == 0 and cfg.generate.bootstrap and cfg.sample.size == 30
    assert cfg.root == explore_cfg.root  # same root and seeds as the exploration run

    backend = fake_backend()
    ctx, results = run_stages(cfg, tmp_path / "si", backend=backend)
    assert len(ctx.store.nodes()) == 1
    assert not any(r.schema_name == "subtasks" for r in backend.requests)
    assert len(backend.requests) == 6  # 30 examples in calls of 5, in batches of max_concurrency
    sample = ctx.store.dataset("sample")
    kept = results.filter.kept
    assert len(sample) == kept <= 30 and all(r["depth"] == 0 for r in sample)
    # bootstrapping: later batches show generated examples as demonstrations
    generated = {e.instruction for e in ctx.store.examples(origins=["generate"])}
    later = [r.messages[-1].content for r in backend.requests[2:]]
    assert any(g in p for g in generated for p in later)
