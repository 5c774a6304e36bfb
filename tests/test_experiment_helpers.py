"""Support for the experiment tests (no tests here): the fake generator, a scripted judge, a study on disk."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from explore_instruct.experiment.steps import Backends
from explore_instruct.llm.base import CompletionRequest
from explore_instruct.llm.scripted import ScriptedLLM
from tests.fakes import fake_model
from tests.helpers import BASE, merge

QUESTIONS = [
    {"question_id": "q1", "question": "Rewrite this in plain words: the meeting is postponed.", "class": "rewriting"},
    {"question_id": "q2", "question": "Make this polite: send it now.", "class": "rewriting"},
    {"question_id": "q3", "question": "Brainstorm three names for a bakery.", "class": "brainstorming"},
]
MATH = [
    {"question_id": "m1", "question": "What is 2 + 3?", "std_answer": "$\\boxed{5}$", "class": "math"},
    {"question_id": "m2", "question": "What is 10 - 4?", "std_answer": "$\\boxed{6}$", "class": "math"},
]


_ANSWER = re.compile(r"\[Assistant ([12])'s answer begins\]\n(.*?)\n\[Assistant \1's answer ends\]", re.DOTALL)


def judge_reply(request: CompletionRequest) -> str:
    """Prefers the answer with more distinct words (a stable, order-independent taste), else a tie."""
    answers = dict(_ANSWER.findall(request.messages[-1].content))
    one, two = (len(set(answers.get(k, "").split())) for k in ("1", "2"))
    op = ">" if one > two else "<" if two > one else "="
    return f"Both answers were read.\nAssistant 1 {op} Assistant 2"


def backends(judge: ScriptedLLM | None = None) -> Backends:
    generator = ScriptedLLM(fake_model)
    judge = judge or ScriptedLLM(judge_reply, model_id="scripted-judge")
    return Backends(generator=lambda _cfg: generator, judge=lambda: judge)


def write_study(root: Path, model_dir: Path, **over: Any) -> Path:
    """Files of a study under `root` (run config, questions, spec); returns the spec's path."""
    root.mkdir(parents=True, exist_ok=True)
    run = merge(BASE, {"sample": {"size": 16}})
    (root / "run.yaml").write_text(yaml.safe_dump(run), encoding="utf-8")
    (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    (root / "math.jsonl").write_text("".join(json.dumps(q) + "\n" for q in MATH), encoding="utf-8")
    spec: dict[str, Any] = {
        "name": "tiny",
        "run": "run.yaml",
        "seed": 3,
        "datasets": {"explore": {"kind": "run"}, "self_instruct": {"kind": "self_instruct", "size": 12}},
        "axes": [
            {"dataset": "explore", "depth": [1, 2]},
            {"dataset": "explore", "size": [4, 8]},
            {"dataset": "explore", "filter": [False]},
        ],
        "train": {
            "model": str(model_dir),
            "max_steps": 2,
            "global_batch_size": 4,
            "per_device_batch_size": 4,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "max_length": 256,
        },
        "evaluate": {
            "questions": ["questions.jsonl"],
            "answer": {"max_new_tokens": 8, "temperature": 1.0, "batch_size": 8},
            "judge": {
                "llm": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "judge", "retries": 0},
                "bootstrap": 200,
            },
            "baselines": ["self_instruct"],
            "math_questions": "math.jsonl",
        },
        "runner": {"llm_workers": 2},
    }
    spec = merge(spec, over)
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path
