"""The allowed next tokens of an automaton state (:class:`AllowedTokens`, a base of
:class:`~.automaton.RowAutomaton`).

A token is allowed when the walk of its bytes from the state keeps the automaton alive and ends where a legal
output can still be completed. The fast path walks one configuration at a time and reads span text along the
sentence (instead of the whole vocabulary trie); a configuration's set is shared by every history under which
the checks its walk made answer alike (:class:`_Checks`). :meth:`AllowedTokens.allowed_by_walk` is the plain
trie walk the fast path is tested against.
"""

from __future__ import annotations

import array
from collections.abc import Iterable
from typing import Any

import torch

from ..template import CLOSE_DELIMITER
from .states import Configuration, History, InClose, InSpan, State

__all__ = ["AllowedTokens"]

_CLOSE = CLOSE_DELIMITER.encode("utf-8")


def _id_tensor(ids: frozenset[int]) -> torch.Tensor:
    """The sorted ids as a long tensor (through a C array: twice as fast as ``torch.tensor`` of a list)."""
    if not ids:
        return torch.empty(0, dtype=torch.long)
    return torch.frombuffer(array.array("q", sorted(ids)), dtype=torch.long)


class _Checks:
    """The history checks one allowed-token walk made (see ``RowAutomaton._config_allowed``)."""

    __slots__ = ("texts", "starts", "opens", "sensitive")

    def __init__(self) -> None:
        self.texts: list[bytes] | frozenset[bytes] = []  # span texts whose budget was checked
        self.starts: list[tuple[int, ...]] | tuple = []  # occurrence tuples whose last ends were read
        self.opens = False  # whether a span was allowed to open
        self.sensitive = False  # the walk went past a close delimiter (another history): never shared

    def frozen(self) -> _Checks:
        self.texts = frozenset(self.texts)
        self.starts = tuple(set(self.starts))
        return self


