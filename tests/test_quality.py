import pytest

from explore_instruct.llm.base import CompletionRequest
from explore_instruct.profiles import load_profile, render_prompt
from explore_instruct.quality import PromptText, drop_reason, exact_key, task_name_drop_reason
from explore_instruct.tree import Example, TaskNode, load_upstream

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


# --- junk a weak model wrote (issue 13 item 7) --------------------------------------------------------

REWRITING = load_profile("rewriting")
BRAINSTORMING = load_profile("brainstorming")
MATH = load_profile("math")


@pytest.mark.parametrize(
    ("profile", "example", "reason"),
    [
        (
            REWRITING,
            Example("Rewrite this sentence formally", "gonna be late", ");{"),
            "output has no letters or digits",
        ),
        (
            REWRITING,
            Example("Rewrite this sentence formally", "gonna be late", "3;{'subtasks':[{"),
            "fragment of the JSON format",
        ),
        (
            GENERIC,
            Example("Summarise the following text", "a text", '{"output": "A summary'),
            "fragment of the JSON format",
        ),
        (
            REWRITING,
            Example("Rewrite this sentence more vividly", "The dog ran across the yard.", "more"),
            "output shorter than 2 words",
        ),
        (BRAINSTORMING, Example("List ideas for a birthday party", "", "more"), "output shorter than 3 words"),
        (
            GENERIC,
            Example(
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face", "", "Hello, how can I help?"
            ),
            "chat template text",
        ),
        (GENERIC, Example("Summarise the following text", "a text", "A summary.<|im_end|>"), "chat template text"),
        (
            REWRITING,
            Example("This will always happen", "This will always happen", "This will always happen"),
            "instruction repeats the input",
        ),
    ],
)
def test_junk_from_weak_models_is_dropped(profile, example, reason):
    assert drop_reason(example, profile) == reason


@pytest.mark.parametrize(
    ("profile", "example"),
    [
        (GENERIC, Example("What is the capital of France?", "", "Paris")),  # short answers are normal here
        (REWRITING, Example("Correct the spelling of this word", "occurence", "occurrence")),  # one word in, one out
        (MATH, Example("What is two plus two?", "", "\\boxed{4}")),
        (REWRITING, Example("Add a transition to link these two paragraphs", "One. Two.", "One; moreover, two.")),
    ],
)
def test_short_but_real_answers_are_kept(profile, example):
    assert drop_reason(example, profile) is None


def _generate_prompt(task: str, demos: list[Example]) -> PromptText:
    text = render_prompt(
        "rewriting",
        "generate.txt",
        domain_summary=REWRITING.summary,
        input_rule=REWRITING.input,
        output_format="json",
        parent="Assistance for text editing",
        task=TaskNode(task, reason="People often need a passive sentence made direct."),
        demonstrations=demos,
        count=2,
    )
    return PromptText.of(CompletionRequest.chat(text), demos, ["Assistance for text editing", task])


DEMO = Example("Fix the grammar of the following text.", "He go home to his family.", "He goes home.")


@pytest.mark.parametrize(
    ("example", "reason"),
    [
        # the prompt's own wording, echoed as an instruction or an output
        (Example("Vary the wording of the instructions", "He go home.", "He goes home."), "copied from the prompt"),
        (Example("Rewrite this passage", "He go home.", "A complete, high-quality answer"), "copied from the prompt"),
        (
            Example(
                "Rewrite this passage directly", "It was done.", "People often need a passive sentence made direct."
            ),
            "copied from the prompt",
        ),
        (DEMO, "copy of a demonstration"),
        # a demonstration's input lifted as the instruction (SmolLM2 in `make demo`)
        (Example("He go home to his family.", "He go home.", "He goes home."), "copied from the prompt"),
        # a demonstration's instruction with a new input, or the task's name as the instruction: not echoes
        (Example("Fix the grammar of the following text.", "She walk fast.", "She walks fast."), None),
        (Example("Convert passive voice to active voice", "It was done by me.", "I did it."), None),
    ],
)
def test_text_copied_from_the_prompt_is_dropped(example, reason):
    prompt = _generate_prompt("Convert passive voice to active voice", [DEMO])
    assert drop_reason(example, REWRITING, prompt) == reason


