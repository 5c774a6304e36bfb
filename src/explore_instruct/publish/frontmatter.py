"""The YAML block at the top of a Hub card, and the pieces of it every card shares."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# The Hub's size buckets (upper bounds, exclusive) and their names.
_SIZES = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)

CITATION = """@inproceedings{wan2023explore,
  title     = {Explore-Instruct: Enhancing Domain-Specific Instruction Coverage through Active Exploration},
  author    = {Wan, Fanqi and Huang, Xinting and Yang, Tao and Quan, Xiaojun and Bi, Wei and Shi, Shuming},
  booktitle = {Proceedings of the 2023 Conference on Empirical Methods in Natural Language Processing},
  pages     = {9435--9454},
  year      = {2023}
}"""


# Fields of a run config or study spec that hold a path on the machine that ran it.
PATH_KEYS = frozenset(
    {"seed_tree", "model_path", "run", "superni", "path", "questions", "math_questions", "seeds", "model"}
    | {"deepspeed", "gguf_file"}
)


def portable(value: Any, key: str = "") -> Any:
    """A config or spec with its absolute paths cut to their last part: a card travels, this machine's
    folders do not (and are nobody's business)."""
    if isinstance(value, dict):
        return {k: portable(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, key) for v in value]
    if key in PATH_KEYS and isinstance(value, str) and value.startswith("/"):
        return Path(value).name
    return value


def size_category(n: int) -> str:
    return next((name for bound, name in _SIZES if n < bound), "1B<n<10B")  # no run writes more


def card_text(meta: dict[str, Any], body: str) -> str:
    """A card: `meta` as YAML front matter (the Hub reads it), then the Markdown body."""
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{head}---\n\n{body}"


def read_front_matter(text: str) -> dict[str, Any]:
    """The YAML metadata of a card (what the Hub and `datasets` read); {} when it has none."""
    if not text.startswith("---\n"):
        return {}
    head, sep, _body = text[4:].partition("\n---\n")
    data = yaml.safe_load(head) if sep else None
    return data if isinstance(data, dict) else {}


def fenced(language: str, text: str) -> str:
    """A Markdown code block that no backtick run inside `text` can close early."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"
