"""Counting: span checks, BIO -> spans, :class:`ScoreAccumulator` and the ``score_*`` / ``evaluate_sentences``
entry points (the conventions are in the package docstring)."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..data.types import AnnotatedSentence, Mention
from .scores import NERScores, TypeScores, _prf

__all__ = [
    "Span",
    "SpanLike",
    "ScoreAccumulator",
    "bio_to_spans",
    "score_spans",
    "score_bio",
    "evaluate_sentences",
]

#: A span as this module stores it: ``(start, end_exclusive, label)``.
Span = tuple[int, int, str]
#: What callers may pass for one span.
SpanLike = Mention | Sequence[Any] | Mapping[str, Any]


def _where(sentence_index: int | None, source: str | None = None) -> str:
    parts = []
    if source:
        parts.append(source)
    if sentence_index is not None:
        parts.append(f"sentence {sentence_index}")
    return (", ".join(parts) + ": ") if parts else ""


def _as_span(item: SpanLike, where: str, role: str, position: int) -> Span:
    """Validate one span-like item and return ``(start, end, label)``."""
    if isinstance(item, Mention):
        return item.as_tuple()
    if isinstance(item, Mapping):
        try:
            item = (item["start"], item["end"], item["label"])
        except KeyError as err:
            raise ValueError(
                f"{where}{role} span #{position} {dict(item)!r} lacks the key {err.args[0]!r}: "
                "a span dict needs 'start', 'end' and 'label'."
            ) from None
    if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 3:
        raise ValueError(
            f"{where}{role} span #{position} is {item!r}: expected a Mention, a (start, end, label) tuple or a "
            "{'start', 'end', 'label'} dict. For BIO tag sequences use score_bio() / ScoreAccumulator.add_bio()."
        )
    start, end, label = item
    try:
        if isinstance(start, bool) or isinstance(end, bool):
            raise TypeError
        start, end = operator.index(start), operator.index(end)
    except TypeError:
        raise ValueError(
            f"{where}{role} span #{position} {tuple(item)!r}: start and end must be integers."
        ) from None
    if not isinstance(label, str) or not label:
        raise ValueError(
            f"{where}{role} span #{position} {tuple(item)!r}: the label must be a non-empty string."
        )
    if start < 0 or end <= start:
        raise ValueError(
            f"{where}{role} span #{position} {tuple(item)!r}: needs 0 <= start < end (end is exclusive)."
        )
    return (start, end, label)


def _as_span_set(items: Iterable[SpanLike], where: str, role: str) -> tuple[set[Span], int]:
    """The set of spans of one sentence and how many duplicates it held."""
    if isinstance(items, (str, bytes, Mention)) or not isinstance(items, Iterable):
        raise ValueError(
            f"{where}{role} must be a list of spans for one sentence, got {type(items).__name__} {items!r}."
        )
    spans: set[Span] = set()
    count = 0
    for position, item in enumerate(items):
        spans.add(_as_span(item, where, role, position))
        count += 1
    return spans, count - len(spans)


def bio_to_spans(tags: Sequence[str], *, where: str = "") -> list[Span]:
    """Token spans ``(first, last_exclusive, label)`` of a strict IOB2 tag sequence, in order.

    An entity is a ``B-X`` tag plus the ``I-X`` tags that directly follow it. A stray ``I-X`` (after ``O``, at the
    start, or after a tag of another type) is not an entity, exactly like ``seqeval`` in
    ``mode="strict", scheme=IOB2``. Every tag must be ``O``, ``B-<label>`` or ``I-<label>``; anything else
    raises ``ValueError`` naming the position (``where`` is prepended, e.g. a file and line).

    Example:
        >>> bio_to_spans(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG"])
        [(0, 2, 'PER'), (3, 4, 'LOC'), (4, 5, 'LOC')]
    """
    if isinstance(tags, str) or not isinstance(tags, Sequence):
        raise ValueError(f"{where}expected a sequence of tag strings, got {type(tags).__name__} {tags!r}.")
    spans: list[Span] = []
    open_start: int | None = None
    open_label: str | None = None
    for i, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise ValueError(
                f"{where}tag #{i} is {tag!r}: tags must be strings such as 'O', 'B-PER', 'I-PER'."
            )
        if tag == "O":
            prefix, label = "O", None
        elif len(tag) > 2 and tag[0] in "BI" and tag[1] == "-":
            prefix, label = tag[0], tag[2:]
        else:
            raise ValueError(
                f"{where}tag #{i} is {tag!r}: strict IOB2 tags are 'O', 'B-<type>' or 'I-<type>'. Convert IOB1 or "
                "IO (prefix-less) tags to spans first, e.g. with cllmfs_hf.data.readers, and use score_spans()."
            )
        if prefix == "I" and open_label == label:
            continue  # the open entity goes on
        if open_start is not None:
            spans.append((open_start, i, open_label))  # type: ignore[arg-type]
            open_start, open_label = None, None
        if prefix == "B":
            open_start, open_label = i, label
        # "O" or a stray I- closes nothing more and opens nothing.
    if open_start is not None:
        spans.append((open_start, len(tags), open_label))  # type: ignore[arg-type]
    return spans


class ScoreAccumulator:
    """Sums entity counts over sentences, batches and episodes; :meth:`result` divides once at the end.

    Example:
        >>> acc = ScoreAccumulator()
        >>> acc.add([(0, 1, "PER")], [(0, 1, "PER")])          # one sentence as spans
        >>> acc.add_bio(["B-LOC", "I-LOC"], ["B-LOC", "O"])     # one sentence as BIO tags
        >>> other = ScoreAccumulator()
        >>> other.add([(3, 5, "ORG")], [])
        >>> r = acc.merge(other).result()
        >>> (r.tp, r.fp, r.fn, r.num_sentences)
        (1, 1, 2, 3)
    """

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}  # label -> [tp, fp, fn]
        self.num_sentences = 0
        self.duplicate_predictions = 0
        self.duplicate_references = 0
        self._tokens = 0
        self._tokens_correct = 0
        self._span_sentences = 0

    def _update(self, gold: set[Span], pred: set[Span]) -> None:
        for span in gold & pred:
            self._counts.setdefault(span[2], [0, 0, 0])[0] += 1
        for span in pred - gold:
            self._counts.setdefault(span[2], [0, 0, 0])[1] += 1
        for span in gold - pred:
            self._counts.setdefault(span[2], [0, 0, 0])[2] += 1
        self.num_sentences += 1

    def add(
        self,
        gold: Iterable[SpanLike],
        pred: Iterable[SpanLike],
        *,
        sentence_index: int | None = None,
        source: str | None = None,
    ) -> None:
        """Add one sentence given as span lists (Mentions, ``(start, end, label)`` tuples or span dicts).

        ``sentence_index`` / ``source`` only serve error messages.
        """
        where = _where(sentence_index, source)
        gold_set, gold_dups = _as_span_set(gold, where, "gold")
        pred_set, pred_dups = _as_span_set(pred, where, "prediction")
        self.duplicate_references += gold_dups
        self.duplicate_predictions += pred_dups
        self._span_sentences += 1
        self._update(gold_set, pred_set)

    def add_bio(
        self,
        gold_tags: Sequence[str],
        pred_tags: Sequence[str],
        *,
        sentence_index: int | None = None,
        source: str | None = None,
    ) -> None:
        """Add one sentence given as two IOB2 tag sequences of equal length (strict mode, see module doc)."""
        where = _where(sentence_index, source)
        if isinstance(gold_tags, str) or isinstance(pred_tags, str):
            raise ValueError(f"{where}pass one list of tags per sentence, not a string.")
        if len(gold_tags) != len(pred_tags):
            raise ValueError(
                f"{where}the gold tags have {len(gold_tags)} tokens but the predicted tags have {len(pred_tags)}: "
                "predict exactly one tag per gold token."
            )
        gold = set(bio_to_spans(gold_tags, where=where + "gold "))
        pred = set(bio_to_spans(pred_tags, where=where + "prediction "))
        self._tokens += len(gold_tags)
        self._tokens_correct += sum(g == p for g, p in zip(gold_tags, pred_tags))
        self._update(gold, pred)

    def add_batch(self, gold: Sequence[Iterable[SpanLike]], pred: Sequence[Iterable[SpanLike]]) -> None:
        """Add several sentences given as span lists (``gold[i]`` and ``pred[i]`` belong to sentence i).

        All or nothing: when a sentence is invalid, the error names it and no sentence of the batch is added.
        """
        _check_same_length(gold, pred)
        batch, offset = ScoreAccumulator(), self.num_sentences
        for i, (g, p) in enumerate(zip(gold, pred)):
            batch.add(g, p, sentence_index=offset + i)
        self.merge(batch)

    def add_bio_batch(self, gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
        """Add several sentences given as IOB2 tag sequences (all or nothing, like :meth:`add_batch`)."""
        _check_same_length(gold, pred)
        batch, offset = ScoreAccumulator(), self.num_sentences
        for i, (g, p) in enumerate(zip(gold, pred)):
            batch.add_bio(g, p, sentence_index=offset + i)
        self.merge(batch)

    def merge(self, other: ScoreAccumulator) -> ScoreAccumulator:
        """Add ``other``'s counts into this accumulator (e.g. another episode or process) and return self."""
        if not isinstance(other, ScoreAccumulator):
            raise TypeError(f"merge() needs a ScoreAccumulator, got {type(other).__name__}.")
        for label, (tp, fp, fn) in other._counts.items():
            mine = self._counts.setdefault(label, [0, 0, 0])
            mine[0] += tp
            mine[1] += fp
            mine[2] += fn
        self.num_sentences += other.num_sentences
        self.duplicate_predictions += other.duplicate_predictions
        self.duplicate_references += other.duplicate_references
        self._tokens += other._tokens
        self._tokens_correct += other._tokens_correct
        self._span_sentences += other._span_sentences
        return self

    def result(self) -> NERScores:
        """The micro scores of everything added so far (the accumulator stays usable)."""
        per_type = {
            label: TypeScores.from_counts(tp, fp, fn) for label, (tp, fp, fn) in sorted(self._counts.items())
        }
        tp = sum(c[0] for c in self._counts.values())
        fp = sum(c[1] for c in self._counts.values())
        fn = sum(c[2] for c in self._counts.values())
        precision, recall, f1 = _prf(tp, fp, fn)
        token_accuracy = None
        if self._span_sentences == 0 and self.num_sentences > 0:
            token_accuracy = self._tokens_correct / self._tokens if self._tokens else 0.0
        return NERScores(
            precision=precision,
            recall=recall,
            f1=f1,
            tp=tp,
            fp=fp,
            fn=fn,
            per_type=per_type,
            num_sentences=self.num_sentences,
            duplicate_predictions=self.duplicate_predictions,
            duplicate_references=self.duplicate_references,
            token_accuracy=token_accuracy,
        )


def _check_same_length(gold: Sequence[Any], pred: Sequence[Any]) -> None:
    for name, value in (("gold", gold), ("predictions", pred)):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(
                f"{name} must be a list with one entry per sentence, got {type(value).__name__}."
            )
    if len(gold) != len(pred):
        raise ValueError(
            f"{len(gold)} gold sentences but {len(pred)} predicted sentences: pass one prediction per gold "
            "sentence (an empty list for a sentence without predictions)."
        )


def score_spans(gold: Sequence[Iterable[SpanLike]], pred: Sequence[Iterable[SpanLike]]) -> NERScores:
    """Micro P/R/F1 of per-sentence span lists (exact start, end and type).

    Example:
        >>> score_spans([[(0, 3, "PER")]], [[(0, 3, "PER"), (0, 3, "PER")]]).duplicate_predictions
        1
    """
    acc = ScoreAccumulator()
    acc.add_batch(gold, pred)
    return acc.result()


def score_bio(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> NERScores:
    """Micro P/R/F1 of per-sentence IOB2 tag sequences, strict mode (agrees with
    ``seqeval`` ``mode="strict", scheme=IOB2``).

    Example:
        >>> round(score_bio([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]]).recall, 1)
        0.0
    """
    acc = ScoreAccumulator()
    acc.add_bio_batch(gold, pred)
    return acc.result()


def evaluate_sentences(
    gold: Sequence[AnnotatedSentence],
    pred: Sequence[Iterable[SpanLike]],
    accumulator: ScoreAccumulator | None = None,
) -> NERScores:
    """Score predicted character-span mentions against annotated sentences.

    ``pred[i]`` holds the predicted mentions (character offsets into ``gold[i].text``) of sentence i. Pass an
    ``accumulator`` to sum over several calls (e.g. episodes); the returned scores then cover everything it
    holds.

    Example:
        >>> s = AnnotatedSentence.from_tokens(["Ada", "met", "Bob"], [(0, 1, "PER"), (2, 3, "PER")])
        >>> evaluate_sentences([s], [[Mention(0, 3, "PER")]]).recall
        0.5
    """
    if isinstance(pred, (str, bytes)) or not isinstance(pred, Sequence):
        raise ValueError(
            f"pred must be a list with one list of mentions per sentence, got {type(pred).__name__}."
        )
    if len(gold) != len(pred):
        raise ValueError(
            f"{len(gold)} gold sentences but {len(pred)} prediction lists: pass one list per sentence "
            "(an empty list for a sentence without predictions)."
        )
    acc = accumulator if accumulator is not None else ScoreAccumulator()
    batch, offset = ScoreAccumulator(), acc.num_sentences
    for i, (sentence, mentions) in enumerate(zip(gold, pred)):
        if not isinstance(sentence, AnnotatedSentence):
            raise ValueError(
                f"sentence {offset + i}: gold entries must be AnnotatedSentence, got {type(sentence).__name__}."
            )
        where = _where(offset + i, sentence.source)
        if isinstance(mentions, Iterable) and not isinstance(mentions, (Sequence, Mapping, str, bytes)):
            mentions = list(mentions)  # a generator is read once here, then scored
        pred_set, _ = _as_span_set(mentions, where, "prediction")
        for start, end, label in sorted(pred_set):
            if end > len(sentence.text):
                raise ValueError(
                    f"{where}predicted span {(start, end, label)!r} ends after the sentence text "
                    f"(length {len(sentence.text)}): predictions must be character offsets into the sentence."
                )
        batch.add(sentence.mentions, mentions, sentence_index=offset + i, source=sentence.source)
    return acc.merge(batch).result()