class AllowedTokens:
    """The allowed-token sets of :class:`~.automaton.RowAutomaton` (its transitions, liveness checks, memos and
    trie come from there)."""

    # provided by RowAutomaton
    trie: Any
    starts: tuple[int, ...]
    sb: bytes
    n: int
    ends: frozenset[int]
    coverable: bool
    _rec: _Checks | None

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
        for _tids, after in self._trie_walk(state):
            yield after

    def _trie_walk(self, state: State) -> Iterable[tuple[list[int], State]]:
        """Every ``(token ids, state after their bytes)`` of the vocabulary trie read from ``state``, for the
        tokens whose bytes keep it alive (a plain walk of the trie, byte by byte)."""
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
                if tids is not None:
                    yield tids, st2
                stack.append((child, st2))

    def allowed(self, state: State) -> tuple[torch.Tensor, bool]:
        """(allowed token ids, whether EOS is allowed) in ``state``; memoised.

        A token is allowed when the walk of its bytes from ``state`` stays alive. The walk of a set of
        configurations is the union of the walks of its members, so the allowed set is the union of each
        configuration's (memoised on its own: a configuration recurs in many states). Where every needed
        character is producible (``coverable``, the usual case) that is exact; otherwise token-level liveness
        must be checked on whole states, on the slow path (:meth:`allowed_by_walk`).
        """
        res = self._allowed_memo.get(state)
        if res is not None:
            return res
        if not self.coverable:
            ids = frozenset(self.allowed_by_walk(state))
        elif len(state) == 1:
            (c,) = state
            ids = self._config_allowed(c)
        else:
            found: set[int] = set()
            for c in state:
                found.update(self._config_allowed(c))
            ids = frozenset(found)
        # states with the same allowed ids (the same place under another history) share one tensor
        tensor = self._tensor_memo.get(ids)
        if tensor is None:
            tensor = self._tensor_memo[ids] = _id_tensor(ids)
        res = (tensor, self.accepting(state))
        self._allowed_memo[state] = res
        return res

    def allowed_by_walk(self, state: State) -> list[int]:
        """The allowed token ids of ``state`` by a plain walk of the vocabulary trie (the reference)."""
        ids: list[int] = []
        for tids, after in self._trie_walk(state):
            if self.coverable or self._token_live(after):
                ids.extend(tids)
        return sorted(ids)

    # -- the fast path: one configuration at a time, span text read along the sentence ------------------
    def _config_allowed(self, c: Configuration) -> frozenset[int]:
        res = self._config_memo.get(c)
        if res is not None:
            return res
        hist = c[-1] if c and type(c[-1]) is History else None
        if hist is None or self._rec is not None:
            found: set[int] = set()
            self._collect(self.trie.root, c, found)
            res = self._config_memo[c] = frozenset(found)
            return res
        # The same place under another history usually allows the same tokens: a history matters only through
        # the checks the walk makes (a span text's budget, a start's last end, whether a span may open). The
        # walk is recorded; its result is shared by every history under which all those checks answer as for
        # an empty history.
        # a span's own tokens do not depend on where the last span ended; what may open next does
        place = (type(c), *c[:-1]) if type(c) is InSpan else (type(c), *c[:-1], hist.after)
        shared = self._place_memo.get(place)
        if shared is not None and self._neutral(shared[1], hist):
            res = self._config_memo[c] = shared[0]
            return res
        rec = self._rec = _Checks()
        try:
            found = set()
            self._collect(self.trie.root, c, found)
        finally:
            self._rec = None
        res = self._config_memo[c] = frozenset(found)
        if self._neutral(rec, hist):
            self._place_memo[place] = (res, rec.frozen())
        return res

    def _neutral(self, rec: _Checks, hist: History) -> bool:
        """Whether every check in ``rec`` answers under ``hist`` as under an empty history."""
        if rec.sensitive:
            return False
        if rec.opens and (
            (self.span_limit is not None and hist.spans >= self.span_limit) or not self._available(hist)
        ):
            return False
        if not self.track_counts or not hist.counts:
            return True
        used = self._used(hist.counts)
        if not used.keys().isdisjoint(rec.texts):
            return False
        shortened = self._shortened(hist)
        return not shortened or all(shortened.isdisjoint(occ) for occ in rec.starts)

    def _collect(self, node: dict, c: Configuration, found: set[int]) -> None:
        """Add to ``found`` every token whose bytes, read from trie ``node`` on, keep ``c`` alive."""
        if type(c) is InSpan:
            self._collect_span(node, c, found)
            return
        stack = [(node, c)]
        while stack:
            node, c = stack.pop()
            if type(c) is InSpan:
                self._collect_span(node, c, found)
                continue
            for b in self._next_bytes((c,)):
                child = node.get(b)
                if child is None:
                    continue
                for c2 in self._step_config(c, b):
                    tids = child.get(-1)
                    if tids is not None:
                        found.update(tids)
                    stack.append((child, c2))

    def _collect_span(self, node: dict, c: InSpan, found: set[int]) -> None:
        """The tokens (read from ``node``) that continue the span ``c``: the ones made of span text, read
        along the sentence from each occurrence, whose text can still end a legal span; and the ones that
        close the span (where it may end) and go on into the close delimiter and beyond."""
        occ, length, hist = c
        if len(occ) == 1 and node is self.trie.root:
            self._collect_one_span(occ[0], length, hist, found)
            return
        closings, live = self._span_walk(node, occ, length)
        closed: set[bytes] = set()
        for s, end, here in closings:
            text = self.sb[s:end]
            if text not in closed and self._word_ok(s, end) and self._budget(text, hist):
                closed.add(text)  # the earliest occurrence's end (occurrences come in order)
                self._collect_close(here, text, self._closing(hist, end), found)
        if self._rec is not None:
            self._rec.starts.append(occ)  # the text tokens' liveness reads these starts' last ends
        if self._history_shortens(occ, hist):
            for t, (k, starts) in self._span_text_tokens(node, occ, length).items():
                if t not in found and self._span_live(starts, length + k, hist):
                    found.add(t)
            return
        # the usual case: no start's last end is moved by the history, so the walk's own answer holds
        found.update(live)

    def _collect_close(self, here: dict, text: bytes, hist: History, found: set[int]) -> None:
        """Add the tokens that, read from trie node ``here``, close the span ``text`` (and go on after it)."""
        if here is self.trie.root and not self.trie.closes_and_opens:
            # a token that starts the close delimiter is one of its prefixes: none goes on into another span
            found.update(self.trie.close_prefix_ids)
            return
        child = here.get(_CLOSE[0])
        if child is not None:
            tids = child.get(-1)
            if tids is not None:
                found.update(tids)
            self._collect(child, InClose(1, text, hist), found)

    def _span_walk(
        self, node: dict, occ: tuple[int, ...], length: int
    ) -> tuple[list[tuple[int, int, dict]], frozenset[int]]:
        """The history-free part of :meth:`_collect_span`, memoised (a span start, all word starts at
        length 0, recurs after every open delimiter): every ``(start, end, trie node)`` where the span text
        read so far ends at a legal end (the close delimiter may follow there), and the tokens made of span
        text that are live when no history shortens a start's last end (the text they complete still fits a
        legal span from one of their occurrences: what :meth:`_span_live` answers). From the trie's root,
        both are unions of per-position pieces shared by every span of the sentence."""
        key = (id(node), occ, length)
        res = self._span_walk_memo.get(key)
        if res is not None:
            return res
        closings: list[tuple[int, int, dict]] = []
        live: set[int] = set()
        if node is self.trie.root:
            for s in occ:
                p = s + length
                walk = self._walk(p)
                # the most bytes a token may read from p and still end no later than the span's last legal end
                depth = min(self._free_last_end(s) - p, len(walk) - 1)
                if depth > 0:
                    live.update(self._text_tokens(p, depth))
                closings.extend((s, end, here) for end, here in self._closable(p, length == 0))
        else:  # inside a token that began before the span (one that holds the open delimiter and span text)
            for s in occ:
                piece_live, piece_closings = self._span_piece(node, s, length)
                live.update(piece_live)
                closings.extend(piece_closings)
        res = self._span_walk_memo[key] = (closings, frozenset(live))
        return res

    def _span_piece(
        self, node: dict, s: int, length: int
    ) -> tuple[frozenset[int], list[tuple[int, int, dict]]]:
        """One occurrence's share of :meth:`_span_walk` from a trie node inside a token (memoised: the spans
        after each other span start from other occurrence tuples, but read the same pieces)."""
        key = (id(node), s, length)
        res = self._piece_memo.get(key)
        if res is not None:
            return res
        sb, n, ends = self.sb, self.n, self.ends
        live: set[int] = set()
        closings: list[tuple[int, int, dict]] = []
        p, k, here = s + length, 0, node
        room = self._free_last_end(s) - p
        while True:
            end = p + k
            if length + k > 0 and end in ends and _CLOSE[0] in here:
                closings.append((s, end, here))
            if end >= n:
                break
            here = here.get(sb[end])
            if here is None:
                break
            k += 1
            tids = here.get(-1)
            if tids is not None and k <= room:
                live.update(tids)
        res = self._piece_memo[key] = (frozenset(live), closings)
        return res

    def _closable(self, p: int, empty: bool) -> list[tuple[int, dict]]:
        """``(end, trie node)`` along the sentence from byte ``p`` (read from the trie's root) where a span may
        end and a close delimiter follow: where a new token starts (at ``p`` itself, unless the span is
        ``empty`` there) or a token can go on with the delimiter."""
        key = (p, empty)
        res = self._closable_memo.get(key)
        if res is None:
            ends = self.ends
            res = [
                (p + k, here)
                for k, here in enumerate(self._walk(p))
                if p + k in ends and (k > 0 or not empty) and (k == 0 or _CLOSE[0] in here)
            ]
            self._closable_memo[key] = res
        return res

    def _span_text_tokens(
        self, node: dict, occ: tuple[int, ...], length: int
    ) -> dict[int, tuple[int, tuple]]:
        """Each token made of span text read from ``node``, with the bytes it reads and the occurrences it
        continues (for a history that shortens some start's last end; memoised)."""
        key = (id(node), occ, length)
        res = self._span_tokens_memo.get(key)
        if res is not None:
            return res
        sb, n = self.sb, self.n
        grouped: dict[int, tuple[int, list[int]]] = {}
        for s in occ:
            p, k, here = s + length, 0, node
            while p + k < n:
                here = here.get(sb[p + k])
                if here is None:
                    break
                k += 1
                for t in here.get(-1, ()):
                    entry = grouped.get(t)
                    if entry is None:
                        grouped[t] = (k, [s])
                    else:
                        entry[1].append(s)
        res = self._span_tokens_memo[key] = {t: (k, tuple(starts)) for t, (k, starts) in grouped.items()}
        return res

    def _collect_one_span(self, start: int, length: int, hist: History, found: set[int]) -> None:
        """:meth:`_collect_span` for the usual case, one occurrence read from the trie's root: the text
        tokens are every token along the sentence from ``start + length`` that ends no later than the
        span's last legal end (a set cached per position and depth, shared by every query of the
        sentence); the closing tokens are collected where the span may end."""
        p = start + length
        walk = self._walk(p)
        depth = min(self._last_end(start, hist) - p, len(walk) - 1)
        if depth > 0:
            found.update(self._text_tokens(p, depth))
        ends = self.ends
        for k, here in enumerate(walk):
            end = p + k
            # a close delimiter may follow where a new token starts (k == 0) or a token can go on with it
            if length + k > 0 and end in ends and (k == 0 or _CLOSE[0] in here):
                text = self.sb[start:end]
                if self._word_ok(start, end) and self._budget(text, hist):
                    self._collect_close(here, text, self._closing(hist, end), found)

    def _walk(self, p: int) -> list[dict]:
        """The trie nodes along the sentence from byte ``p``: ``[root, node of sb[p], node of sb[p:p+2], ...]``."""
        walk = self._walk_memo.get(p)
        if walk is None:
            walk = [self.trie.root]
            here, q = self.trie.root, p
            while q < self.n:
                here = here.get(self.sb[q])
                if here is None:
                    break
                walk.append(here)
                q += 1
            self._walk_memo[p] = walk
        return walk

    def _text_tokens(self, p: int, depth: int) -> frozenset[int]:
        """The tokens whose bytes are ``sb[p:p+k]`` for some ``1 <= k <= depth``."""
        key = (p, depth)
        res = self._text_memo.get(key)
        if res is None:
            ids: set[int] = set()
            for here in self._walk(p)[1 : depth + 1]:
                tids = here.get(-1)
                if tids is not None:
                    ids.update(tids)
            res = self._text_memo[key] = frozenset(ids)
        return res
