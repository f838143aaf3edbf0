"""The data layer: annotated sentences, readers, sampling and instruction records."""

from .descriptions import TYPE_DESCRIPTIONS, describe_type
from .labels import normalize_label, type_name
from .records import build_records, label_set, records_to_dataset
from .types import AnnotatedSentence, Mention, dataset_to_sentences, sentences_to_dataset

__all__ = [
    "AnnotatedSentence",
    "Mention",
    "sentences_to_dataset",
    "dataset_to_sentences",
    "normalize_label",
    "type_name",
    "TYPE_DESCRIPTIONS",
    "describe_type",
    "build_records",
    "records_to_dataset",
    "label_set",
]
