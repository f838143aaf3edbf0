"""JSON lines: :func:`read_jsonl`, one object per line with the sentence and its character spans.

The sentence is under ``"text"`` and its character spans under ``"entities"``, ``"spans"`` (prodigy),
``"mentions"``, ``"label"`` (doccano) or ``"ents"`` (spaCy); a ``.json`` file may also hold one JSON array of
such objects. A list of span-like items under any other key is an error (it would otherwise be read as a
sentence without mentions), and a file in which no record has a mention is read with a loud warning.
"""

from __future__ import annotations

import json
import re
import unicodedata
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..labels import normalize_label
from ..types import AnnotatedSentence, Mention
from .conll import _lines, _read_text
from .errors import DataFormatError

__all__ = ["JSON_EXTENSIONS", "read_jsonl"]

#: File name endings read as JSON lines (or one JSON array for ``.json``).
JSON_EXTENSIONS: tuple[str, ...] = (".jsonl", ".json", ".ndjson")

_SPAN_KEYS = ("entities", "spans", "mentions", "label", "ents")


def _looks_like_spans(value: Any) -> bool:
    """A non-empty list of ``{"start", "end", ...}`` objects or ``[start, end, label]`` triples."""
    if not isinstance(value, list) or not value:
        return False
    first = value[0]
    if isinstance(first, dict):
        return "start" in first and "end" in first
    return (
        isinstance(first, (list, tuple))
        and len(first) == 3
        and all(isinstance(x, int) and not isinstance(x, bool) for x in first[:2])
    )


