"""Paired bootstrap confidence intervals for differences in entity-level micro F1.

Small test samples make F1 noisy. For two systems evaluated on the *same* test sentences, the paired
bootstrap resamples the sentences with replacement, recomputes both systems' micro F1 on each resample (the
*same* resampled sentences for both), and takes the percentile interval of the difference ``F1_b - F1_a``.
An interval that excludes 0 says the gain is larger than what the choice of test sentences alone explains
(at the stated confidence); it says nothing about the variance due to training seeds, which the table's
standard deviation shows.

Inputs are per-sentence entity counts ``(tp, fp, fn)`` (see :func:`per_sentence_counts`). Several training
seeds evaluated on the same sentences are given as a leading axis: the statistic is then the mean over seeds
of the per-seed F1 difference, every seed being scored on the same resample, so the point estimate equals
the difference of the table's mean F1. Several datasets are combined by :func:`paired_bootstrap_multi`,
which resamples each dataset's sentences independently (a stratified bootstrap) and averages the per-dataset
differences, matching the table's average over datasets.

Example:
    >>> import numpy as np
    >>> a = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0]])  # system A: tp, fp, fn per sentence
    >>> b = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0]])  # system B: right everywhere
    >>> r = paired_bootstrap(a, b, resamples=500, seed=0)
    >>> round(r.delta, 3), r.low >= 0.0  # B is never worse on any resample
    (0.333, True)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = [
    "BootstrapResult",
    "micro_f1",
    "per_sentence_counts",
    "paired_bootstrap",
    "paired_bootstrap_multi",
]


@dataclass(frozen=True)
class BootstrapResult:
    """A paired difference ``F1_b - F1_a`` (fractions) with its percentile confidence interval.

    ``n_sentences`` is the number of test sentences resampled (summed over datasets for a multi-dataset
    result), ``n_seeds`` the number of training seeds averaged per dataset, ``resamples`` the number of
    bootstrap draws; ``p_nonpositive`` is the share of draws with a difference <= 0 (a one-sided bootstrap
    p-value for "B is better than A").
    """

    delta: float
    low: float
    high: float
    confidence: float
    resamples: int
    n_sentences: int
    n_seeds: int
    p_nonpositive: float

    @property
    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0."""
        return self.low > 0.0 or self.high < 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the fields."""
        return asdict(self)


def micro_f1(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from summed counts ``[..., 3]`` = (tp, fp, fn); 0 where there is no gold and no prediction.

    Example:
        >>> float(micro_f1(np.array([1, 1, 0])))
        0.6666666666666666
    """
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denom = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    return f1


def per_sentence_counts(gold: Sequence[Iterable[Any]], pred: Sequence[Iterable[Any]]) -> list[list[int]]:
    """``[[tp, fp, fn], ...]``, one row per sentence, with the matching rules of :mod:`cllmfs_hf.evaluation`.

    ``gold[i]`` and ``pred[i]`` are the span lists (Mentions or ``(start, end, label)``) of sentence i.

    Example:
        >>> per_sentence_counts([[(0, 3, "PER")], []], [[(0, 3, "PER"), (4, 6, "LOC")], [(1, 2, "ORG")]])
        [[1, 1, 0], [0, 1, 0]]
    """
    from cllmfs_hf.evaluation import score_spans

    if len(gold) != len(pred):
        raise ValueError(
            f"{len(gold)} gold sentences but {len(pred)} prediction lists: pass one list per sentence."
        )
    rows = []
    for g, p in zip(gold, pred):
        s = score_spans([g], [p])
        rows.append([s.tp, s.fp, s.fn])
    return rows


