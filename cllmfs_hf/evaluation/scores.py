"""Score containers: :class:`TypeScores` (one entity type) and :class:`NERScores` (micro P/R/F1 + per type)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["NERScores", "TypeScores"]


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts; 0 wherever a denominator is 0."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass(frozen=True)
class TypeScores:
    """Scores of one entity type: precision, recall, F1 (fractions in [0, 1]) and the counts behind them.

    Example:
        >>> TypeScores.from_counts(tp=3, fp=1, fn=1).f1
        0.75
    """

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> TypeScores:
        """Scores computed from true positive, false positive and false negative counts."""
        for name, value in (("tp", tp), ("fp", fp), ("fn", fn)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"TypeScores.from_counts: {name} must be a non-negative int, got {value!r}.")
        return cls(*_prf(tp, fp, fn), tp=tp, fp=fp, fn=fn)

    @property
    def support(self) -> int:
        """Number of gold mentions of this type (tp + fn)."""
        return self.tp + self.fn

    @property
    def predicted(self) -> int:
        """Number of predicted mentions of this type (tp + fp)."""
        return self.tp + self.fp

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict: precision, recall, f1, support, tp, fp, fn."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }


@dataclass(frozen=True)
class NERScores:
    """Micro-averaged entity-level scores over a whole evaluation, with per-type scores.

    ``precision``, ``recall`` and ``f1`` are fractions in [0, 1] computed from the summed counts. ``per_type``
    maps every label seen in the gold or the predictions to its :class:`TypeScores`. ``token_accuracy`` is the
    token-level tag accuracy when every sentence was given as BIO tags, else ``None``.

    Example:
        >>> from cllmfs_hf.evaluation import score_spans
        >>> s = score_spans([[(0, 1, "PER")]], [[(0, 1, "PER"), (2, 3, "LOC")]])
        >>> s.precision, s.recall, s.per_type["LOC"].support
        (0.5, 1.0, 0)
    """

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    per_type: dict[str, TypeScores] = field(default_factory=dict)
    num_sentences: int = 0
    duplicate_predictions: int = 0
    duplicate_references: int = 0
    token_accuracy: float | None = None

    @property
    def support(self) -> int:
        """Number of gold mentions (tp + fn)."""
        return self.tp + self.fn

    @property
    def predicted(self) -> int:
        """Number of (distinct) predicted mentions (tp + fp)."""
        return self.tp + self.fp

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: overall scores and counts, then ``per_type`` (label -> TypeScores.to_dict())."""
        return {
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
            "support": self.support,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "num_sentences": self.num_sentences,
            "duplicate_predictions": self.duplicate_predictions,
            "duplicate_references": self.duplicate_references,
            "token_accuracy": self.token_accuracy,
            "per_type": {label: ts.to_dict() for label, ts in sorted(self.per_type.items())},
        }

    def to_seqeval_dict(self) -> dict[str, Any]:
        """The layout of the Hub's ``seqeval`` metric: ``{label: {precision, recall, f1, number}}`` plus
        ``overall_precision``/``overall_recall``/``overall_f1`` (and ``overall_accuracy`` for BIO input).

        Counts are added per type (``tp``, ``fp``, ``fn``) and overall (``overall_tp``, ...), so results can be
        summed later.
        """
        out: dict[str, Any] = {}
        for label, ts in sorted(self.per_type.items()):
            out[label] = {
                "precision": ts.precision,
                "recall": ts.recall,
                "f1": ts.f1,
                "number": ts.support,
                "tp": ts.tp,
                "fp": ts.fp,
                "fn": ts.fn,
            }
        out["overall_precision"] = self.precision
        out["overall_recall"] = self.recall
        out["overall_f1"] = self.f1
        if self.token_accuracy is not None:
            out["overall_accuracy"] = self.token_accuracy
        out["overall_tp"] = self.tp
        out["overall_fp"] = self.fp
        out["overall_fn"] = self.fn
        return out

    def table(self, digits: int = 2) -> str:
        """A readable table: one row per type then the micro average; scores in percent."""
        rows = [(label, ts) for label, ts in sorted(self.per_type.items())]
        overall = TypeScores(self.precision, self.recall, self.f1, self.tp, self.fp, self.fn)
        rows.append(("micro avg", overall))
        width = max([len(label) for label, _ in rows] + [len("type")])
        header = f"{'type':<{width}}  {'precision':>9}  {'recall':>9}  {'f1':>9}  {'support':>7}  {'tp':>6}  {'fp':>6}  {'fn':>6}"
        lines = [header, "-" * len(header)]
        for i, (label, ts) in enumerate(rows):
            if i == len(rows) - 1 and len(rows) > 1:
                lines.append("-" * len(header))
            lines.append(
                f"{label:<{width}}  {100 * ts.precision:>9.{digits}f}  {100 * ts.recall:>9.{digits}f}  "
                f"{100 * ts.f1:>9.{digits}f}  {ts.support:>7d}  {ts.tp:>6d}  {ts.fp:>6d}  {ts.fn:>6d}"
            )
        notes = [f"{self.num_sentences} sentences"]
        if self.token_accuracy is not None:
            notes.append(f"token accuracy {100 * self.token_accuracy:.{digits}f}")
        if self.duplicate_predictions:
            notes.append(f"{self.duplicate_predictions} duplicate predictions counted once")
        if self.duplicate_references:
            notes.append(f"{self.duplicate_references} duplicate gold mentions counted once")
        lines.append("(" + "; ".join(notes) + ")")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
