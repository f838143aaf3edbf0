"""Span pooling, InfoNCE and FGM perturbation against independent hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from cllmfs_hf.losses import (
    center_states,
    contrastive_loss_terms,
    count_contrastive_pairs,
    fgm_perturbation,
    info_nce,
    pool_spans,
    span_pool_weights,
)


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    u64, v64 = u.double(), v.double()
    return float(u64 @ v64 / (u64.norm() * v64.norm()))


def _mean(h: torch.Tensor, span: tuple[int, int]) -> torch.Tensor:
    return h[span[0] : span[1]].double().mean(0)


def _endpoints(h: torch.Tensor, span: tuple[int, int]) -> torch.Tensor:
    return (h[span[0]].double() + h[span[1] - 1].double()) / 2


def _reference_loss(hidden, anchors, positives, negatives, labels, tau, pool, in_batch):
    """Loops over python lists: sum of -log(exp(s+/t) / (exp(s+/t) + sum exp(s-/t))) and the pair count."""
    pool_fn = _mean if pool == "mean" else _endpoints
    pairs = []  # (row, anchor vec, positive vec, own negative vecs)
    for b, anchor in enumerate(anchors):
        if anchor is None:
            continue
        a = _mean(hidden[b], anchor)
        for m, span in enumerate(positives[b]):
            pairs.append((b, a, pool_fn(hidden[b], span), [pool_fn(hidden[b], n) for n in negatives[b][m]]))
    total = 0.0
    for b, a, p, negs in pairs:
        if in_batch:
            negs = negs + [p2 for b2, _, p2, _ in pairs if labels[b2] != labels[b]]
        pos = math.exp(_cos(a, p) / tau)
        denom = pos + sum(math.exp(_cos(a, n) / tau) for n in negs)
        total += -math.log(pos / denom)
    return total, len(pairs)


def _pack(anchors, positives, negatives):
    bsz = len(anchors)
    num_m = max(len(p) for p in positives)
    num_k = max((len(n) for row in negatives for n in row), default=0)
    a = torch.full((bsz, 2), -1)
    p = torch.full((bsz, num_m, 2), -1)
    n = torch.full((bsz, num_m, num_k, 2), -1)
    for b in range(bsz):
        if anchors[b] is not None:
            a[b] = torch.tensor(anchors[b])
        for m, span in enumerate(positives[b]):
            p[b, m] = torch.tensor(span)
            for k, neg in enumerate(negatives[b][m]):
                n[b, m, k] = torch.tensor(neg)
    return a, p, n


HAND_BATCH = dict(
    anchors=[(1, 3), (0, 1), None],
    positives=[[(5, 7), (8, 9)], [(4, 6)], [(2, 4)]],
    negatives=[[[(4, 7), (5, 8), (2, 3)], [(8, 10)]], [[(3, 6)]], [[(1, 4)]]],
    labels=[0, 1, 0],
)


@pytest.mark.parametrize("pooling", ["mean", "endpoints"])
@pytest.mark.parametrize("in_batch", [False, True])
def test_info_nce_matches_reference(pooling, in_batch):
    torch.manual_seed(0)
    hidden = torch.randn(3, 10, 16)
    a, p, n = _pack(HAND_BATCH["anchors"], HAND_BATCH["positives"], HAND_BATCH["negatives"])
    labels = torch.tensor(HAND_BATCH["labels"])
    out = contrastive_loss_terms(
        hidden, a, p, n, labels, temperature=0.2, pooling=pooling, in_batch_negatives=in_batch
    )
    ref, count = _reference_loss(
        hidden,
        HAND_BATCH["anchors"],
        HAND_BATCH["positives"],
        HAND_BATCH["negatives"],
        HAND_BATCH["labels"],
        0.2,
        pooling,
        in_batch,
    )
    assert out.num_pairs == count == 3  # the row without anchor contributes nothing
    assert out.loss_sum.item() == pytest.approx(ref, rel=1e-5, abs=1e-6)


def test_in_batch_negatives_change_the_loss():
    torch.manual_seed(1)
    hidden = torch.randn(3, 10, 16)
    a, p, n = _pack(HAND_BATCH["anchors"], HAND_BATCH["positives"], HAND_BATCH["negatives"])
    labels = torch.tensor(HAND_BATCH["labels"])
    off = contrastive_loss_terms(hidden, a, p, n, labels, 0.2, in_batch_negatives=False)
    on = contrastive_loss_terms(hidden, a, p, n, labels, 0.2, in_batch_negatives=True)
    assert on.loss_sum.item() > off.loss_sum.item()  # more negatives in the denominator


def test_batch_without_mentions_is_exactly_zero():
    hidden = torch.randn(2, 6, 8, requires_grad=True)
    anchors = torch.tensor([[0, 2], [1, 2]])
    empty = torch.full((2, 0, 2), -1)
    out = contrastive_loss_terms(
        hidden, anchors, empty, torch.full((2, 0, 0, 2), -1), torch.tensor([0, 1]), 0.1
    )
    assert out.num_pairs == 0 and out.loss_sum.item() == 0.0
    # anchors cut away: mentions present but no pair
    pos = torch.tensor([[[3, 4]], [[2, 5]]])
    out = contrastive_loss_terms(
        hidden, torch.full((2, 2), -1), pos, torch.full((2, 1, 0, 2), -1), torch.tensor([0, 1]), 0.1
    )
    assert out.num_pairs == 0 and out.loss_sum.item() == 0.0 and math.isfinite(out.loss_sum.item())


def test_pair_without_negatives_has_zero_loss_and_finite_gradient():
    hidden = torch.randn(1, 6, 8, requires_grad=True)
    out = contrastive_loss_terms(
        hidden,
        torch.tensor([[0, 1]]),
        torch.tensor([[[2, 4]]]),
        torch.full((1, 1, 0, 2), -1),
        torch.tensor([0]),
        0.1,
    )
    assert out.num_pairs == 1 and out.loss_sum.item() == 0.0
    out.loss_sum.backward()
    assert torch.isfinite(hidden.grad).all()


def test_gradient_is_finite_with_zero_hidden_states():
    hidden = torch.zeros(1, 6, 8, requires_grad=True)
    out = contrastive_loss_terms(
        hidden,
        torch.tensor([[0, 1]]),
        torch.tensor([[[2, 4]]]),
        torch.tensor([[[[2, 5]]]]),
        torch.tensor([0]),
        0.1,
    )
    out.loss_sum.backward()
    assert math.isfinite(out.loss_sum.item()) and torch.isfinite(hidden.grad).all()


def test_info_nce_single_pair_by_hand():
    a = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[1.0, 1.0]])
    n = torch.tensor([[[0.0, 1.0], [-1.0, 0.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])  # the third is padding and must be ignored
    tau = 0.5
    s_pos, s1, s2 = 1 / math.sqrt(2), 0.0, -1.0
    expected = -math.log(
        math.exp(s_pos / tau) / (math.exp(s_pos / tau) + math.exp(s1 / tau) + math.exp(s2 / tau))
    )
    assert float(info_nce(a, p, n, mask, tau)[0]) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(a, p, n, mask, 0.0)


def test_pool_weights_and_pooling():
    w = span_pool_weights(torch.tensor([[1, 4], [2, 3], [-1, -1]]), 5, "mean")
    assert torch.allclose(w[0], torch.tensor([0, 1 / 3, 1 / 3, 1 / 3, 0]))
    assert torch.allclose(w[1], torch.tensor([0, 0, 1.0, 0, 0]))
    assert w[2].abs().sum() == 0
    w = span_pool_weights(torch.tensor([[2, 3]]), 5, "endpoints")  # one token: both endpoints on it
    assert torch.allclose(w[0], torch.tensor([0, 0, 1.0, 0, 0]))
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    pooled, valid = pool_spans(hidden, torch.tensor([[[0, 2], [-1, -1]], [[1, 5], [3, 4]]]), "mean")
    assert valid.tolist() == [[True, False], [True, True]]
    assert torch.allclose(pooled[0, 0], hidden[0, :2].mean(0))
    assert torch.allclose(pooled[1, 0], hidden[1, 1:5].mean(0))
    assert torch.allclose(pooled[1, 1], hidden[1, 3])
    with pytest.raises(ValueError, match="after the sequence length"):
        pool_spans(hidden, torch.tensor([[[0, 9]], [[0, 1]]]))
    with pytest.raises(ValueError, match="pooling"):
        span_pool_weights(torch.tensor([[0, 1]]), 3, "max")


def test_count_pairs():
    batch = {
        "cl_anchor_span": torch.tensor([[0, 1], [-1, -1], [2, 3]]),
        "cl_positive_spans": torch.tensor([[[4, 5], [6, 7]], [[4, 5], [-1, -1]], [[5, 6], [-1, -1]]]),
    }
    assert count_contrastive_pairs(batch) == 3
    assert count_contrastive_pairs({"input_ids": torch.zeros(1, 2)}) == 0


def test_fgm_perturbation_norms():
    torch.manual_seed(0)
    g = torch.randn(3, 4, 5)
    g[2] = 0.0
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    r = fgm_perturbation(g, 0.5, "sequence", mask)
    assert r[0].norm().item() == pytest.approx(0.5, rel=1e-5)
    assert r[1].norm().item() == pytest.approx(0.5, rel=1e-5)
    assert torch.equal(r[2], torch.zeros_like(r[2]))  # zero gradient: zero perturbation, no NaN
    assert torch.equal(r[0, 3], torch.zeros(5))  # padding untouched
    # same direction as g
    assert _cos(r[1].flatten(), g[1].flatten()) == pytest.approx(1.0, abs=1e-6)
    r = fgm_perturbation(g, 2.0, "token", mask)
    assert torch.allclose(r[1].norm(dim=-1), torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="norm"):
        fgm_perturbation(g, 1.0, "batch")


# ---- anisotropy correction and the relative FGM step ------------------------------------------------------
def test_center_states_by_hand_and_its_cosines():
    """Centring removes the shared direction that makes every cosine near 0.7; standardising scales each dim."""
    torch.manual_seed(0)
    shared = torch.full((1, 1, 8), 5.0)
    hidden = shared + torch.randn(1, 6, 8)
    mask = torch.tensor([[True, True, True, True, False, False]])  # the last two: answer / padding
    mean = hidden[0, :4].mean(0)
    centred = center_states(hidden, mask, "prompt_mean")
    assert torch.allclose(centred[0], hidden[0] - mean, atol=1e-6)
    std = (hidden[0, :4] - mean).pow(2).mean(0).add(1e-6).sqrt()
    assert torch.allclose(
        center_states(hidden, mask, "prompt_standardize")[0], (hidden[0] - mean) / std, atol=1e-5
    )
    assert center_states(hidden, mask, "none") is hidden
    # an attention sink (a massive first-token state) is left out of the statistics, not averaged in
    sunk = hidden.clone()
    sunk[0, 0] = 1000.0 * hidden[0, 0]
    rest_mean = hidden[0, 1:4].mean(0)
    assert torch.allclose(
        center_states(sunk, mask, "prompt_mean")[0, 1:], hidden[0, 1:] - rest_mean, atol=1e-5
    )
    # a row without prompt tokens stays as it is (no NaN)
    assert torch.equal(
        center_states(hidden, torch.zeros(1, 6, dtype=torch.bool), "prompt_standardize"), hidden
    )
    # raw states: two unrelated spans look alike; centred, they do not
    # one anchor (token 0), its positive (token 1) and one negative (token 2)
    spans = (torch.tensor([[0, 1]]), torch.tensor([[[1, 2]]]), torch.tensor([[[[2, 3]]]]), torch.tensor([0]))
    raw = contrastive_loss_terms(hidden, *spans, 0.1)
    cen = contrastive_loss_terms(hidden, *spans, 0.1, centering="prompt_mean", token_mask=mask)
    assert raw.pos_cos > 0.9 and raw.neg_cos > 0.9
    assert abs(cen.pos_cos) < 0.9 and abs(cen.neg_cos) < 0.9
    assert cen.pos_cos == pytest.approx(_cos(centred[0, 0], centred[0, 1]), abs=1e-5)
    with pytest.raises(ValueError, match="needs token_mask"):
        contrastive_loss_terms(hidden, *spans, 0.1, centering="prompt_mean")
    with pytest.raises(ValueError, match="Unknown centering 'whiten'"):
        center_states(hidden, mask, "whiten")


def test_fgm_relative_epsilon_is_a_fraction_of_the_embedding_norm():
    torch.manual_seed(0)
    g = torch.randn(2, 4, 5)
    emb = torch.randn(2, 4, 5) * torch.tensor([0.01, 3.0])[:, None, None]  # two very different scales
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    r = fgm_perturbation(g, 0.05, "sequence", mask, reference=emb)
    for b in range(2):
        ref = (emb[b] * mask[b, :, None]).norm()
        assert r[b].norm().item() == pytest.approx(0.05 * ref.item(), rel=1e-5)
        assert _cos(r[b].flatten(), (g[b] * mask[b, :, None]).flatten()) == pytest.approx(1.0, abs=1e-6)
    r = fgm_perturbation(g, 0.1, "token", mask, reference=emb)
    assert torch.allclose(r[1].norm(dim=-1), 0.1 * emb[1].norm(dim=-1), rtol=1e-5)
