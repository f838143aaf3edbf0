"""Span-constrained decoding (METHOD.md section 4): the model can only copy spans of its input.

The legal output of one row is exactly :func:`cllmfs_hf.template.format_completion` of some spans of that
row's input sentence, followed by an end-of-sequence token::

    [" "] PREAMBLE ( " <<< " span " >>>" )* EOS

(the optional leading space is the prefix space that SentencePiece/Metaspace tokenizers put on the first
word; the parser ignores it). :class:`SpanConstrainedLogitsProcessor` masks, at every step and for every
row, each next token that cannot continue a legal output.

How it works:

- :class:`VocabularyTrie` (built once per tokenizer and cached) maps every token id to the exact bytes it
  contributes to the decoded text (byte-level BPE bytes, SentencePiece ``▁`` as a space, ``<0xNN>`` byte
  fallback pieces) and stores these byte strings in a trie. The automaton runs on UTF-8 **bytes**, so a token
  that is not valid UTF-8 on its own (half of a multi-byte character) is allowed exactly where its bytes
  continue a legal output, and never elsewhere. Special tokens other than EOS are never allowed.
- Per row, a nondeterministic automaton over bytes tracks where the output is: in the preamble, in a
  delimiter, inside a span (as the set of positions of the input where the span text so far occurs), or
  after a complete item. A token is allowed when the trie walk of its bytes keeps the automaton alive and the
  state it reaches can still end in a legal output (so decoding never reaches a dead end). Tokens may span a
  delimiter and span text (``" <<"`` + ``"<"``, ``" >>>"``, ``"\u0120New"``): the automaton does not care
  where token boundaries fall.
- The state of a row is keyed by its generated prefix (beam search reorders rows between steps); the set
  of allowed ids of a state is computed once (memoised) and the masking itself is one vectorised
  ``masked_fill`` over the ``(rows, vocab)`` scores.

Options (:class:`SpanConstraintConfig`): word-boundary spans (default) or any character span, maximum span
length in words, no duplicate spans (a span text may be emitted at most as many times as it occurs in the
input), maximum number of spans.

:func:`parse_output` maps generated text back to character offsets: the k-th identical span maps to the k-th
occurrence in the input; spans that are not in the input (only possible without the processor) are dropped
and counted, never given invented offsets.

Example:
    >>> from transformers import LogitsProcessorList  # doctest: +SKIP
    >>> proc = SpanConstrainedLogitsProcessor(tokenizer, ["Ada met Bob in Paris ."])  # doctest: +SKIP
    >>> out = model.generate(**inputs, logits_processor=LogitsProcessorList([proc]))  # doctest: +SKIP
    >>> parse_output("I can extract entities for you, the extracted entities are <<< Paris >>>",
    ...              "Ada met Bob in Paris .").spans
    [(15, 20)]
"""

from __future__ import annotations

import bisect
import json
import re
import threading
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from transformers import LogitsProcessor

from .template import PREAMBLE, SPAN_CLOSE, SPAN_OPEN

__all__ = [
    "SpanConstraintConfig",
    "VocabularyTrie",
    "SpanConstrainedLogitsProcessor",
    "ParseResult",
    "parse_output",
    "span_boundaries",
    "OPEN_DELIMITER",
    "CLOSE_DELIMITER",
]

#: What precedes every span in the output (see :func:`cllmfs_hf.template.format_completion`).
OPEN_DELIMITER = f" {SPAN_OPEN} "
#: What follows every span in the output.
CLOSE_DELIMITER = f" {SPAN_CLOSE}"

