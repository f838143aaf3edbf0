"""Greedy decoding that drops each row from the batch as soon as it has ended.

``model.generate`` keeps every row of a batch until the last one ends: after a trained model's typical answer
(the preamble, then end-of-sequence at once) a batch still runs as long as its longest answer, and every step
costs the whole batch. :func:`greedy_decode` takes the same greedy steps (argmax of the constrained float32
scores, the KV cache, the positions from the attention mask) but removes each ended row from the batch, its
cache, its mask and the span constraint, so a step costs only the rows still writing. It also reads the
model's log-probability of each chosen token (the mention scores) from the same logits.

It serves greedy search without other logits processors; :func:`plain_greedy` tells when that is what
``generate`` would do (sampling, beam search and a model whose generation config adds processors go through
``model.generate``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..decoding import SpanConstrainedLogitsProcessor

__all__ = ["greedy_decode", "plain_greedy"]

# GenerationConfig fields that do not change greedy search (token ids, bookkeeping, the sampling warpers that
# greedy search does not apply)
_GREEDY_NEUTRAL = frozenset(
    {
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "decoder_start_token_id",
        "transformers_version",
        "_from_model_config",
        "max_length",
        "max_new_tokens",
        "use_cache",
        "output_attentions",
        "output_hidden_states",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "typical_p",
        "do_sample",
        "num_beams",
        "cache_implementation",
    }
)


def plain_greedy(model: Any, generate_kwargs: Mapping[str, Any]) -> bool:
    """Whether ``model.generate(**generate_kwargs)`` would be plain greedy search (argmax, one row per
    record, no logits processor but the caller's): then :func:`greedy_decode` gives the same tokens."""
    if any(k not in ("do_sample", "num_beams") for k in generate_kwargs):
        return False
    if generate_kwargs.get("do_sample", False) or generate_kwargs.get("num_beams", 1) != 1:
        return False
    config = getattr(model, "generation_config", None)
    if config is None:
        return False
    diff = config.to_diff_dict()
    if diff.get("do_sample", False) or (diff.get("num_beams") or 1) != 1:
        return False
    return set(diff) <= _GREEDY_NEUTRAL


def greedy_decode(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    cache: Any,
    cached_tokens: int,
    processor: SpanConstrainedLogitsProcessor | None,
    max_new_tokens: int,
    eos_token_ids: Sequence[int],
) -> tuple[list[list[int]], list[list[float]]]:
    """Greedy answers of a left-padded batch, each row leaving the batch at its end-of-sequence token.

    Args:
        model: a causal LM (or a PEFT model around one).
        input_ids / attention_mask: the prompts, left-padded (``[shared prefix][padding][rest]`` with a prefix
            cache), on the model's device.
        cache: the key/value cache of the first ``cached_tokens`` columns (repeated for every row), or None.
        cached_tokens: how many leading columns ``cache`` holds (0 without a cache).
        processor: the span constraint of these rows (one sentence per row), or None for free decoding.
        max_new_tokens: the most tokens a row generates (its end-of-sequence token included).
        eos_token_ids: the tokens that end a row.

    Returns:
        ``(tokens, logprobs)``: for each row, the generated ids (ending with end-of-sequence where the row
        ended) and the model's log-probability of each, before the constraint.
    """
    rows = input_ids.shape[0]
    positions = attention_mask.long().cumsum(-1) - 1
    positions.masked_fill_(attention_mask == 0, 0)
    feed, feed_positions = input_ids[:, cached_tokens:], positions[:, cached_tokens:]
    sequences, mask = input_ids, attention_mask
    eos = torch.tensor(list(eos_token_ids), device=input_ids.device)
    alive = list(range(rows))  # the original row of each row still in the batch
    tokens: list[list[int]] = [[] for _ in range(rows)]
    logprobs: list[list[float]] = [[] for _ in range(rows)]
    for step in range(max_new_tokens):
        out = model(
            input_ids=feed,
            attention_mask=mask,
            position_ids=feed_positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values
        logits = out.logits[:, -1].float()
        scores = processor(sequences, logits) if processor is not None else logits
        chosen = scores.argmax(-1)
        logp = logits.gather(1, chosen[:, None]).squeeze(1) - torch.logsumexp(logits, -1)
        for r, token, value in zip(alive, chosen.tolist(), logp.tolist()):
            tokens[r].append(token)
            logprobs[r].append(value)
        if step + 1 == max_new_tokens:
            break
        ended = torch.isin(chosen, eos)
        sequences = torch.cat([sequences, chosen[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        feed, feed_positions = chosen[:, None], feed_positions[:, -1:] + 1
        if bool(ended.any()):
            keep = (~ended).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            cache.batch_select_indices(keep)
            sequences, mask, feed, feed_positions = (t[keep] for t in (sequences, mask, feed, feed_positions))
            kept = keep.tolist()
            alive = [alive[i] for i in kept]
            if processor is not None:
                processor.keep_rows(kept)
    return tokens, logprobs
