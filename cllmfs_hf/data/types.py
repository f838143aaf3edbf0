"""The one in-memory representation of an annotated sentence.

Every reader produces :class:`AnnotatedSentence` objects and every later stage (sampling, instruction
records, evaluation) consumes them. Mentions are character spans of ``text`` with a label; tokens carry
their own character offsets so BIO tags can be rebuilt from mentions and back.

Example:
    >>> s = AnnotatedSentence.from_tokens(["United", "Russia", "won"], [(0, 2, "politicalparty")])
    >>> s.text
    'United Russia won'
    >>> s.mention_text(s.mentions[0])
    'United Russia'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Mention", "AnnotatedSentence", "sentences_to_dataset", "dataset_to_sentences"]

_TOKEN_RE = re.compile(r"\S+")


@dataclass(frozen=True, order=True)
class Mention:
    """An entity mention: ``text[start:end]`` is the surface string, ``label`` its entity type."""

    start: int
    end: int
    label: str

    def __post_init__(self) -> None:
        if self.start < 0 or self.end <= self.start:
            raise ValueError(f"Mention needs 0 <= start < end, got start={self.start}, end={self.end}.")
        if not self.label:
            raise ValueError("Mention label must be a non-empty string.")

    def as_tuple(self) -> tuple[int, int, str]:
        return (self.start, self.end, self.label)


@dataclass
class AnnotatedSentence:
    """A sentence, its tokens with character offsets, and its mentions (character spans with a label).

    ``source`` says where the sentence came from (``path:line``) so errors and reports can point at it.
    """

    text: str
    tokens: list[str]
    token_offsets: list[tuple[int, int]]
    mentions: list[Mention] = field(default_factory=list)
    source: str | None = None

    def __post_init__(self) -> None:
        if len(self.tokens) != len(self.token_offsets):
            raise ValueError(
                f"{self._where()}{len(self.tokens)} tokens but {len(self.token_offsets)} token offsets."
            )
        for tok, (s, e) in zip(self.tokens, self.token_offsets):
            if self.text[s:e] != tok:
                raise ValueError(
                    f"{self._where()}token {tok!r} does not match text[{s}:{e}]={self.text[s:e]!r}."
                )
        for m in self.mentions:
            if m.end > len(self.text):
                raise ValueError(
                    f"{self._where()}mention {m.as_tuple()} ends after the text (length {len(self.text)})."
                )
        self.mentions = sorted(self.mentions)

    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_tokens(
        cls,
        tokens: Sequence[str],
        spans: Iterable[tuple[int, int, str]] = (),
        source: str | None = None,
    ) -> AnnotatedSentence:
        """Build from tokens joined by single spaces; ``spans`` are token spans ``(first, last_exclusive, label)``."""
        offsets: list[tuple[int, int]] = []
        pos = 0
        for tok in tokens:
            offsets.append((pos, pos + len(tok)))
            pos += len(tok) + 1
        text = " ".join(tokens)
        mentions = [Mention(offsets[a][0], offsets[b - 1][1], label) for a, b, label in spans]
        return cls(text=text, tokens=list(tokens), token_offsets=offsets, mentions=mentions, source=source)

    @classmethod
    def from_text(
        cls, text: str, mentions: Iterable[tuple[int, int, str]] = (), source: str | None = None
    ) -> AnnotatedSentence:
        """Build from raw text (whitespace tokenization) and character spans ``(start, end, label)``."""
        toks = [(m.group(), (m.start(), m.end())) for m in _TOKEN_RE.finditer(text)]
        return cls(
            text=text,
            tokens=[t for t, _ in toks],
            token_offsets=[o for _, o in toks],
            mentions=[Mention(s, e, label) for s, e, label in mentions],
            source=source,
        )

    # -- views --------------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        """Entity types present in this sentence, sorted."""
        return sorted({m.label for m in self.mentions})

    def mention_text(self, mention: Mention) -> str:
        return self.text[mention.start : mention.end]

    def mentions_of(self, label: str) -> list[Mention]:
        return [m for m in self.mentions if m.label == label]

    def to_bio(self) -> list[str]:
        """IOB2 tags over ``tokens``. Raises if a mention does not start and end on token boundaries."""
        starts = {s: i for i, (s, _) in enumerate(self.token_offsets)}
        ends = {e: i for i, (_, e) in enumerate(self.token_offsets)}
        tags = ["O"] * len(self.tokens)
        for m in self.mentions:
            if m.start not in starts or m.end not in ends:
                raise ValueError(f"{self._where()}mention {m.as_tuple()} is not aligned to token boundaries.")
            a, b = starts[m.start], ends[m.end]
            tags[a] = f"B-{m.label}"
            for i in range(a + 1, b + 1):
                tags[i] = f"I-{m.label}"
        return tags

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": list(self.tokens),
            "token_offsets": [list(o) for o in self.token_offsets],
            "mentions": [{"start": m.start, "end": m.end, "label": m.label} for m in self.mentions],
            "source": self.source or "",
        }

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> AnnotatedSentence:
        return cls(
            text=row["text"],
            tokens=list(row["tokens"]),
            token_offsets=[tuple(o) for o in row["token_offsets"]],
            mentions=[Mention(m["start"], m["end"], m["label"]) for m in row["mentions"]],
            source=row.get("source") or None,
        )


def sentences_to_dataset(sentences: Sequence[AnnotatedSentence]):
    """A ``datasets.Dataset`` with columns text, tokens, token_offsets, mentions, source."""
    import datasets

    return datasets.Dataset.from_list([s.to_dict() for s in sentences])


def dataset_to_sentences(dataset) -> list[AnnotatedSentence]:
    """Inverse of :func:`sentences_to_dataset`."""
    return [AnnotatedSentence.from_dict(row) for row in dataset]
