"""Records and batches of ``predict``: one record per (window, entity type), batches of one type with the
longest prompts first, one ``model.generate`` call per batch (span-constrained, reusing the prefix cache; the
path of sampling and beam search) and the parsing of the generated answers back to character spans.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessorList

from ..decoding import SpanConstrainedLogitsProcessor, SpanConstraintConfig, parse_output
from ..template import PREAMBLE
from .greedy import GreedyRequest, StreamCounters, greedy_stream
from .prefix_cache import batch_cache, layout_batch
from .scoring import TokenLogProbs, item_scores
from .stats import PredictionStats

__all__ = ["generate_batch", "parse_answers", "plan_batches", "stream_spans"]


@dataclass
class _Record:
    text_index: int
    window: int
    label: str
    sentence: str
    offset: int
    prompt_ids: list[int]
    sentence_tokens: int


def plan_batches(records: list[_Record], types: Sequence[str], batch_size: int) -> list[list[_Record]]:
    """Batches of at most ``batch_size`` records of one type each (its prompts share a prefix), in the
    order of ``types``, longest prompts first (least padding)."""
    type_rank = {t: i for i, t in enumerate(types)}
    order = sorted(
        range(len(records)), key=lambda i: (type_rank[records[i].label], -len(records[i].prompt_ids))
    )
    batches: list[list[_Record]] = []
    for i in order:
        r = records[i]
        if batches and len(batches[-1]) < batch_size and batches[-1][0].label == r.label:
            batches[-1].append(r)
        else:
            batches.append([r])
    return batches


def parse_answers(
    batch: list[_Record],
    generated: list[list[int]],
    eos_token_ids: Sequence[int],
    trie: Any,
    word_boundaries: bool,
    stats: PredictionStats,
    preamble_in_prompt: bool = False,
    logprobs: Sequence[Sequence[float]] | None = None,
    ordered: bool = False,
) -> list[list[tuple[int, int, float | None]]]:
    """The character spans (in each record's sentence) of each generated row, with their scores (None
    without ``logprobs``, the log-probability of each generated token of each row); an answer cut before
    end-of-sequence keeps its complete mentions. Counts tokens, truncations and dropped spans into ``stats``.
    With ``preamble_in_prompt`` the rows hold what follows the preamble the prompts ended with; ``ordered``:
    the rows were decoded with ordered spans (each maps after the one before it)."""
    eos = set(eos_token_ids)
    offset = len(PREAMBLE.encode("utf-8")) if preamble_in_prompt else 0
    results: list[list[tuple[int, int, float | None]]] = []
    for i, (r, row) in enumerate(zip(batch, generated)):
        end = next((i for i, t in enumerate(row) if t in eos), None)
        ended = end is not None
        ids = row[:end] if ended else row
        stats.generated_tokens += len(ids) + int(ended)
        text = (PREAMBLE if preamble_in_prompt else "") + trie.decode(ids)
        parsed = parse_output(
            text, r.sentence, word_boundaries=word_boundaries, complete=ended, ordered=ordered
        )
        if logprobs is not None and parsed.spans:
            token_bytes = [len(trie.contributions[t] or b"") if 0 <= t < trie.vocab_size else 0 for t in ids]
            scores = item_scores(parsed, text, offset, token_bytes, logprobs[i][: len(ids)])
        else:
            scores = [None] * len(parsed.spans)
        stats.truncated += int(not ended)
        stats.dropped_not_in_input += parsed.dropped_not_in_input
        stats.dropped_repeats += parsed.dropped_repeats
        stats.malformed += int(not parsed.well_formed)
        results.append([(s, e, score) for (s, e), score in zip(parsed.spans, scores)])
    return results


def generate_batch(
    model: Any,
    tokenizer: Any,
    batch: list[_Record],
    *,
    prefix: tuple[list[int], Any] | None,
    constrained: bool,
    constraint: SpanConstraintConfig,
    cap: int,
    pad_token_id: int,
    eos_token_ids: list[int],
    trie: Any,
    device: Any,
    generate_kwargs: dict[str, Any],
    stats: PredictionStats,
) -> list[list[tuple[int, int, float | None]]]:
    """The spans (with scores) of each record's answer from one ``generate`` call of at most ``cap`` new tokens.

    ``prefix`` is the batch's checked prefix cache (every prompt starts with its ids), or ``None``;
    ``generate_kwargs`` go to ``model.generate`` (greedy unless they say otherwise). This is the path of
    sampling, beam search, extra logits processors and ``drop_finished_rows=False``; plain greedy search runs
    :func:`.greedy.greedy_stream` (continuous batching) instead.
    """
    kwargs = dict(generate_kwargs)
    input_ids, attention = layout_batch(
        [r.prompt_ids for r in batch], prefix[0] if prefix is not None else None, pad_token_id
    )
    proc = None
    if constrained:
        proc = SpanConstrainedLogitsProcessor(
            tokenizer, [r.sentence for r in batch], constraint, eos_token_id=eos_token_ids
        )
    generated, token_logprobs = _generate(
        model, input_ids, attention, kwargs, proc, prefix, cap, pad_token_id, eos_token_ids, device
    )
    if proc is not None:
        stats.constraint_seconds += proc.seconds
        stats.constrained_row_steps += proc.row_steps
    return parse_answers(
        batch,
        generated,
        eos_token_ids,
        trie,
        constraint.word_boundaries,
        stats,
        preamble_in_prompt=constraint.preamble_in_prompt,
        logprobs=token_logprobs,
        ordered=constrained and constraint.ordered_spans,
    )


def _generate(
    model: Any,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    kwargs: dict[str, Any],
    proc: SpanConstrainedLogitsProcessor | None,
    prefix: tuple[list[int], Any] | None,
    cap: int,
    pad_token_id: int,
    eos_token_ids: list[int],
    device: Any,
) -> tuple[list[list[int]], list[tuple[float, ...]]]:
    """One ``model.generate`` call (sampling, beam search, user processors): each row's generated ids and the
    log-probabilities :class:`TokenLogProbs` read from the model's own scores."""
    width = input_ids.shape[1]
    beams = int(kwargs.get("num_beams") or getattr(model.generation_config, "num_beams", 1) or 1)
    if prefix is not None:
        kwargs["cache"] = batch_cache(prefix[1], len(input_ids) * beams)
    # first: it must see the model's own scores, before the constraint or a warper changes them
    logprobs = TokenLogProbs(width, rows_per_record=beams)
    processors = LogitsProcessorList([logprobs])
    if proc is not None:
        processors.append(proc)
    user_processors = kwargs.pop("logits_processor", None)
    if user_processors:
        processors.extend(user_processors)
    kwargs.setdefault("do_sample", False)
    if kwargs.get("num_return_sequences", 1) != 1:
        raise ValueError("num_return_sequences must be 1 in predict (one answer per record).")
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            logits_processor=processors,
            max_new_tokens=cap,
            eos_token_id=eos_token_ids,
            pad_token_id=pad_token_id,
            **kwargs,
        )
    generated = out[:, width:].tolist()
    return generated, [logprobs.logprobs(row, record=i) for i, row in enumerate(generated)]


