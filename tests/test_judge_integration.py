"""The embedded SmolLM2-135M model as the judge: with the JSON verdict (auto on the local backend) every
review it writes is read, where its free-text reviews never ended in a verdict line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explore_instruct.evaluate.judge import SCORE_KEYS, JudgeSettings, resolve_format
from explore_instruct.evaluate.stages import EndpointSettings, judge_files
from explore_instruct.llm.local import LocalLLM

pytestmark = pytest.mark.integration

PAIRS = [  # (question, baseline answer, candidate answer)
    (
        "Make this email more polite: Send me the invoice today.",
        "invoice send today",
        "Could you please send me the invoice today? Thank you.",
    ),
    ("Correct the grammar: Me and him goes to the libary.", "He and I go to the library.", "Me and him goes libary."),
]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_embedded_judge_gives_a_verdict_for_every_order(tmp_path: Path) -> None:
    ids = [f"p{i}" for i in range(len(PAIRS))]
    q = _write(tmp_path / "q.jsonl", [{"question_id": i, "question": p[0]} for i, p in zip(ids, PAIRS, strict=True)])
    base = _write(
        tmp_path / "base.jsonl", [{"question_id": i, "answer": p[1]} for i, p in zip(ids, PAIRS, strict=True)]
    )
    cand = _write(
        tmp_path / "cand.jsonl", [{"question_id": i, "answer": p[2]} for i, p in zip(ids, PAIRS, strict=True)]
    )
    out = tmp_path / "judge.json"
    endpoint = EndpointSettings(concurrency=1, retries=0)

    judge = LocalLLM(n_ctx=2048)
    settings = JudgeSettings(max_tokens=256, format=resolve_format("auto", judge), bootstrap=200)
    assert settings.format == "json"
    result = judge_files(q, base, cand, out, judge, settings, endpoint=endpoint)

    assert result.unparsed_pairs == 0 and result.failed_pairs == 0
    saved = json.loads(out.read_text())
    assert saved["judge_model"].startswith("local:")
    for pair in saved["pairs"]:
        assert pair["outcome"] in ("win", "tie", "lose")
        for order in ("baseline_first", "candidate_first"):
            # The grammar allows nothing but the object (raw newlines may appear inside the explanation).
            review = json.loads(pair[order]["review"], strict=False)
            assert set(review) == {"explanation", *SCORE_KEYS}
            assert all(1 <= review[k] <= 10 for k in SCORE_KEYS)
            assert pair[order]["verdict"] in (-1, 0, 1)
    overall = result.summaries[-1]
    assert overall["win"] + overall["tie"] + overall["lose"] == len(PAIRS)

    # A rerun reads every review from the cache: the model is never loaded again.
    again = LocalLLM(n_ctx=2048)
    judge_files(q, base, cand, out, again, settings, endpoint=endpoint)
    assert again._llama is None
