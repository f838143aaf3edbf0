"""Pure tensor functions for the CLLMFS auxiliary terms: span pooling, InfoNCE, the FGM perturbation.

Span tensors use half-open token intervals ``[start, end)`` into the padded sequence, with ``-1`` marking an
empty slot (the layout :class:`cllmfs_hf.collator.CLLMFSDataCollator` produces):

- ``anchor_spans``: ``[B, 2]`` the type-name tokens of each row's instruction
- ``positive_spans``: ``[B, M, 2]`` the gold mentions of each row's type in its input sentence
- ``negative_spans``: ``[B, M, K, 2]`` the within-row negatives of each mention (boundary-shifted spans,
  other-type mentions, non-entity spans)
- ``row_labels``: ``[B]`` a batch-local id of each row's entity type (for in-batch negatives)

Per mention (METHOD.md section 2):
``-log( exp(cos(a,p)/tau) / (exp(cos(a,p)/tau) + sum_j exp(cos(a,n_j)/tau)) )``.

Example:
    >>> import torch
    >>> h = torch.randn(1, 6, 4)
    >>> out = contrastive_loss_terms(
    ...     h, torch.tensor([[0, 1]]), torch.tensor([[[2, 4]]]), torch.tensor([[[[3, 5], [1, 2]]]]),
    ...     torch.tensor([0]), temperature=0.1)
    >>> out.num_pairs, bool(out.loss_sum > 0)
    (1, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "span_pool_weights",
    "pool_spans",
    "info_nce",
    "ContrastiveTerms",
    "contrastive_loss_terms",
    "count_contrastive_pairs",
    "center_states",
    "SINK_NORM_FACTOR",
    "fgm_perturbation",
]


def span_pool_weights(spans: torch.Tensor, seq_len: int, pooling: str = "mean") -> torch.Tensor:
    """Pooling weights ``[..., seq_len]`` for spans ``[..., 2]`` (``[start, end)``; ``-1`` rows give zeros).

    ``mean`` spreads weight 1/len over the span; ``endpoints`` puts 1/2 on the first and 1/2 on the last token.

    Example:
        >>> span_pool_weights(torch.tensor([[1, 4], [-1, -1]]), 5, "endpoints")
        tensor([[0.0000, 0.5000, 0.0000, 0.5000, 0.0000],
                [0.0000, 0.0000, 0.0000, 0.0000, 0.0000]])
    """
    if spans.shape[-1] != 2:
        raise ValueError(
            f"spans must have a last dimension of 2 ([start, end)), got shape {tuple(spans.shape)}."
        )
    start = spans[..., 0:1]
    end = spans[..., 1:2]
    valid = (start >= 0) & (end > start)
    positions = torch.arange(seq_len, device=spans.device)
    if pooling == "mean":
        inside = (positions >= start) & (positions < end) & valid
        length = (end - start).clamp(min=1)
        return inside.float() / length.float()
    if pooling == "endpoints":
        first = (positions == start) & valid
        last = (positions == end - 1) & valid
        return 0.5 * first.float() + 0.5 * last.float()
    raise ValueError(f"Unknown pooling {pooling!r}: use 'mean' or 'endpoints'.")


def pool_spans(
    hidden: torch.Tensor, spans: torch.Tensor, pooling: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Span representations ``[B, N, H]`` and a validity mask ``[B, N]`` from ``hidden`` ``[B, T, H]``.

    ``spans`` is ``[B, N, 2]``; a span with ``start < 0`` is empty (zero vector, mask False).
    """
    if hidden.dim() != 3 or spans.dim() != 3 or spans.shape[0] != hidden.shape[0]:
        raise ValueError(
            f"pool_spans needs hidden [B, T, H] and spans [B, N, 2] with the same B, got {tuple(hidden.shape)} "
            f"and {tuple(spans.shape)}."
        )
    if spans.numel() and int(spans[..., 1].max()) > hidden.shape[1]:
        raise ValueError(
            f"A span ends at {int(spans[..., 1].max())}, after the sequence length {hidden.shape[1]}: the span "
            "positions do not belong to this batch."
        )
    weights = span_pool_weights(spans, hidden.shape[1], pooling).to(hidden.dtype)
    valid = (spans[..., 0] >= 0) & (spans[..., 1] > spans[..., 0])
    return torch.bmm(weights, hidden), valid


