"""Entity-level evaluation: micro precision, recall and F1 with exact (start, end, type) matching.

A predicted mention counts as a true positive only when its start, its end and its type all equal those of a
gold mention of the same sentence (METHOD.md section 5). Counts (tp, fp, fn) are summed over every sentence
of a test set, or over every episode of a few-shot benchmark, and only then divided: nothing is averaged per
sentence or per episode. Scores are fractions in [0, 1].

Two kinds of input, one logic:

- **Span lists**, one list per sentence, of :class:`~cllmfs_hf.data.types.Mention` objects or
  ``(start, end, label)`` tuples (character or token offsets, end exclusive; gold and predictions must use the
  same coordinates).
- **BIO tag sequences** (IOB2), one per sentence, read in the *strict* IOB2 mode of ``seqeval``
  (``mode="strict", scheme=IOB2``): an entity starts at a ``B-X`` tag and extends over the ``I-X`` tags that
  follow it; an ``I-X`` that does not continue a ``B-X``/``I-X`` of the same type (a "stray" I-, e.g. after
  ``O`` or after ``B-Y``) is not an entity. ``seqeval``'s default (conlleval) mode would count such a stray
  ``I-X`` as the start of an entity; this module never does. Tags are converted to token spans
  (:func:`bio_to_spans`) and scored like span lists, so both inputs give the same numbers.

Conventions (documented choices):

- Duplicates: a sentence's predictions form a *set*; a span predicted twice counts once (its repetition is
  reported in :attr:`NERScores.duplicate_predictions`, never silently). Duplicate gold spans likewise count
  once (:attr:`NERScores.duplicate_references`).
- Empty input: no gold and no prediction gives precision = recall = F1 = 0 (never a division error), as
  ``seqeval`` does with ``zero_division=0``.
- Labels are compared as strings, exactly as the dataset spells them (see :mod:`cllmfs_hf.data.labels`).
- Per-type scores cover every type seen in the gold *or* the predictions (a type only ever predicted has
  support 0 and precision 0), like ``seqeval.metrics.classification_report``.

Example:
    >>> from cllmfs_hf.data.types import Mention
    >>> gold = [[(0, 2, "PER"), (5, 7, "LOC")], []]
    >>> pred = [[Mention(0, 2, "PER"), (5, 8, "LOC")], [(1, 2, "ORG")]]
    >>> scores = score_spans(gold, pred)
    >>> (scores.tp, scores.fp, scores.fn), round(scores.f1, 4)
    ((1, 2, 1), 0.4)
    >>> score_bio([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]).f1
    1.0
    >>> bio_to_spans(["O", "I-PER", "B-LOC", "I-LOC", "I-PER"])  # stray I- tags are not entities
    [(2, 4, 'LOC')]
"""

from __future__ import annotations

from .counting import (
    ScoreAccumulator,
    Span,
    SpanLike,
    bio_to_spans,
    evaluate_sentences,
    score_bio,
    score_spans,
)
from .metric import METRIC_PATH, load_metric
from .scores import NERScores, TypeScores

# Files: scores.py (TypeScores, NERScores), counting.py (span checks, BIO decoding, ScoreAccumulator, score_*),
# metric.py (the offline `evaluate` module).
__all__ = [
    "METRIC_PATH",
    "Span",
    "SpanLike",
    "TypeScores",
    "NERScores",
    "ScoreAccumulator",
    "bio_to_spans",
    "score_spans",
    "score_bio",
    "evaluate_sentences",
    "load_metric",
]
