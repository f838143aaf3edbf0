"""Greedy decoding with continuous batching: each record leaves the batch at its end, others take its row.

``model.generate`` keeps every row of a batch until the last one ends: after a trained model's typical answer
(the preamble, then end-of-sequence at once) a batch still runs as long as its longest answer, and every step
costs the whole batch. :func:`greedy_stream` takes the same greedy steps per record (argmax of the constrained
float32 scores, the KV cache, positions from the attention mask) but

- removes each ended record from the batch, its cache, its mask and the span constraint (lazily: an ended row
  stays, its output ignored, until records are admitted into its place or the ended rows are as many as the
  others, because dropping rows copies the whole cache);
- admits waiting records into the freed rows: their prompts are encoded from the shared prefix cache, in
  groups of similar length (:func:`_length_groups`: less padding), and their key/value caches joined to the
  running batch's, left-padded to a common width (the padding is masked out, so a row sees exactly its own
  tokens at its own positions);
- keeps the joined cache in buffers with spare columns (:class:`_SpareColumnsLayer`), so a step writes its
  keys and values in place instead of copying the cache;
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
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import DynamicCache, DynamicLayer

from ..decoding import SpanConstrainedLogitsProcessor, SpanConstraintConfig
from .prefix_cache import batch_cache, layout_batch

__all__ = ["GreedyRequest", "StreamCounters", "greedy_stream", "plain_greedy"]

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


#: Columns a joined cache keeps free after its last one, so that the next steps write their keys and values in
#: place; a plain DynamicLayer copies the whole cache at every step (torch.cat), which on a CPU cost as much as
#: the attention itself.
_SPARE_COLUMNS = 32


class _SpareColumnsLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views of buffers with spare columns: a decoding step writes
    its column in place, and rows are selected or joined with one copy of the buffers."""

    def __init__(self, parts: Sequence[tuple[torch.Tensor, torch.Tensor, int]], width: int) -> None:
        """The rows of each ``(keys, values, left padding)`` of ``parts`` stacked in that order, each
        left-padded with zeros to ``width`` columns."""
        super().__init__()
        self._fill(parts, width)

    def _fill(self, parts: Sequence[tuple[torch.Tensor, torch.Tensor, int]], width: int) -> None:
        rows = sum(keys.shape[0] for keys, _values, _pad in parts)
        keys0 = parts[0][0]
        shape = (rows, keys0.shape[1], width + _SPARE_COLUMNS, keys0.shape[3])
        self._key_buffer = keys0.new_empty(shape)
        self._value_buffer = parts[0][1].new_empty(shape[:3] + (parts[0][1].shape[3],))
        row = 0
        for keys, values, pad in parts:
            for buffer, states in ((self._key_buffer, keys), (self._value_buffer, values)):
                block = buffer[row : row + states.shape[0]]
                block[:, :, :pad].zero_()
                block[:, :, pad:width] = states
            row += keys.shape[0]
        self.device = keys0.device
        self.is_initialized = True
        self._start, self._end = 0, width
        self._views()

    def _views(self) -> None:
        self.keys = self._key_buffer[:, :, self._start : self._end]
        self.values = self._value_buffer[:, :, self._start : self._end]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        if self._end + new > self._key_buffer.shape[2]:  # out of spare columns: one copy into larger buffers
            self._fill([(self.keys, self.values, 0)], self._end - self._start)
        self._key_buffer[:, :, self._end : self._end + new] = key_states
        self._value_buffer[:, :, self._end : self._end + new] = value_states
        self._end += new
        self._views()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._key_buffer = self._key_buffer.index_select(0, indices)
        self._value_buffer = self._value_buffer.index_select(0, indices)
        self._views()

    def drop_leading(self, columns: int) -> None:
        """Forget the first ``columns`` columns (no copy)."""
        self._start += columns
        self._views()


def _join(
    cache: Any, mask: torch.Tensor | None, parts: Sequence[tuple[Any, torch.Tensor]]
) -> tuple[Any, torch.Tensor]:
    """The rows of ``cache`` (None: no rows yet) and then those of each ``(cache, mask)`` of ``parts`` in one
    cache of :class:`_SpareColumnsLayer` layers (one copy), the narrower ones left-padded with masked columns;
    returns it with the joined attention mask."""
    blocks = ([] if cache is None else [(cache, mask)]) + list(parts)
    width = max(m.shape[1] for _c, m in blocks)
    joined = blocks[0][0]
    joined.layers = [
        _SpareColumnsLayer(
            [(c.layers[i].keys, c.layers[i].values, width - m.shape[1]) for c, m in blocks], width
        )
        for i in range(len(joined.layers))
    ]
    return joined, torch.cat([F.pad(m, (width - m.shape[1], 0)) for _c, m in blocks])


#: The cost of one more prompt-encoding forward, in prompt tokens (on a CPU a forward of one short row costs
#: about as much as 32 tokens of a batched one: the weights are read once per forward).
_FORWARD_COST_TOKENS = 32


