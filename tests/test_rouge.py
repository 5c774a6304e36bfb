"""The fast ROUGE-L filter against the rouge-score reference: the same decisions, bit for bit."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rouge_score import rouge_scorer

from explore_instruct import rouge
from explore_instruct.rouge import (
    diversity_filter,
    make_tokenizer,
    max_overlap,
    prune_names,
    rouge_l_f1,
    tokenize,
)
from tests.conftest import FIXTURES, needs_fixtures

FIXTURE = FIXTURES / "upstream_rewriting_tree"

_SCORERS: dict[tuple[str, bool], rouge_scorer.RougeScorer] = {}


class _OurTokenizer:
    """Lets rouge-score score with the unicode/cjk tokenizers (its scoring, our tokens)."""

    def __init__(self, name: str, stem: bool) -> None:
        self._tok = make_tokenizer(name, stem)  # type: ignore[arg-type]

    def tokenize(self, text: str) -> list[str]:
        return self._tok(text)


def scorer(tokenizer: str = "rouge", stem: bool = False) -> rouge_scorer.RougeScorer:
    key = (tokenizer, stem)
    if key not in _SCORERS:
        if tokenizer == "rouge":
            _SCORERS[key] = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stem)
        else:
            _SCORERS[key] = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_OurTokenizer(tokenizer, stem))
    return _SCORERS[key]


def reference_filter(texts, threshold, groups=None, tokenizer="rouge", stem=False):
    """The reference: greedy in input order, ``scorer.score(kept, new)``, drop when F1 > threshold.

    Also reports the kept text with the highest score (the earliest on a tie) and that score.
    """
    sc = scorer(tokenizer, stem)
    kept_by_group: dict = {}
    kept, dup_of, score = [], [], []
    for i, text in enumerate(texts):
        g = None if groups is None else groups[i]
        best = None
        for c in kept_by_group.get(g, []):
            f = sc.score(texts[c], text)["rougeL"].fmeasure
            if f > threshold and (best is None or f > best[1]):
                best = (c, f)
        if best is None:
            kept.append(True)
            dup_of.append(None)
            score.append(None)
            kept_by_group.setdefault(g, []).append(i)
        else:
            kept.append(False)
            dup_of.append(best[0])
            score.append(best[1])
    return kept, dup_of, score


def assert_same(result, ref):
    assert result.kept == ref[0]
    assert result.dup_of == ref[1]
    # Compare floats by their bits (== would also accept 0.0 vs -0.0; there are none here).
    assert [None if s is None else float(s).hex() for s in result.score] == [
        None if s is None else float(s).hex() for s in ref[2]
    ]


# ---------------------------------------------------------------- strategies

WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "run", "runs", "running", "x1", "42", "Über", "İ"]
SEPARATORS = [" ", "  ", ", ", "-", "! ", "\n", "_", "."]


@st.composite
def texts_from_words(draw, max_words=12):
    n = draw(st.integers(0, max_words))
    out = []
    for _ in range(n):
        out.append(draw(st.sampled_from(WORDS)))
        out.append(draw(st.sampled_from(SEPARATORS)))
    return "".join(out)


@st.composite
def near_duplicates(draw, size=25):
    """A few base texts and many lightly edited copies: lots of pairs near the threshold."""
    bases = draw(st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=14), min_size=1, max_size=4))
    out = []
    for _ in range(draw(st.integers(1, size))):
        words = list(draw(st.sampled_from(bases)))
        for _ in range(draw(st.integers(0, 3))):
            op = draw(st.integers(0, 2))
            pos = draw(st.integers(0, len(words)))
            if op == 0 and words:
                del words[min(pos, len(words) - 1)]
            elif op == 1:
                words.insert(pos, draw(st.sampled_from(WORDS)))
            elif words:
                words[min(pos, len(words) - 1)] = draw(st.sampled_from(WORDS))
        out.append(" ".join(words))
    return out


text_lists = st.one_of(st.lists(texts_from_words(), max_size=20), near_duplicates())
thresholds = st.one_of(
    st.sampled_from([0.7, 0.5, 0.0, 0.6, 0.75, 0.8, 2 / 3, 0.999, 1.0]),
    st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- tokenizer and score


@FAST
@given(st.text(max_size=60))
def test_rouge_tokenizer_is_rouge_scores(text):
    assert tokenize(text) == scorer()._tokenizer.tokenize(text)


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.text(max_size=40), texts_from_words()))
def test_stemming_tokenizer_is_rouge_scores(text):
    assert tokenize(text, stem=True) == scorer("rouge", True)._tokenizer.tokenize(text)


@FAST
@given(texts_from_words(20), texts_from_words(20))
def test_f1_is_rouge_scores_float_and_symmetric(a, b):
    ta, tb = tokenize(a), tokenize(b)
    ref = scorer().score(a, b)["rougeL"].fmeasure
    assert rouge_l_f1(ta, tb).hex() == float(ref).hex()
    assert rouge_l_f1(tb, ta).hex() == float(ref).hex()


def test_boundary_lcs_7_of_10_and_10():
    a = " ".join(f"w{i}" for i in range(10))
    b = " ".join([*(f"w{i}" for i in range(7)), "x", "y", "z"])
    ref = scorer().score(a, b)["rougeL"].fmeasure
    ours = rouge_l_f1(tokenize(a), tokenize(b))
    assert ours.hex() == float(ref).hex()
    for threshold in (0.7, math.nextafter(0.7, 0), math.nextafter(0.7, 1), ours, 0.69, 0.71):
        result = diversity_filter([a, b], threshold, workers=1)
        assert result.kept == [True, not ref > threshold], threshold


def test_boundaries_all_small_lengths():
    """Every (LCS, m, n) up to 12 tokens, at thresholds on and next to 2*LCS/(m+n)."""
    sc = scorer()
    checked = 0
    for m in range(1, 13):
        a = [f"a{i}" for i in range(m)]
        for n in range(1, 13):
            for lcs in range(1, min(m, n) + 1):
                b = a[:lcs] + [f"b{i}" for i in range(n - lcs)]
                ta, tb = " ".join(a), " ".join(b)
                ref = sc.score(ta, tb)["rougeL"].fmeasure
                exact = 2 * lcs / (m + n)
                for threshold in {exact, round(exact, 1), round(exact, 2), math.nextafter(ref, 0), ref}:
                    result = diversity_filter([ta, tb], threshold, workers=1)
                    assert result.kept == [True, not ref > threshold], (m, n, lcs, threshold)
                    if not result.kept[1]:
                        assert result.dup_of[1] == 0
                        assert result.score[1].hex() == float(ref).hex()
                    checked += 1
    assert checked > 1000


# ---------------------------------------------------------------- the filter against the reference


@FAST
@given(text_lists, thresholds)
def test_global_scope_matches_reference(texts, threshold):
    assert_same(diversity_filter(texts, threshold, workers=1), reference_filter(texts, threshold))


@FAST
@given(text_lists, thresholds, st.data())
def test_node_scope_matches_reference(texts, threshold, data):
    groups = data.draw(st.lists(st.sampled_from(["a", "b", 3]), min_size=len(texts), max_size=len(texts)))
    assert_same(
        diversity_filter(texts, threshold, groups=groups, workers=1),
        reference_filter(texts, threshold, groups),
    )


@settings(max_examples=25, deadline=None)
@given(text_lists, thresholds, st.booleans())
def test_stemming_matches_reference(texts, threshold, scoped):
    groups = [i % 2 for i in range(len(texts))] if scoped else None
    assert_same(
        diversity_filter(texts, threshold, groups=groups, stem=True, workers=1),
        reference_filter(texts, threshold, groups, stem=True),
    )


UNICODE_WORDS = ["猫", "が", "マット", "に", "座った", "кошка", "сидит", "नमस्ते", "é", "e\u0301", "Straße", "the"]


@st.composite
def unicode_texts(draw):
    words = draw(st.lists(st.sampled_from(UNICODE_WORDS), max_size=10))
    return draw(st.sampled_from([" ", "", "、", ", "])).join(words)


@settings(max_examples=40, deadline=None)
@given(st.lists(unicode_texts(), max_size=15), thresholds, st.sampled_from(["unicode", "cjk"]))
def test_unicode_tokenizers_match_reference_with_same_tokens(texts, threshold, tokenizer):
    assert_same(
        diversity_filter(texts, threshold, tokenizer=tokenizer, workers=1),
        reference_filter(texts, threshold, tokenizer=tokenizer),
    )


def test_unicode_and_cjk_tokenizers():
    assert tokenize("Кошка сидит на мате.") == []  # the reference keeps only [a-z0-9]
    assert tokenize("Кошка сидит на мате.", "unicode") == ["кошка", "сидит", "на", "мате"]
    assert tokenize("नमस्ते दुनिया", "unicode") == ["नमस्ते", "दुनिया"]  # vowel signs stay in the word
    assert tokenize("Straße_ＡＢＣ", "unicode") == ["strasse", "abc"]
    assert tokenize("猫がマットに座った", "unicode") == ["猫がマットに座った"]
    assert tokenize("猫がマットに座った hello", "cjk") == [
        "猫",
        "が",
        "マ",
        "ッ",
        "ト",
        "に",
        "座",
        "っ",
        "た",
        "hello",
    ]
    assert tokenize("running cats 走る", "cjk", stem=True) == ["run", "cat", "走", "る"]
    with pytest.raises(Exception, match="tokenizer"):
        tokenize("x", "nope")  # type: ignore[arg-type]


def test_cjk_tokenizer_makes_chinese_filterable():
    texts = ["把这句话改写得更正式", "把这句话改写得更加正式", "总结下面这段文字"]
    assert diversity_filter(texts, 0.7).kept == [True, True, True]  # rouge: all empty, never similar
    result = diversity_filter(texts, 0.7, tokenizer="cjk")
    assert result.kept == [True, False, True]
    assert result.dup_of[1] == 0


def test_empty_and_punctuation_only():
    texts = ["", "!!!", "...", "日本語", "a", "", "a."]
    result = diversity_filter(texts, 0.7)
    assert_same(result, reference_filter(texts, 0.7))
    assert result.kept == [True, True, True, True, True, True, False]
    # Below zero every pair collides, even empty ones (0 > -0.5): only the first text stays.
    assert_same(diversity_filter(texts, -0.5), reference_filter(texts, -0.5))
    assert diversity_filter(texts, -0.5, groups=[0, 1, 0, 1, 0, 1, 0]).kept == [True, True] + [False] * 5
    assert diversity_filter([], 0.7).kept == []


@settings(max_examples=12, deadline=None)
@given(near_duplicates(size=60), st.sampled_from([0.7, 0.5, 0.8]), st.booleans())
def test_parallel_batches_match_sequential(texts, threshold, scoped):
    groups = [len(t) % 3 for t in texts] if scoped else None
    seq = diversity_filter(texts, threshold, groups=groups, workers=1)
    with pytest.MonkeyPatch.context() as mp:
        # Tiny batches, so that the multi-process path runs many batches on small inputs.
        mp.setattr(rouge, "_BATCH", 5)
        par = diversity_filter(texts, threshold, groups=groups, workers=2)
    assert (par.kept, par.dup_of, par.score) == (seq.kept, seq.dup_of, seq.score)
    assert_same(seq, reference_filter(texts, threshold, groups))


@settings(max_examples=30, deadline=None)
@given(text_lists, thresholds)
def test_int_sequences_match_reference(texts, threshold):
    """Past the Unicode code space (over a million distinct tokens) tokens become int tuples."""
    assert_same(diversity_filter(texts, threshold, workers=1, _force_ints=True), reference_filter(texts, threshold))


def test_vocabulary_overflow_falls_back_to_ints(monkeypatch):
    monkeypatch.setattr(rouge, "_MAX_CODES", 5)
    texts = ["a b c d", "a b c d e", "f g h i j k", "f g h i j x", "a b q"]
    assert_same(diversity_filter(texts, 0.7, workers=1), reference_filter(texts, 0.7))


def test_thresholds_outside_zero_one():
    texts = ["a b c", "a b c", "x"]
    assert diversity_filter(texts, 1.0).kept == [True, True, True]  # F1 never exceeds 1
    assert diversity_filter(texts, math.nan).kept == [True, True, True]
    assert diversity_filter(texts, math.nextafter(1.0, 0)).kept == [True, False, True]


def test_groups_length_must_match():
    with pytest.raises(ValueError, match="groups"):
        diversity_filter(["a", "b"], groups=[1])


def test_progress_is_reported():
    seen = []
    diversity_filter(["a b", "a b", "c"], progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (3, 3)


def test_prune_names():
    names = ["paraphrase", "style transfer", "paraphrase sentences", "text style transfer", "summarize"]
    result = prune_names(names, 0.7)
    assert_same(result, reference_filter(names, 0.7))
    assert result.kept == [True, True, True, False, True]
    assert result.dup_of[3] == 1


@settings(max_examples=40, deadline=None)
@given(st.lists(texts_from_words(), max_size=12), st.lists(texts_from_words(), max_size=8))
def test_max_overlap_matches_reference(texts, references):
    sc = scorer()
    got = max_overlap(texts, references)
    assert len(got) == len(texts)
    for text, (best, idx) in zip(texts, got, strict=True):
        scores = [sc.score(r, text)["rougeL"].fmeasure for r in references]
        top = max(scores, default=0.0)
        assert float(best).hex() == float(top).hex()
        if top > 0:
            assert idx == scores.index(top)
        else:
            assert idx is None


@needs_fixtures
def test_fixture_instructions_match_reference():
    meta = json.loads((FIXTURE / "tree_meta_info.json").read_text())
    queue, texts, groups = [meta], [], []
    while queue:
        node = queue.pop(0)
        queue.extend(node.get("children", []))
        for ex in json.loads((FIXTURE / node["config_filename"]).read_text()).get("examples", []):
            texts.append(ex["instruction"])
            groups.append(node["task_name"])
    texts, groups = texts[:450], groups[:450]
    assert_same(diversity_filter(texts, 0.7), reference_filter(texts, 0.7))
    assert_same(diversity_filter(texts, 0.7, groups=groups), reference_filter(texts, 0.7, groups))
