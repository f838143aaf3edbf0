"""Column files (CoNLL style): reading the text, splitting lines, parsing columns, :func:`read_conll`.

One token per line, columns separated by TABs (when the first token line has a TAB) or by runs of spaces,
the token in ``token_column`` (default first) and the tag in ``tag_column`` (default last) so CoNLL-2003's
4 columns work as is; blank (or whitespace-only) lines end a sentence; ``-DOCSTART-`` lines are document
markers and end a sentence too. Tags are decoded by :mod:`.tags`.

``_read_text`` and ``_lines`` (UTF-8 decoding with line-numbered errors, line splitting) are shared with
the JSON-lines reader, the format sniffing and the split discovery.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..types import AnnotatedSentence
from .errors import DataFormatError
from .tags import Scheme, _canonical_scheme, _check_tag, _decode, _RawSentence, detect_scheme

__all__ = ["COLUMN_EXTENSIONS", "read_conll"]

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


_ASCII_SPACE = re.compile(r"[ \t]+")
#: A CoNLL-U comment line: "#" then "key = value" (a token "#" with its tag, "# O", is not one).
_CONLLU_COMMENT = re.compile(r"^#\s*[\w.-]+\s*=")


def _lines(text: str) -> list[str]:
    # Not str.splitlines(): it also splits on \x1c-\x1e, \x85 and \u2028, which can occur inside tokens.
    if "\n" not in text and "\r" in text:  # classic Mac (CR-only) line endings: one line each, not one line
        return text.split("\r")
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
        if _CONLLU_COMMENT.match(ln):  # CoNLL-U metadata ("# sent_id = 1", "# text = ..."), not a token line
            continue
        if n_cols is None:  # the first token line decides the separator and the column count
            sep = "\t" if "\t" in ln else None
            first_line = lineno
        # space-separated: ASCII spaces only (str.split() would also split at a no-break space inside a token,
        # and the first line's column count would then blame the second line)
        fields = [f.strip() for f in ln.split(sep)] if sep == "\t" else _ASCII_SPACE.split(ln.strip(" \t"))
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


def _check_tags_are_tags(path: Path, raw: list[_RawSentence], tag_column: int) -> None:
    """In an IO file any string is a type: refuse a tag column that holds words (swapped columns)."""
    tags = [t for r in raw for t in r.tags]
    labels = {t for t in tags if t != "O"}
    if len(tags) >= 20 and len(labels) > 0.5 * len(tags):
        first = next(r.lines[r.tags.index(t)] for r in raw for t in r.tags if t != "O")
        raise DataFormatError(
            path,
            first,
            f"the tag column (tag_column={tag_column}) holds {len(labels)} different types in {len(tags)} "
            "tokens: it looks like words, not tags.",
            "check the column order (token first, tag last), or pass token_column= and tag_column=.",
        )


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
    if canonical == "io":
        _check_tags_are_tags(path, raw, tag_column)
    out: list[AnnotatedSentence] = []
    for r in raw:
        spans = _decode(r.tags, canonical, strict, str(path), r.lines, detected)
        out.append(AnnotatedSentence.from_tokens(r.tokens, spans, source=f"{path}:{r.lines[0]}"))
    return out