def _as_counts(counts: Any, name: str) -> np.ndarray:
    arr = np.asarray(counts, dtype=np.int64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(
            f"{name}: expected per-sentence counts of shape (sentences, 3) or (seeds, sentences, 3) with "
            f"columns tp, fp, fn; got shape {arr.shape}."
        )
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: no sentences to resample.")
    if (arr < 0).any():
        raise ValueError(f"{name}: counts must be non-negative integers.")
    return arr


def _check_pair(a: Any, b: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    ca, cb = _as_counts(a, f"{where}system A"), _as_counts(b, f"{where}system B")
    if ca.shape != cb.shape:
        raise ValueError(
            f"{where}the two systems' counts have shapes {ca.shape} and {cb.shape}: a paired bootstrap needs the "
            "same seeds and the same test sentences, in the same order, for both systems."
        )
    return ca, cb


def _check_args(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence}.")


def _deltas(ca: np.ndarray, cb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-draw mean over seeds of F1_b - F1_a; ``weights`` (draws, sentences) are resample multiplicities."""
    ra = np.einsum("dn,snc->dsc", weights, ca.astype(np.float64))
    rb = np.einsum("dn,snc->dsc", weights, cb.astype(np.float64))
    return (micro_f1(rb) - micro_f1(ra)).mean(axis=1)


def _weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def _result(point: float, draws: np.ndarray, confidence: float, n: int, seeds: int) -> BootstrapResult:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [alpha, 1.0 - alpha])
    return BootstrapResult(
        delta=float(point),
        low=float(low),
        high=float(high),
        confidence=confidence,
        resamples=int(draws.shape[0]),
        n_sentences=n,
        n_seeds=seeds,
        p_nonpositive=float((draws <= 0).mean()),
    )


def paired_bootstrap(
    counts_a: Any, counts_b: Any, *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> BootstrapResult:
    """Paired percentile bootstrap of ``F1_b - F1_a`` over test sentences.

    Args:
        counts_a, counts_b: per-sentence ``(tp, fp, fn)`` of systems A and B, shape ``(sentences, 3)`` or
            ``(seeds, sentences, 3)`` (the same sentences in the same order for both).
        resamples: number of bootstrap draws.
        confidence: two-sided coverage of the interval.
        seed: seed of the resampling; the result is a pure function of the inputs and this seed.

    Example:
        >>> same = [[1, 0, 0], [0, 1, 1]]
        >>> r = paired_bootstrap(same, same, resamples=100)
        >>> (r.delta, r.low, r.high)
        (0.0, 0.0, 0.0)
    """
    _check_args(resamples, confidence)
    ca, cb = _check_pair(counts_a, counts_b, "")
    point = float((micro_f1(cb.sum(axis=1)) - micro_f1(ca.sum(axis=1))).mean())
    rng = np.random.default_rng(seed)
    draws = _deltas(ca, cb, _weights(rng, ca.shape[1], resamples))
    return _result(point, draws, confidence, ca.shape[1], ca.shape[0])


def paired_bootstrap_multi(
    pairs: Sequence[tuple[Any, Any]], *, resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> BootstrapResult:
    """Stratified paired bootstrap of the mean over datasets of ``F1_b - F1_a``.

    ``pairs[d]`` is ``(counts_a, counts_b)`` for dataset d (shapes as in :func:`paired_bootstrap`; datasets may
    differ in size). Each draw resamples every dataset's sentences independently, computes each dataset's
    seed-averaged difference and averages over datasets.

    Example:
        >>> one = ([[0, 1, 1]], [[1, 0, 0]])
        >>> paired_bootstrap_multi([one, one], resamples=50).delta
        1.0
    """
    _check_args(resamples, confidence)
    if not pairs:
        raise ValueError("paired_bootstrap_multi needs at least one (counts_a, counts_b) pair.")
    rng = np.random.default_rng(seed)
    points, draws, n_total, seeds = [], [], 0, set()
    for d, (a, b) in enumerate(pairs):
        ca, cb = _check_pair(a, b, f"dataset {d}: ")
        points.append(float((micro_f1(cb.sum(axis=1)) - micro_f1(ca.sum(axis=1))).mean()))
        draws.append(_deltas(ca, cb, _weights(rng, ca.shape[1], resamples)))
        n_total += ca.shape[1]
        seeds.add(ca.shape[0])
    n_seeds = seeds.pop() if len(seeds) == 1 else min(seeds)
    return _result(float(np.mean(points)), np.mean(draws, axis=0), confidence, n_total, n_seeds)