# --- task names (issue 8 item 13) --------------------------------------------------------------------

PATH = ["Assistance for text editing", "Style transfer"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("{<em>improving the town's infrastructure…", "markup in name"),
        ("1.1.1.2.2", "name has no letters"),
        ("Designated Task 1", "placeholder name"),
        ("Subtask B", "placeholder name"),
        ("New task", "placeholder name"),
        ("TASK1", "placeholder name"),  # SmolLM2's names in `make demo`
        ("The 2nd task", "placeholder name"),
        ("3D modelling descriptions", None),
        ("The instructions", "placeholder name"),
        ("1. Paraphrase sentences", "numbering in name"),
        ("Subtask 2: Rewrite emails", "numbering in name"),
        ("- Fix grammar", "numbering in name"),
        ("The assistant rewrites the given sentence so that it sounds more polite", "name longer than 8 words"),
        ("Rewrite it formally.", "name ends with punctuation"),
        ("You are a helpful AI assistant", "chat template text"),
        ("style  TRANSFER", "copy of the parent task"),
        ("Assistance for text editing", "copy of an ancestor task"),
        ("Formal tone", "repeats an existing task"),
        ("Rewrite this letter as a pirate", "copy of an instruction"),
        ("Paraphrase", None),
        ("Coherence and cohesion improvement", None),
        ("Q&A rewriting for C++ docs", None),
        ("description_list.json", "file or code name"),  # issue 20 item 10: names a weak model copied
        ("make", "command, not a task"),
        ("notes.txt cleanup", "file or code name"),
        ("style_transfer", "file or code name"),
        ("Make", "command, not a task"),
        ("Make it formal", None),
        ("Explain Node.js code", None),
        ("Pros/cons lists", None),
        ("_private notes_", None),
    ],
)
def test_task_name_rules(name, reason):
    got = task_name_drop_reason(
        name, GENERIC, path=PATH, existing=["Formal tone"], instructions=["Rewrite this letter as a pirate."]
    )
    assert got == reason


def test_profiles_extend_generic_and_override():
    assert REWRITING.quality.template_text == GENERIC.quality.template_text
    assert REWRITING.task_names == GENERIC.task_names
    assert (GENERIC.quality.min_output_words, BRAINSTORMING.quality.min_output_words) == (1, 3)
    assert "graph" not in MATH.quality.blacklist and "graph" in GENERIC.quality.blacklist


# --- real gpt-3.5 data: the rules must keep it ---------------------------------------------------------


def test_released_rewriting_tree_passes_the_rules(upstream_tree):
    tree = load_upstream(upstream_tree)
    reasons: list[str] = []
    total = 0
    for node, _depth, parent in tree.level_order():
        if parent is None:
            continue  # the root's examples are the hand-written seeds
        names = [c.name for c in parent.children if c is not node]
        instructions = [e.instruction for e in (*node.examples, *parent.examples)]
        assert (
            task_name_drop_reason(node.name, REWRITING, path=[parent.name], existing=names, instructions=instructions)
            is None
        )
        prompt = PromptText.of(
            CompletionRequest.chat(
                render_prompt(
                    "rewriting",
                    "generate.txt",
                    domain_summary=REWRITING.summary,
                    input_rule="required",
                    output_format="json",
                    parent=parent.name,
                    task=node,
                    demonstrations=parent.examples,
                    count=10,
                )
            ),
            parent.examples,
            [parent.name, node.name],
        )
        for ex in node.examples:
            total += 1
            if (reason := drop_reason(ex, REWRITING, prompt)) is not None:
                reasons.append(reason)
    assert total == 4431
    # What is dropped is the blacklist's (a comedy sketch, a photo, a screenshot): under 1 %.
    assert len(reasons) / total < 0.01
    assert all(r.startswith("blacklisted word") for r in reasons), reasons
