"""Tokenizer introspection and the vocabulary trie.

:class:`VocabularyTrie` (built once per tokenizer and cached) maps every token id to the exact bytes it
contributes to the decoded text (byte-level BPE bytes, SentencePiece ``▁`` as a space, ``<0xNN>`` byte
fallback pieces) and stores these byte strings in a trie. The automaton (:mod:`.automaton`) runs on UTF-8
**bytes**, so a token that is not valid UTF-8 on its own (half of a multi-byte character) is allowed exactly
where its bytes continue a legal output, and never elsewhere. Special tokens other than EOS are never allowed.
"""

from __future__ import annotations

import json
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from ..template import CLOSE_DELIMITER, OPEN_DELIMITER
from .automaton import RowAutomaton
from .config import SpanConstraintConfig

__all__ = ["VocabularyTrie"]

_BYTE_FALLBACK_RE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


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
        close, open_ = CLOSE_DELIMITER.encode("utf-8"), OPEN_DELIMITER.encode("utf-8")
        #: the tokens that are a (nonempty) prefix of the close delimiter: what may follow a span that can end
        #: where a token ends
        self.close_prefix_ids: frozenset[int] = frozenset(
            tid for tid, c in enumerate(self.contributions) if c and close.startswith(c)
        )
        #: whether a token holds a whole close delimiter and the start of an open one (then the tokens after a
        #: span depend on whether another span may open)
        self.closes_and_opens = any(c and close + open_[:1] in c for c in self.contributions)
        self._automata: OrderedDict[tuple, RowAutomaton] = OrderedDict()

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

    def automaton(self, sentence: str, config: SpanConstraintConfig) -> RowAutomaton:
        """The (cached, memoised) automaton of one input sentence."""
        key = (sentence, config.key())
        auto = self._automata.get(key)
        if auto is None:
            auto = RowAutomaton(self, sentence, config)
            self._automata[key] = auto
            if len(self._automata) > 2048:
                self._automata.popitem(last=False)
        else:
            self._automata.move_to_end(key)
        return auto
