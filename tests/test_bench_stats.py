"""Paired bootstrap of F1 differences (benchmarks/stats.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.stats import (  # noqa: E402
    micro_f1,
    paired_bootstrap,
    paired_bootstrap_multi,
    per_sentence_counts,
)
from cllmfs_hf.data.readers import read_dataset  # noqa: E402
from cllmfs_hf.data.types import Mention  # noqa: E402
from cllmfs_hf.evaluation import evaluate_sentences  # noqa: E402


def _random_counts(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, size=(n, 3))


def test_identical_systems_give_a_zero_interval() -> None:
    counts = _random_counts(60, 1)
    r = paired_bootstrap(counts, counts.copy(), resamples=400, seed=3)
    assert r.delta == 0.0
    assert r.low <= 0.0 <= r.high
    assert abs(r.low) < 1e-12 and abs(r.high) < 1e-12
    assert not r.excludes_zero


def test_nearly_identical_systems_interval_contains_zero() -> None:
    a = _random_counts(200, 2)
    b = a.copy()
    b[0] = [a[0, 0] + 1, a[0, 1], max(0, a[0, 2] - 1)]  # one sentence better
    b[1] = [max(0, a[1, 0] - 1), a[1, 1] + 1, a[1, 2] + 1]  # another worse
    r = paired_bootstrap(a, b, resamples=500, seed=0)
    assert r.low <= 0.0 <= r.high
    assert r.high - r.low < 0.05


def test_strictly_better_on_every_sentence_gives_a_positive_interval() -> None:
    rng = np.random.default_rng(5)
    gold = rng.integers(1, 4, size=80)
    # A finds half of each sentence's mentions (rounded down) and adds one false positive; B finds all.
    a = np.stack([gold // 2, np.ones_like(gold), gold - gold // 2], axis=1)
    b = np.stack([gold, np.zeros_like(gold), np.zeros_like(gold)], axis=1)
    r = paired_bootstrap(a, b, resamples=1000, seed=0)
    assert r.low > 0 and r.high <= 1.0
    assert r.excludes_zero and r.p_nonpositive == 0.0
    assert r.delta == pytest.approx(1.0 - float(micro_f1(a.sum(axis=0))))
    # and the reverse comparison is strictly negative
    rev = paired_bootstrap(b, a, resamples=1000, seed=0)
    assert rev.high < 0 and rev.delta == pytest.approx(-r.delta)


def test_deterministic_for_a_seed_and_varies_with_it() -> None:
    a, b = _random_counts(50, 7), _random_counts(50, 8)
    r1 = paired_bootstrap(a, b, resamples=300, seed=11)
    r2 = paired_bootstrap(a, b, resamples=300, seed=11)
    r3 = paired_bootstrap(a, b, resamples=300, seed=12)
    assert r1 == r2
    assert (r1.low, r1.high) != (r3.low, r3.high)
    assert r1.delta == r3.delta  # the point estimate does not depend on the resampling


def test_seed_axis_point_estimate_is_mean_of_per_seed_differences() -> None:
    a = np.stack([_random_counts(30, s) for s in range(3)])
    b = np.stack([_random_counts(30, 10 + s) for s in range(3)])
    r = paired_bootstrap(a, b, resamples=200, seed=0)
    expected = np.mean([micro_f1(b[s].sum(0)) - micro_f1(a[s].sum(0)) for s in range(3)])
    assert r.delta == pytest.approx(float(expected))
    assert r.n_seeds == 3 and r.n_sentences == 30
    assert r.low <= r.high


def test_multi_dataset_average_and_stratification() -> None:
    a1, b1 = _random_counts(40, 1), _random_counts(40, 2)
    a2, b2 = _random_counts(25, 3), _random_counts(25, 4)
    r = paired_bootstrap_multi([(a1, b1), (a2, b2)], resamples=300, seed=0)
    d1 = micro_f1(b1.sum(0)) - micro_f1(a1.sum(0))
    d2 = micro_f1(b2.sum(0)) - micro_f1(a2.sum(0))
    assert r.delta == pytest.approx(float((d1 + d2) / 2))
    assert r.n_sentences == 65
    same = paired_bootstrap_multi([(a1, a1), (a2, a2)], resamples=100, seed=0)
    assert (same.delta, same.low, same.high) == (0.0, 0.0, 0.0)


def test_bad_inputs_raise_clear_errors() -> None:
    a = _random_counts(10, 0)
    with pytest.raises(ValueError, match="same seeds and the same test sentences"):
        paired_bootstrap(a, a[:9])
    with pytest.raises(ValueError, match="columns tp, fp, fn"):
        paired_bootstrap(a[:, :2], a[:, :2])
    with pytest.raises(ValueError, match="no sentences"):
        paired_bootstrap(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        paired_bootstrap(-a, a)
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(a, a, confidence=95)
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap(a, a, resamples=0)
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap_multi([])


def test_per_sentence_counts_agree_with_evaluation_on_real_sentences(politics_test_head: Path) -> None:
    sentences = read_dataset(politics_test_head)  # the first 25 CrossNER politics test sentences
    # A prediction that keeps every other gold mention and shifts the end of the others by one character.
    pred = []
    for s in sentences:
        row = []
        for j, m in enumerate(s.mentions):
            row.append(
                m if j % 2 == 0 else Mention(m.start, m.end - 1, m.label) if m.end - m.start > 1 else m
            )
        pred.append(row)
    counts = np.array(per_sentence_counts([s.mentions for s in sentences], pred))
    scores = evaluate_sentences(sentences, pred)
    assert counts.sum(0).tolist() == [scores.tp, scores.fp, scores.fn]
    assert float(micro_f1(counts.sum(0))) == pytest.approx(scores.f1)
    assert scores.fp > 0 and scores.tp > 0
