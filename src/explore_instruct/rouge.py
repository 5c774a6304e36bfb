"""Fast, exact ROUGE-L: the diversity filter, task pruning and overlap with seed instructions.

The reference every method of this family uses is `rouge-score`: keep an instruction only if its
ROUGE-L F1 with every instruction kept before it is at most the threshold (0.7), greedy in input
order. This module takes exactly the same decisions, bit for bit, much faster:

* Tokens are `rouge-score`'s (lower-case, runs of ``[a-z0-9]``, optional Porter stemming of tokens
  longer than 3 characters), then each distinct token becomes one character of a code string, so
  `rapidfuzz`'s bit-parallel C++ LCS measures token LCS lengths.
* A pair can only exceed the threshold if the two token multisets share enough tokens. Prefix
  filtering (as in set-similarity joins) uses that: with tokens ordered rarest first, two texts that
  share enough tokens must share one of the first few of each, so only kept texts that share one
  of the query's rare prefix tokens are candidates. rapidfuzz then screens all candidates of a
  query in one C++ call (`process.extract` with the normalised Indel similarity, which is
  2*LCS/(m+n), the F1 before rounding, and skips pairs whose lengths alone rule them out). The
  bounds carry a safety margin of 1e-6 on the threshold, so a pair on or next to the boundary
  always reaches the exact check.
* The exact check computes rouge-score's float expression from the LCS length:
  ``precision = lcs / len(prediction)``, ``recall = lcs / len(target)``,
  ``2 * precision * recall / (precision + recall)`` (0 when a side is empty or nothing matches),
  and drops a text when that float is *greater than* the threshold. The reference filter is
  ``scorer.score(kept, new)``: the kept text is the target, the new one the prediction. (The
  expression is symmetric even in floating point: ``2 * p`` is exact, so ``2*p*r`` and ``2*r*p``
  round the same product, and ``p + r == r + p``.)
* Large inputs are checked in batches on several processes (fork), each holding a copy of the
  index of kept texts; texts kept within the current batch are checked afterwards in input order,
  so the decisions are those of the sequential greedy pass.

The ``unicode`` and ``cjk`` tokenizers are a deliberate difference from the reference, for
languages that `rouge-score` drops entirely (it keeps only ``[a-z0-9]``): see `tokenize`.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import re
import signal
import sys
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any, Literal

from rapidfuzz.distance import Indel, LCSseq
from rapidfuzz.process import extract as _extract

from explore_instruct.errors import UserError

if TYPE_CHECKING:  # multiprocessing is imported only when a run forks workers
    from multiprocessing.connection import Connection

Tokenizer = Literal["rouge", "unicode", "cjk"]
TOKENIZERS: tuple[str, ...] = ("rouge", "unicode", "cjk")
Progress = Callable[[int, int], None]

# The bounds use a threshold lowered by this margin, so float rounding (a few ulps) never prunes a
# pair whose exact rouge-score float could exceed the real threshold.
_MARGIN = 1e-6
# Inputs at least this large use several processes when `workers` is not given.
_PARALLEL_MIN = 30_000
_BATCH = 4096
_MAX_AUTO_WORKERS = 8
_PROGRESS_EVERY = 4096

# --------------------------------------------------------------------------------------------
# Tokenizers

_ROUGE_TOKEN_RE = re.compile(r"[a-z0-9]+")
_ASCII_TOKEN_RE = re.compile(r"[a-z0-9]+\Z")
# Han ideographs (with extensions and compatibility forms), kana, bopomofo.
_CJK_CHARS = (
    "\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f"
)
_unicode_re: re.Pattern[str] | None = None
_cjk_re: re.Pattern[str] | None = None


def _mark_class() -> str:
    """A regex character class body with every combining mark (categories Mn, Mc, Me)."""
    ranges: list[tuple[int, int]] = []
    for cp in range(sys.maxunicode + 1):
        if unicodedata.category(chr(cp)).startswith("M"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


def _unicode_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    global _unicode_re, _cjk_re
    if _unicode_re is None or _cjk_re is None:
        marks = _mark_class()
        # A word: a letter or digit, then letters, digits and combining marks (so Devanagari,
        # Arabic or Thai words keep their vowel signs). Underscore is punctuation here.
        _unicode_re = re.compile(rf"[^\W_](?:[^\W_]|[{marks}])*")
        _cjk_re = re.compile(rf"[{_CJK_CHARS}]|[^\W_{_CJK_CHARS}](?:[^\W_{_CJK_CHARS}]|[{marks}])*")
    return _unicode_re, _cjk_re


def _porter_stem() -> Callable[[str], str]:
    try:
        from nltk.stem import porter
    except ImportError:  # pragma: no cover - nltk comes with rouge-score
        raise UserError("stemming needs nltk (the Porter stemmer rouge-score uses): pip install nltk") from None
    stem: Callable[[str], str] = porter.PorterStemmer().stem
    return stem


def make_tokenizer(tokenizer: Tokenizer = "rouge", stem: bool = False) -> Callable[[str], list[str]]:
    """A function text -> tokens; stemming results are cached inside it (keep it for many texts)."""
    if tokenizer not in TOKENIZERS:
        raise UserError(f"unknown tokenizer {tokenizer!r}: expected one of {', '.join(TOKENIZERS)}")
    if tokenizer == "rouge":
        findall = _ROUGE_TOKEN_RE.findall

        def words(text: str) -> list[str]:
            return findall(text.lower())

    else:
        uni, cjk = _unicode_patterns()
        findall = (uni if tokenizer == "unicode" else cjk).findall

        def words(text: str) -> list[str]:
            return findall(unicodedata.normalize("NFKC", text).casefold())

    if not stem:
        return words

    stemmer = _porter_stem()
    cache: dict[str, str] = {}
    ascii_only = tokenizer != "rouge"

    def stem_token(tok: str) -> str:
        out = cache.get(tok)
        if out is None:
            stemmable = len(tok) > 3 and (not ascii_only or _ASCII_TOKEN_RE.match(tok))
            out = cache[tok] = stemmer(tok) if stemmable else tok
        return out

    if ascii_only:

        def stemmed(text: str) -> list[str]:
            return [s for s in map(stem_token, words(text)) if s]

    else:
        # rouge-score drops any stemmed token that is no longer a run of [a-z0-9].
        valid = _ASCII_TOKEN_RE.match

        def stemmed(text: str) -> list[str]:
            return [s for s in map(stem_token, words(text)) if valid(s)]

    return stemmed


def tokenize(text: str, tokenizer: Tokenizer = "rouge", stem: bool = False) -> list[str]:
    """Tokens of `text`.

    * ``rouge`` (default): exactly `rouge-score`'s default tokenizer: lower-case, every character
      outside ``[a-z0-9]`` separates tokens (so other scripts vanish), and with `stem` the Porter
      stemmer (nltk, as rouge-score uses it) on tokens longer than 3 characters.
    * ``unicode``: NFKC-normalised, case-folded Unicode words (letters and digits of any script with
      their combining marks; punctuation and ``_`` separate). A deliberate difference from the
      reference, for languages it cannot score.
    * ``cjk``: like ``unicode``, but each Han ideograph, kana or bopomofo character is a token of its
      own (those scripts do not separate words by spaces). Also a deliberate difference.

    With ``unicode``/``cjk``, `stem` only stems tokens made of ``[a-z0-9]``.
    """
    return make_tokenizer(tokenizer, stem)(text)


# --------------------------------------------------------------------------------------------
# Scores


def _rouge_f(lcs: int, n_target: int, n_prediction: int) -> float:
    """rouge-score's ROUGE-L F-measure from the LCS length, with its exact float operations."""
    if lcs <= 0 or n_target == 0 or n_prediction == 0:
        return 0.0
    precision = lcs / n_prediction
    recall = lcs / n_target
    return 2 * precision * recall / (precision + recall)