def info_nce(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    negative_mask: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Per-pair InfoNCE losses ``[P]`` over cosine similarities.

    Args:
        anchor, positive: ``[P, H]``.
        negatives: ``[P, K, H]``; ``negative_mask`` ``[P, K]`` says which are real. A pair with no real negative
            has loss exactly 0.
        temperature: tau > 0.

    Example:
        >>> a = torch.tensor([[1.0, 0.0]]); p = torch.tensor([[1.0, 0.0]]); n = torch.tensor([[[0.0, 1.0]]])
        >>> round(float(info_nce(a, p, n, torch.tensor([[True]]), 1.0)[0]), 4)  # -log(e / (e + 1))
        0.3133
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    a = F.normalize(anchor.float(), dim=-1, eps=1e-8)
    p = F.normalize(positive.float(), dim=-1, eps=1e-8)
    n = F.normalize(negatives.float(), dim=-1, eps=1e-8)
    pos_logit = (a * p).sum(-1, keepdim=True) / temperature  # [P, 1]
    neg_logits = torch.einsum("ph,pkh->pk", a, n) / temperature  # [P, K]
    neg_logits = neg_logits.masked_fill(~negative_mask, float("-inf"))
    logits = torch.cat([pos_logit, neg_logits], dim=-1)
    return -torch.log_softmax(logits, dim=-1)[:, 0]


#: A token whose state norm exceeds this multiple of its row's median is an attention sink, left out of the
#: centring statistics (see center_states).
SINK_NORM_FACTOR = 10.0


def center_states(hidden: torch.Tensor, token_mask: torch.Tensor, centering: str) -> torch.Tensor:
    """``hidden`` ``[B, T, H]`` corrected for anisotropy with statistics over each row's ``token_mask`` ``[B, T]``.

    ``"prompt_mean"`` subtracts each row's mean state over its masked tokens (the direction every state of a
    decoder shares, which puts any two cosines near 0.7); ``"prompt_standardize"`` also divides each dimension by
    its standard deviation over those tokens; ``"none"`` returns ``hidden``. Pooling is linear with weights that
    sum to 1, so centring the states equals centring every pooled span. A row without masked tokens is unchanged.

    Tokens with a massive activation (an L2 norm above ``SINK_NORM_FACTOR`` x the row's median over the mask)
    are left out of the statistics: a decoder's first token is an attention sink (SmolLM2-135M, layer 23: norm
    ~25,000 against ~300 for the others), and a mean that includes it is that token, so centring on it left
    the cosines at 0.62 instead of ~0.0 (CrossNER politics dev, 8 records).

    Example:
        >>> h = torch.tensor([[[1.0, 2.0], [3.0, 2.0], [9.0, 9.0]]])
        >>> center_states(h, torch.tensor([[True, True, False]]), "prompt_mean")
        tensor([[[-1.,  0.],
                 [ 1.,  0.],
                 [ 7.,  7.]]])
    """
    if centering == "none":
        return hidden
    if centering not in ("prompt_mean", "prompt_standardize"):
        raise ValueError(
            f"Unknown centering {centering!r}: use 'none', 'prompt_mean' or 'prompt_standardize'."
        )
    if token_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"token_mask must be [B, T] = {tuple(hidden.shape[:2])}, got {tuple(token_mask.shape)}."
        )
    norms = hidden.detach().norm(dim=-1)  # [B, T]
    median = norms.masked_fill(~token_mask, float("nan")).nanmedian(dim=1, keepdim=True).values
    token_mask = token_mask & ~(norms > SINK_NORM_FACTOR * median.nan_to_num(float("inf")))
    w = token_mask.to(hidden.dtype)[..., None]  # [B, T, 1]
    count = w.sum(1, keepdim=True)  # [B, 1, 1]
    mean = (hidden * w).sum(1, keepdim=True) / count.clamp(min=1)
    centred = hidden - mean * (count > 0).to(hidden.dtype)
    if centering == "prompt_mean":
        return centred
    var = (centred.pow(2) * w).sum(1, keepdim=True) / count.clamp(min=1)
    scale = torch.where(count > 0, (var + 1e-6).rsqrt(), torch.ones_like(var))
    return centred * scale


@dataclass
class ContrastiveTerms:
    """Result of :func:`contrastive_loss_terms`.

    ``loss_sum`` is the SUM of the per-mention losses (the caller normalises: by the pairs of the micro-batch,
    or of the whole accumulated batch); ``num_pairs`` the number of (anchor, mention) pairs; ``pos_cos`` and
    ``neg_cos`` the mean anchor-positive and anchor-negative cosines (detached, for monitoring; NaN when there
    is nothing to average).
    """

    loss_sum: torch.Tensor
    num_pairs: int
    pos_cos: float
    neg_cos: float