def _json_objects(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """``(line, value)`` for each JSON-lines object, or each element of a top-level JSON array."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        decoder = json.JSONDecoder()
        pos = len(text) - len(stripped) + 1
        n = len(text)
        expect_value = True
        while True:
            while pos < n and text[pos] in " \t\r\n":
                pos += 1
            if pos >= n:
                raise DataFormatError(
                    path, text.count("\n") + 1, "unterminated JSON array.", "close it with ']'."
                )
            if text[pos] == "]":
                rest = text[pos + 1 :].strip()
                if rest:
                    line = text[: pos + 1].count("\n") + 1
                    raise DataFormatError(path, line, "extra content after the JSON array.", "remove it.")
                return
            if not expect_value:
                if text[pos] != ",":
                    line = text[:pos].count("\n") + 1
                    raise DataFormatError(
                        path, line, "expected ',' or ']' in the JSON array.", "fix the JSON."
                    )
                pos += 1
                expect_value = True
                continue
            line = text[:pos].count("\n") + 1
            try:
                value, pos = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as err:
                raise DataFormatError(
                    path, err.lineno, f"invalid JSON: {err.msg}.", "fix the JSON syntax."
                ) from None
            expect_value = False
            yield line, value
    else:
        for idx, ln in enumerate(_lines(text)):
            if not ln.strip():
                continue
            try:
                yield idx + 1, json.loads(ln)
            except json.JSONDecodeError as err:
                raise DataFormatError(
                    path,
                    idx + 1,
                    f"invalid JSON ({err.msg} at column {err.colno}).",
                    "write one complete JSON object per line (JSON lines), or one JSON array in a .json file.",
                ) from None


def _span_of(item: Any, path: Path, line: int, key: str, j: int) -> tuple[int, int, str, Any]:
    """``(start, end, label, text)`` of one span; ``text`` is the span's own ``"text"`` field, if any."""
    where = f"{key}[{j}]"
    text = None
    if isinstance(item, dict):
        text = item.get("text")
        label = item.get("label", item.get("type"))
        start, end = item.get("start"), item.get("end")
        if start is None or end is None or label is None:
            raise DataFormatError(
                path,
                line,
                f"{where} = {item!r} lacks start/end/label.",
                'write {"start": 0, "end": 5, "label": "PER"} (or [0, 5, "PER"]).',
            )
    elif isinstance(item, (list, tuple)) and len(item) == 3:
        start, end, label = item
    else:
        raise DataFormatError(
            path,
            line,
            f"{where} = {item!r} is neither an object nor a [start, end, label] triple.",
            'write {"start": 0, "end": 5, "label": "PER"} or [0, 5, "PER"].',
        )
    if (
        not isinstance(start, int)
        or not isinstance(end, int)
        or isinstance(start, bool)
        or isinstance(end, bool)
    ):
        raise DataFormatError(
            path, line, f"{where}: start/end must be integers, got {start!r}, {end!r}.", "fix them."
        )
    if not isinstance(label, str) or not label.strip():
        raise DataFormatError(
            path, line, f"{where}: label must be a non-empty string, got {label!r}.", "fix it."
        )
    return start, end, normalize_label(label), text


def _tokens_with_boundaries(text: str, cuts: set[int]) -> tuple[list[str], list[tuple[int, int]]]:
    """Whitespace tokens, further split at every mention boundary so mentions align to tokens."""
    tokens: list[str] = []
    offsets: list[tuple[int, int]] = []
    for m in re.finditer(r"\S+", text):
        a, b = m.start(), m.end()
        points = [a] + sorted(c for c in cuts if a < c < b) + [b]
        for s, e in zip(points, points[1:]):
            tokens.append(text[s:e])
            offsets.append((s, e))
    return tokens, offsets


def read_jsonl(path: str | Path) -> list[AnnotatedSentence]:
    """Read JSON lines with character spans into annotated sentences.

    Each non-blank line is one object (a ``.json`` file may instead hold one JSON array of objects):

    - ``"text"`` (required): the sentence;
    - exactly one of ``"entities"``, ``"spans"`` or ``"mentions"`` (an empty list is fine; the key may be
      absent for a sentence without mentions): each item ``{"start": int, "end": int, "label": str}``
      (``"type"`` is accepted for ``"label"``) or ``[start, end, label]``, with ``text[start:end]`` the
      mention, ``end`` exclusive;
    - other keys (ids, metadata) are ignored.

    Overlapping spans are kept as given (nested mentions of different types are valid input for per-type
    extraction); exact duplicates are an error.

    Tokens are the whitespace-separated pieces of ``text``, split further at mention boundaries so every
    mention starts and ends on a token boundary (``to_bio()`` works).

    Raises:
        DataFormatError: invalid JSON, missing ``text``, spans out of range, empty or whitespace-edged
            spans, duplicate spans - naming the file and line.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "d.jsonl"
        >>> _ = p.write_text('{"text": "Ada met Bob.", "entities": [[0, 3, "PER"], {"start": 8, "end": 11, "label": "PER"}]}\\n')
        >>> s = read_jsonl(p)[0]
        >>> [s.mention_text(m) for m in s.mentions], s.tokens
        (['Ada', 'Bob'], ['Ada', 'met', 'Bob', '.'])
    """
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        raise DataFormatError(path, 1, "the file is empty.", "point to a non-empty JSON-lines file.")
    out: list[AnnotatedSentence] = []
    for line, obj in _json_objects(path, text):
        if not isinstance(obj, dict):
            raise DataFormatError(
                path,
                line,
                f"expected a JSON object, got {type(obj).__name__}.",
                'write {"text": ..., "entities": [...]}.',
            )
        sentence = obj.get("text")
        if not isinstance(sentence, str) or not sentence.strip():
            raise DataFormatError(
                path,
                line,
                f"missing or empty 'text' (keys: {sorted(obj)}).",
                'give every object the sentence under "text" (character spans refer to it).',
            )
        keys = [k for k in _SPAN_KEYS if k in obj]
        if len(keys) > 1:
            raise DataFormatError(
                path,
                line,
                f"both {keys[0]!r} and {keys[1]!r} present.",
                f"keep one of {', '.join(_SPAN_KEYS)}.",
            )
        stray = [k for k, v in obj.items() if k not in _SPAN_KEYS and _looks_like_spans(v)]
        if stray:
            raise DataFormatError(
                path,
                line,
                f"spans under {stray[0]!r}, which is not a span key, so they would be ignored.",
                f"put them under one of {', '.join(map(repr, _SPAN_KEYS))}.",
            )
        items = obj[keys[0]] if keys else []
        key = keys[0] if keys else _SPAN_KEYS[0]
        if not isinstance(items, list):
            raise DataFormatError(
                path, line, f"{key!r} must be a list, got {type(items).__name__}.", "make it a list."
            )
        with_texts = [_span_of(item, path, line, key, j) for j, item in enumerate(items)]
        spans = [(s, e, label) for s, e, label, _ in with_texts]
        seen: set[tuple[int, int, str]] = set()
        for j, (s, e, label, own_text) in enumerate(with_texts):
            if not 0 <= s < e <= len(sentence):
                raise DataFormatError(
                    path,
                    line,
                    f"{key}[{j}] = ({s}, {e}, {label!r}) is outside the text (length {len(sentence)}) or empty.",
                    "use 0 <= start < end <= len(text) character offsets, end exclusive.",
                )
            piece = sentence[s:e]
            if own_text is not None and own_text != piece:
                raise DataFormatError(
                    path,
                    line,
                    f"{key}[{j}] = ({s}, {e}, {label!r}) says its text is {own_text!r}, but the offsets cover "
                    f"{piece!r}.",
                    "fix the offsets (end is exclusive) or the span's text.",
                )
            cut = [i for i in (s, e) if i < len(sentence) and unicodedata.combining(sentence[i])]
            if cut:
                raise DataFormatError(
                    path,
                    line,
                    f"{key}[{j}] = ({s}, {e}, {label!r}) cuts the combining mark {sentence[cut[0]]!r} (U+"
                    f"{ord(sentence[cut[0]]):04X}) at {cut[0]} from the character it belongs to.",
                    "move the offset past the mark (offsets count code points: 'e' + U+0301 is two).",
                )
            if piece != piece.strip():
                raise DataFormatError(
                    path,
                    line,
                    f"{key}[{j}] = ({s}, {e}, {label!r}) covers {piece!r}, which starts or ends with whitespace.",
                    "trim the span to the mention's first and last character.",
                )
            if (s, e, label) in seen:
                raise DataFormatError(
                    path,
                    line,
                    f"{key}[{j}] = ({s}, {e}, {label!r}) is listed twice.",
                    "remove the duplicate.",
                )
            seen.add((s, e, label))
        cuts = {s for s, _, _ in spans} | {e for _, e, _ in spans}
        tokens, offsets = _tokens_with_boundaries(sentence, cuts)
        out.append(
            AnnotatedSentence(
                text=sentence,
                tokens=tokens,
                token_offsets=offsets,
                mentions=[Mention(s, e, label) for s, e, label in spans],
                source=f"{path}:{line}",
            )
        )
    if not any(s.mentions for s in out):
        warnings.warn(
            f"{path}: none of its {len(out)} records has a mention (spans go under one of "
            f"{', '.join(map(repr, _SPAN_KEYS))}): training on it teaches 'none', and scores on it are 0.",
            UserWarning,
            stacklevel=2,
        )
    return out