def stream_spans(
    model: Any,
    tokenizer: Any,
    records: list[_Record],
    prefixes: Sequence[tuple[list[int], Any] | None],
    caps: Sequence[int],
    *,
    batch_size: int,
    constrained: bool,
    constraint: SpanConstraintConfig,
    pad_token_id: int,
    eos_token_ids: list[int],
    trie: Any,
    device: Any,
    stats: PredictionStats,
) -> Iterator[tuple[_Record, list[tuple[int, int, float | None]]]]:
    """Each record with its spans (and scores), as its greedy answer ends: :func:`.greedy.greedy_stream`
    (continuous batching) over ``records`` in this order, each with its checked prefix cache (or None) and
    its cap. ``stats.batches`` counts the groups of records that joined the batch; the constraint's time is added
    to ``stats`` when the stream ends."""
    requests = [GreedyRequest(r.prompt_ids, cap, r.sentence, p) for r, p, cap in zip(records, prefixes, caps)]
    counters = StreamCounters()
    with torch.inference_mode():
        for i, generated, logprobs in greedy_stream(
            model,
            requests,
            batch_size=batch_size,
            pad_token_id=pad_token_id,
            eos_token_ids=eos_token_ids,
            device=device,
            tokenizer=tokenizer,
            constraint=constraint if constrained else None,
            counters=counters,
        ):
            (spans,) = parse_answers(
                [records[i]],
                [generated],
                eos_token_ids,
                trie,
                constraint.word_boundaries,
                stats,
                preamble_in_prompt=constraint.preamble_in_prompt,
                logprobs=[logprobs],
                ordered=constrained and constraint.ordered_spans,
            )
            yield records[i], spans
    stats.batches = len(counters.admissions)
    stats.constraint_seconds += counters.constraint_seconds
    stats.constrained_row_steps += counters.constrained_row_steps