def contrastive_loss_terms(
    hidden: torch.Tensor,
    anchor_spans: torch.Tensor,
    positive_spans: torch.Tensor,
    negative_spans: torch.Tensor,
    row_labels: torch.Tensor,
    temperature: float,
    pooling: str = "mean",
    in_batch_negatives: bool = True,
    centering: str = "none",
    token_mask: torch.Tensor | None = None,
) -> ContrastiveTerms:
    """InfoNCE summed over every (anchor, gold mention) pair of a batch of hidden states ``[B, T, H]``.

    Negatives of a mention: its row's ``negative_spans`` plus, with ``in_batch_negatives``, the gold mentions of
    the rows whose ``row_labels`` differ. A batch without pairs returns an exact 0 (never NaN). ``centering``
    other than ``"none"`` needs ``token_mask`` ``[B, T]`` (the prompt tokens): see :func:`center_states`.
    """
    bsz, seq_len, hidden_size = hidden.shape
    num_m = positive_spans.shape[1]
    anchor_valid = (anchor_spans[:, 0] >= 0) & (anchor_spans[:, 1] > anchor_spans[:, 0])
    pos_valid = (positive_spans[..., 0] >= 0) & (positive_spans[..., 1] > positive_spans[..., 0])
    pos_valid = pos_valid & anchor_valid[:, None]
    num_pairs = int(pos_valid.sum())
    if num_pairs == 0:
        return ContrastiveTerms(hidden.new_zeros((), dtype=torch.float32), 0, float("nan"), float("nan"))

    hidden = hidden.float()
    if centering != "none":
        if token_mask is None:
            raise ValueError(f"centering={centering!r} needs token_mask (the [B, T] prompt-token mask).")
        hidden = center_states(hidden, token_mask, centering)
    anchor, _ = pool_spans(hidden, anchor_spans[:, None, :], "mean")  # [B, 1, H]
    positive, _ = pool_spans(hidden, positive_spans, pooling)  # [B, M, H]
    num_k = negative_spans.shape[2]
    negative, neg_valid = pool_spans(hidden, negative_spans.reshape(bsz, num_m * num_k, 2), pooling)
    negative = negative.reshape(bsz, num_m, num_k, hidden_size)
    neg_valid = neg_valid.reshape(bsz, num_m, num_k)

    rows, mentions = pos_valid.nonzero(as_tuple=True)
    a = anchor[rows, 0]  # [P, H]
    p = positive[rows, mentions]  # [P, H]
    n = negative[rows, mentions]  # [P, K, H]
    n_mask = neg_valid[rows, mentions]  # [P, K]
    if in_batch_negatives and bsz > 1:
        all_rows, all_mentions = pos_valid.nonzero(as_tuple=True)
        pool = positive[all_rows, all_mentions]  # [Q, H] every gold mention of the batch
        other_type = row_labels[rows][:, None] != row_labels[all_rows][None, :]  # [P, Q]
        n = torch.cat([n, pool[None].expand(len(rows), -1, -1)], dim=1)
        n_mask = torch.cat([n_mask, other_type], dim=1)
    losses = info_nce(a, p, n, n_mask, temperature)
    with torch.no_grad():
        an = F.normalize(a, dim=-1, eps=1e-8)
        pos_cos = float((an * F.normalize(p, dim=-1, eps=1e-8)).sum(-1).mean())
        neg_all = torch.einsum("ph,pkh->pk", an, F.normalize(n, dim=-1, eps=1e-8))
        neg_cos = float(neg_all[n_mask].mean()) if bool(n_mask.any()) else float("nan")
    return ContrastiveTerms(losses.sum(), num_pairs, pos_cos, neg_cos)


def count_contrastive_pairs(batch: dict) -> int:
    """Number of (anchor, gold mention) pairs in a collated batch (0 when it has no span columns)."""
    if "cl_positive_spans" not in batch or "cl_anchor_span" not in batch:
        return 0
    pos = batch["cl_positive_spans"]
    anchor = batch["cl_anchor_span"]
    valid = (pos[..., 0] >= 0) & (pos[..., 1] > pos[..., 0]) & (anchor[:, 0] >= 0)[:, None]
    return int(valid.sum())


def fgm_perturbation(
    grad: torch.Tensor,
    epsilon: float,
    norm: str = "sequence",
    attention_mask: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """The FGM perturbation ``r = epsilon * g / ||g||`` for embedding-output gradients ``grad`` ``[B, T, H]``.

    ``norm="sequence"`` normalises each sequence over all its (non-padding) tokens; ``"token"`` each token.
    A zero gradient gives a zero perturbation (never NaN). Padding positions get 0. With ``reference`` (the
    clean embedding outputs, ``[B, T, H]``) epsilon is relative: ``||r|| = epsilon * ||reference||`` over the
    same unit, so ``epsilon=0.05`` is a 5% perturbation whatever the model's embedding scale.

    Example:
        >>> r = fgm_perturbation(torch.ones(2, 3, 4), epsilon=2.0)
        >>> [round(float(x), 4) for x in r.flatten(1).norm(dim=1)]
        [2.0, 2.0]
    """
    if grad.dim() != 3:
        raise ValueError(f"grad must be [batch, seq, hidden], got shape {tuple(grad.shape)}.")
    if norm not in ("sequence", "token"):
        raise ValueError(f"Unknown adversarial norm {norm!r}: use 'sequence' or 'token'.")

    def unit_norm(x: torch.Tensor) -> torch.Tensor:
        if attention_mask is not None:
            x = x * attention_mask[..., None].to(x.dtype)
        return x.flatten(1).norm(dim=1)[:, None, None] if norm == "sequence" else x.norm(dim=-1, keepdim=True)

    g = grad.detach().float()
    if attention_mask is not None:
        g = g * attention_mask[..., None].to(g.dtype)
    scale = unit_norm(g)
    step = epsilon if reference is None else epsilon * unit_norm(reference.detach().float())
    r = torch.where(scale > 0, step * g / scale.clamp(min=torch.finfo(g.dtype).tiny), torch.zeros_like(g))
    return r.to(grad.dtype)
