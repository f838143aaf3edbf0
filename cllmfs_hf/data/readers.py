"""Readers: corpus files and ``datasets.Dataset`` objects -> :class:`AnnotatedSentence` lists.

Every reader returns ``list[AnnotatedSentence]`` whose ``source`` is ``"path:line"`` of the sentence's first
line (``"name:row"`` for a ``datasets.Dataset``), so any later error or report can point back at the file.
Every malformed input raises :class:`DataFormatError` (a ``ValueError``) whose message names the file, the
line and the fix; nothing is skipped silently.

Formats
-------
- **Column files** (:func:`read_conll`): one token per line, columns separated by TABs (when the first
  token line has a TAB) or by runs of spaces, the token in ``token_column`` (default first) and the tag in
  ``tag_column`` (default last) so CoNLL-2003's 4 columns work as is; blank (or whitespace-only) lines end
  a sentence; ``-DOCSTART-`` lines are document markers and end a sentence too.
  Tag schemes: ``"bio"`` (IOB2: ``B-`` starts, ``I-`` continues), ``"iob1"`` (``I-`` starts an entity, ``B-``
  only splits two adjacent entities of the same type, as in WikiGold and the original CoNLL-2003),
  ``"io"`` (no prefixes, e.g. Few-NERD's ``person-actor``; adjacent tokens of the same type form ONE
  mention, which is how that benchmark counts them) and ``"auto"`` (see :func:`detect_scheme`).
- **JSON lines** (:func:`read_jsonl`): one object per line with the sentence under ``"text"`` and its
  character spans under ``"entities"``, ``"spans"`` or ``"mentions"``; a ``.json`` file may also hold one
  JSON array of such objects.
- **datasets.Dataset** (:func:`from_hf_dataset`): ``tokens`` + ``ner_tags`` columns, tags as strings or as
  integers with ``ClassLabel`` names.

Labels (the tag without its prefix) go through :func:`cllmfs_hf.data.labels.normalize_label`, the one
place where type names are normalised.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.txt"
    >>> _ = path.write_text("United\\tB-politicalparty\\nRussia\\tI-politicalparty\\nwon\\tO\\n", encoding="utf-8")
    >>> [s.mention_text(m) for s in read_conll(path) for m in s.mentions]
    ['United Russia']
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .labels import normalize_label
from .types import AnnotatedSentence, Mention

__all__ = [
    "DataFormatError",
    "SCHEMES",
    "COLUMN_EXTENSIONS",
    "JSON_EXTENSIONS",
    "detect_scheme",
    "read_conll",
    "read_jsonl",
    "from_hf_dataset",
    "read_dataset",
    "find_splits",
]

Scheme = Literal["auto", "bio", "iob2", "iob1", "io"]
SCHEMES: tuple[str, ...] = ("auto", "bio", "iob2", "iob1", "io")
#: File name endings read as token-per-line column files.
COLUMN_EXTENSIONS: tuple[str, ...] = (
    ".txt",
    ".tsv",
    ".conll",
    ".conllu",
    ".annotated",
    ".bio",
    ".iob",
    ".iob2",
    ".io",
)
#: File name endings read as JSON lines (or one JSON array for ``.json``).
JSON_EXTENSIONS: tuple[str, ...] = (".jsonl", ".json", ".ndjson")

_PREFIXED = re.compile(r"^([A-Za-z])-(.*)$", re.DOTALL)
_MULTI_LABEL = re.compile(r"^[A-Za-z]-[^,]+(,[A-Za-z]-[^,]+)+$")


class DataFormatError(ValueError):
    """A corpus file (or dataset row) that cannot be read as is.

    The message always says where (``path:line``), what is wrong and how to fix it.

    Example:
        >>> str(DataFormatError("a.txt", 3, "empty tag.", "give every token a tag, 'O' outside entities."))
        "a.txt:3: empty tag. Fix: give every token a tag, 'O' outside entities."
    """

    def __init__(self, path: str | Path, line: int | None, problem: str, fix: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {problem} Fix: {fix}")


# --------------------------------------------------------------------------------------------------------
# Tag parsing and scheme handling
# --------------------------------------------------------------------------------------------------------
@dataclass
class _RawSentence:
    tokens: list[str]
    tags: list[str]
    lines: list[int]


def _split_tag(tag: str) -> tuple[str | None, str]:
    """``"B-PER"`` -> ``("B", "PER")``; ``"person-actor"`` -> ``(None, "person-actor")``; ``"O"`` -> ``("O", "")``."""
    if tag == "O":
        return "O", ""
    m = _PREFIXED.match(tag)
    if m:
        return m.group(1), m.group(2)
    return None, tag


def _canonical_scheme(scheme: str, where: str) -> str:
    if scheme not in SCHEMES:
        raise ValueError(
            f"{where}: unknown tag scheme {scheme!r}. Fix: pass scheme= one of {', '.join(map(repr, SCHEMES))}."
        )
    return "bio" if scheme == "iob2" else scheme


def _check_tag(tag: str, path: str, line: int) -> None:
    """Reject tags no scheme can read: empty, multi-label, unknown prefix, empty label."""
    if not tag:
        raise DataFormatError(path, line, "empty tag.", "give every token a tag ('O' outside entities).")
    if "," in tag and _MULTI_LABEL.match(tag):
        sibling = Path(path).with_suffix(".annotated")
        hint = (
            f" A single-label version of this file exists: {sibling}."
            if sibling.is_file() and sibling != Path(path)
            else ""
        )
        raise DataFormatError(
            path,
            line,
            f"multi-label tag {tag!r}: this reader takes exactly one tag per token.{hint}",
            "use the single-label gold file instead (for WNUT-17: emerging.test.annotated, not "
            "emerging.test.conll), or reduce each tag to one label before reading.",
        )
    prefix, label = _split_tag(tag)
    if prefix is not None and prefix != "O":
        if prefix not in ("B", "I"):
            raise DataFormatError(
                path,
                line,
                f"unknown tag prefix {prefix + '-'!r} in {tag!r}.",
                "use B-/I- prefixes (schemes bio, iob1) or no prefix at all (scheme io); convert "
                "BIOES/BILOU files (S-, E-, L-, U-) to BIO first.",
            )
        if not label.strip():
            raise DataFormatError(
                path, line, f"tag {tag!r} has a prefix but no entity type.", "write e.g. B-PER."
            )


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """The tag scheme of a whole corpus, by this rule (first match wins):

    1. no tag carries a ``B-``/``I-`` prefix -> ``"io"`` (also when every tag is ``O``: all schemes agree);
    2. some ``B-X`` starts an entity (at the sentence start, after ``O`` or after another type) -> ``"bio"``;
    3. some ``I-X`` starts an entity (same positions) -> ``"iob1"`` (``B-`` only splits same-type neighbours);
    4. otherwise -> ``"bio"``.

    A corpus that mixes prefixed and unprefixed tags is detected as ``bio``/``iob1`` and the reader then
    reports the first unprefixed tag. Pass ``scheme=`` explicitly to override the detection.

    Example:
        >>> detect_scheme([["B-PER", "I-PER", "O"]]), detect_scheme([["I-PER", "O"]]), detect_scheme([["person-actor"]])
        ('bio', 'iob1', 'io')
    """
    any_prefixed = False
    b_starts = False
    i_starts = False
    for tags in tag_sequences:
        prev_label: str | None = None
        for tag in tags:
            prefix, label = _split_tag(tag)
            if prefix in ("B", "I"):
                any_prefixed = True
                if prev_label != label:
                    if prefix == "B":
                        b_starts = True
                    else:
                        i_starts = True
                prev_label = label
            else:
                prev_label = None
        if b_starts:
            return "bio"
    if not any_prefixed:
        return "io"
    if i_starts:
        return "iob1"
    return "bio"


def _decode(
    tags: Sequence[str],
    scheme: str,
    strict: bool,
    path: str,
    lines: Sequence[int],
    detected: bool,
) -> list[tuple[int, int, str]]:
    """Token spans ``(first, last_exclusive, label)`` of the mentions encoded by ``tags`` under ``scheme``."""
    how = f"scheme {scheme!r}" + (" (auto-detected)" if detected else "")
    spans: list[tuple[int, int, str]] = []
    start: int | None = None
    cur: str | None = None

    def close(i: int) -> None:
        nonlocal start, cur
        if start is not None and cur is not None:
            spans.append((start, i, cur))
        start, cur = None, None

    for i, tag in enumerate(tags):
        prefix, raw_label = _split_tag(tag)
        if prefix == "O":
            close(i)
            continue
        label = normalize_label(raw_label)
        if scheme == "io":
            if prefix is not None:
                raise DataFormatError(
                    path,
                    lines[i],
                    f"tag {tag!r} has a {prefix}- prefix but the file is read with {how}.",
                    "pass scheme='bio' or scheme='iob1' (or 'auto') for prefixed tags.",
                )
            if cur != label:
                close(i)
                start, cur = i, label
            continue
        if prefix is None:
            raise DataFormatError(
                path,
                lines[i],
                f"tag {tag!r} has no B-/I- prefix but the file is read with {how}.",
                "pass scheme='io' for prefix-less tags (e.g. Few-NERD's person-actor), or prefix every tag.",
            )
        if scheme == "bio":
            if prefix == "B":
                close(i)
                start, cur = i, label
            elif cur == label:
                pass  # I- continues the open entity
            elif strict:
                after = "the sentence start" if i == 0 else f"{tags[i - 1]!r}"
                raise DataFormatError(
                    path,
                    lines[i],
                    f"{tag!r} after {after} continues no entity under {how} (strict IOB2).",
                    "fix the tag to B-" + label + ", pass scheme='iob1' if I- starts entities in this file, "
                    "or strict=False to repair a stray I- into B- (seqeval's default).",
                )
            else:
                close(i)
                start, cur = i, label
        else:  # iob1
            if prefix == "I":
                if cur != label:
                    close(i)
                    start, cur = i, label
            else:
                if strict and cur != label:
                    after = "the sentence start" if i == 0 else f"{tags[i - 1]!r}"
                    raise DataFormatError(
                        path,
                        lines[i],
                        f"{tag!r} after {after}: under {how} (strict) B- only separates two adjacent "
                        f"entities of the same type.",
                        "use I-" + label + " to start an entity, pass scheme='bio' if B- starts entities "
                        "in this file, or strict=False to accept B- as an entity start.",
                    )
                close(i)
                start, cur = i, label
    close(len(tags))
    return spans


# --------------------------------------------------------------------------------------------------------
# Column files
# --------------------------------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    """The file decoded as UTF-8 (a leading BOM removed); invalid UTF-8 is an error naming the line."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file. Fix: check the path (relative paths start at {Path.cwd()})."
        )
    if path.is_dir():
        raise DataFormatError(
            path,
            None,
            "is a folder, not a data file.",
            "pass one file, or use find_splits(folder) to locate them.",
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataFormatError(
            path,
            line,
            f"invalid UTF-8 (byte {raw[err.start : err.start + 1]!r} at byte offset {err.start}).",
            "re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 in > out`.",
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return text


def _lines(text: str) -> list[str]:
    # Not str.splitlines(): it also splits on \x1c-\x1e, \x85 and \u2028, which can occur inside tokens.
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]


def _parse_columns(path: Path, token_column: int, tag_column: int) -> list[_RawSentence]:
    text = _read_text(path)
    where = str(path)
    lines = _lines(text)
    if not any(ln.strip() for ln in lines):
        raise DataFormatError(
            path, 1, "the file is empty (no token lines).", "point to a non-empty data file."
        )
    sep: str | None = None  # "\t" or None (runs of whitespace); decided by the first token line
    n_cols: int | None = None
    first_line = 0
    sentences: list[_RawSentence] = []
    cur = _RawSentence([], [], [])

    def flush() -> None:
        nonlocal cur
        if cur.tokens:
            sentences.append(cur)
        cur = _RawSentence([], [], [])

    for idx, ln in enumerate(lines):
        lineno = idx + 1
        if not ln.strip():
            flush()
            continue
        if ln.split(None, 1)[0] == "-DOCSTART-":
            flush()
            continue
        if n_cols is None:  # the first token line decides the separator and the column count
            sep = "\t" if "\t" in ln else None
            first_line = lineno
        fields = [f.strip() for f in ln.split(sep)] if sep == "\t" else ln.split()
        if n_cols is None:
            n_cols = len(fields)
            if n_cols < 2:
                raise DataFormatError(
                    path,
                    lineno,
                    f"found 1 column ({ln!r}); a column file needs a token and a tag on each line.",
                    "write `token<TAB>tag` per line (blank line between sentences), or use a .jsonl file "
                    "with character spans for plain text.",
                )
            for name, col in (("token_column", token_column), ("tag_column", tag_column)):
                if not -n_cols <= col < n_cols:
                    raise DataFormatError(
                        path,
                        lineno,
                        f"{name}={col} but the file has {n_cols} columns.",
                        f"pass {name} between {-n_cols} and {n_cols - 1}.",
                    )
        if len(fields) != n_cols:
            kind = "TAB-separated" if sep == "\t" else "whitespace-separated"
            raise DataFormatError(
                path,
                lineno,
                f"{len(fields)} {kind} columns ({ln!r}) but line {first_line} has {n_cols}.",
                f"give every token line the same {n_cols} columns (token ... tag); an empty tag is written 'O'.",
            )
        token, tag = fields[token_column], fields[tag_column]
        if not token:
            raise DataFormatError(
                path, lineno, f"empty token ({ln!r}).", "remove the line or write the token."
            )
        _check_tag(tag, where, lineno)
        cur.tokens.append(token)
        cur.tags.append(tag)
        cur.lines.append(lineno)
    flush()
    if not sentences:
        raise DataFormatError(
            path,
            1,
            "the file holds no sentence (only -DOCSTART- lines).",
            "point to a file with token lines.",
        )
    return sentences


def read_conll(
    path: str | Path,
    scheme: Scheme = "auto",
    *,
    token_column: int = 0,
    tag_column: int = -1,
    strict: bool = True,
) -> list[AnnotatedSentence]:
    """Read a token-per-line column file (CoNLL style) into annotated sentences.

    Args:
        path: the file (UTF-8).
        scheme: ``"bio"`` (= ``"iob2"``), ``"iob1"``, ``"io"`` or ``"auto"`` (:func:`detect_scheme` over the
            whole file).
        token_column: index of the token column (negative counts from the end).
        tag_column: index of the tag column; the default ``-1`` (last) reads 2-column files and CoNLL-2003's
            ``token POS chunk NER`` alike.
        strict: with ``True`` an ``I-`` that continues nothing (BIO) or a ``B-`` that separates nothing (IOB1)
            is an error; with ``False`` it is explicitly repaired into an entity start (seqeval's default).

    Returns:
        One :class:`AnnotatedSentence` per sentence; tokens are joined by single spaces and ``source`` is
        ``"path:line"`` of the sentence's first token line.

    Raises:
        DataFormatError: on any malformed line, naming the file, the line and the fix.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "fewnerd.txt"
        >>> _ = p.write_text("Hoch\\tbuilding-other\\nAuditorium\\tbuilding-other\\nburnt\\tO\\n", encoding="utf-8")
        >>> s = read_conll(p)[0]
        >>> s.mentions, s.source.endswith("fewnerd.txt:1")
        ([Mention(start=0, end=15, label='building-other')], True)
    """
    path = Path(path)
    canonical = _canonical_scheme(scheme, str(path))
    raw = _parse_columns(path, token_column, tag_column)
    detected = canonical == "auto"
    if detected:
        canonical = detect_scheme(r.tags for r in raw)
    out: list[AnnotatedSentence] = []
    for r in raw:
        spans = _decode(r.tags, canonical, strict, str(path), r.lines, detected)
        out.append(AnnotatedSentence.from_tokens(r.tokens, spans, source=f"{path}:{r.lines[0]}"))
    return out


# --------------------------------------------------------------------------------------------------------
# JSON lines
# --------------------------------------------------------------------------------------------------------
_SPAN_KEYS = ("entities", "spans", "mentions")


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


def _span_of(item: Any, path: Path, line: int, key: str, j: int) -> tuple[int, int, str]:
    where = f"{key}[{j}]"
    if isinstance(item, dict):
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
    return start, end, normalize_label(label)


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
        items = obj[keys[0]] if keys else []
        key = keys[0] if keys else _SPAN_KEYS[0]
        if not isinstance(items, list):
            raise DataFormatError(
                path, line, f"{key!r} must be a list, got {type(items).__name__}.", "make it a list."
            )
        spans = [_span_of(item, path, line, key, j) for j, item in enumerate(items)]
        seen: set[tuple[int, int, str]] = set()
        for j, (s, e, label) in enumerate(spans):
            if not 0 <= s < e <= len(sentence):
                raise DataFormatError(
                    path,
                    line,
                    f"{key}[{j}] = ({s}, {e}, {label!r}) is outside the text (length {len(sentence)}) or empty.",
                    "use 0 <= start < end <= len(text) character offsets, end exclusive.",
                )
            piece = sentence[s:e]
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
    return out


# --------------------------------------------------------------------------------------------------------
# datasets.Dataset
# --------------------------------------------------------------------------------------------------------
def _class_label_names(feature: Any) -> list[str] | None:
    """Names of the ClassLabel inside a Sequence/List feature, or ``None`` when the tags are not ClassLabels."""
    import datasets

    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return None


def from_hf_dataset(
    dataset: Any,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    scheme: Scheme = "auto",
    *,
    strict: bool = True,
    name: str | None = None,
) -> list[AnnotatedSentence]:
    """Annotated sentences from a ``datasets.Dataset`` with a token column and a tag column.

    Tags may be strings (``"B-PER"``) or integers whose names come from the column's
    ``Sequence(ClassLabel(names=[...]))`` feature. ``scheme`` and ``strict`` work as in :func:`read_conll`.
    ``source`` is ``"name:row"`` with the 0-based row index (``name`` defaults to the dataset's
    ``info.dataset_name`` and split); errors name the row the same way.

    Example:
        >>> import datasets
        >>> feats = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
        ...     "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"]))})
        >>> ds = datasets.Dataset.from_dict({"tokens": [["Ada", "Lovelace", "wrote"]], "ner_tags": [[1, 2, 0]]}, features=feats)
        >>> s = from_hf_dataset(ds)[0]
        >>> s.mention_text(s.mentions[0])
        'Ada Lovelace'
    """
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        raise TypeError(
            f"from_hf_dataset takes one split, got a DatasetDict with splits {list(dataset)}. "
            "Fix: pass dataset['train'] (or the split you want)."
        )
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"from_hf_dataset takes a datasets.Dataset, got {type(dataset).__name__}. Fix: build one with "
            "datasets.Dataset.from_dict(...) or load_dataset(...)[split] (an IterableDataset: materialise it first)."
        )
    if name is None:
        info = getattr(dataset, "info", None)
        base = getattr(info, "dataset_name", None) or "datasets.Dataset"
        split = getattr(dataset, "split", None)
        name = f"{base}[{split}]" if split else base
    columns = list(getattr(dataset, "column_names", []) or [])
    for col, arg in ((tokens_column, "tokens_column"), (tags_column, "tags_column")):
        if col not in columns:
            raise DataFormatError(
                name,
                None,
                f"no column {col!r} (columns: {columns}).",
                f"pass {arg}= the name of the right column.",
            )
    canonical = _canonical_scheme(scheme, name)
    names = _class_label_names(dataset.features[tags_column])
    raw: list[_RawSentence] = []
    for row, (tokens, tags) in enumerate(zip(dataset[tokens_column], dataset[tags_column])):
        if len(tokens) != len(tags):
            raise DataFormatError(
                name, row, f"{len(tokens)} tokens but {len(tags)} tags.", "give every token exactly one tag."
            )
        str_tags: list[str] = []
        for t in tags:
            if isinstance(t, str):
                str_tags.append(t.strip())
            elif isinstance(t, int) and names is not None:
                if not 0 <= t < len(names):
                    raise DataFormatError(
                        name,
                        row,
                        f"tag id {t} outside the ClassLabel names (0..{len(names) - 1}).",
                        "fix the id.",
                    )
                str_tags.append(names[t])
            else:
                raise DataFormatError(
                    name,
                    row,
                    f"tag {t!r} is not a string and the column {tags_column!r} has no ClassLabel names.",
                    f"cast the column: dataset.cast_column({tags_column!r}, "
                    "datasets.Sequence(datasets.ClassLabel(names=[...]))), or map ids to tag strings.",
                )
        for tok in tokens:
            if not isinstance(tok, str) or not tok.strip():
                raise DataFormatError(
                    name, row, f"empty or non-string token {tok!r}.", "fix the tokens column."
                )
        for t in str_tags:
            _check_tag(t, name, row)
        raw.append(_RawSentence([t.strip() for t in tokens], str_tags, [row] * len(tokens)))
    detected = canonical == "auto"
    if detected:
        canonical = detect_scheme(r.tags for r in raw)
    out = []
    for row, r in enumerate(raw):
        spans = _decode(r.tags, canonical, strict, name, r.lines, detected)
        out.append(AnnotatedSentence.from_tokens(r.tokens, spans, source=f"{name}:{row}"))
    return out


