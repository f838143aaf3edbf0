"""The CLLMFS instruction template, in exactly one place (METHOD.md section 1).

Both the record builder (training) and the decoder/extractor (inference) read these constants and
functions, so the prompt a model is trained on is the prompt it is queried with.

The user message is ``{instruction}\\nInput: {sentence}``; the assistant answer is the preamble followed by
`` <<< mention >>>`` for every mention in order of appearance (nothing after the preamble for a negative).
:func:`parse_output` inverts :func:`format_completion`: it maps a generated answer back to character
offsets of the input sentence (the k-th identical span maps to the k-th occurrence in the input; spans that
are not in the input, only possible without span-constrained decoding, are dropped and counted, never given
invented offsets). :func:`span_boundaries` says where a span of the input may start and end; the parser and
the span-constrained decoder (:mod:`cllmfs_hf.decoding`) both use it.

Example:
    >>> content, type_span, sentence_offset = render_user_content("person", "a human being", "Ada wrote.")
    >>> content[sentence_offset:]
    'Ada wrote.'
    >>> format_completion(["Ada"])
    'I can extract entities for you, the extracted entities are <<< Ada >>>'
    >>> parse_output(format_completion(["Ada"]), "Ada wrote.").spans
    [(0, 3)]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "INSTRUCTION_TEMPLATE",
    "INPUT_PREFIX",
    "PREAMBLE",
    "SPAN_OPEN",
    "SPAN_CLOSE",
    "render_user_content",
    "format_completion",
    "prompt_messages",
    "OPEN_DELIMITER",
    "CLOSE_DELIMITER",
    "span_boundaries",
    "ParseResult",
    "parse_output",
]

INSTRUCTION_TEMPLATE = (
    "Please extract the entity of {type} in the input sentence given below, "
    "the entity of {type} refers to {description}."
)
INPUT_PREFIX = "\nInput: "
PREAMBLE = "I can extract entities for you, the extracted entities are"
SPAN_OPEN = "<<<"
SPAN_CLOSE = ">>>"
#: What precedes every span in the output (see :func:`format_completion`).
OPEN_DELIMITER = f" {SPAN_OPEN} "
#: What follows every span in the output.
CLOSE_DELIMITER = f" {SPAN_CLOSE}"

_WORD_TOKEN_RE = re.compile(r"\w+|[^\w\s]")


def render_user_content(type_name: str, description: str, sentence: str) -> tuple[str, tuple[int, int], int]:
    """The user message text, the character span of the first type name in it, and the sentence's offset."""
    instruction = INSTRUCTION_TEMPLATE.format(type=type_name, description=description.rstrip(". "))
    content = instruction + INPUT_PREFIX + sentence
    type_start = instruction.index(type_name)
    return content, (type_start, type_start + len(type_name)), len(instruction) + len(INPUT_PREFIX)


def format_completion(mention_texts: Sequence[str]) -> str:
    """Preamble then `` <<< m >>>`` for each mention text, in the order given."""
    return PREAMBLE + "".join(f" {SPAN_OPEN} {m} {SPAN_CLOSE}" for m in mention_texts)


def prompt_messages(type_name: str, description: str, sentence: str) -> list[dict[str, str]]:
    """The conversational prompt (TRL format) for one sentence x type query."""
    content, _, _ = render_user_content(type_name, description, sentence)
    return [{"role": "user", "content": content}]


# ---------------------------------------------------------------------------------------------------------
# Spans of the input and the parser (the inverse of format_completion)
# ---------------------------------------------------------------------------------------------------------
def span_boundaries(sentence: str, word_boundaries: bool = True) -> tuple[list[int], list[int]]:
    """Character positions where a span may start and where it may end (both sorted).

    Word mode: starts and ends of the tokens of ``\\w+|[^\\w\\s]``. Character mode: any position whose
    next (start) or previous (end) character is not whitespace.

    Example:
        >>> span_boundaries("New York, NY")
        ([0, 4, 8, 10], [3, 8, 9, 12])
    """
    if word_boundaries:
        tokens = list(_WORD_TOKEN_RE.finditer(sentence))
        return [m.start() for m in tokens], sorted({m.end() for m in tokens})
    starts = [i for i, c in enumerate(sentence) if not c.isspace()]
    ends = [i + 1 for i, c in enumerate(sentence) if not c.isspace()]
    return starts, ends