_PRE = PREAMBLE.encode("utf-8")
_OPEN = OPEN_DELIMITER.encode("utf-8")
_CLOSE = CLOSE_DELIMITER.encode("utf-8")
_WS_BYTES = frozenset(b" \t\n\r\x0b\x0c")
_WORD_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_BYTE_FALLBACK_RE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------
@dataclass
class SpanConstraintConfig:
    """What the span-constrained decoder allows.

    Example:
        >>> SpanConstraintConfig(max_span_words=5).word_boundaries
        True
        >>> SpanConstraintConfig(max_spans=0)
        Traceback (most recent call last):
        ...
        ValueError: max_spans must be None or an integer >= 1, got 0: use None for no limit.
    """

    word_boundaries: bool = field(
        default=True,
        metadata={
            "help": "Spans start and end at word boundaries (words are runs of letters/digits/underscore, and "
            "every other non-space character is a word of its own, so 'Paris' is a span of 'Paris,'). "
            "False allows any character span that neither starts nor ends with whitespace."
        },
    )
    max_span_words: int | None = field(
        default=None,
        metadata={"help": "Maximum number of whitespace-separated words in one span (None: no limit)."},
    )
    allow_duplicates: bool = field(
        default=False,
        metadata={
            "help": "False (default): a span text may be emitted at most as many times as it occurs in the input "
            "(stops loops such as '<<< North >>>' repeated until the token cap). True: no such limit."
        },
    )
    max_spans: int | None = field(
        default=None, metadata={"help": "Maximum number of spans in one output (None: no limit)."}
    )
    allow_leading_space: bool = field(
        default=True,
        metadata={
            "help": "Allow one space before the preamble (SentencePiece/Metaspace tokenizers encode the first "
            "word with a prefix space, so a model trained on them emits it)."
        },
    )

    def __post_init__(self) -> None:
        if self.max_span_words is not None and (
            isinstance(self.max_span_words, bool)
            or not isinstance(self.max_span_words, int)
            or self.max_span_words < 1
        ):
            raise ValueError(
                f"max_span_words must be None or an integer >= 1, got {self.max_span_words!r}: use None for no limit."
            )
        if self.max_spans is not None and (
            isinstance(self.max_spans, bool) or not isinstance(self.max_spans, int) or self.max_spans < 1
        ):
            raise ValueError(
                f"max_spans must be None or an integer >= 1, got {self.max_spans!r}: use None for no limit."
            )
        for name in ("word_boundaries", "allow_duplicates", "allow_leading_space"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")

    def key(self) -> tuple:
        """A hashable summary (used to cache per-sentence automata)."""
        return tuple(getattr(self, f.name) for f in fields(self))


# ---------------------------------------------------------------------------------------------------------
# Span boundaries
# ---------------------------------------------------------------------------------------------------------
def span_boundaries(sentence: str, word_boundaries: bool = True) -> tuple[list[int], list[int]]:
    """Character positions where a span may start and where it may end (both sorted).

    Word mode: starts and ends of the tokens of ``\\w+|[^\\w\\s]``. Character mode: any position whose
    next (start) or previous (end) character is not whitespace.

    Example:
        >>> span_boundaries("New York, NY")
        ([0, 4, 8, 10], [3, 8, 9, 12])
    """
    if word_boundaries:
        tokens = list(_WORD_TOKEN_RE.finditer(sentence))
        return [m.start() for m in tokens], sorted({m.end() for m in tokens})
    starts = [i for i, c in enumerate(sentence) if not c.isspace()]
    ends = [i + 1 for i, c in enumerate(sentence) if not c.isspace()]
    return starts, ends


# ---------------------------------------------------------------------------------------------------------
# Token bytes and the vocabulary trie
# ---------------------------------------------------------------------------------------------------------
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE vocabularies are written with it)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