# --------------------------------------------------------------------------------------------------------
# Dispatch and split discovery
# --------------------------------------------------------------------------------------------------------
def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _sniff(path: Path) -> str | None:
    """``"jsonl"``, ``"conll"`` or ``None`` from the first non-blank lines of a file of unknown extension."""
    text = _read_text(path)
    lines = [ln for ln in _lines(text) if ln.strip()][:20]
    if not lines:
        raise DataFormatError(path, 1, "the file is empty.", "point to a non-empty data file.")
    if lines[0].lstrip().startswith(("{", "[")):
        return "jsonl"
    tag_like = re.compile(r"^(O|[A-Za-z]-\S+|[A-Za-z][\w\-/.]*)$")
    ok = True
    for ln in lines:
        fields = ln.split("\t") if "\t" in ln else ln.split()
        if fields and fields[0] == "-DOCSTART-":
            continue
        if len(fields) < 2 or not tag_like.match(fields[-1].strip()):
            ok = False
            break
    return "conll" if ok else None


def read_dataset(path: str | Path, **kwargs: Any) -> list[AnnotatedSentence]:
    """Read any supported file, choosing the reader by extension, else by content.

    ``.jsonl``/``.json``/``.ndjson`` -> :func:`read_jsonl`; ``.txt .tsv .conll .conllu .annotated .bio .iob
    .iob2 .io`` -> :func:`read_conll` (``kwargs`` are passed on: ``scheme``, ``token_column``, ...). Any other
    extension: a first line starting with ``{``/``[`` means JSON lines; lines of >= 2 columns ending in a
    tag mean a column file; anything else raises :class:`DataFormatError` naming the supported formats.

    Example:
        >>> import pathlib, tempfile
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.data"
        >>> _ = p.write_text("Paris B-LOC\\n", encoding="utf-8")
        >>> read_dataset(p)[0].mentions[0].label
        'LOC'
    """
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(
            path,
            None,
            "is a folder, not a data file.",
            "pass one file, or use find_splits(folder) to locate them.",
        )
    suffix = _suffix(path)
    kind = "jsonl" if suffix in JSON_EXTENSIONS else "conll" if suffix in COLUMN_EXTENSIONS else _sniff(path)
    if kind == "jsonl":
        if kwargs:
            raise TypeError(f"read_jsonl takes no options, got {sorted(kwargs)} for {path}.")
        return read_jsonl(path)
    if kind == "conll":
        return read_conll(path, **kwargs)
    raise DataFormatError(
        path,
        1,
        f"unknown format (extension {suffix or 'none'!r}, and the content is neither JSON lines nor token/tag columns).",
        "supported formats: token-per-line column files (" + " ".join(COLUMN_EXTENSIONS) + ") and JSON lines "
        "with character spans (" + " ".join(JSON_EXTENSIONS) + "); convert the file or rename it.",
    )


