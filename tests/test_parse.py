import json

import pytest

from explore_instruct.llm.base import ParseError
from explore_instruct.parse import extract_json, parse_examples, parse_subtasks


def test_plain_json_examples():
    text = json.dumps({"examples": [{"instruction": "Do X", "input": "<noinput>", "output": "Y"}]})
    [ex] = parse_examples(text)
    assert (ex.instruction, ex.input, ex.output) == ("Do X", "", "Y")


def test_json_inside_prose_and_fence():
    text = 'Sure! Here you go:\n```json\n{"examples": [{"instruction": "A b c", "output": "d"}]}\n```\nEnjoy.'
    assert parse_examples(text)[0].instruction == "A b c"


def test_json_list_and_case_insensitive_keys():
    text = '[{"Instruction": "Name it", "Input": "N/A", "Output": "Bob"}]'
    [ex] = parse_examples(text)
    assert ex.input == "" and ex.output == "Bob"


def test_extract_json_skips_braces_in_strings():
    assert extract_json('x {"a": "} {"} y') == {"a": "} {"}


def test_labelled_text_examples():
    text = """1. Instruction: Rewrite the sentence formally.
Input: hey whats up
Output: Hello, how are you?
It continues here.

2. **Instruction:** Summarise the text.
**Input:** None
**Output:** Short summary."""
    a, b = parse_examples(text)
    assert a.output == "Hello, how are you?\nIt continues here."
    assert b.instruction == "Summarise the text." and b.input == "" and b.output == "Short summary."


def test_subtasks_json():
    text = json.dumps(
        {
            "subtasks": [
                {"name": "Paraphrase", "reason": "r", "examples": [{"instruction": "i", "input": "", "output": "o"}]},
                {"name": "", "reason": "skipped: no name"},
            ]
        }
    )
    [s] = parse_subtasks(text)
    assert s.name == "Paraphrase" and s.examples[0].output == "o"


def test_subtasks_labelled_text():
    text = """Subtask: Paraphrase
Reason: Saying the same thing differently.
Instruction: Paraphrase this.
Input: The cat sat.
Output: A cat was sitting.

Subtask 2: Simplify language
Reason: Easier reading.
Instruction: Simplify this.
Input: Utilise the apparatus.
Output: Use the tool.
"""
    a, b = parse_subtasks(text)
    assert (a.name, b.name) == ("Paraphrase", "Simplify language")
    assert b.examples[0].input == "Utilise the apparatus."


@pytest.mark.parametrize("text", ["", "I cannot help with that.", '{"examples": []}', '{"subtasks": [1, 2]}'])
def test_nothing_parseable_raises(text):
    with pytest.raises(ParseError):
        parse_examples(text) if "subtasks" not in text else parse_subtasks(text)
