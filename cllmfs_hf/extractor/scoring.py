"""Mention scores: the model's probability of generating each predicted item, read from the logits that the
decoding computes anyway (no second forward pass), and the threshold that maximises F1 on labelled data.

- :class:`TokenLogProbs`: a logits processor placed first in the list (it sees the model's own scores,
  before the span constraint or any warper masks them). At each step it keeps the log-softmax of the scores;
  at the next step it reads off the log-probability of the token each row took. Rows are matched by their
  generated prefix, so beam search (which reorders rows) is scored correctly too.
- :func:`item_scores`: a kept span's score is the product of the probabilities of the tokens that make its
  item `` <<< span >>>`` (the decision to open it, its text and its closing delimiter), a token shared with
  the neighbouring item counting for both.
- :func:`choose_threshold`: predicts a labelled set once, then tries every score as the threshold and keeps
  the one with the highest micro F1 (ties: the lower threshold, which keeps more mentions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from ..template import CLOSE_DELIMITER, OPEN_DELIMITER, ParseResult

__all__ = ["TokenLogProbs", "choose_threshold", "item_scores"]


class TokenLogProbs(LogitsProcessor):
    """Records the model's log-probability of every generated token (see the module docstring).

    Args:
        prompt_width: the width of the prompt batch (generated tokens start after it).
        rows_per_record: rows of one record (its beams); row ``r`` belongs to record ``r // rows_per_record``.
    """

    def __init__(self, prompt_width: int, rows_per_record: int = 1) -> None:
        self.prompt_width = prompt_width
        self.rows_per_record = rows_per_record
        self._last: torch.Tensor | None = None
        # keyed by (record, generated prefix): two records with the same prefix have different prompts
        self._rows: dict[tuple[int, tuple[int, ...]], int] = {}
        self._paths: dict[tuple[int, tuple[int, ...]], tuple[float, ...]] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_width :].tolist()
        self._absorb(generated)
        self._last = torch.log_softmax(scores.float(), dim=-1)
        self._rows = {}
        for r, row in enumerate(generated):
            self._rows.setdefault((r // self.rows_per_record, tuple(row)), r)
        return scores

    def _absorb(self, generated: list[list[int]], records: list[int] | None = None) -> None:
        """Read the log-probability of the last token of each row from the previous step's scores."""
        if self._last is None:
            return
        keys, rows, tokens = [], [], []
        for r, row in enumerate(generated):
            record = records[r] if records is not None else r // self.rows_per_record
            key = (record, tuple(row))
            if not key[1] or key in self._paths:
                continue
            parent = self._rows.get((record, key[1][:-1]))
            if parent is None:
                continue
            keys.append(key)
            rows.append(parent)
            tokens.append(key[1][-1])
        if not keys:
            return
        values = self._last[torch.tensor(rows), torch.tensor(tokens)].tolist()
        for key, value in zip(keys, values):
            self._paths[key] = self._paths.get((key[0], key[1][:-1]), ()) + (value,)

    def logprobs(self, generated_row: Sequence[int], record: int = 0) -> tuple[float, ...]:
        """The log-probability of each token of a finished row of ``record`` (call after ``generate``)."""
        row = tuple(generated_row)
        self._absorb([list(row)], records=[record])
        # the row may have ended before the batch did (then padding follows): walk back to a recorded prefix
        while row and (record, row) not in self._paths:
            row = row[:-1]
        return self._paths.get((record, row), ())


def item_scores(
    parsed: ParseResult,
    answer: str,
    answer_offset: int,
    token_bytes: Sequence[int],
    logprobs: Sequence[float],
) -> list[float | None]:
    """The score of each kept span of ``parsed`` (the parse of ``answer``).

    Args:
        parsed: the parse of ``answer`` (well-formed: items follow each other from ``items_start``).
        answer: the parsed text.
        answer_offset: bytes of ``answer`` before the first generated token (a prefilled preamble).
        token_bytes: the number of bytes each generated token contributes.
        logprobs: the log-probability of each generated token.
    """
    if not parsed.well_formed:  # free text (constrained=False) that strayed from the template: no item bounds
        return [None] * len(parsed.spans)
    bounds = [0]
    for n in token_bytes:
        bounds.append(bounds[-1] + n)
    item_ranges = []
    pos = parsed.items_start
    for item in parsed.items:
        end = pos + len(OPEN_DELIMITER) + len(item) + len(CLOSE_DELIMITER)
        start_b = len(answer[:pos].encode("utf-8")) - answer_offset
        end_b = start_b + len(answer[pos:end].encode("utf-8"))
        item_ranges.append((start_b, end_b))
        pos = end
    scores = []
    for index in parsed.span_items:
        a, b = item_ranges[index]
        total = sum(lp for lp, lo, hi in zip(logprobs, bounds, bounds[1:]) if lo < b and hi > a)
        scores.append(math.exp(total))
    return scores


def choose_threshold(
    extractor: Any,  # a NERExtractor (not imported: api imports this module)
    sentences: Any,
    entity_types: Sequence[str] | None = None,
    **predict_kwargs: Any,
) -> tuple[float, float]:
    """``(threshold, f1)``: the score threshold with the best micro F1 on labelled ``sentences`` (the support
    set, or a dev split), from one prediction pass. Use it as ``predict(..., threshold=...)``.

    Example:
        >>> threshold, f1 = choose_threshold(extractor, dev_sentences)  # doctest: +SKIP
        >>> extractor.predict(texts, threshold=threshold)  # doctest: +SKIP
    """
    from ..data.records import label_set
    from ..data.types import Mention
    from ..evaluation import evaluate_sentences
    from .validation import as_sentences

    labelled = as_sentences(sentences)
    if not labelled:
        raise ValueError(
            "choose_threshold needs labelled sentences (the support set or a dev split), got none."
        )
    types = entity_types
    if types is None:
        types = extractor.entity_types if extractor.entity_types is not None else label_set(labelled)
    predicted = extractor.predict([s.text for s in labelled], types, **predict_kwargs)
    candidates = sorted({m["score"] for found in predicted for m in found if m["score"] is not None})
    best: tuple[float, float] | None = None
    for threshold in [0.0, *candidates]:
        kept = [
            [
                Mention(m["start"], m["end"], m["label"])
                for m in found
                if m["score"] is None or m["score"] >= threshold
            ]
            for found in predicted
        ]
        f1 = evaluate_sentences(labelled, kept).f1
        if best is None or f1 > best[1]:
            best = (threshold, f1)
    return best