_SPLIT_PATTERNS: dict[str, re.Pattern[str]] = {
    "train": re.compile(r"(?<![a-z])train(ing)?(?![a-z])"),
    "dev": re.compile(r"(?<![a-z])(dev|devel|development|valid|validation|val)(?![a-z])"),
    "test": re.compile(r"(?<![a-z])test(ing)?(?![a-z])"),
}
_DOC_NAMES = re.compile(
    r"^(readme|license|licence|copying|notice|source|sources|changelog|changes|citation|authors)(\.|$)",
    re.IGNORECASE,
)


def _is_data_file(path: Path) -> bool:
    return (
        path.is_file()
        and not path.name.startswith(".")
        and not _DOC_NAMES.match(path.name)
        and _suffix(path) in COLUMN_EXTENSIONS + JSON_EXTENSIONS
    )


def _has_multi_label_tags(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    for ln in _lines(text):
        fields = ln.split("\t") if "\t" in ln else ln.split()
        if len(fields) >= 2 and _MULTI_LABEL.match(fields[-1].strip()):
            return True
    return False


def find_splits(folder: str | Path) -> dict[str, Path]:
    """Locate the train/dev/test files of a dataset folder.

    Rule:

    1. Data files are files ending in a column or JSON extension (:data:`COLUMN_EXTENSIONS`,
       :data:`JSON_EXTENSIONS`) that are not README/LICENSE/SOURCE-like documents. They are looked for in
       ``folder`` itself, else in its sub-folders at the shallowest depth that has any.
    2. A file belongs to a split when its lower-cased name contains, not inside a longer word, ``train`` /
       ``training`` (-> ``"train"``), ``dev`` / ``devel`` / ``development`` / ``val`` / ``valid`` /
       ``validation`` (-> ``"dev"``) or ``test`` / ``testing`` (-> ``"test"``); digits may touch the word
       (``wnut17train.conll``). Files naming no split are ignored, files naming several are an error.
    3. When several files claim one split, files whose tags carry several labels per token
       (``B-a,B-b``: unusable for single-label evaluation) are dropped; if several still remain, that is an
       error listing them.
    4. A folder whose data files name no split and hold exactly one file gives ``{"all": file}``.

    Returns:
        ``{"train": Path, "dev": Path, "test": Path}`` restricted to the splits present (order kept).

    Raises:
        DataFormatError: no data file, an ambiguous split (candidates listed) or a file naming two splits.

    Example:
        >>> import pathlib, tempfile
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for n in ("train.tsv", "devel.tsv", "test.tsv", "README.md"): _ = (d / n).write_text("a\\tO\\n")
        >>> {k: v.name for k, v in find_splits(d).items()}
        {'train': 'train.tsv', 'dev': 'devel.tsv', 'test': 'test.tsv'}
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder}: not a folder. Fix: pass the dataset folder (it holds train/dev/test files)."
        )
    files: list[Path] = []
    level = [folder]
    while level and not files:
        files = sorted(p for d in level for p in d.iterdir() if _is_data_file(p))
        level = sorted(p for d in level for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not files:
        raise DataFormatError(
            folder,
            None,
            "no data file found (looked for " + " ".join(COLUMN_EXTENSIONS + JSON_EXTENSIONS) + ").",
            "point to the folder that holds the dataset's train/dev/test files.",
        )
    claims: dict[str, list[Path]] = {k: [] for k in _SPLIT_PATTERNS}
    for f in files:
        stem = f.name.lower()
        hits = [k for k, pat in _SPLIT_PATTERNS.items() if pat.search(stem)]
        if len(hits) > 1:
            raise DataFormatError(
                f,
                None,
                f"the file name names several splits ({', '.join(hits)}).",
                "rename it to name one split.",
            )
        if hits:
            claims[hits[0]].append(f)
    if not any(claims.values()):
        if len(files) == 1:
            return {"all": files[0]}
        raise DataFormatError(
            folder,
            None,
            "no file names a split and there are several data files: "
            + ", ".join(str(f) for f in files)
            + ".",
            "name the files train/dev/test (e.g. train.txt, dev.txt, test.txt) or pass the file you want.",
        )
    out: dict[str, Path] = {}
    for split, cands in claims.items():
        if len(cands) > 1:
            single = [c for c in cands if not _has_multi_label_tags(c)]
            cands = single or cands
        if len(cands) > 1:
            raise DataFormatError(
                folder,
                None,
                f"several candidate {split} files: " + ", ".join(str(c) for c in cands) + ".",
                "keep one file per split in the folder, or pass the file you want to read_dataset().",
            )
        if cands:
            out[split] = cands[0]
    return out
