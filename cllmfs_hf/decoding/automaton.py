"""The legal-output automaton of one input sentence (:class:`RowAutomaton`) and its named states.

The legal output of one row is exactly :func:`cllmfs_hf.template.format_completion` of some spans of that
row's input sentence, followed by an end-of-sequence token::

    [" "] PREAMBLE ( " <<< " span " >>>" )* EOS

(without ``[" "] PREAMBLE`` when the prompt already ends with it, ``SpanConstraintConfig.preamble_in_prompt``).

A nondeterministic automaton over UTF-8 bytes tracks where the output is. Each of its configurations is one
of the named types of :mod:`.states` (re-exported here); a :data:`State` is the frozenset of configurations
the automaton may be in:

- :class:`BeforeLeadingSpace`: nothing generated yet, before the optional leading space;
- :class:`InPreamble`: part of the preamble matched;
- :class:`BetweenSpans`: after the preamble or a complete item (the only accepting configuration);
- :class:`InOpen`: part of the open delimiter ``" <<< "`` matched;
- :class:`InSpan`: inside a span, as the positions of the input where the span text so far occurs;
- :class:`InClose`: part of the close delimiter ``" >>>"`` matched after a span.

A token is allowed when the trie walk of its bytes keeps the automaton alive and the state it reaches can
still end in a legal output (so decoding never reaches a dead end). Tokens may span a delimiter and span text
(``" <<"`` + ``"<"``, ``" >>>"``, ``"\\u0120New"``): the automaton does not care where token boundaries fall.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import torch

from ..template import CLOSE_DELIMITER, OPEN_DELIMITER, PREAMBLE, span_boundaries
from . import states
from .allowed import AllowedTokens, _Checks
from .config import SpanConstraintConfig
from .states import (
    BeforeLeadingSpace,
    BetweenSpans,
    Configuration,
    History,
    InClose,
    InOpen,
    InPreamble,
    InSpan,
    State,
)

# the named states are re-exported from here, as before they had a module of their own
__all__ = [*states.__all__, "RowAutomaton"]

_PRE = PREAMBLE.encode("utf-8")
_OPEN = OPEN_DELIMITER.encode("utf-8")
_CLOSE = CLOSE_DELIMITER.encode("utf-8")
_WS_BYTES = frozenset(b" \t\n\r\x0b\x0c")


# ---------------------------------------------------------------------------------------------------------
# The per-sentence automaton
# ---------------------------------------------------------------------------------------------------------
class RowAutomaton(AllowedTokens):
    """The legal-output automaton of one sentence, with memoised transitions and allowed-token sets."""

    def __init__(self, trie: Any, sentence: str, config: SpanConstraintConfig) -> None:
        # trie: the VocabularyTrie that owns this automaton (not imported: vocabulary imports this module)
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
        self.ordered = config.ordered_spans
        self._starts_memo: dict[int, tuple[int, ...]] = {}
        # the most spans one output may hold: max_spans, and max_spans_per_word of the sentence's words
        limits = [config.max_spans] if config.max_spans is not None else []
        if config.max_spans_per_word is not None:
            limits.append(max(1, math.ceil(config.max_spans_per_word * len(sentence.split()))))
        self.span_limit: int | None = min(limits) if limits else None
        self.track_spans = self.span_limit is not None
        self.hist0 = History(spans=0, counts=())
        generates_preamble = not config.preamble_in_prompt
        alphabet = (
            (PREAMBLE if generates_preamble else "")
            + OPEN_DELIMITER
            + CLOSE_DELIMITER
            + sentence
            + (" " if config.allow_leading_space and generates_preamble else "")
        )
        # When every needed character is producible token by token, byte-level liveness is token-level liveness.
        self.coverable = trie.can_produce(alphabet)
        if not generates_preamble:  # the prompt ends with the preamble: a span or the end comes next
            self.initial: State = frozenset([BetweenSpans(self.hist0)])
        elif config.allow_leading_space:
            self.initial = frozenset([BeforeLeadingSpace(), InPreamble(0)])
        else:
            self.initial = frozenset([InPreamble(0)])
        self._step_memo: dict[tuple[State, int], State] = {}
        self._advance_memo: dict[tuple[State, int], State] = {}
        self._allowed_memo: dict[State, tuple[torch.Tensor, bool]] = {}
        self._tensor_memo: dict[frozenset[int], torch.Tensor] = {}
        self._config_memo: dict[Configuration, frozenset[int]] = {}
        self._used_memo: dict[tuple, dict[bytes, int]] = {}
        self._last_end_memo: dict[tuple, int] = {}
        self._last_end_free: dict[int, int] = {}
        self._shortened_memo: dict[tuple, frozenset[int]] = {}
        self._place_memo: dict[tuple, tuple[frozenset[int], _Checks]] = {}
        self._rec: _Checks | None = None
        self._walk_memo: dict[int, list[dict]] = {}
        self._span_walk_memo: dict[tuple, tuple[list, frozenset[int]]] = {}
        self._span_tokens_memo: dict[tuple, dict[int, tuple[int, tuple[int, ...]]]] = {}
        self._closable_memo: dict[tuple[int, bool], list[tuple[int, dict]]] = {}
        self._piece_memo: dict[tuple[int, int, int], tuple[frozenset[int], list]] = {}
        self._text_memo: dict[tuple[int, int], frozenset[int]] = {}
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

    def _budget(self, text: bytes, hist: History) -> bool:
        if self._rec is not None:
            self._rec.texts.append(text)
        if not self.track_counts or not hist.counts:
            return True  # nothing emitted yet, and a legal span's text occurs at least once
        used = self._used(hist.counts).get(text)
        # a text never emitted has budget (it is a legal span, so it occurs): no scan of the sentence needed
        return not used or used < self.occurrences(text)

    def _used(self, counts: tuple[tuple[bytes, int], ...]) -> dict[bytes, int]:
        """``counts`` as a dict (memoised: a history is looked up many times)."""
        used = self._used_memo.get(counts)
        if used is None:
            used = self._used_memo[counts] = dict(counts)
        return used

    def _add(self, hist: History, text: bytes) -> History:
        if self._rec is not None:
            self._rec.sensitive = True  # a walk past a close delimiter: its checks see another history
        n = hist.spans + 1 if self.track_spans else 0
        if not self.track_counts:
            return History(n, (), hist.after)
        counts = dict(hist.counts)
        counts[text] = counts.get(text, 0) + 1
        return History(n, tuple(sorted(counts.items())), hist.after)

    def _can_open(self, hist: History) -> bool:
        if self._rec is not None:
            self._rec.opens = True
        if self.span_limit is not None and hist.spans >= self.span_limit:
            return False
        return self._available(hist)

    def _available(self, hist: History) -> bool:
        """Whether some legal span (after the last one, with ordered spans) still has budget."""
        key = (hist.counts, hist.after)
        res = self._available_memo.get(key)
        if res is None:
            starts = self._starts_from(hist.after)
            res = bool(starts) and self._span_live(starts, 0, hist)
            self._available_memo[key] = res
        return res

    def _starts_from(self, after: int) -> tuple[int, ...]:
        """The span starts at or after byte ``after`` (all of them without ordered spans)."""
        if not after:
            return self.starts
        res = self._starts_memo.get(after)
        if res is None:
            res = self._starts_memo[after] = self.starts[bisect.bisect_left(self.starts, after) :]
        return res

    def _span_live(self, occ: tuple[int, ...], length: int, hist: History) -> bool:
        """Whether a span whose text so far occurs at ``occ`` (``length`` bytes) can still be closed legally."""
        if self._rec is not None:
            self._rec.starts.append(occ)
        if self._history_shortens(occ, hist):
            key: tuple = (occ, length, hist.counts)
        else:  # the history cannot move any last end of these starts: one answer for every history
            key = (occ, length)
        res = self._live_memo.get(key)
        if res is not None:
            return res
        # some legal end at or after the text so far, for some occurrence: the largest one tells
        res = any(s + max(length, 1) <= self._last_end(s, hist) for s in occ)
        self._live_memo[key] = res
        return res

    def _history_shortens(self, occ: tuple[int, ...], hist: History) -> bool:
        """Whether ``hist`` may lower the last legal end of a span starting at one of ``occ``: only when the
        span from such a start to its last end (whatever was emitted) was itself emitted already."""
        shortened = self._shortened(hist)
        return bool(shortened) and not shortened.isdisjoint(occ)

    def _shortened(self, hist: History) -> frozenset[int]:
        """The starts whose span to their last end (whatever was emitted) ``hist`` already emitted."""
        if not self.track_counts or not hist.counts:
            return frozenset()
        shortened = self._shortened_memo.get(hist.counts)
        if shortened is None:
            used = self._used(hist.counts)
            shortened = frozenset(s for s in self.starts if self.sb[s : self._free_last_end(s)] in used)
            self._shortened_memo[hist.counts] = shortened
        return shortened

    # -- transitions ---------------------------------------------------------------------------------
    def _step_config(self, c: Configuration, b: int) -> list[Configuration]:
        kind = type(c)  # dispatch on the type (faster than ``match``: this is the hot loop of a cold row)
        if kind is InSpan:
            occ, length, hist = c
            out: list[Configuration] = []
            nxt = tuple(s for s in occ if s + length < self.n and self.sb[s + length] == b)
            if nxt and self._span_live(nxt, length + 1, hist):
                out.append(InSpan(nxt, length + 1, hist))
            if b == _CLOSE[0] and length > 0:
                text = self.sb[occ[0] : occ[0] + length]
                end = next((s + length for s in occ if s + length in self.ends), None)
                if end is not None and self._word_ok(occ[0], occ[0] + length):
                    if self._budget(text, hist):
                        out.append(InClose(1, text, self._closing(hist, end)))
            return out
        if kind is InPreamble:
            i = c.matched
            if _PRE[i] != b:
                return []
            return [BetweenSpans(self.hist0)] if i + 1 == len(_PRE) else [InPreamble(i + 1)]
        if kind is BetweenSpans:
            if b == _OPEN[0] and self._can_open(c.history):
                return [InOpen(1, c.history)]
            return []
        if kind is InOpen:
            j, hist = c
            if _OPEN[j] != b:
                return []
            if j + 1 == len(_OPEN):
                starts = self._starts_from(hist.after)
                return [InSpan(starts, 0, hist)] if starts else []
            return [InOpen(j + 1, hist)]
        if kind is InClose:
            k, text, hist = c
            if _CLOSE[k] != b:
                return []
            if k + 1 == len(_CLOSE):
                return [BetweenSpans(self._add(hist, text))]
            return [InClose(k + 1, text, hist)]
        if kind is BeforeLeadingSpace:
            return [InPreamble(0)] if b == 0x20 else []
        raise AssertionError(c)  # pragma: no cover

    def step(self, state: State, b: int) -> State:
        key = (state, b)
        res = self._step_memo.get(key)
        if res is None:
            out: set[Configuration] = set()
            for c in state:
                out.update(self._step_config(c, b))
            res = frozenset(out)
            self._step_memo[key] = res
        return res

    def advance(self, state: State, token_id: int) -> State:
        """The state after a token (empty when the token is illegal there); memoised."""
        key = (state, token_id)
        res = self._advance_memo.get(key)
        if res is None:
            res = self._advance_memo[key] = self._advance(state, token_id)
        return res

    def _advance(self, state: State, token_id: int) -> State:
        piece = self.trie.contributions[token_id] if 0 <= token_id < self.trie.vocab_size else None
        if not piece:
            return frozenset()
        if len(state) == 1:
            (c,) = state
            if type(c) is InSpan and len(c.starts) == 1:
                advanced = self._advance_in_span(c, piece)
                if advanced is not None:
                    return advanced
        return self.advance_by_bytes(state, piece)

    def advance_by_bytes(self, state: State, piece: bytes) -> State:
        """The state after the bytes ``piece``, one byte at a time (the reference of :meth:`advance`)."""
        for b in piece:
            state = self.step(state, b)
            if not state:
                break
        return state

    def _advance_in_span(self, c: InSpan, piece: bytes) -> State | None:
        """The byte-by-byte walk of :meth:`_advance` for the usual step, one occurrence's span text read on
        (``None`` where that shortcut does not apply): the state is the longer span, or dead."""
        (s,), length, hist = c
        if not self.sb.startswith(piece, s + length):
            return None  # not more of the span's text: a close delimiter perhaps
        # a space inside the piece may also start a close delimiter: that branch must die within the piece
        i = piece.find(0x20)
        while i != -1:
            rest = piece[i:]
            if _CLOSE.startswith(rest) or rest.startswith(_CLOSE):
                return None
            i = piece.find(0x20, i + 1)
        grown = length + len(piece)
        if not self._span_live((s,), grown, hist):
            return frozenset()
        return frozenset([InSpan((s,), grown, hist)])

    def _next_bytes(self, state: State) -> set[int]:
        out: set[int] = set()
        for c in state:
            kind = type(c)
            if kind is InSpan:
                occ, length, _hist = c
                for s in occ:
                    if s + length < self.n:
                        out.add(self.sb[s + length])
                if length > 0:
                    out.add(_CLOSE[0])
            elif kind is InPreamble:
                out.add(_PRE[c.matched])
            elif kind is BetweenSpans:
                out.add(_OPEN[0])
            elif kind is InOpen:
                out.add(_OPEN[c.matched])
            elif kind is InClose:
                out.add(_CLOSE[c.matched])
            else:  # BeforeLeadingSpace
                out.add(0x20)
        return out

    @staticmethod
    def accepting(state: State) -> bool:
        return any(type(c) is BetweenSpans for c in state)

    def _closing(self, hist: History, end: int) -> History:
        """The history a close delimiter carries: with ordered spans, where its span ends (the earliest end
        of an occurrence: the most room for the spans after it)."""
        return hist._replace(after=end) if self.ordered else hist

    def _last_end(self, start: int, hist: History) -> int:
        """The largest legal end of a span starting at ``start`` (word limit and budget met), or -1: a span
        text ending at ``p`` (> start) can still be closed legally exactly when ``p`` <= it (as ``_span_live``
        decides for one occurrence)."""
        if self._rec is not None:
            self._rec.starts.append((start,))
        free = self._free_last_end(start)
        # usual case: that span's text was never emitted, so the history cannot take it away
        if free < 0 or not self.track_counts or not hist.counts:
            return free
        if self._used(hist.counts).get(self.sb[start:free]) is None:
            return free
        key = (start, hist.counts)
        res = self._last_end_memo.get(key)
        if res is None:
            res = self._last_end_memo[key] = self._scan_last_end(start, hist)
        return res

    def _free_last_end(self, start: int) -> int:
        """The largest end the word limit allows a span starting at ``start``, whatever was emitted."""
        free = self._last_end_free.get(start)
        if free is None:
            free = self._last_end_free[start] = self._scan_last_end(start, None)
        return free

    def _scan_last_end(self, start: int, hist: History | None) -> int:
        """The largest legal end of a span starting at ``start``, by a scan from the sentence's end (the budget
        of ``hist`` checked too, unless it is None)."""
        limit = self.config.max_span_words
        ends = self.ends_sorted
        for i in range(len(ends) - 1, bisect.bisect_left(ends, start + 1) - 1, -1):
            e = ends[i]
            if limit is not None and self.words(start, e) > limit:
                continue
            if hist is None or self._budget(self.sb[start:e], hist):
                return e
        return -1
