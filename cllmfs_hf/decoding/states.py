"""The named states of the legal-output automaton (:mod:`.automaton`): one type per place the output can be
in, and :data:`State`, the set of configurations a nondeterministic row may be in."""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "History",
    "BeforeLeadingSpace",
    "InPreamble",
    "BetweenSpans",
    "InOpen",
    "InSpan",
    "InClose",
    "Configuration",
    "State",
]


# The configurations are NamedTuples: hashable, compared and hashed in C (they are members of the frozenset
# states that key every memo). No two kinds can compare equal: they differ in arity, or in the type of their
# first field (InPreamble: int vs BetweenSpans: History; InSpan: tuple of starts vs InClose: int).
class History(NamedTuple):
    """What the output holds so far, as far as the constraints care."""

    #: number of complete spans (counted only when the spans are limited, else always 0)
    spans: int
    #: sorted ``(span bytes, times emitted)`` pairs (kept only when duplicates are limited, else empty)
    counts: tuple[tuple[bytes, int], ...]
    #: with ordered spans, the byte where the last span ended (the next one starts there or later; else 0)
    after: int = 0


class BeforeLeadingSpace(NamedTuple):
    """Nothing generated yet: the optional space before the preamble may come."""


class InPreamble(NamedTuple):
    """``matched`` bytes of the preamble generated."""

    matched: int


class BetweenSpans(NamedTuple):
    """After the preamble or a complete item: accepting (EOS or a new open delimiter may follow)."""

    history: History


class InOpen(NamedTuple):
    """``matched`` bytes of the open delimiter ``" <<< "`` generated (0 < matched < its length)."""

    matched: int
    history: History


class InSpan(NamedTuple):
    """Inside a span of ``length`` bytes; ``starts``: the input positions where the span text so far occurs."""

    starts: tuple[int, ...]
    length: int
    history: History


class InClose(NamedTuple):
    """``matched`` bytes of the close delimiter ``" >>>"`` generated after the span ``text``."""

    matched: int
    text: bytes
    history: History


Configuration = BeforeLeadingSpace | InPreamble | BetweenSpans | InOpen | InSpan | InClose
#: A state of the nondeterministic automaton: the configurations it may be in (empty: dead).
State = frozenset
