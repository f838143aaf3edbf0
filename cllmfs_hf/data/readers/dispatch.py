"""Format dispatch: :func:`read_dataset` picks the reader by extension, else by sniffing the content."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..types import AnnotatedSentence
from .conll import COLUMN_EXTENSIONS, _lines, _read_text, read_conll
from .errors import DataFormatError
from .jsonl import JSON_EXTENSIONS, read_jsonl

__all__ = ["read_dataset"]


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
