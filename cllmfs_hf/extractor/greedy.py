"""Greedy decoding with continuous batching: each record leaves the batch at its end, others take its row.

``model.generate`` keeps every row of a batch until the last one ends: after a trained model's typical answer
(the preamble, then end-of-sequence at once) a batch still runs as long as its longest answer, and every step
costs the whole batch. :func:`greedy_stream` takes the same greedy steps per record (argmax of the constrained
float32 scores, the KV cache, positions from the attention mask) but

- removes each ended record from the batch, its cache, its mask and the span constraint;
- admits waiting records into the freed rows: their prompts are encoded in one forward (from the shared prefix
  cache) and their key/value caches joined to the running batch's, left-padded to a common width (the padding
  is masked out, so a row sees exactly its own tokens at its own positions);
- gives each record its own cap, so an answer's length never depends on the records batched with it.

On a CPU a decoding step costs nearly as much for 4 rows as for 32 (the weights are read once per step), so a
batch that keeps its rows full decodes the same tokens in far fewer steps than one that drains to a single
runaway answer. It also reads the model's log-probability of each chosen token (the mention scores) from the
same logits. Caches other than a plain ``DynamicCache`` are not joined: records are then admitted only into an
empty batch (the batch drains, then the next one starts).

It serves greedy search without other logits processors; :func:`plain_greedy` tells when that is what
``generate`` would do (sampling, beam search and a model whose generation config adds processors go through
``model.generate``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from ..decoding import SpanConstrainedLogitsProcessor, SpanConstraintConfig
from .prefix_cache import batch_cache, layout_batch

__all__ = ["GreedyRequest", "greedy_stream", "plain_greedy"]

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
    record, no logits processor but the caller's): then :func:`greedy_stream` gives the same tokens."""
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


@dataclass
class GreedyRequest:
    """One record to decode: its prompt, its cap and what constrains it."""

    #: the prompt's token ids (it starts with ``prefix[0]`` when ``prefix`` is given)
    prompt_ids: list[int]
    #: the most tokens the answer may have (its end-of-sequence token included)
    max_new_tokens: int
    #: the input sentence the span constraint copies from (ignored without a constraint)
    sentence: str = ""
    #: the shared prompt prefix and its batch-1 key/value cache (records with the same one are encoded together)
    prefix: tuple[list[int], Any] | None = None


def _joinable(cache: Any) -> bool:
    """Whether ``cache`` is a plain dynamic cache whose rows can be joined with another's (left-padded)."""
    return type(cache) is DynamicCache and all(
        type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers
    )


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    if width == 0:
        return t
    shape = list(t.shape)
    shape[dim] = width
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _join(cache: Any, mask: torch.Tensor, new_cache: Any, new_mask: torch.Tensor) -> torch.Tensor:
    """Append ``new_cache``'s rows to ``cache`` (in place), the narrower of the two left-padded with masked
    columns; returns the joined attention mask."""
    width = max(mask.shape[1], new_mask.shape[1])
    pad_old, pad_new = width - mask.shape[1], width - new_mask.shape[1]
    for layer, new in zip(cache.layers, new_cache.layers):
        layer.keys = torch.cat([_left_pad(layer.keys, pad_old, 2), _left_pad(new.keys, pad_new, 2)])
        layer.values = torch.cat([_left_pad(layer.values, pad_old, 2), _left_pad(new.values, pad_new, 2)])
    return torch.cat([_left_pad(mask, pad_old, 1), _left_pad(new_mask, pad_new, 1)])