def _length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """The indices of ``lengths`` in groups encoded by one forward each, longest first: the grouping of the
    sorted lengths that costs least, a group costing its rows x its longest prompt (the padding included)
    plus :data:`_FORWARD_COST_TOKENS` (a shortest-path over the split points)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: the cost of the first j prompts
    split = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + (j - i) * lengths[order[i]] + _FORWARD_COST_TOKENS
            if cost < best[j]:
                best[j], split[j] = cost, i
    groups: list[list[int]] = []
    j = n
    while j:
        groups.append(order[split[j] : j])
        j = split[j]
    return groups[::-1]


def _trim(cache: Any, mask: torch.Tensor) -> torch.Tensor:
    """Drop the leading columns no row attends to any more (the rows that needed them left); returns the mask."""
    first = int(mask.any(0).int().argmax())
    if first == 0:
        return mask
    for layer in cache.layers:
        layer.drop_leading(first)
    return mask[:, first:]


@dataclass
class StreamCounters:
    """What a :func:`greedy_stream` did, filled in as it runs."""

    #: the number of records of each prompt-encoding forward
    admissions: list[int] = field(default_factory=list)
    #: time spent in the span constraint (its processors' own ``seconds``) and the rows it masked
    constraint_seconds: float = 0.0
    constrained_row_steps: int = 0

    def add_processor(self, processor: SpanConstrainedLogitsProcessor | None) -> None:
        """Count a processor the stream is done with."""
        if processor is not None:
            self.constraint_seconds += processor.seconds
            self.constrained_row_steps += processor.row_steps


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
    counters: StreamCounters | None = None,
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
        counters: if given, filled in with what the stream did (:class:`StreamCounters`).

    The ids of an answer end with end-of-sequence where it ended (else it ran to its cap); the
    log-probabilities are the model's own, before the constraint.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    eos = torch.tensor(list(eos_token_ids), device=device)
    # admit records once this many rows are free: a prompt forward of a few rows costs about as much per token
    # as one of many, but each forward has a fixed cost, so rows are refilled in groups
    refill_at = max(1, batch_size // 4)
    counters = StreamCounters() if counters is None else counters
    pending = deque(range(len(requests)))
    rows: list[int | None] = []  # the request of each row (None: ended, not yet dropped)
    tokens: dict[int, list[int]] = {}
    logprobs: dict[int, list[float]] = {}
    cache: Any = None
    mask = positions = feed = None  # attention mask of the cached columns, next positions, last tokens
    processor: SpanConstrainedLogitsProcessor | None = None
    joinable: bool | None = None

    def admits(live: int) -> bool:
        """Whether waiting records join a batch of ``live`` rows now (an empty batch always takes them; a
        running one once enough rows are free, and only if caches can be joined)."""
        free = batch_size - live
        if not pending or free <= 0:
            return False
        return live == 0 or (bool(joinable) and free >= min(refill_at, len(pending)))

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
        if admits(len(rows)):
            free = batch_size - len(rows)
            chunk = [pending.popleft()]
            prefix = requests[chunk[0]].prefix
            while pending and len(chunk) < free and requests[pending[0]].prefix is prefix:
                chunk.append(pending.popleft())
            # rows of similar prompt lengths are encoded together (less padding); joined into one batch after
            cached = len(prefix[0]) if prefix else 0
            groups = _length_groups([len(requests[i].prompt_ids) - cached for i in chunk])
            chunk = [chunk[g] for group in groups for g in group]
            encoded: list[tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]] = []
            start = 0
            for group in groups:
                if encoded and not joinable:  # the other groups wait for an empty batch
                    pending.extendleft(reversed(chunk[start:]))
                    chunk = chunk[:start]
                    break
                members = [requests[i] for i in chunk[start : start + len(group)]]
                encoded.append(_encode(model, members, prefix, pad_token_id, device))
                counters.admissions.append(len(group))
                if joinable is None:
                    joinable = _joinable(encoded[0][0])
                start += len(group)
            if joinable:
                cache, mask = _join(cache if rows else None, mask, [(c, m) for c, m, _p, _l in encoded])
                positions = torch.cat(([positions] if rows else []) + [p for _c, _m, p, _l in encoded])
            else:
                cache, mask, positions, _logits = encoded[0]
            logits = torch.cat([lg for _c, _m, _p, lg in encoded])
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
        chosen_ids = chosen.tolist()
        for r, (i, token, value) in enumerate(zip(rows, chosen_ids, logp.tolist())):
            if i is None:  # a row that ended before: it waits to be dropped
                continue
            tokens[i].append(token)
            logprobs[i].append(value)
            if ended[r] or len(tokens[i]) >= requests[i].max_new_tokens:
                yield i, tokens.pop(i), logprobs.pop(i)
                rows[r] = None
        feed = chosen[:, None]
        if processor is not None:
            processor.advance_rows(chosen_ids)
        keep = [r for r, i in enumerate(rows) if i is not None]
        if not keep:  # the batch is empty: the next records start a new one
            counters.add_processor(processor)
            rows, cache, mask, positions, feed, processor = [], None, None, None, None, None
            continue
        if len(keep) == len(rows):
            continue
        # Dropping rows copies the whole cache, so ended rows stay in the batch (fed their last token, their
        # answers ignored: a row costs a step far less than the copy) until records are admitted into their
        # place, or until they are as many as the rows still answering.
        if admits(len(keep)) or len(rows) - len(keep) >= len(keep):
            rows = [rows[r] for r in keep]
            index = torch.tensor(keep, device=chosen.device)
            cache.batch_select_indices(index)
            mask, positions, feed = mask[index], positions[index], feed[index]
            if joinable:
                mask = _trim(cache, mask)
            if processor is not None:
                processor.keep_rows(keep)


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
