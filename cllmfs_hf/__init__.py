"""cllmfs_hf: few-shot NER with decoder LLMs (CLLMFS) on the Hugging Face stack."""

from .data import (
    TYPE_DESCRIPTIONS,
    AnnotatedSentence,
    Mention,
    build_records,
    dataset_to_sentences,
    describe_type,
    label_set,
    normalize_label,
    records_to_dataset,
    sentences_to_dataset,
    type_name,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
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
