"""cllmfs_hf: few-shot NER with decoder LLMs (CLLMFS) on the Hugging Face stack.

The data layer is imported eagerly (it is light); the modules that pull torch, transformers, TRL and PEFT
(trainer, decoding, extraction, models, Hub) load on first use of one of their names, so that
``from cllmfs_hf import read_dataset`` stays fast.

Example:
    >>> from cllmfs_hf import AnnotatedSentence, build_records
    >>> s = AnnotatedSentence.from_tokens(["Ada", "met", "Bob"], [(0, 1, "PER")])
    >>> build_records([s])[0]["completion"][0]["content"]
    'I can extract entities for you, the extracted entities are <<< Ada >>>'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .data import (
    TYPE_DESCRIPTIONS,
    AnnotatedSentence,
    DataFormatError,
    Episode,
    Mention,
    SamplingError,
    build_records,
    count_mentions,
    dataset_to_sentences,
    describe_type,
    detect_scheme,
    find_splits,
    from_hf_dataset,
    greedy_kshot,
    label_set,
    normalize_label,
    read_conll,
    read_dataset,
    read_jsonl,
    records_to_dataset,
    sample_episode,
    sample_episodes,
    sentences_to_dataset,
    type_name,
)

__version__ = "0.1.0"

# name -> submodule, imported on first attribute access
_LAZY: dict[str, str] = {
    "CLLMFSConfig": "config",
    "CLLMFSTrainer": "trainer",
    "CLLMFSDataCollator": "collator",
    "SpanConstrainedLogitsProcessor": "decoding",
    "SpanConstraintConfig": "decoding",
    "parse_output": "template",  # the parser sits beside the format it inverts (torch-free)
    "NERExtractor": "extractor",
    "PredictionStats": "extractor",
    "DEFAULT_MODEL": "models",
    "DEFAULT_MODEL_HUB_ID": "models",
    "DefaultModelNotInstalledError": "models",
    "load_base_model": "models",
    "load_tokenizer": "models",
    "resolve_model_path": "models",
    "convert_gguf": "models",
    "model_cache_dir": "models",
    "NERAdapterConfig": "artifact",
    "EvalResultSpec": "artifact",
    "training_hyperparameters": "artifact",
    "save_adapter": "hub",
    "load_adapter": "hub",
    "is_adapter_folder": "hub",
    "push_to_hub": "hub",
    "build_model_card": "card",
    "METRIC_PATH": "evaluation",
    "NERScores": "evaluation",
    "TypeScores": "evaluation",
    "ScoreAccumulator": "evaluation",
    "bio_to_spans": "evaluation",
    "score_spans": "evaluation",
    "score_bio": "evaluation",
    "evaluate_sentences": "evaluation",
    "load_metric": "evaluation",
}

__all__ = [
    "__version__",
    # data
    "AnnotatedSentence",
    "Mention",
    "sentences_to_dataset",
    "dataset_to_sentences",
    "normalize_label",
    "type_name",
    "TYPE_DESCRIPTIONS",
    "describe_type",
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
    "greedy_kshot",
    "sample_episode",
    "sample_episodes",
    "build_records",
    "records_to_dataset",
    "label_set",
    # training, decoding, extraction, models, Hub, evaluation
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from .artifact import EvalResultSpec, NERAdapterConfig, training_hyperparameters
    from .card import build_model_card
    from .collator import CLLMFSDataCollator
    from .config import CLLMFSConfig
    from .decoding import SpanConstrainedLogitsProcessor, SpanConstraintConfig
    from .evaluation import (
        METRIC_PATH,
        NERScores,
        ScoreAccumulator,
        TypeScores,
        bio_to_spans,
        evaluate_sentences,
        load_metric,
        score_bio,
        score_spans,
    )
    from .extractor import NERExtractor, PredictionStats
    from .hub import is_adapter_folder, load_adapter, push_to_hub, save_adapter
    from .models import (
        DEFAULT_MODEL,
        DEFAULT_MODEL_HUB_ID,
        DefaultModelNotInstalledError,
        convert_gguf,
        load_base_model,
        load_tokenizer,
        model_cache_dir,
        resolve_model_path,
    )
    from .template import parse_output
    from .trainer import CLLMFSTrainer


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cllmfs_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
