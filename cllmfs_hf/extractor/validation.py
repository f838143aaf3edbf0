"""Input checks of :class:`~cllmfs_hf.extractor.NERExtractor`: entity-type lists, texts, annotated sentences,
and the context size and special tokens the constructor derives from the model and tokenizer.

Every check raises ``TypeError``/``ValueError`` with a message that names the fix ("Bad input" in the
package docstring).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..data.labels import check_entity_types as check_types
from ..data.types import AnnotatedSentence, dataset_to_sentences

__all__ = [
    "as_sentences",
    "check_texts",
    "check_types",
    "resolve_max_context",
    "resolve_types",
    "special_token_ids",
]


def resolve_types(
    entity_types: Sequence[str] | None, known: Sequence[str] | None, allow_unknown: bool
) -> list[str]:
    """The types to query: ``entity_types``, else the extractor's ``known`` types; types outside ``known``
    are refused unless ``allow_unknown``."""
    if entity_types is None:
        if known is None:
            raise ValueError(
                "No entity types: pass entity_types=[...] to predict, or construct NERExtractor with "
                "entity_types (an adapter folder brings its own)."
            )
        return list(known)
    types = check_types(entity_types, "entity_types")
    if known is not None and not allow_unknown:
        unknown = [t for t in types if t not in known]
        if unknown:
            raise ValueError(
                f"Unknown entity type(s) {unknown}: this extractor knows {known}. Pass "
                "allow_unknown_types=True (examples/predict.py: --allow_unknown_types) to query other types "
                "anyway (zero-shot)."
            )
    return types


def check_texts(texts: Any) -> list[str]:
    """``texts`` as a list of str (a bare string is refused with the fix)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got one string: call predict([text]) for one text.")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}.") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__} {t!r:.60}.")
        try:
            t.encode("utf-8")
        except (
            UnicodeEncodeError
        ) as err:  # a lone surrogate, e.g. bytes decoded with errors="surrogateescape"
            raise ValueError(
                f"texts[{i}] holds {t[err.start : err.end]!r} at character {err.start}, which is not a valid "
                "character (a lone surrogate: bytes that were not valid UTF-8): decode the input as UTF-8, "
                "or replace such characters (errors='replace')."
            ) from None
    return texts


def as_sentences(data: Any) -> list[AnnotatedSentence]:
    """The annotated sentences of ``evaluate``/``score``: a list of ``AnnotatedSentence`` or a
    ``datasets.Dataset`` from ``sentences_to_dataset``."""
    if hasattr(data, "column_names") and hasattr(data, "features"):
        return dataset_to_sentences(data)
    if isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise TypeError(
            "evaluate needs annotated sentences: a list of AnnotatedSentence (cllmfs_hf.data.readers."
            "read_dataset(path)) or a datasets.Dataset from sentences_to_dataset."
        )
    sentences = list(data)
    for i, s in enumerate(sentences):
        if not isinstance(s, AnnotatedSentence):
            raise TypeError(f"item {i} is a {type(s).__name__}, not an AnnotatedSentence.")
    return sentences


def resolve_max_context(model: Any, tokenizer: Any, max_context: int | None) -> int:
    """``max_context``, by default the model's ``max_position_embeddings`` (capped by the tokenizer's
    ``model_max_length`` when that is a real limit); at least 32 tokens."""
    if max_context is None:
        max_context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        model_max = getattr(tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and model_max < 1_000_000:
            max_context = min(max_context, model_max) if max_context else model_max
    if not isinstance(max_context, int) or max_context < 32:
        raise ValueError(
            f"max_context must be an integer >= 32 (tokens), got {max_context!r}: pass max_context= explicitly "
            "when the model config has no max_position_embeddings."
        )
    return max_context


def special_token_ids(model: Any, tokenizer: Any) -> tuple[int, list[int]]:
    """The pad token id (the tokenizer's pad, else its EOS) and the sorted end-of-sequence ids (the model's
    generation config and the tokenizer's, together)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("The tokenizer has neither a pad nor an EOS token: set tokenizer.pad_token.")
    eos: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in (gen_eos, tokenizer.eos_token_id):
        if isinstance(e, int):
            eos.append(e)
        elif isinstance(e, (list, tuple)):
            eos.extend(int(x) for x in e)
    if not eos:
        raise ValueError("Neither the model's generation config nor the tokenizer defines an EOS token.")
    return int(pad), sorted(set(eos))
