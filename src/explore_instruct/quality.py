"""Quality heuristics in the spirit of self-instruct, configured per domain profile.

Each check returns the reason a record (an example, or a proposed task name) is dropped, or None.
Dropped records are stored with that reason, so `stats` can say how many were dropped and why.
The rules catch what weak models write: pieces of the JSON reply format, chat-template lines,
text echoed from the prompt, one-word answers, and task names that are markup, numbering,
placeholders, sentences or copies of other tasks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from explore_instruct.llm.base import CompletionRequest
from explore_instruct.profiles import Profile
from explore_instruct.text import invalid_char
from explore_instruct.tree import Example
from explore_instruct.tree import normalise_task_name as normalise

_PLACEHOLDER = re.compile(r"^\s*<[^<>]*>\s*$|\[(?:insert|your|input)[^\]]*\]", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
# "1. Name", "(2) Name", "a) Name", "iv. Name", "- Name", "Subtask 3: Name".
_NUMBERING = re.compile(
    r"^\s*(?:\(?\d+(?:\.\d+)*[.):]|\(?[a-z][.)]\s|[ivx]+[.)]\s|[-•–]\s*|(?:sub-?)?tasks?\s*#?\d+\s*[:.)\-–])",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?:[.!?:;,…]|\.\.\.)\s*$")
# U+FFFD (a lone surrogate repaired on arrival, or bytes a server could not decode) or a control character.
INVALID_TEXT = "invalid text"


@cache
def _blacklist_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b({alternatives})\b", re.IGNORECASE)


@cache
def _format_key_pattern(keys: tuple[str, ...]) -> re.Pattern[str] | None:
    """A quoted key of the reply format followed by a colon: `'subtasks':`, `"output" :`."""
    if not keys:
        return None
    alternatives = "|".join(re.escape(k) for k in keys)
    return re.compile(rf"""["'](?:{alternatives})["']\s*:""", re.IGNORECASE)


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def _template_text(texts: Iterable[str], phrases: Sequence[str]) -> bool:
    squashed = [_squash(t) for t in texts]
    return any(p.lower() in t for p in phrases for t in squashed)


def _contains(haystack: str, needle: str) -> bool:
    """Whole-word containment of two normalised texts."""
    return f" {needle} " in f" {haystack} "


@dataclass(frozen=True)
class PromptText:
    """The prompt a reply answered, so that text the model copied from it can be caught.

    What is caught is an echo of the prompt's own wording (its instructions, the domain summary,
    the task's reason), or an instruction lifted from a demonstration's input or output. An
    instruction inside a demonstration's instruction, an output inside a demonstration's output,
    and a task name shown in the prompt are exempt: a rewriting instruction is often a
    demonstration's with another input, or the task's name ("Convert passive voice to active
    voice"); the diversity filter judges those.
    """

    text: str
    exempt_instructions: tuple[str, ...]
    exempt_outputs: tuple[str, ...]
    demonstration_keys: frozenset[tuple[str, str, str]]

    @classmethod
    def of(cls, request: CompletionRequest, demonstrations: Iterable[Example], names: Iterable[str]) -> PromptText:
        demos = list(demonstrations)
        shown = [normalise(n) for n in names]
        return cls(
            text=normalise("\n".join(m.content for m in request.messages)),
            exempt_instructions=(*(normalise(d.instruction) for d in demos), *shown),
            exempt_outputs=(*(normalise(d.output) for d in demos), *shown),
            demonstration_keys=frozenset(_example_key(d) for d in demos),
        )

    def copies(self, example: Example, min_words: int) -> str | None:
        """Why `example` is a copy of this prompt's text, or None."""
        if _example_key(example) in self.demonstration_keys:
            return "copy of a demonstration"
        for field, exempt in ((example.instruction, self.exempt_instructions), (example.output, self.exempt_outputs)):
            norm = normalise(field)
            if len(norm.split()) < min_words or not _contains(self.text, norm):
                continue
            if not any(_contains(text, norm) for text in exempt):
                return "copied from the prompt"
        return None


def _example_key(example: Example) -> tuple[str, str, str]:
    return (normalise(example.instruction), normalise(example.input), normalise(example.output))


def drop_reason(example: Example, profile: Profile, prompt: PromptText | None = None) -> str | None:
    """Why `example` should be dropped under `profile`'s rules, or None to keep it.

    `prompt`, when given, is the prompt the example was written in reply to.
    """
    rules = profile.quality
    if any(invalid_char(f) for f in (example.instruction, example.input, example.output)):
        return INVALID_TEXT
    instruction = example.instruction.strip()
    words = len(instruction.split())
    if words < rules.min_words:
        return f"instruction shorter than {rules.min_words} words"
    if words > rules.max_words:
        return f"instruction longer than {rules.max_words} words"
    if not instruction[0].isalnum() and instruction[0] not in "\"'(“‘$\\":
        return "instruction starts with punctuation"
    pattern = _blacklist_pattern(tuple(rules.blacklist))
    if pattern is not None and (m := pattern.search(instruction)):
        return f"blacklisted word '{m.group(1).lower()}'"
    if _PLACEHOLDER.search(example.input):
        return "placeholder input"
    if not example.output.strip():
        return "empty output"
    if profile.input == "required" and not example.input.strip():
        return "missing input"
    if example.input.strip() and normalise(example.input) == normalise(instruction):
        return "instruction repeats the input"
    fields = (example.instruction, example.input, example.output)
    if _template_text(fields, rules.template_text):
        return "chat template text"
    keys = _format_key_pattern(tuple(rules.format_keys))
    if keys is not None and any(keys.search(f) for f in fields):
        return "fragment of the JSON format"
    if not any(c.isalnum() for c in example.output):
        return "output has no letters or digits"
    output_words, input_words = len(example.output.split()), len(example.input.split())
    if output_words < rules.min_output_words and not (input_words and output_words >= input_words):
        return f"output shorter than {rules.min_output_words} words"
    if prompt is not None and (copied := prompt.copies(example, rules.prompt_echo_min_words)):
        return copied
    if rules.require_boxed_answer and not _BOXED.search(example.output):
        return "no \\boxed{} final answer"
    return None


def task_name_drop_reason(
    name: str,
    profile: Profile,
    *,
    path: Sequence[str],
    existing: Iterable[str] = (),
    instructions: Iterable[str] = (),
) -> str | None:
    """Why a proposed subtask `name` should be dropped, or None to accept it.

    `path` is the task names from the root down to the parent being explored, `existing` the
    names the new one must differ from (the parent's children and peers, and names accepted
    earlier in the same reply), `instructions` the example instructions the reply and the prompt
    hold (a name that is one of them is not a task name).
    """
    rules = profile.task_names
    if invalid_char(name):
        return INVALID_TEXT
    norm = normalise(name)
    if not any(c.isalpha() for c in name):
        return "name has no letters"
    if _template_text([name], profile.quality.template_text):
        return "chat template text"
    if any(c in rules.forbidden_chars for c in name):
        return "markup in name"
    if _is_code_or_file_name(name, rules.identifier_chars, tuple(rules.file_extensions)):
        return "file or code name"
    if _NUMBERING.match(name):
        return "numbering in name"
    words = norm.split()
    if len(words) < rules.min_words:
        return f"name shorter than {rules.min_words} words"
    if len(words) > rules.max_words:
        return f"name longer than {rules.max_words} words"
    if _SENTENCE_END.search(name):
        return "name ends with punctuation"
    if all(w.lower() in rules.command_words for w in words):
        return "command, not a task"
    placeholders = {w.lower() for w in rules.placeholder_words}
    # Letters and numbers apart, so that "TASK1" reads as "task 1"; "1st" and "2nd" are numbers too.
    tokens = re.findall(r"\d+(?:st|nd|rd|th)?|[a-z]+", norm)
    if all(w in placeholders or w[0].isdigit() or len(w) == 1 for w in tokens):
        return "placeholder name"
    if path and norm == normalise(path[-1]):
        return "copy of the parent task"
    if any(norm == normalise(p) for p in path[:-1]):
        return "copy of an ancestor task"
    if norm in {normalise(n) for n in existing}:
        return "repeats an existing task"
    if norm in {normalise(i) for i in instructions}:
        return "copy of an instruction"
    return None


def _is_code_or_file_name(name: str, identifier_chars: str, extensions: tuple[str, ...]) -> bool:
    for word in name.split():
        if any(c in identifier_chars for c in word.strip(identifier_chars)):  # inside a word: snake_case
            return True
        stem, dot, extension = word.rpartition(".")
        if dot and stem and extension.lower() in extensions:
            return True
    return False


def exact_key(example: Example) -> tuple[str, str]:
    """Two examples with the same key are exact duplicates (case and spacing ignored)."""
    return (" ".join(example.instruction.lower().split()), " ".join(example.input.lower().split()))
