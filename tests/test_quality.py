import pytest

from explore_instruct.profiles import load_profile
from explore_instruct.quality import drop_reason, exact_key
from explore_instruct.tree import Example

GENERIC = load_profile("generic")


@pytest.mark.parametrize(
    ("example", "reason"),
    [
        (Example("Too short", "", "x"), "instruction shorter than 3 words"),
        (Example(" ".join(["word"] * 151), "", "x"), "instruction longer than 150 words"),
        (Example("- Write a poem about rain", "", "x"), "instruction starts with punctuation"),
        (Example("Describe the image below in detail", "", "x"), "blacklisted word 'image'"),
        (Example("Draw a cat for me please", "", "x"), "blacklisted word 'draw'"),
        (Example("Summarise the following text", "<text>", "x"), "placeholder input"),
        (Example("Summarise the following text", "a text", ""), "empty output"),
        (Example("Summarise the following text", "a text", "ok"), None),
        (Example('"Quoted" instructions are allowed here', "", "ok"), None),
    ],
)
def test_generic_rules(example, reason):
    assert drop_reason(example, GENERIC) == reason


def test_blacklist_matches_whole_words_only():
    assert drop_reason(Example("Profile the drawbacks of remote work", "", "x"), GENERIC) is None


def test_rewriting_requires_input():
    assert drop_reason(Example("Rewrite this more formally", "", "x"), load_profile("rewriting")) == "missing input"


def test_math_requires_boxed_answer():
    math = load_profile("math")
    assert drop_reason(Example("What is two plus two?", "", "4"), math) == "no \\boxed{} final answer"
    assert drop_reason(Example("What is two plus two?", "", "So \\boxed{4}."), math) is None


def test_exact_key_ignores_case_and_spacing():
    assert exact_key(Example("Fix  THIS", "a  b")) == exact_key(Example("fix this", "A b"))
