"""Tags: splitting ``B-PER`` into prefix and label, checking tags, detecting and decoding tag schemes.

Tag schemes: ``"bio"`` (IOB2: ``B-`` starts, ``I-`` continues), ``"iob1"`` (``I-`` starts an entity, ``B-``
only splits two adjacent entities of the same type, as in WikiGold and the original CoNLL-2003), ``"io"``
(no prefixes, e.g. Few-NERD's ``person-actor``; adjacent tokens of the same type form ONE mention) and
``"auto"`` (:func:`detect_scheme`). Shared by the column-file reader (:mod:`.conll`) and
:func:`~.hf.from_hf_dataset`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..labels import normalize_label
from .errors import DataFormatError

__all__ = ["SCHEMES", "Scheme", "detect_scheme"]

Scheme = Literal["auto", "bio", "iob2", "iob1", "io"]
SCHEMES: tuple[str, ...] = ("auto", "bio", "iob2", "iob1", "io")

_PREFIXED = re.compile(r"^([A-Za-z])-(.*)$", re.DOTALL)
_MULTI_LABEL = re.compile(r"^[A-Za-z]-[^,]+(,[A-Za-z]-[^,]+)+$")


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
    if label and not any(ch.isalpha() for ch in label):
        raise DataFormatError(
            path,
            line,
            f"tag {tag!r} has no letter, so it is no entity type (a typo for 'O'?).",
            "write 'O' outside entities and a type name inside (e.g. B-PER, or person in an IO file).",
        )
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
