"""``CLLMFSDataCollator``: tokenizes instruction records and carries the token positions of their spans.

Design decision: TRL's own dataset preparation is skipped (``dataset_kwargs={"skip_prepare_dataset": True}``,
which :class:`cllmfs_hf.config.CLLMFSConfig` forces) and this collator tokenizes the raw records. Reasons:

- The contrastive term needs the token positions of the type name and of every mention, computed from the
  SAME tokenization as ``input_ids`` (offset mappings of the chat-templated text). TRL's preparation tokenizes
  in a ``map`` that keeps no offsets, truncates ``input_ids``/``labels`` without knowing about spans, and drops
  examples whose completion is entirely truncated without saying so.
- Tokenizing here reproduces TRL's prompt-completion tokenization exactly (prompt rendered with the generation
  prompt, prompt + completion rendered by the same chat template, completion = where the two token sequences
  diverge, labels ``-100`` on the prompt), so with both auxiliary weights at 0 the loss equals the plain
  ``SFTTrainer`` loss. The cost is a few milliseconds of tokenization per batch.

Each record's user message content is located inside the rendered chat text (the template may add a system
prompt, as SmolLM2's does); character spans relative to the content are then mapped to tokens through the
tokenizer's offset mapping (a fast tokenizer is required). A mention whose tokens are cut by ``max_length`` is
dropped from the contrastive term and counted (``stats``), never pointed at other tokens. A record whose
completion is entirely truncated is kept (it adds no LM loss) and reported in a warning with the count.

Batch keys: ``input_ids``, ``attention_mask``, ``labels`` (+ ``position_ids`` under left padding) and

- ``cl_anchor_span`` ``[B, 2]``: type-name tokens ``[start, end)``, or the last prompt token with
  ``anchor="prompt_end"`` (``-1`` when cut by truncation)
- ``cl_positive_spans`` ``[B, M, 2]``: gold mentions of the record's type, ``-1``-padded
- ``cl_negative_spans`` ``[B, M, K, 2]``: per mention, boundary-shifted spans, other-type mentions and
  non-entity spans, ``-1``-padded
- ``cl_row_label`` ``[B]``: batch-local id of the record's entity type (for in-batch negatives)

Example:
    >>> from cllmfs_hf.data.types import AnnotatedSentence
    >>> from cllmfs_hf.data.records import build_records
    >>> s = AnnotatedSentence.from_tokens(["Ada", "met", "Bob"], [(0, 1, "PER"), (2, 3, "PER")])
    >>> collator = CLLMFSDataCollator(tokenizer)  # doctest: +SKIP
    >>> batch = collator(build_records([s], ["PER"]))  # doctest: +SKIP
    >>> batch["cl_positive_spans"].shape  # doctest: +SKIP
    torch.Size([1, 2, 2])
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import CONTRASTIVE_ANCHORS, NegativeSamplingConfig

__all__ = ["CLLMFSDataCollator", "EncodedRecord", "REQUIRED_RECORD_KEYS", "SPAN_KEYS"]

logger = logging.getLogger(__name__)

REQUIRED_RECORD_KEYS = ("prompt", "completion", "sentence_offset", "type_span", "spans", "other_spans")
SPAN_KEYS = ("cl_anchor_span", "cl_positive_spans", "cl_negative_spans", "cl_row_label")

Span = tuple[int, int]


@dataclass
class EncodedRecord:
    """One tokenized record: ids, labels and the token spans ``[start, end)`` of its parts (unpadded)."""

    input_ids: list[int]
    labels: list[int]
    label: str
    anchor: Span | None
    positives: list[Span]
    negatives: list[list[Span]]
    full_length: int = 0
    completion_truncated: bool = False
    dropped_mentions: int = 0
    unmapped_spans: int = 0


@dataclass
class CLLMFSDataCollator:
    """Tokenize CLLMFS instruction records (``cllmfs_hf.data.records``) into a padded batch with span positions.

    Example:
        >>> collator = CLLMFSDataCollator(tokenizer, max_length=512, padding_side="left")  # doctest: +SKIP
    """

    tokenizer: Any = field(metadata={"help": "A fast tokenizer with a chat template."})
    max_length: int | None = field(
        default=1024, metadata={"help": "Truncate (keep_start) to this many tokens."}
    )
    padding_side: str | None = field(
        default=None, metadata={"help": "'right' or 'left' (default: the tokenizer's padding_side)."}
    )
    pad_to_multiple_of: int | None = field(
        default=None, metadata={"help": "Pad lengths to a multiple of this."}
    )
    completion_only_loss: bool = field(default=True, metadata={"help": "Labels -100 on the prompt tokens."})
    negatives: NegativeSamplingConfig = field(
        default_factory=NegativeSamplingConfig,
        metadata={
            "help": "Which negatives to build per mention (a NegativeSamplingConfig; a CLLMFSConfig is one)."
        },
    )
    seed: int = field(
        default=0, metadata={"help": "Seed of the (per-record deterministic) non-entity sampling."}
    )
    anchor: str = field(
        default="type_name",
        metadata={
            "help": "What cl_anchor_span points at: 'type_name' (the type-name tokens of the instruction) or "
            "'prompt_end' (the last prompt token, the one the answer is generated from)."
        },
    )
    chat_template_kwargs: dict[str, Any] | None = field(
        default=None, metadata={"help": "Extra keyword arguments for apply_chat_template."}
    )

    def __post_init__(self) -> None:
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(
                "CLLMFSDataCollator needs a fast tokenizer (offset mappings locate the spans); load it with "
                "AutoTokenizer.from_pretrained(..., use_fast=True)."
            )
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(
                "CLLMFSDataCollator: the tokenizer has no chat template; set tokenizer.chat_template (or "
                "SFTConfig.chat_template_path) before training."
            )
        if self.tokenizer.pad_token_id is None:
            raise ValueError(
                "CLLMFSDataCollator: the tokenizer has no pad token; set tokenizer.pad_token (e.g. to its eos token)."
            )
        if self.padding_side is None:
            self.padding_side = self.tokenizer.padding_side
        if self.anchor not in CONTRASTIVE_ANCHORS:
            raise ValueError(f"anchor must be one of {list(CONTRASTIVE_ANCHORS)}, got {self.anchor!r}.")
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {self.padding_side!r}.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be >= 1 or None, got {self.max_length}.")
        if not isinstance(self.negatives, NegativeSamplingConfig):
            raise TypeError(
                f"negatives must be a cllmfs_hf.config.NegativeSamplingConfig, got {type(self.negatives).__name__}."
            )
        self._warned_prefix = False
        self.stats = {"records": 0, "completion_truncated": 0, "dropped_mentions": 0, "unmapped_spans": 0}

    # ------------------------------------------------------------------------------------------------
    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            **(self.chat_template_kwargs or {}),
        )

    @staticmethod
    def _check_record(record: Mapping[str, Any]) -> None:
        missing = [k for k in REQUIRED_RECORD_KEYS if k not in record]
        if missing:
            raise KeyError(
                f"Record is missing {missing} (has {sorted(record)}): build records with "
                "cllmfs_hf.data.records.build_records and keep their columns (remove_unused_columns=False)."
            )
        prompt = record["prompt"]
        if not (isinstance(prompt, list) and prompt and isinstance(prompt[-1], Mapping)):
            raise ValueError(
                f"Record 'prompt' must be a list of chat messages (TRL conversational format), got {type(prompt).__name__}."
            )

    def encode(self, record: Mapping[str, Any]) -> EncodedRecord:
        """Tokenize one record and map its character spans to (unpadded) token spans."""
        self._check_record(record)
        prompt = list(record["prompt"])
        completion = list(record["completion"])
        user = next((m for m in reversed(prompt) if m.get("role") == "user"), None)
        if user is None:
            raise ValueError(f"Record prompt has no user message: {prompt!r}.")
        content = user["content"]
        prompt_text = self._render(prompt, add_generation_prompt=True)
        full_text = self._render(prompt + completion, add_generation_prompt=False)
        base = full_text.find(content)
        if base < 0 or prompt_text.find(content) != base:
            raise ValueError(
                "The chat template changes the user message (e.g. trims or escapes it), so its spans cannot be "
                f"located in the rendered text. Record label={record.get('label')!r}, sentence="
                f"{record.get('sentence')!r}. Use a template that inserts message content verbatim."
            )
        tok = self.tokenizer
        prompt_ids = tok(prompt_text, add_special_tokens=False)["input_ids"]
        enc = tok(full_text, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = list(enc["input_ids"])
        offsets: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
        prompt_len = 0
        for a, b in zip(prompt_ids, ids):
            if a != b:
                break
            prompt_len += 1
        if prompt_len < len(prompt_ids) and not self._warned_prefix:
            self._warned_prefix = True
            logger.warning(
                "The tokenized prompt is not a prefix of the tokenized prompt+completion (label=%r); the "
                "completion starts where they diverge, as in TRL. Shown once; it likely applies to every record.",
                record.get("label"),
            )
        labels = [-100] * prompt_len + ids[prompt_len:] if self.completion_only_loss else list(ids)

        char2tok = [-1] * len(full_text)
        for i, (s, e) in enumerate(offsets):
            for c in range(s, min(e, len(full_text))):
                if char2tok[c] < 0:
                    char2tok[c] = i

        def to_tokens(start: int, end: int) -> Span | None:
            covered = [char2tok[c] for c in range(base + start, base + end) if char2tok[c] >= 0]
            if not covered:
                return None
            span = (min(covered), max(covered) + 1)
            return span if span[1] <= prompt_len else None

        unmapped = 0
        type_start, type_end = record["type_span"]
        anchor = to_tokens(int(type_start), int(type_end))
        if anchor is None:
            unmapped += 1
        elif self.anchor == "prompt_end":
            anchor = (prompt_len - 1, prompt_len)
        sent_off = int(record["sentence_offset"])
        sentence_len = (
            len(record["sentence"]) if record.get("sentence") is not None else len(content) - sent_off
        )
        sentence_tokens = to_tokens(sent_off, sent_off + sentence_len) if sentence_len > 0 else None

        positives: list[Span] = []
        for s, e in record["spans"]:
            span = to_tokens(sent_off + int(s), sent_off + int(e))
            if span is None:
                unmapped += 1
            elif span not in positives:
                positives.append(span)
        others: list[Span] = []
        for s, e in record["other_spans"]:
            span = to_tokens(sent_off + int(s), sent_off + int(e))
            if span is None:
                unmapped += 1
            elif span not in others:
                others.append(span)

        negatives = [self._negatives(p, positives, others, sentence_tokens, content) for p in positives]

        # Truncation (keep_start): spans reaching past max_length are dropped, never re-pointed.
        full_length = len(ids)
        dropped = 0
        completion_truncated = False
        limit = self.max_length
        if limit is not None and len(ids) > limit:
            ids, labels = ids[:limit], labels[:limit]
            if anchor is not None and anchor[1] > limit:
                anchor = None
            keep = [i for i, p in enumerate(positives) if anchor is not None and p[1] <= limit]
            dropped = len(positives) - len(keep)
            positives = [positives[i] for i in keep]
            negatives = [[n for n in negatives[i] if n[1] <= limit] for i in keep]
            completion_truncated = all(x == -100 for x in labels) and prompt_len < len(enc["input_ids"])
        return EncodedRecord(
            input_ids=ids,
            labels=labels,
            label=str(record.get("label", record.get("type_name", ""))),
            anchor=anchor,
            positives=positives,
            negatives=negatives,
            full_length=full_length,
            completion_truncated=completion_truncated,
            dropped_mentions=dropped,
            unmapped_spans=unmapped,
        )

    def _negatives(
        self, positive: Span, golds: list[Span], others: list[Span], sentence: Span | None, content: str
    ) -> list[Span]:
        out: list[Span] = []
        gold_set = set(golds)

        def add(span: Span) -> None:
            if span[1] > span[0] and span not in gold_set and span not in out:
                out.append(span)

        lo, hi = sentence if sentence is not None else positive
        if self.negatives.boundary_negatives:
            s, e = positive
            for k in range(1, self.negatives.boundary_shift + 1):
                for cand in ((s - k, e), (s + k, e), (s, e - k), (s, e + k)):
                    if lo <= cand[0] < cand[1] <= hi:
                        add(cand)
        if self.negatives.type_negatives:
            for span in others:
                add(span)
        if self.negatives.non_entity_negatives and sentence is not None:
            taken = golds + others
            max_len = max(e - s for s, e in golds) if golds else 1
            rng = random.Random(f"{self.seed}:{content}:{positive}")
            found = 0
            for _ in range(20 * self.negatives.non_entity_negatives):
                if found >= self.negatives.non_entity_negatives:
                    break
                length = rng.randint(1, max_len)
                if hi - lo < length:
                    break
                start = rng.randint(lo, hi - length)
                cand = (start, start + length)
                if any(cand[0] < e and s < cand[1] for s, e in taken) or cand in out:
                    continue
                add(cand)
                found += 1
        return out[: self.negatives.max_negatives]

    # ------------------------------------------------------------------------------------------------
    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not records:
            raise ValueError("CLLMFSDataCollator got an empty batch.")
        encoded = [self.encode(r) for r in records]
        self._account(encoded)
        return self.pad(encoded)

    def _account(self, encoded: list[EncodedRecord]) -> None:
        self.stats["records"] += len(encoded)
        truncated = sum(e.completion_truncated for e in encoded)
        dropped = sum(e.dropped_mentions for e in encoded)
        unmapped = sum(e.unmapped_spans for e in encoded)
        self.stats["completion_truncated"] += truncated
        self.stats["dropped_mentions"] += dropped
        self.stats["unmapped_spans"] += unmapped
        if truncated:
            logger.warning(
                "%d record(s) in this batch have their completion entirely cut by max_length=%s (%d so far); they "
                "add no LM loss. Raise max_length or shorten the inputs.",
                truncated,
                self.max_length,
                self.stats["completion_truncated"],
            )
        if dropped:
            logger.warning(
                "%d mention(s) in this batch were cut by max_length=%s and left out of the contrastive term "
                "(%d so far).",
                dropped,
                self.max_length,
                self.stats["dropped_mentions"],
            )
        if unmapped:
            logger.warning(
                "%d span(s) in this batch cover no token of the prompt and were left out of the contrastive term "
                "(%d so far): check the records' offsets.",
                unmapped,
                self.stats["unmapped_spans"],
            )

    def pad(self, encoded: list[EncodedRecord]) -> dict[str, torch.Tensor]:
        """Pad encoded records into tensors, shifting span positions under left padding."""
        longest = max(len(e.input_ids) for e in encoded)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = (longest + m - 1) // m * m
        bsz = len(encoded)
        pad_id = self.tokenizer.pad_token_id
        input_ids = torch.full((bsz, longest), pad_id, dtype=torch.long)
        labels = torch.full((bsz, longest), -100, dtype=torch.long)
        attention = torch.zeros((bsz, longest), dtype=torch.long)
        num_m = max((len(e.positives) for e in encoded), default=0)
        num_k = max((len(n) for e in encoded for n in e.negatives), default=0)
        anchor = torch.full((bsz, 2), -1, dtype=torch.long)
        pos = torch.full((bsz, num_m, 2), -1, dtype=torch.long)
        neg = torch.full((bsz, num_m, num_k, 2), -1, dtype=torch.long)
        label_ids: dict[str, int] = {}
        row_label = torch.empty(bsz, dtype=torch.long)
        for b, e in enumerate(encoded):
            n = len(e.input_ids)
            shift = longest - n if self.padding_side == "left" else 0
            input_ids[b, shift : shift + n] = torch.tensor(e.input_ids, dtype=torch.long)
            labels[b, shift : shift + n] = torch.tensor(e.labels, dtype=torch.long)
            attention[b, shift : shift + n] = 1
            row_label[b] = label_ids.setdefault(e.label, len(label_ids))
            if e.anchor is not None:
                anchor[b] = torch.tensor(e.anchor) + shift
            for m, (p, negs) in enumerate(zip(e.positives, e.negatives)):
                pos[b, m] = torch.tensor(p) + shift
                for k, span in enumerate(negs):
                    neg[b, m, k] = torch.tensor(span) + shift
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if self.padding_side == "left":
            batch["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0)
        batch.update(
            {
                "cl_anchor_span": anchor,
                "cl_positive_spans": pos,
                "cl_negative_spans": neg,
                "cl_row_label": row_label,
            }
        )
        return batch

    def audit(self, records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Tokenize every record once and count what ``max_length`` would cut (no state is changed).

        Returns counts: ``records``, ``completion_truncated``, ``dropped_mentions``, ``unmapped_spans``,
        ``mentions`` (gold mentions kept for the contrastive term) and ``longest`` (tokens, before truncation).
        """
        counts = dict.fromkeys(
            ("records", "completion_truncated", "dropped_mentions", "unmapped_spans", "mentions", "longest"),
            0,
        )
        for record in records:
            e = self.encode(record)
            counts["records"] += 1
            counts["completion_truncated"] += int(e.completion_truncated)
            counts["dropped_mentions"] += e.dropped_mentions
            counts["unmapped_spans"] += e.unmapped_spans
            counts["mentions"] += len(e.positives)
            counts["longest"] = max(counts["longest"], e.full_length)
        return counts