def _encode_pair(a: Sequence[str], b: Sequence[str]) -> tuple[str, str]:
    codes: dict[str, str] = {}
    for tok in (*a, *b):
        if tok not in codes:
            codes[tok] = _code_char(len(codes))
    return "".join(codes[t] for t in a), "".join(codes[t] for t in b)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists."""
    if not a or not b:
        return 0
    sa, sb = _encode_pair(a, b)
    return int(LCSseq.similarity(sa, sb))


def rouge_l_f1(target: Sequence[str], prediction: Sequence[str]) -> float:
    """ROUGE-L F1 of two token lists: the same float as rouge-score's ``score(target, prediction)``.

    Symmetric (also bit for bit); 0.0 when either side is empty.
    """
    return _rouge_f(lcs_length(target, prediction), len(target), len(prediction))


# --------------------------------------------------------------------------------------------
# Encoding: one character per distinct token, and a rarity rank per token for prefix filtering

_SURROGATES = 0xE000 - 0xD800
_MAX_CODES = sys.maxunicode + 1 - _SURROGATES


def _code_char(code: int) -> str:
    return chr(code if code < 0xD800 else code + _SURROGATES)


class _VocabFull(Exception):
    pass


class _CharVocab(dict[str, str]):
    """token -> one character, allocated on first sight (skipping the surrogate range)."""

    def __init__(self) -> None:
        super().__init__()
        self.next_code = 0

    def __missing__(self, tok: str) -> str:
        code = self.next_code
        if code >= _MAX_CODES:
            raise _VocabFull
        self.next_code = code + 1
        ch = _code_char(code)
        self[tok] = ch
        return ch


class _IntVocab(dict[str, int]):
    def __missing__(self, tok: str) -> int:
        code = len(self)
        self[tok] = code
        return code


Seq = str | tuple[int, ...]


@dataclass
class _Corpus:
    """Encoded texts: `seqs[i]` has one element per token; `rank[code]` is 0 for the rarest token."""

    seqs: list[Any]
    rank: list[int]
    vocab_size: int

    def sorted_keys(self, s: Seq) -> list[int]:
        """The elements of `s` as a multiset, in the global order (rarest token first).

        The k-th repeat of a token is the element ``rank + k * vocab_size``.
        """
        rank = self.rank
        keys = [rank[c] for c in map(ord, s)] if isinstance(s, str) else [rank[c] for c in s]
        keys.sort()
        if len(set(keys)) != len(keys):
            v = self.vocab_size
            out: list[int] = []
            prev, k = -1, 0
            for x in keys:
                if x == prev:
                    k += 1
                else:
                    prev, k = x, 0
                out.append(x + k * v)
            out.sort()
            return out
        return keys


def _encode(token_lists: Iterator[list[str]], force_ints: bool = False) -> _Corpus:
    """Encode token lists (consumed once) as code strings (or int tuples past the code space)."""
    if not force_ints:
        vocab = _CharVocab()
        seqs: list[Any] = []
        append = seqs.append
        pending: list[list[str]] = []
        try:
            for toks in token_lists:
                pending = [toks]
                append("".join([vocab[t] for t in toks]))
            counts: Counter[str] = Counter()
            for start in range(0, len(seqs), 20_000):
                counts.update("".join(seqs[start : start + 20_000]))
            size = max((ord(c) for c in vocab.values()), default=-1) + 1
            rank = [0] * size
            for r, (ch, _) in enumerate(sorted(counts.items(), key=lambda kv: (kv[1], kv[0]))):
                rank[ord(ch)] = r
            return _Corpus(seqs, rank, len(vocab))
        except _VocabFull:
            # More distinct tokens than code points: re-encode everything as int tuples.
            back = {c: t for t, c in vocab.items()}
            done = [[back[c] for c in s] for s in seqs]
            token_lists = iter([*done, *pending, *token_lists])
    ivocab = _IntVocab()
    iseqs: list[Any] = [tuple([ivocab[t] for t in toks]) for toks in token_lists]
    icounts: Counter[int] = Counter()
    for s in iseqs:
        icounts.update(s)
    irank = [0] * len(ivocab)
    for r, (code, _) in enumerate(sorted(icounts.items(), key=lambda kv: (kv[1], kv[0]))):
        irank[code] = r
    return _Corpus(iseqs, irank, len(ivocab))


# --------------------------------------------------------------------------------------------
# The greedy filter


@dataclass
class FilterResult:
    """What the diversity filter decided, per input index.

    `dup_of[i]` is, for a dropped record, the kept record it collided with: among the kept records
    before it (in its group) whose ROUGE-L F1 with it exceeds the threshold, the one with the
    highest score, the earliest on a tie. `score[i]` is that pair's exact rouge-score F1. Both are
    None for kept records.
    """

    kept: list[bool]
    dup_of: list[int | None]
    score: list[float | None]
    seconds: float = field(default=0.0, compare=False)

    @property
    def n_kept(self) -> int:
        return sum(self.kept)

    @property
    def kept_indices(self) -> list[int]:
        return [i for i, k in enumerate(self.kept) if k]


class _Bounds:
    """Integer bounds derived from the threshold (lowered by the safety margin).

    Prefix filtering: with the elements of every text in one global order (rarest token first), two
    texts that share at least `a` elements share one of their first ``len - a + 1`` elements. A text
    of n tokens can only exceed the threshold with a partner when they share more than
    ``t*n/(2-t)`` tokens (at least ``alpha(n)``), so each kept text is indexed by its first
    ``n - alpha(n) + 1`` elements and a new text probes the index with as many of its own.
    """

    def __init__(self, threshold: float, max_len: int) -> None:
        t = threshold - _MARGIN
        # For rapidfuzz's normalised Indel similarity, 2*LCS/(m+n): the F1 without its rounding.
        self.cutoff = max(0.0, t)
        alpha = [max(1, math.floor(t * n / (2 - t)) + 1) for n in range(max_len + 1)]
        self.prefix = [n - a + 1 if n else 0 for n, a in enumerate(alpha)]


class _Index:
    """The kept texts of each group, indexed by the rarest elements of each.

    A posting holds the kept texts' code strings next to their indices, so the candidates of a
    query go to rapidfuzz in one call without a Python loop over them.
    """

    def __init__(self, corpus: _Corpus, groups: Sequence[Hashable] | None, bounds: _Bounds, threshold: float) -> None:
        self.corpus = corpus
        self.seqs = corpus.seqs
        self.groups = groups
        self.bounds = bounds
        self.threshold = threshold
        self.postings: dict[Hashable, dict[int, tuple[list[Any], list[int]]]] = {}

    def probe_keys(self, i: int) -> list[int]:
        s = self.seqs[i]
        n = self.bounds.prefix[len(s)]
        return self.corpus.sorted_keys(s)[:n] if n else []

    def add(self, i: int, keys: list[int] | None = None) -> None:
        if keys is None:
            keys = self.probe_keys(i)
        if not keys:
            return
        g = None if self.groups is None else self.groups[i]
        postings = self.postings.get(g)
        if postings is None:
            postings = self.postings[g] = {}
        s = self.seqs[i]
        for k in keys:
            entry = postings.get(k)
            if entry is None:
                postings[k] = ([s], [i])
            else:
                entry[0].append(s)
                entry[1].append(i)

    def best(self, i: int, keys: list[int] | None = None) -> tuple[int, float] | None:
        """The kept text with the highest F1 > threshold against text i (earliest on a tie)."""
        if keys is None:
            keys = self.probe_keys(i)
        if not keys:
            return None
        postings = self.postings.get(None if self.groups is None else self.groups[i])
        if not postings:
            return None
        entries = [e for e in map(postings.get, keys) if e is not None]
        if not entries:
            return None
        if len(entries) == 1:
            choices, ids = entries[0]
        else:
            choices = list(chain.from_iterable(e[0] for e in entries))
            ids = None
        s = self.seqs[i]
        # Cheap exact-enough filter in C: normalised Indel similarity is 2*LCS/(m+n), the F1.
        hits = _extract(s, choices, scorer=Indel.normalized_similarity, score_cutoff=self.bounds.cutoff, limit=None)
        if not hits:
            return None
        if ids is None:
            ids = list(chain.from_iterable(e[1] for e in entries))
        m = len(s)
        seqs = self.seqs
        threshold = self.threshold
        best_c, best_f = -1, -1.0
        for c in {ids[h[2]] for h in hits}:
            sc = seqs[c]
            f = _rouge_f(int(LCSseq.similarity(s, sc)), len(sc), m)  # target = kept, prediction = new
            if f > threshold and (f > best_f or (f == best_f and c < best_c)):
                best_c, best_f = c, f
        return (best_c, best_f) if best_c >= 0 else None


def _run_sequential(
    index: _Index,
    order: range,
    kept: list[bool],
    dup_of: list[int | None],
    score: list[float | None],
    progress: Progress | None,
    total: int,
) -> None:
    for i in order:
        keys = index.probe_keys(i)
        hit = index.best(i, keys)
        if hit is None:
            kept[i] = True
            index.add(i, keys)
        else:
            dup_of[i], score[i] = hit
        if progress is not None and (i + 1) % _PROGRESS_EVERY == 0:
            progress(i + 1, total)


# Worker processes inherit this through fork.
_SHARED: _Index | None = None


# prctl(2) option: the signal the kernel sends this process when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when the process that forked it ends, however it ends (SIGKILL included).

    On Linux the kernel kills it at once (PR_SET_PDEATHSIG). A watcher thread covers the rest: a
    parent that died before prctl took effect, and platforms without prctl.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _worker_loop(conn: Any, inherited: list[Any], parent_pid: int) -> None:
    _die_with_parent(parent_pid)
    # Fork copied this process's ends of every pipe made so far (this worker's own included). Closed
    # here, a dead parent reads as end-of-file instead of a pipe that stays open forever.
    for other in inherited:
        other.close()
    index = _SHARED
    assert index is not None
    try:
        while True:
            msg = conn.recv()
            if msg is None:
                break
            added, lo, hi, step = msg
            for i in added:
                index.add(i)
            hits = []
            for i in range(lo, hi, step):
                hit = index.best(i)
                if hit is not None:
                    hits.append((i, hit[0], hit[1]))
            conn.send(hits)
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        conn.close()


def _run_parallel(
    index: _Index,
    total: int,
    workers: int,
    kept: list[bool],
    dup_of: list[int | None],
    score: list[float | None],
    progress: Progress | None,
) -> None:
    import multiprocessing as mp

    global _SHARED
    ctx = mp.get_context("fork")
    _SHARED = index
    procs = []
    conns: list[Connection] = []
    try:
        for _ in range(workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_loop, args=(child, [*conns, parent], os.getpid()), daemon=True)
            p.start()
            child.close()
            procs.append(p)
            conns.append(parent)
    finally:
        _SHARED = None
    try:
        # The helpers check batch b against the texts kept before batch b - 1 while this process
        # settles batch b - 1; it then checks batch b against the texts kept in batches b - 1 and
        # b, in input order, which gives the sequential decisions.
        n_batches = (total + _BATCH - 1) // _BATCH

        def request(b: int, added: list[int]) -> None:
            lo, hi = b * _BATCH, min(total, (b + 1) * _BATCH)
            for w, conn in enumerate(conns):
                conn.send((added, lo + w, hi, workers))

        request(0, [])
        previous: list[int] = []  # kept in the batch before the current one
        for b in range(n_batches):
            prior: dict[int, tuple[int, float]] = {}
            for conn in conns:
                for i, c, f in conn.recv():
                    prior[i] = (c, f)
            if b + 1 < n_batches:
                request(b + 1, previous)
            local = _Index(index.corpus, index.groups, index.bounds, index.threshold)
            for i in previous:
                local.add(i)
            current: list[int] = []
            lo, hi = b * _BATCH, min(total, (b + 1) * _BATCH)
            for i in range(lo, hi):
                keys = local.probe_keys(i)
                hit = local.best(i, keys)
                old = prior.get(i)
                if old is not None and (hit is None or old[1] > hit[1] or (old[1] == hit[1] and old[0] < hit[0])):
                    hit = old
                if hit is None:
                    kept[i] = True
                    local.add(i, keys)
                    current.append(i)
                else:
                    dup_of[i], score[i] = hit
            previous = current
            if progress is not None:
                progress(hi, total)
    finally:
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.send(None)
            conn.close()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _auto_workers(n: int, workers: int | None) -> int:
    if workers is None:
        # Each worker holds a copy of the index, and this process settles every batch in order,
        # so beyond a few workers the gain is small.
        workers = min(_cores(), _MAX_AUTO_WORKERS) if n >= _PARALLEL_MIN else 1
    workers = max(1, workers)
    if workers > 1 and "fork" not in _fork_methods():
        return 1
    return workers


def _fork_methods() -> list[str]:
    import multiprocessing as mp

    return mp.get_all_start_methods() if sys.platform.startswith("linux") else []


def diversity_filter(
    texts: Sequence[str],
    threshold: float = 0.7,
    *,
    groups: Sequence[Hashable] | None = None,
    tokenizer: Tokenizer = "rouge",
    stem: bool = False,
    workers: int | None = None,
    progress: Progress | None = None,
    _force_ints: bool = False,
) -> FilterResult:
    """Greedy ROUGE-L diversity filter, exactly as the rouge-score reference decides.

    In input order, a text is dropped when its ROUGE-L F1 with some text kept before it is greater
    than `threshold`, else kept. `groups` (one hashable key per text) limits the comparisons to
    texts of the same group (``node`` scope); None compares all texts (``global`` scope).
    `workers`: processes for large inputs (default: all cores, at most 8, from 30,000 texts on;
    1 = this process only; needs fork, so other platforms run in this process).
    `progress(done, total)` is called now and then.
    """

    start = time.perf_counter()
    total = len(texts)
    if groups is not None and len(groups) != total:
        raise ValueError(f"groups has {len(groups)} keys for {total} texts")
    kept = [False] * total
    dup_of: list[int | None] = [None] * total
    score: list[float | None] = [None] * total
    if not threshold < 1.0:  # F1 never exceeds 1.0 (and nothing exceeds NaN): keep everything
        kept = [True] * total
    elif total:
        tok = make_tokenizer(tokenizer, stem)
        corpus = _encode((tok(t) for t in texts), _force_ints)
        if threshold < 0:
            _filter_negative(corpus, groups, threshold, kept, dup_of, score)
        else:
            bounds = _Bounds(threshold, max(map(len, corpus.seqs)))
            index = _Index(corpus, groups, bounds, threshold)
            n_workers = _auto_workers(total, workers)
            if n_workers > 1 and total > _BATCH:
                _run_parallel(index, total, n_workers, kept, dup_of, score, progress)
            else:
                _run_sequential(index, range(total), kept, dup_of, score, progress, total)
    if progress is not None:
        progress(total, total)
    return FilterResult(kept, dup_of, score, time.perf_counter() - start)


def _filter_negative(
    corpus: _Corpus,
    groups: Sequence[Hashable] | None,
    threshold: float,
    kept: list[bool],
    dup_of: list[int | None],
    score: list[float | None],
) -> None:
    """threshold < 0: every pair collides, so only the first text of each group is kept."""
    first: dict[Hashable, int] = {}
    seqs = corpus.seqs
    for i, s in enumerate(seqs):
        g = None if groups is None else groups[i]
        c = first.get(g)
        if c is None:
            first[g] = i
            kept[i] = True
        else:
            dup_of[i] = c
            score[i] = _rouge_f(int(LCSseq.similarity(s, seqs[c])) if s and seqs[c] else 0, len(seqs[c]), len(s))


def prune_names(
    names: Sequence[str], threshold: float = 0.7, *, tokenizer: Tokenizer = "rouge", stem: bool = False
) -> FilterResult:
    """Task pruning: the same greedy rule on task names, in the order given (the tree's level order)."""
    return diversity_filter(names, threshold, tokenizer=tokenizer, stem=stem, workers=1)


# --------------------------------------------------------------------------------------------
# Overlap with references (seed instructions)


def max_overlap(
    texts: Sequence[str],
    references: Sequence[str],
    *,
    tokenizer: Tokenizer = "rouge",
    stem: bool = False,
    workers: int | None = None,
) -> list[tuple[float, int | None]]:
    """For each text, its highest ROUGE-L F1 with any reference and that reference's index.

    The index is the earliest reference with the highest score; (0.0, None) when no reference
    shares a token with the text (or there are no references). Scores are rouge-score's floats
    (``score(reference, text)``). LCS lengths come from rapidfuzz's multi-threaded `cdist`.
    """
    import numpy as np
    from rapidfuzz import process

    if not texts:
        return []
    if not references:
        return [(0.0, None)] * len(texts)
    tok = make_tokenizer(tokenizer, stem)
    corpus = _encode(tok(t) for t in [*references, *texts])
    refs = corpus.seqs[: len(references)]
    qs = corpus.seqs[len(references) :]
    ref_len = np.array([len(s) for s in refs], dtype=np.float64)
    out: list[tuple[float, int | None]] = []
    rows = max(1, 4_000_000 // len(refs))
    n_workers = -1 if workers is None else max(1, workers)
    for lo in range(0, len(qs), rows):
        chunk = qs[lo : lo + rows]
        lcs = process.cdist(chunk, refs, scorer=LCSseq.similarity, dtype=np.int32, workers=n_workers)
        q_len = np.array([len(s) for s in chunk], dtype=np.float64)[:, None]
        lcs_f = lcs.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = lcs_f / q_len  # prediction = the text
            recall = lcs_f / ref_len[None, :]  # target = the reference
            f = 2 * precision * recall / (precision + recall)
        f = np.where(lcs > 0, f, 0.0)
        best = f.argmax(axis=1)
        best_f = f[np.arange(len(chunk)), best]
        for b, bf in zip(best.tolist(), best_f.tolist(), strict=True):
            out.append((bf, b) if bf > 0 else (0.0, None))
    return out
