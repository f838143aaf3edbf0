"""Instruction records: one per (sentence, entity type), in TRL's conversational prompt-completion format.

Each record is a dict that ``SFTTrainer`` accepts as is (``prompt`` + ``completion``) plus columns the
CLLMFS collator uses for the contrastive term (keep them with ``remove_unused_columns=False``):

- ``prompt``: ``[{"role": "user", "content": instruction + "\\nInput: " + sentence}]``
- ``completion``: ``[{"role": "assistant", "content": preamble + " <<< m >>>" ...}]``
- ``sentence``: the input sentence; ``sentence_offset``: its character offset in the user content
- ``label``: the dataset label of the queried type; ``type_name``: its readable name in the instruction;
  ``type_span``: ``[start, end)`` of the type name in the user content
- ``spans``: ``[[start, end], ...]`` character spans in ``sentence`` of the gold mentions of this type
- ``other_spans`` / ``other_labels``: mentions of the other types in the sentence (type negatives)
- ``is_negative``: True when the sentence has no mention of this type

Example:
    >>> from cllmfs_hf.data.types import AnnotatedSentence
    >>> s = AnnotatedSentence.from_tokens(["Ada", "met", "Bob"], [(0, 1, "PER"), (2, 3, "PER")])
    >>> [r["completion"][0]["content"] for r in build_records([s], ["PER"])]
    ['I can extract entities for you, the extracted entities are <<< Ada >>> <<< Bob >>>']
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

from ..template import format_completion, render_user_content
from .descriptions import describe_type
from .labels import check_entity_types, type_name
from .types import AnnotatedSentence

__all__ = ["build_records", "records_to_dataset", "label_set"]


def label_set(sentences: Sequence[AnnotatedSentence]) -> list[str]:
    """All labels that occur in ``sentences``, sorted."""
    return sorted({m.label for s in sentences for m in s.mentions})


def build_records(
    sentences: Sequence[AnnotatedSentence],
    entity_types: Sequence[str] | None = None,
    descriptions: Mapping[str, str] | None = None,
    negative_ratio: float = 1.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One record per sentence x entity type.

    Args:
        sentences: annotated sentences.
        entity_types: the label set to query (default: every label in ``sentences``). Records are built for
            every type, not only the ones present, so the model learns to answer "none".
        descriptions: label -> description, overriding the built-in table.
        negative_ratio: fraction of negative records (no mention of the type) to keep, in [0, 1].
            1.0 keeps all; the choice of which to drop is deterministic for ``seed``.
        seed: seed for subsampling negatives.
    """
    if not 0.0 <= negative_ratio <= 1.0:
        raise ValueError(f"negative_ratio must be in [0, 1], got {negative_ratio}.")
    # a bare string would be queried letter by letter, a repeat twice, an empty name as "the entity of  "
    types = check_entity_types(entity_types) if entity_types is not None else label_set(sentences)
    if not types:
        raise ValueError("No entity types: pass entity_types or sentences with at least one mention.")
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    for sentence in sentences:
        for label in types:
            mine = sentence.mentions_of(label)
            if not mine and negative_ratio < 1.0 and rng.random() >= negative_ratio:
                continue
            name = type_name(label)
            content, type_span, offset = render_user_content(
                name, describe_type(label, descriptions), sentence.text
            )
            others = [m for m in sentence.mentions if m.label != label]
            records.append(
                {
                    "prompt": [{"role": "user", "content": content}],
                    "completion": [
                        {
                            "role": "assistant",
                            "content": format_completion([sentence.mention_text(m) for m in mine]),
                        }
                    ],
                    "sentence": sentence.text,
                    "sentence_offset": offset,
                    "label": label,
                    "type_name": name,
                    "type_span": list(type_span),
                    "spans": [[m.start, m.end] for m in mine],
                    "other_spans": [[m.start, m.end] for m in others],
                    "other_labels": [m.label for m in others],
                    "is_negative": not mine,
                }
            )
    return records


def records_to_dataset(records: Sequence[dict[str, Any]]):
    """A ``datasets.Dataset`` of records (empty span lists keep their list-of-int type)."""
    import datasets

    if not records:
        raise ValueError(
            "records_to_dataset got no records: build_records(sentences, ...) returned none (no sentences, or "
            "every record was a negative dropped by negative_ratio). Pass annotated sentences."
        )
    features = datasets.Features(
        {
            "prompt": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "completion": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "sentence": datasets.Value("string"),
            "sentence_offset": datasets.Value("int32"),
            "label": datasets.Value("string"),
            "type_name": datasets.Value("string"),
            "type_span": datasets.Sequence(datasets.Value("int32")),
            "spans": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
            "other_spans": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
            "other_labels": datasets.Sequence(datasets.Value("string")),
            "is_negative": datasets.Value("bool"),
        }
    )
    return datasets.Dataset.from_list(list(records), features=features)