def _flatten_decoders(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not spec:
        return []
    if spec.get("type") == "Sequence":
        out: list[dict[str, Any]] = []
        for sub in spec.get("decoders", []):
            out.extend(_flatten_decoders(sub))
        return out
    return [spec]


def _piece_to_bytes_function(tokenizer: Any) -> Callable[[str], bytes | None] | None:
    """A function from a vocabulary piece to the bytes it contributes, or None if the decoder is unsupported.

    Supported decoders: ByteLevel (GPT-2/Llama-3/Qwen/SmolLM), Metaspace and Replace + ByteFallback + Fuse +
    Strip (SentencePiece-style Llama/Gemma/Mistral). A leading ``Strip`` of one space only removes the prefix
    space of the first word, which the automaton allows anyway.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    try:
        spec = json.loads(backend.to_str()).get("decoder")
    except Exception:  # pragma: no cover - exotic backends
        return None
    steps = _flatten_decoders(spec)
    kinds = {s.get("type") for s in steps}
    if not kinds or not kinds <= {"ByteLevel", "Metaspace", "Replace", "ByteFallback", "Fuse", "Strip"}:
        return None
    if "ByteLevel" in kinds:
        if kinds - {"ByteLevel", "Fuse", "Strip"}:
            return None

        def byte_level(piece: str) -> bytes | None:
            try:
                return bytes(_BYTE_DECODER[c] for c in piece)
            except KeyError:
                return piece.encode("utf-8")

        return byte_level

    replacements: list[tuple[str, str]] = []
    byte_fallback = False
    for s in steps:
        if s["type"] == "Metaspace":
            replacements.append((s.get("replacement", "▁"), " "))
        elif s["type"] == "Replace":
            pattern = s.get("pattern", {})
            if "String" not in pattern:
                return None
            replacements.append((pattern["String"], s.get("content", "")))
        elif s["type"] == "ByteFallback":
            byte_fallback = True
        elif s["type"] == "Strip" and (
            s.get("content") != " " or s.get("stop", 0) != 0 or s.get("start", 0) > 1
        ):
            return None

    def sentencepiece(piece: str) -> bytes | None:
        if byte_fallback:
            m = _BYTE_FALLBACK_RE.match(piece)
            if m:
                return bytes([int(m.group(1), 16)])
        for old, new in replacements:
            piece = piece.replace(old, new)
        return piece.encode("utf-8")

    return sentencepiece


def _token_contributions(tokenizer: Any) -> list[bytes | None]:
    """For each token id, the bytes it adds to the decoded text; None for tokens that are never allowed."""
    size = len(tokenizer)
    contributions: list[bytes | None] = [None] * size
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = dict(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    for tid, tok in added.items():
        if getattr(tok, "special", False):
            special_ids.add(tid)
    piece_fn = _piece_to_bytes_function(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
    if piece_fn is not None:
        for tid, piece in enumerate(pieces):
            if tid in special_ids or piece is None:
                continue
            if tid in added:
                contributions[tid] = str(added[tid].content).encode("utf-8")
            else:
                contributions[tid] = piece_fn(piece)
    else:
        # Generic fallback: the text a token adds after an anchor token. Tokens whose text is not valid UTF-8
        # on its own cannot be recovered this way and are never allowed (documented limitation).
        anchor_ids = tokenizer.encode("a", add_special_tokens=False)
        if not anchor_ids:
            raise ValueError("Cannot derive token strings: the tokenizer encodes 'a' to nothing.")
        anchor = anchor_ids[:1]
        base = tokenizer.decode(anchor, clean_up_tokenization_spaces=False)
        for tid in range(size):
            if tid in special_ids:
                continue
            text = tokenizer.decode(anchor + [tid], clean_up_tokenization_spaces=False)
            if not text.startswith(base) or "\ufffd" in text:
                continue
            contributions[tid] = text[len(base) :].encode("utf-8")
    return [c if c else None for c in contributions]


class VocabularyTrie:
    """A byte trie of a tokenizer's vocabulary, built once per tokenizer (see :meth:`for_tokenizer`).

    Each node is a dict from a byte value to the child node; the key ``-1`` holds the token ids whose
    contribution ends at that node.

    Example:
        >>> trie = VocabularyTrie.for_tokenizer(tokenizer)  # doctest: +SKIP
        >>> trie.decode(tokenizer.encode(" <<< Paris >>>"))  # doctest: +SKIP
        ' <<< Paris >>>'
    """

    _cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, tokenizer: Any) -> None:
        self.contributions: list[bytes | None] = _token_contributions(tokenizer)
        self.vocab_size = len(self.contributions)
        self.root: dict[int, Any] = {}
        for tid, piece in enumerate(self.contributions):
            if not piece:
                continue
            node = self.root
            for b in piece:
                nxt = node.get(b)
                if nxt is None:
                    nxt = node[b] = {}
                node = nxt
            node.setdefault(-1, []).append(tid)
        self.single_token_bytes: frozenset[bytes] = frozenset(c for c in self.contributions if c)
        self._automata: OrderedDict[tuple, _RowAutomaton] = OrderedDict()

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> VocabularyTrie:
        """The cached trie of ``tokenizer`` (built on first use, about a second for a 50k vocabulary)."""
        with cls._lock:
            try:
                trie = cls._cache.get(tokenizer)
            except TypeError:  # not weak-referenceable
                trie = None
            if trie is None or trie.vocab_size != len(tokenizer):
                trie = cls(tokenizer)
                try:
                    cls._cache[tokenizer] = trie
                except TypeError:
                    pass
            return trie

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids`` as the automaton sees it (special tokens contribute nothing)."""
        data = b"".join(self.contributions[i] or b"" for i in ids if 0 <= i < self.vocab_size)
        return data.decode("utf-8", errors="replace")

    def can_produce(self, text: str) -> bool:
        """Whether every character of ``text`` is a token of its own, or each of its bytes is."""
        for ch in set(text):
            data = ch.encode("utf-8")
            if data not in self.single_token_bytes and not all(
                bytes([b]) in self.single_token_bytes for b in data
            ):
                return False
        return True

    def automaton(self, sentence: str, config: SpanConstraintConfig) -> _RowAutomaton:
        """The (cached, memoised) automaton of one input sentence."""
        key = (sentence, config.key())
        auto = self._automata.get(key)
        if auto is None:
            auto = _RowAutomaton(self, sentence, config)
            self._automata[key] = auto
            if len(self._automata) > 2048:
                self._automata.popitem(last=False)
        else:
            self._automata.move_to_end(key)
        return auto


# ---------------------------------------------------------------------------------------------------------
# The per-sentence automaton
# ---------------------------------------------------------------------------------------------------------
# Configurations (hashable tuples):
#   ("L",)                          before an optional leading space
#   ("P", i)                        i bytes of the preamble matched
#   ("A", hist)                     after the preamble or a complete span: accepting
#   ("O", j, hist)                  j bytes of the open delimiter " <<< " matched (0 < j < 5)
#   ("S", occ, length, hist)        inside a span of `length` bytes; occ: starts of its occurrences
#   ("C", k, text, hist)            k bytes of the close delimiter " >>>" matched after span `text`
# hist = (number of spans, sorted ((text, count), ...)) - the counts only when duplicates are limited.
State = frozenset


class _RowAutomaton:
    """The legal-output automaton of one sentence, with memoised transitions and allowed-token sets."""

    def __init__(self, trie: VocabularyTrie, sentence: str, config: SpanConstraintConfig) -> None:
        self.trie = trie
        self.config = config
        self.sentence = sentence
        self.sb = sentence.encode("utf-8")
        self.n = len(self.sb)
        char_to_byte = [0]
        for ch in sentence:
            char_to_byte.append(char_to_byte[-1] + len(ch.encode("utf-8")))
        self.char_to_byte = char_to_byte
        c_starts, c_ends = span_boundaries(sentence, config.word_boundaries)
        self.starts: tuple[int, ...] = tuple(char_to_byte[i] for i in c_starts)
        self.ends_sorted: list[int] = [char_to_byte[i] for i in c_ends]
        self.ends: frozenset[int] = frozenset(self.ends_sorted)
        # word-start count prefix: ws_cum[i] = number of word starts at positions < i
        ws_cum = [0] * (self.n + 1)
        for i in range(self.n):
            is_start = self.sb[i] not in _WS_BYTES and (i == 0 or self.sb[i - 1] in _WS_BYTES)
            ws_cum[i + 1] = ws_cum[i] + int(is_start)
        self.ws_cum = ws_cum
        self.track_counts = not config.allow_duplicates
        self.track_spans = config.max_spans is not None
        self.hist0: tuple = (0, ())
        alphabet = (
            PREAMBLE
            + OPEN_DELIMITER
            + CLOSE_DELIMITER
            + sentence
            + (" " if config.allow_leading_space else "")
        )
        # When every needed character is producible token by token, byte-level liveness is token-level liveness.
        self.coverable = trie.can_produce(alphabet)
        self.initial: State = frozenset([("L",), ("P", 0)] if config.allow_leading_space else [("P", 0)])
        self._step_memo: dict[tuple[State, int], State] = {}
        self._allowed_memo: dict[State, tuple[torch.Tensor, bool]] = {}
        self._live_memo: dict[Any, bool] = {}
        self._tok_live_memo: dict[State, bool] = {}
        self._count_memo: dict[bytes, int] = {}
        self._available_memo: dict[tuple, bool] = {}

    # -- spans --------------------------------------------------------------------------------------
    def words(self, start: int, end: int) -> int:
        """Whitespace-separated words in sb[start:end] (start is never whitespace)."""
        return 1 + self.ws_cum[end] - self.ws_cum[start + 1] if end > start + 1 else 1

    def occurrences(self, text: bytes) -> int:
        """How many legal spans (start, end) of the sentence have exactly this text."""
        cnt = self._count_memo.get(text)
        if cnt is None:
            cnt = 0
            L = len(text)
            for s in self.starts:
                if s + L in self.ends and self.sb.startswith(text, s) and self._word_ok(s, s + L):
                    cnt += 1
            self._count_memo[text] = cnt
        return cnt

    def _word_ok(self, start: int, end: int) -> bool:
        m = self.config.max_span_words
        return m is None or self.words(start, end) <= m

    def _budget(self, text: bytes, hist: tuple) -> bool:
        if not self.track_counts:
            return True
        used = dict(hist[1]).get(text, 0)
        return used < self.occurrences(text)

    def _add(self, hist: tuple, text: bytes) -> tuple:
        n = hist[0] + 1 if self.track_spans else 0
        if not self.track_counts:
            return (n, ())
        counts = dict(hist[1])
        counts[text] = counts.get(text, 0) + 1
        return (n, tuple(sorted(counts.items())))

    def _can_open(self, hist: tuple) -> bool:
        if self.config.max_spans is not None and hist[0] >= self.config.max_spans:
            return False
        return self._available(hist)

    def _available(self, hist: tuple) -> bool:
        """Whether some legal span still has budget."""
        key = hist[1]
        res = self._available_memo.get(key)
        if res is None:
            res = self._span_live(self.starts, 0, hist)
            self._available_memo[key] = res
        return res

    def _span_live(self, occ: tuple[int, ...], length: int, hist: tuple) -> bool:
        """Whether a span whose text so far occurs at ``occ`` (``length`` bytes) can still be closed legally."""
        key = ("S", occ, length, hist[1] if self.track_counts else ())
        res = self._live_memo.get(key)
        if res is not None:
            return res
        res = False
        limit = self.config.max_span_words
        for s in occ:
            lo = bisect.bisect_left(self.ends_sorted, max(s + length, s + 1))
            for e in self.ends_sorted[lo:]:
                if limit is not None and self.words(s, e) > limit:
                    break
                if self._budget(self.sb[s:e], hist):
                    res = True
                    break
            if res:
                break
        self._live_memo[key] = res
        return res

    # -- transitions ---------------------------------------------------------------------------------
    def _step_config(self, c: tuple, b: int) -> list[tuple]:
        kind = c[0]
        if kind == "S":
            _, occ, length, hist = c
            out: list[tuple] = []
            nxt = tuple(s for s in occ if s + length < self.n and self.sb[s + length] == b)
            if nxt and self._span_live(nxt, length + 1, hist):
                out.append(("S", nxt, length + 1, hist))
            if b == _CLOSE[0] and length > 0:
                text = self.sb[occ[0] : occ[0] + length]
                if any(s + length in self.ends for s in occ) and self._word_ok(occ[0], occ[0] + length):
                    if self._budget(text, hist):
                        out.append(("C", 1, text, hist))
            return out
        if kind == "P":
            i = c[1]
            if _PRE[i] != b:
                return []
            return [("A", self.hist0)] if i + 1 == len(_PRE) else [("P", i + 1)]
        if kind == "A":
            if b == _OPEN[0] and self._can_open(c[1]):
                return [("O", 1, c[1])]
            return []
        if kind == "O":
            j, hist = c[1], c[2]
            if _OPEN[j] != b:
                return []
            if j + 1 == len(_OPEN):
                return [("S", self.starts, 0, hist)]
            return [("O", j + 1, hist)]
        if kind == "C":
            k, text, hist = c[1], c[2], c[3]
            if _CLOSE[k] != b:
                return []
            if k + 1 == len(_CLOSE):
                return [("A", self._add(hist, text))]
            return [("C", k + 1, text, hist)]
        if kind == "L":
            return [("P", 0)] if b == 0x20 else []
        raise AssertionError(kind)  # pragma: no cover

    def step(self, state: State, b: int) -> State:
        key = (state, b)
        res = self._step_memo.get(key)
        if res is None:
            out: set[tuple] = set()
            for c in state:
                out.update(self._step_config(c, b))
            res = frozenset(out)
            self._step_memo[key] = res
        return res

    def advance(self, state: State, token_id: int) -> State:
        """The state after a token (empty when the token is illegal there)."""
        piece = self.trie.contributions[token_id] if 0 <= token_id < self.trie.vocab_size else None
        if not piece:
            return frozenset()
        for b in piece:
            state = self.step(state, b)
            if not state:
                break
        return state

    def _next_bytes(self, state: State) -> set[int]:
        out: set[int] = set()
        for c in state:
            kind = c[0]
            if kind == "S":
                _, occ, length, _hist = c
                for s in occ:
                    if s + length < self.n:
                        out.add(self.sb[s + length])
                if length > 0:
                    out.add(_CLOSE[0])
            elif kind == "P":
                out.add(_PRE[c[1]])
            elif kind == "A":
                out.add(_OPEN[0])
            elif kind == "O":
                out.add(_OPEN[c[1]])
            elif kind == "C":
                out.add(_CLOSE[c[1]])
            else:
                out.add(0x20)
        return out

    @staticmethod
    def accepting(state: State) -> bool:
        return any(c[0] == "A" for c in state)

    def _token_live(self, state: State) -> bool:
        """Token-level liveness (slow path, only for rows whose characters some tokens cannot produce)."""
        res = self._tok_live_memo.get(state)
        if res is not None:
            return res
        self._tok_live_memo[state] = False  # cycles cannot help reach acceptance
        res = self.accepting(state) or any(self._token_live(s) for s in self._successors(state))
        self._tok_live_memo[state] = res
        return res

    def _successors(self, state: State) -> Iterable[State]:
        stack = [(self.trie.root, state)]
        while stack:
            node, st = stack.pop()
            for b in self._next_bytes(st):
                child = node.get(b)
                if child is None:
                    continue
                st2 = self.step(st, b)
                if not st2:
                    continue
                if -1 in child:
                    yield st2
                stack.append((child, st2))

    def allowed(self, state: State) -> tuple[torch.Tensor, bool]:
        """(allowed token ids, whether EOS is allowed) in ``state``; memoised."""
        res = self._allowed_memo.get(state)
        if res is not None:
            return res
        ids: list[int] = []
        stack = [(self.trie.root, state)]
        while stack:
            node, st = stack.pop()
            for b in self._next_bytes(st):
                child = node.get(b)
                if child is None:
                    continue
                st2 = self.step(st, b)
                if not st2:
                    continue
                tids = child.get(-1)
                if tids is not None and (self.coverable or self._token_live(st2)):
                    ids.extend(tids)
                stack.append((child, st2))
        res = (torch.tensor(sorted(ids), dtype=torch.long), self.accepting(state))
        self._allowed_memo[state] = res
        return res


# ---------------------------------------------------------------------------------------------------------
# The logits processor
# ---------------------------------------------------------------------------------------------------------
class SpanConstrainedLogitsProcessor(LogitsProcessor):
    """A ``transformers.LogitsProcessor`` that only lets the model copy spans of its input sentence.

    Args:
        tokenizer: the model's tokenizer (its vocabulary trie is built once and cached).
        sentences: the input sentence of each batch item, in batch order. With beam search or
            ``num_return_sequences`` the rows are ``batch * k`` and row ``r`` belongs to sentence ``r // k``.
        config: a :class:`SpanConstraintConfig`; keyword ``overrides`` replace its fields.
        eos_token_id: the id(s) that end the output (default: the tokenizer's EOS).

    Works with greedy search, sampling (temperature/top-k/top-p run after it) and beam search, with left
    padding. One processor serves one ``generate`` call; calling ``generate`` again with it starts afresh
    (a new prompt is detected), and :meth:`reset` does it explicitly.

    Example:
        >>> proc = SpanConstrainedLogitsProcessor(tokenizer, ["Ada met Bob ."], max_span_words=4)  # doctest: +SKIP
        >>> model.generate(**enc, logits_processor=LogitsProcessorList([proc]))  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: Any,
        sentences: Sequence[str],
        config: SpanConstraintConfig | None = None,
        *,
        eos_token_id: int | Sequence[int] | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(sentences, str) or not isinstance(sentences, Sequence):
            raise TypeError(
                "sentences must be a list with one input sentence per batch item, got "
                f"{type(sentences).__name__}; for one sentence pass [sentence]."
            )
        if not sentences:
            raise ValueError("sentences is empty: pass one input sentence per batch item.")
        for i, s in enumerate(sentences):
            if not isinstance(s, str):
                raise TypeError(f"sentences[{i}] must be a str, got {type(s).__name__}.")
        config = config or SpanConstraintConfig()
        if overrides:
            unknown = set(overrides) - {f.name for f in fields(SpanConstraintConfig)}
            if unknown:
                raise TypeError(
                    f"Unknown option(s) {sorted(unknown)}; valid: {[f.name for f in fields(SpanConstraintConfig)]}."
                )
            config = SpanConstraintConfig(
                **{**{f.name: getattr(config, f.name) for f in fields(config)}, **overrides}
            )
        self.config = config
        self.tokenizer = tokenizer
        self.sentences = list(sentences)
        if eos_token_id is None:
            eos_token_id = tokenizer.eos_token_id
        if eos_token_id is None:
            raise ValueError("The tokenizer has no eos_token_id: pass eos_token_id= to the processor.")
        eos = [int(eos_token_id)] if isinstance(eos_token_id, int) else [int(e) for e in eos_token_id]
        self.eos_token_ids = sorted(set(eos))
        self._eos_set = frozenset(self.eos_token_ids)
        self._eos_tensor = torch.tensor(self.eos_token_ids, dtype=torch.long)
        self.trie = VocabularyTrie.for_tokenizer(tokenizer)
        self.automata = [self.trie.automaton(s, config) for s in self.sentences]
        for i, auto in enumerate(self.automata):
            ids, _ = auto.allowed(auto.initial)
            if ids.numel() == 0:
                raise ValueError(
                    f"sentences[{i}]: no token of this tokenizer can start the output preamble {PREAMBLE!r}; "
                    "the tokenizer's vocabulary cannot express the CLLMFS template."
                )
        self.num_escaped_rows = 0
        self.reset()

    def reset(self) -> None:
        """Forget the generation in progress (the next call starts a new one)."""
        self._prompt: torch.Tensor | None = None
        self._states: dict[tuple, State | None] = {}

    # -- state bookkeeping ----------------------------------------------------------------------------
    def _row_states(self, input_ids: torch.Tensor) -> list[tuple[int, State | None]]:
        rows = input_ids.shape[0]
        if rows % len(self.sentences):
            raise ValueError(
                f"The batch has {rows} rows, not a multiple of the {len(self.sentences)} sentences given to "
                "SpanConstrainedLogitsProcessor: pass exactly one sentence per batch item (before beams)."
            )
        expand = rows // len(self.sentences)
        if (
            self._prompt is None
            or self._prompt.shape[0] != rows
            or input_ids.shape[1] <= self._prompt.shape[1]
            or not torch.equal(input_ids[:, : self._prompt.shape[1]].sort(dim=0).values, self._prompt_sorted)
        ):
            self._prompt = input_ids.clone()
            self._prompt_sorted = self._prompt.sort(dim=0).values
            self._states = {}
        plen = self._prompt.shape[1]
        generated = input_ids[:, plen:].tolist()
        new_states: dict[tuple, State | None] = {}
        out: list[tuple[int, State | None]] = []
        for r, gen in enumerate(generated):
            group = r // expand
            key = (group, tuple(gen))
            if key in new_states:
                out.append((group, new_states[key]))
                continue
            auto = self.automata[group]
            if not gen:
                state: State | None = auto.initial
            else:
                prev = self._states.get((group, tuple(gen[:-1])), auto.initial if len(gen) == 1 else None)
                if prev is None:
                    prev = self._replay(auto, gen[:-1])
                last = gen[-1]
                if prev is None or last in self._eos_set:
                    state = None  # finished (or escaped earlier): leave the row alone
                else:
                    state = auto.advance(prev, last)
                    if not state:
                        self._escaped(group, last)
                        state = None
            new_states[key] = state
            out.append((group, state))
        self._states = new_states
        return out

    def _replay(self, auto: _RowAutomaton, gen: list[int]) -> State | None:
        state: State = auto.initial
        for tok in gen:
            if tok in self._eos_set:
                return None
            state = auto.advance(state, tok)
            if not state:
                return None
        return state

    def _escaped(self, group: int, token: int) -> None:
        self.num_escaped_rows += 1
        warnings.warn(
            f"SpanConstrainedLogitsProcessor: row of sentence {group} received token {token} "
            f"({self.trie.decode([token])!r}), which the constraint forbids (another processor or a forced "
            "token overrode the mask); the row is left unconstrained from here on.",
            RuntimeWarning,
            stacklevel=3,
        )

    # -- the processor ----------------------------------------------------------------------------------
    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        states = self._row_states(input_ids)
        vocab = scores.shape[-1]
        rows_idx: list[torch.Tensor] = []
        cols: list[torch.Tensor] = []
        free_rows: list[int] = []
        for r, (group, state) in enumerate(states):
            if state is None:
                free_rows.append(r)
                continue
            ids, eos_ok = self.automata[group].allowed(state)
            if eos_ok:
                ids = torch.cat([ids, self._eos_tensor])
            rows_idx.append(torch.full((ids.numel(),), r, dtype=torch.long))
            cols.append(ids)
        if len(free_rows) == len(states):
            return scores
        blocked = torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
        if cols:
            col = torch.cat(cols)
            row = torch.cat(rows_idx)
            keep = col < vocab
            blocked[row[keep].to(scores.device), col[keep].to(scores.device)] = False
        if free_rows:
            blocked[torch.tensor(free_rows, device=scores.device)] = False
        return scores.masked_fill(blocked, float("-inf"))

    # -- helpers for callers ---------------------------------------------------------------------------
    def decode(self, generated_ids: Sequence[int]) -> tuple[str, bool]:
        """(text, ended): the text of generated ids up to the first EOS and whether an EOS was emitted."""
        ids = list(generated_ids)
        for i, t in enumerate(ids):
            if t in self._eos_set:
                return self.trie.decode(ids[:i]), True
        return self.trie.decode(ids), False


# ---------------------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ParseResult:
    """Spans recovered from one generated output.

    Attributes:
        spans: ``(start, end)`` character offsets into the input, in the order generated.
        texts: the generated text of each kept span (``sentence[start:end] == texts[i]``).
        dropped_not_in_input: spans whose text is not a (boundary-aligned) span of the input.
        dropped_repeats: identical spans generated more often than the text occurs in the input.
        well_formed: the whole output follows the template (preamble, `` <<< s >>>`` items, nothing else).
        complete: the output ended (not cut in the middle of an item).
    """

    spans: list[tuple[int, int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    dropped_not_in_input: int = 0
    dropped_repeats: int = 0
    well_formed: bool = True
    complete: bool = True

    @property
    def dropped(self) -> int:
        return self.dropped_not_in_input + self.dropped_repeats


class _Occurrences:
    """Legal occurrences of span texts in one sentence (memoised)."""

    def __init__(self, sentence: str, word_boundaries: bool) -> None:
        self.sentence = sentence
        starts, ends = span_boundaries(sentence, word_boundaries)
        self.starts = starts
        self.ends = set(ends)
        self._memo: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        occ = self._memo.get(text)
        if occ is None:
            if not text or text != text.strip():
                occ = []
            else:
                occ = [
                    s for s in self.starts if self.sentence.startswith(text, s) and s + len(text) in self.ends
                ]
            self._memo[text] = occ
        return occ


def _strict_items(rest: str, occurrences: _Occurrences) -> list[str] | None:
    """Split ``rest`` (text after the preamble) into span texts, backtracking over ambiguous closes.

    Each item must be a legal span of the input; how many times a text may repeat is left to the caller
    (outputs generated with ``allow_duplicates=True`` may repeat a span more often than it occurs).
    """

    def rec(pos: int) -> list[str] | None:
        if pos == len(rest):
            return []
        if not rest.startswith(OPEN_DELIMITER, pos):
            return None
        begin = pos + len(OPEN_DELIMITER)
        idx = rest.find(CLOSE_DELIMITER, begin + 1)
        while idx != -1:
            text = rest[begin:idx]
            if occurrences(text):
                tail = rec(idx + len(CLOSE_DELIMITER))
                if tail is not None:
                    return [text] + tail
            idx = rest.find(CLOSE_DELIMITER, idx + 1)
        return None

    return rec(0)


_LENIENT_RE = re.compile(re.escape(SPAN_OPEN) + r"\s?(.*?)\s?" + re.escape(SPAN_CLOSE), re.DOTALL)


def parse_output(
    text: str, sentence: str, *, word_boundaries: bool = True, complete: bool = True
) -> ParseResult:
    """Map a generated answer to character spans of ``sentence``.

    The k-th generated copy of a span text maps to the k-th occurrence of that text in ``sentence`` (in order
    of position, among occurrences at legal boundaries). Spans whose text is not in the input, and copies
    beyond the number of occurrences, are dropped and counted in the result, never given invented offsets.
    A well-formed (constrained) output is split exactly, even when the input itself contains ``>>>``;
    other text is read leniently (every ``<<< ... >>>``). Pass ``complete=False`` when generation stopped
    at the token cap: an unfinished last item is then ignored and ``complete`` is False in the result.

    Example:
        >>> r = parse_output(PREAMBLE + " <<< Bob >>> <<< Bob >>> <<< Eve >>>", "Bob met Bob .")
        >>> r.spans, r.dropped_not_in_input
        ([(0, 3), (8, 11)], 1)
    """
    if not isinstance(text, str) or not isinstance(sentence, str):
        raise TypeError("parse_output needs the generated text and the input sentence as str.")
    result = ParseResult(complete=complete)
    occurrences = _Occurrences(sentence, word_boundaries)
    body = text.lstrip(" ")
    items: list[str] | None = None
    if not complete and PREAMBLE.startswith(body):
        items = []  # cut inside the preamble
    elif body.startswith(PREAMBLE):
        rest = body[len(PREAMBLE) :]
        items = _strict_items(rest, occurrences)
        if items is None and not complete:
            # cut at the token cap: keep the longest prefix that ends after a complete item
            idx = rest.rfind(CLOSE_DELIMITER)
            while items is None and idx != -1:
                items = _strict_items(rest[: idx + len(CLOSE_DELIMITER)], occurrences)
                idx = rest.rfind(CLOSE_DELIMITER, 0, idx)
            if items is None and (OPEN_DELIMITER.startswith(rest) or rest.startswith(OPEN_DELIMITER)):
                items = []
    if items is None:
        result.well_formed = False
        items = [m.group(1).strip() for m in _LENIENT_RE.finditer(text)]
    used: dict[str, int] = {}
    for item in items:
        occ = occurrences(item)
        if not occ:
            result.dropped_not_in_input += 1
            continue
        k = used.get(item, 0)
        if k >= len(occ):
            result.dropped_repeats += 1
            continue
        used[item] = k + 1
        result.spans.append((occ[k], occ[k] + len(item)))
        result.texts.append(item)
    return result
