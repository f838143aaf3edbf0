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

Files
-----
- ``errors.py``: :class:`DataFormatError`.
- ``tags.py``: tag splitting and checking, :func:`detect_scheme`, scheme canonicalisation, BIO/IOB1/IO
  decoding.
- ``conll.py``: column files: text reading, line splitting, column parsing, :func:`read_conll`.
- ``jsonl.py``: :func:`read_jsonl` and its helpers.
- ``hf.py``: :func:`from_hf_dataset`.
- ``dispatch.py``: :func:`read_dataset` (choice by extension, else by sniffing the content).
- ``splits.py``: :func:`find_splits`.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.txt"
    >>> _ = path.write_text("United\\tB-politicalparty\\nRussia\\tI-politicalparty\\nwon\\tO\\n", encoding="utf-8")
    >>> [s.mention_text(m) for s in read_conll(path) for m in s.mentions]
    ['United Russia']
"""

from __future__ import annotations

from .conll import COLUMN_EXTENSIONS, read_conll
from .dispatch import read_dataset
from .errors import DataFormatError
from .hf import from_hf_dataset
from .jsonl import JSON_EXTENSIONS, read_jsonl
from .splits import find_splits
from .tags import SCHEMES, detect_scheme
from .tags import Scheme as Scheme  # the scheme argument type, importable from here as before

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