def _trim(cache: Any, mask: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns no row attends to any more (the rows that needed them left); returns the mask."""
    first = int(mask.any(0).int().argmax())
    if first == 0:
        return mask
    for layer in cache.layers:
        layer.keys = layer.keys[:, :, first:]
        layer.values = layer.values[:, :, first:]
    return mask[:, first:]


def greedy_stream(
    model: Any,
    requests: Sequence[GreedyRequest],
    *,
    batch_size: int,
    pad_token_id: int,
    eos_token_ids: Sequence[int],
    device: Any,
    tokenizer: Any = None,
    constraint: SpanConstraintConfig | None = None,
    admissions: list[int] | None = None,
) -> Iterator[tuple[int, list[int], list[float]]]:
    """Greedy answers of ``requests`` with continuous batching, yielded as each ends:
    ``(request index, generated ids, log-probability of each)``.

    Args:
        model: a causal LM (or a PEFT model around one), in inference mode.
        requests: the records, admitted in this order (consecutive ones with the same ``prefix`` are encoded
            together: put records of one prefix and similar length next to each other).
        batch_size: the most rows decoded at once.
        pad_token_id / eos_token_ids: the padding id of prompts and the ids that end an answer.
        device: where the prompts go (the model's device).
        tokenizer / constraint: with a :class:`~cllmfs_hf.decoding.SpanConstraintConfig`, each answer is
            span-constrained to its request's ``sentence``; None decodes freely.
        admissions: if given, the number of records of each prompt-encoding forward is appended to it.

    The ids of an answer end with end-of-sequence where it ended (else it ran to its cap); the
    log-probabilities are the model's own, before the constraint.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    eos = torch.tensor(list(eos_token_ids), device=device)
    # admit records once this many rows are free: a prompt forward of a few rows costs about as much per token
    # as one of many, but each forward has a fixed cost, so rows are refilled in groups
    refill_at = max(1, batch_size // 4)
    pending = deque(range(len(requests)))
    rows: list[int] = []  # the request of each row
    tokens: dict[int, list[int]] = {}
    logprobs: dict[int, list[float]] = {}
    cache: Any = None
    mask = positions = feed = None  # attention mask of the cached columns, next positions, last tokens
    processor: SpanConstrainedLogitsProcessor | None = None
    joinable: bool | None = None
    while pending or rows:
        parts: list[torch.Tensor] = []
        if rows:  # one step of the running rows
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            out = model(
                input_ids=feed,
                attention_mask=mask,
                position_ids=positions[:, None],
                cache=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache = _cache_of(out)
            parts.append(out.logits[:, -1].float())
            positions = positions + 1
        free = batch_size - len(rows)
        if pending and free and (not rows or (joinable and free >= min(refill_at, len(pending)))):
            chunk = [pending.popleft()]
            prefix = requests[chunk[0]].prefix
            while pending and len(chunk) < free and requests[pending[0]].prefix is prefix:
                chunk.append(pending.popleft())
            if admissions is not None:
                admissions.append(len(chunk))
            new_cache, new_mask, new_positions, logits = _encode(
                model, [requests[i] for i in chunk], prefix, pad_token_id, device
            )
            if joinable is None:
                joinable = _joinable(new_cache)
            if rows:
                mask = _join(cache, mask, new_cache, new_mask)
                positions = torch.cat([positions, new_positions])
            else:
                cache, mask, positions = new_cache, new_mask, new_positions
            parts.append(logits)
            rows.extend(chunk)
            for i in chunk:
                tokens[i], logprobs[i] = [], []
            if constraint is not None:
                sentences = [requests[i].sentence for i in chunk]
                if processor is None:
                    processor = SpanConstrainedLogitsProcessor(
                        tokenizer, sentences, constraint, eos_token_id=list(eos_token_ids)
                    )
                else:
                    processor.add_rows(sentences)
        logits = parts[0] if len(parts) == 1 else torch.cat(parts)
        scores = processor.mask_scores(logits) if processor is not None else logits
        chosen = scores.argmax(-1)
        logp = logits.gather(1, chosen[:, None]).squeeze(1) - torch.logsumexp(logits, -1)
        ended = torch.isin(chosen, eos).tolist()
        keep: list[int] = []
        for r, (i, token, value) in enumerate(zip(rows, chosen.tolist(), logp.tolist())):
            tokens[i].append(token)
            logprobs[i].append(value)
            if ended[r] or len(tokens[i]) >= requests[i].max_new_tokens:
                yield i, tokens.pop(i), logprobs.pop(i)
            else:
                keep.append(r)
        if len(keep) == len(rows):
            feed = chosen[:, None]
            if processor is not None:
                processor.advance_rows(chosen.tolist())
            continue
        rows = [rows[r] for r in keep]
        if not rows:  # the batch is empty: the next records start a new one
            cache = mask = positions = feed = processor = None
            continue
        index = torch.tensor(keep, device=chosen.device)
        cache.batch_select_indices(index)
        mask, positions, feed = mask[index], positions[index], chosen[index][:, None]
        if joinable:
            mask = _trim(cache, mask)
        if processor is not None:
            processor.keep_rows(keep)
            processor.advance_rows(feed[:, 0].tolist())


def _cache_of(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return out.past_key_values if cache is None else cache


def _encode(
    model: Any,
    chunk: list[GreedyRequest],
    prefix: tuple[list[int], Any] | None,
    pad_token_id: int,
    device: Any,
) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward of the prompts of ``chunk`` (laid out ``[prefix][left padding][rest]``, the prefix from its
    cache): their key/value cache, attention mask, next positions and the logits of their first token."""
    input_ids, mask = layout_batch([r.prompt_ids for r in chunk], prefix[0] if prefix else None, pad_token_id)
    input_ids, mask = input_ids.to(device), mask.to(device)
    positions = mask.long().cumsum(-1) - 1
    positions.masked_fill_(mask == 0, 0)
    cached = len(prefix[0]) if prefix else 0
    out = model(
        input_ids=input_ids[:, cached:],
        attention_mask=mask,
        position_ids=positions[:, cached:],
        cache=batch_cache(prefix[1], len(chunk)) if prefix else None,
        use_cache=True,
        logits_to_keep=1,
    )
    return _cache_of(out), mask, positions[:, -1] + 1, out.logits[:, -1].float()
