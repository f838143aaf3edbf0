"""The shared-prompt prefix cache: the prompt part shared by all records of a type (chat template, system
prompt, instruction) is encoded once per type and call, and its key/value cache is reused by every batch
of that type.

The cache is checked once per extractor against a plain forward (:func:`prefix_agrees`); the extractor
switches it off when the logits differ. A batch that uses it is laid out as
``[shared prefix][left padding][rest of the prompt]`` (:func:`layout_batch`), positions following the
attention mask.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["batch_cache", "encode_prefix", "layout_batch", "prefix_agrees", "prefix_fits"]


def encode_prefix(model: Any, a: list[int], b: list[int], device: Any) -> tuple[list[int], Any] | None:
    """The token prefix prompts ``a`` and ``b`` start with, and its key/value cache (batch 1).

    ``None`` when the prefix is shorter than 8 tokens or the model returns no cache that can be repeated
    over a batch.
    """
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if n < 8:
        return None
    ids = a[:n]
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = getattr(out, "past_key_values", None)
    if cache is None or not hasattr(cache, "batch_repeat_interleave"):
        return None
    return ids, cache


def prefix_agrees(model: Any, prompt_ids: list[int], prefix: tuple[list[int], Any], device: Any) -> bool:
    """The cached prefix gives the same next-token logits for ``prompt_ids`` as a plain forward."""
    ids, cache = prefix
    full = torch.tensor([prompt_ids], device=device)
    suffix = full[:, len(ids) :]
    with torch.inference_mode():
        plain = model(input_ids=full).logits[0, -1].float()
        cached = (
            model(
                input_ids=suffix,
                attention_mask=torch.ones_like(full),
                position_ids=torch.arange(len(ids), full.shape[1], device=device)[None],
                cache=copy.deepcopy(cache),
            )
            .logits[0, -1]
            .float()
        )
    scale = plain.abs().max().clamp(min=1.0)
    return bool(((plain - cached).abs().max() / scale) < 1e-3)


def prefix_fits(prompts: Sequence[list[int]], prefix_ids: list[int]) -> bool:
    """Every prompt starts with ``prefix_ids`` and goes on after it."""
    n = len(prefix_ids)
    return all(len(p) > n and p[:n] == prefix_ids for p in prompts)


def layout_batch(
    prompts: Sequence[list[int]], prefix_ids: list[int] | None, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input ids and attention mask of a batch: ``[shared prefix][left padding][rest of the prompt]``
    (plain left padding without a prefix)."""
    n = len(prefix_ids) if prefix_ids is not None else 0
    width = n + max(len(p) - n for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        rest = p[n:]
        input_ids[i, width - len(rest) :] = torch.tensor(rest)
        attention[i, width - len(rest) :] = 1
        if n:
            input_ids[i, :n] = torch.tensor(prefix_ids)
            attention[i, :n] = 1
    return input_ids, attention


def batch_cache(cache: Any, rows: int) -> Any:
    """A copy of the prefix's key/value cache repeated for ``rows`` rows (batch size x beams)."""
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(rows)
    return cache
