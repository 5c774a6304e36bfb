"""A deterministic fake model for pipeline tests: its reply is a pure function of the request."""

from __future__ import annotations

import json
import random
import re

from explore_instruct.llm.base import CompletionRequest

VERBS = [
    "Summarise",
    "Explain",
    "Rewrite",
    "Classify",
    "Translate",
    "Outline",
    "Critique",
    "Expand",
    "Simplify",
    "Compare",
    "Evaluate",
    "Paraphrase",
    "Shorten",
    "Formalise",
    "Organise",
    "Debug",
]
NOUNS = [
    "contracts",
    "poems",
    "recipes",
    "emails",
    "essays",
    "headlines",
    "reviews",
    "speeches",
    "tweets",
    "abstracts",
    "lectures",
    "stories",
    "letters",
    "reports",
    "slogans",
    "dialogues",
]
TOPICS = [
    "oceans",
    "banking",
    "gardening",
    "chess",
    "volcanoes",
    "jazz",
    "robotics",
    "bread",
    "astronomy",
    "elections",
    "forests",
    "trains",
    "medicine",
    "poetry",
    "deserts",
    "tennis",
]


def _rng(request: CompletionRequest) -> random.Random:
    return random.Random(request.key("fake"))


def subtasks_reply(request: CompletionRequest) -> str:
    schema = request.json_schema or {}
    count = schema["properties"]["subtasks"]["maxItems"]
    per = schema["properties"]["subtasks"]["items"]["properties"]["examples"]["maxItems"]
    rng = _rng(request)
    subtasks = []
    for _ in range(count):
        verb, noun = rng.choice(VERBS), rng.choice(NOUNS)
        subtasks.append(
            {
                "name": f"{verb} {noun} {' '.join(rng.sample(FILLER, 2))}",
                "reason": f"Users often need to {verb.lower()} {noun}.",
                "examples": [example(rng, verb, noun) for _ in range(per)],
            }
        )
    return json.dumps({"subtasks": subtasks})


# Nonsense words, so that two fake instructions rarely share more than a word or two.
FILLER = [
    a + b
    for a in ("ka", "lo", "mi", "ru", "te", "so", "pa", "ne", "di", "fo")
    for b in ("ran", "lek", "mot", "sil", "bur", "cat", "dov", "gen", "hix", "jul")
]


def example(rng: random.Random, verb: str | None = None, noun: str | None = None) -> dict[str, str]:
    verb = verb or rng.choice(VERBS)
    noun = noun or rng.choice(NOUNS)
    words = rng.sample(TOPICS, 3)
    return {
        "instruction": f"{verb} {' '.join(rng.sample(FILLER, 8))} {noun}",
        "input": f"A short text about {words[0]} and {words[1]}.",
        "output": f"Here is the result about {words[2]}. \\boxed{{{rng.randrange(100)}}}",
    }


def examples_reply(request: CompletionRequest) -> str:
    schema = request.json_schema or {}
    count = schema["properties"]["examples"]["maxItems"]
    rng = _rng(request)
    task = re.search(r"^Task: (.*)$", request.messages[-1].content, re.MULTILINE)
    words = (task.group(1) if task else "Summarise reports").split()
    return json.dumps(
        {"examples": [example(rng, words[0], words[1] if len(words) > 1 else None) for _ in range(count)]}
    )


def rating_reply(request: CompletionRequest) -> str:
    """A score from 1 to 10 that depends only on the request, and a one-sentence reason."""
    score = _rng(request).randint(1, 10)
    return json.dumps({"score": score, "reason": f"Scored {score} for how well it follows the instruction."})


def fake_model(request: CompletionRequest) -> str:
    # A json_object body carries the schema without its name: its properties tell them apart.
    properties = (request.json_schema or {}).get("properties", {})
    if request.schema_name == "subtasks" or "subtasks" in properties:
        return subtasks_reply(request)
    if request.schema_name == "rating" or "score" in properties:
        return rating_reply(request)
    return examples_reply(request)