@dataclass
class ParseResult:
    """Spans recovered from one generated output.

    Attributes:
        spans: ``(start, end)`` character offsets into the input, in the order generated.
        texts: the generated text of each kept span (``sentence[start:end] == texts[i]``).
        dropped_not_in_input: spans whose text is not a (boundary-aligned) span of the input.
        dropped_repeats: identical spans generated more often than the text occurs in the input.
        well_formed: the whole output follows the template (preamble, `` <<< s >>>`` items, nothing else).
        complete: the output ended (not cut in the middle of an item).
        items: the generated text of every item, kept or dropped, in order.
        span_items: for each kept span, the index of its item in ``items``.
        items_start: where the first item starts in the parsed text (well-formed outputs: the items then
            follow each other, each ``len(OPEN_DELIMITER) + len(item) + len(CLOSE_DELIMITER)`` characters).
    """

    spans: list[tuple[int, int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    dropped_not_in_input: int = 0
    dropped_repeats: int = 0
    well_formed: bool = True
    complete: bool = True
    items: list[str] = field(default_factory=list)
    span_items: list[int] = field(default_factory=list)
    items_start: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_not_in_input + self.dropped_repeats


class _Occurrences:
    """Legal occurrences of span texts in one sentence (memoised)."""

    def __init__(self, sentence: str, word_boundaries: bool) -> None:
        self.sentence = sentence
        starts, ends = span_boundaries(sentence, word_boundaries)
        self.starts = starts
        self.ends = set(ends)
        self._memo: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        occ = self._memo.get(text)
        if occ is None:
            if not text or text != text.strip():
                occ = []
            else:
                occ = [
                    s for s in self.starts if self.sentence.startswith(text, s) and s + len(text) in self.ends
                ]
            self._memo[text] = occ
        return occ


def _strict_items(rest: str, occurrences: _Occurrences) -> list[str] | None:
    """Split ``rest`` (text after the preamble) into span texts, backtracking over ambiguous closes.

    Each item must be a legal span of the input; how many times a text may repeat is left to the caller
    (outputs generated with ``allow_duplicates=True`` may repeat a span more often than it occurs). The
    search is iterative: an answer of thousands of items parses without deep recursion.
    """
    items: list[str] = []
    chosen: list[tuple[int, int]] = []  # (begin, close index) of each item taken so far
    pos, resume = 0, None  # resume: the (begin, close) of the item to retry with a later close
    while True:
        if resume is None:
            if pos == len(rest):
                return items
            idx, begin = -1, pos + len(OPEN_DELIMITER)
            if rest.startswith(OPEN_DELIMITER, pos):
                idx = rest.find(CLOSE_DELIMITER, begin + 1)
        else:
            begin, idx = resume
            idx = rest.find(CLOSE_DELIMITER, idx + 1)
        while idx != -1 and not occurrences(rest[begin:idx]):
            idx = rest.find(CLOSE_DELIMITER, idx + 1)
        if idx != -1:
            chosen.append((begin, idx))
            items.append(rest[begin:idx])
            pos, resume = idx + len(CLOSE_DELIMITER), None
            continue
        if not chosen:
            return None
        resume = chosen.pop()
        items.pop()


_LENIENT_RE = re.compile(re.escape(SPAN_OPEN) + r"\s?(.*?)\s?" + re.escape(SPAN_CLOSE), re.DOTALL)


def parse_output(
    text: str, sentence: str, *, word_boundaries: bool = True, complete: bool = True, ordered: bool = False
) -> ParseResult:
    """Map a generated answer to character spans of ``sentence``.

    The k-th generated copy of a span text maps to the k-th occurrence of that text in ``sentence`` (in order
    of position, among occurrences at legal boundaries); with ``ordered`` (the answers of ordered-span
    decoding, ``SpanConstraintConfig.ordered_spans``) each span maps to the earliest occurrence that starts at
    or after the end of the span before it, as the decoder placed it. Spans whose text is not in the input,
    and copies beyond the number of occurrences (or, ordered, with none left after the span before), are
    dropped and counted in the result, never given invented offsets.
    A well-formed (constrained) output is split exactly, even when the input itself contains ``>>>``;
    other text is read leniently (every ``<<< ... >>>``). Pass ``complete=False`` when generation stopped
    at the token cap: an unfinished last item is then ignored and ``complete`` is False in the result.

    Example:
        >>> r = parse_output(PREAMBLE + " <<< Bob >>> <<< Bob >>> <<< Eve >>>", "Bob met Bob .")
        >>> r.spans, r.dropped_not_in_input
        ([(0, 3), (8, 11)], 1)
    """
    if not isinstance(text, str) or not isinstance(sentence, str):
        raise TypeError("parse_output needs the generated text and the input sentence as str.")
    result = ParseResult(complete=complete)
    occurrences = _Occurrences(sentence, word_boundaries)
    body = text.lstrip(" ")
    items: list[str] | None = None
    if not complete and PREAMBLE.startswith(body):
        items = []  # cut inside the preamble
    elif body.startswith(PREAMBLE):
        rest = body[len(PREAMBLE) :]
        result.items_start = len(text) - len(rest)
        items = _strict_items(rest, occurrences)
        if items is None and not complete:
            # cut at the token cap: keep the longest prefix that ends after a complete item
            idx = rest.rfind(CLOSE_DELIMITER)
            while items is None and idx != -1:
                items = _strict_items(rest[: idx + len(CLOSE_DELIMITER)], occurrences)
                idx = rest.rfind(CLOSE_DELIMITER, 0, idx)
            if items is None and (OPEN_DELIMITER.startswith(rest) or rest.startswith(OPEN_DELIMITER)):
                items = []
    if items is None:
        result.well_formed = False
        items = [m.group(1).strip() for m in _LENIENT_RE.finditer(text)]
    used: dict[str, int] = {}
    after = 0  # ordered: where the span before ended
    result.items = list(items)
    for index, item in enumerate(items):
        occ = occurrences(item)
        if not occ:
            result.dropped_not_in_input += 1
            continue
        if ordered:
            start = next((o for o in occ if o >= after), None)
            if start is None:
                result.dropped_repeats += 1
                continue
            after = start + len(item)
        else:
            k = used.get(item, 0)
            if k >= len(occ):
                result.dropped_repeats += 1
                continue
            used[item] = k + 1
            start = occ[k]
        result.spans.append((start, start + len(item)))
        result.texts.append(item)
        result.span_items.append(index)
    return result
