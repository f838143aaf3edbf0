"""The data layer: annotated sentences, readers, sampling and instruction records."""

from .descriptions import TYPE_DESCRIPTIONS, describe_type, read_descriptions
from .labels import normalize_label, type_name
from .readers import (
    DataFormatError,
    detect_scheme,
    find_splits,
    from_hf_dataset,
    read_conll,
    read_dataset,
    read_jsonl,
)
from .records import build_records, label_set, records_to_dataset
from .sampling import (
    Episode,
    SamplingError,
    count_mentions,
    episode_seed,
    greedy_kshot,
    restrict_labels,
    sample_episode,
    sample_episodes,
)
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
    "read_descriptions",
    "DataFormatError",
    "detect_scheme",
    "read_conll",
    "read_jsonl",
    "from_hf_dataset",
    "read_dataset",
    "find_splits",
    "Episode",
    "SamplingError",
    "count_mentions",
    "episode_seed",
    "greedy_kshot",
    "restrict_labels",
    "sample_episode",
    "sample_episodes",
    "build_records",
    "records_to_dataset",
    "label_set",
]
