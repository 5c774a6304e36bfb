"""Quality heuristics in the spirit of self-instruct, configured per domain profile.

Each check returns the reason a record is dropped, or None. Dropped records are stored with that
reason, so `stats` can say how many were dropped and why.
"""

from __future__ import annotations

import re
from functools import cache

from explore_instruct.profiles import Profile
from explore_instruct.tree import Example

_PLACEHOLDER = re.compile(r"^\s*<[^<>]*>\s*$|\[(?:insert|your|input)[^\]]*\]", re.IGNORECASE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


@cache
def _blacklist_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b({alternatives})\b", re.IGNORECASE)


def drop_reason(example: Example, profile: Profile) -> str | None:
    """Why `example` should be dropped under `profile`'s rules, or None to keep it."""
    rules = profile.quality
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
    if rules.require_boxed_answer and not _BOXED.search(example.output):
        return "no \\boxed{} final answer"
    return None


def exact_key(example: Example) -> tuple[str, str]:
    """Two examples with the same key are exact duplicates (case and spacing ignored)."""
    return (" ".join(example.instruction.lower().split()), " ".join(example.input.lower().split()))
