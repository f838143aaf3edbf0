"""``datasets.Dataset`` -> annotated sentences: :func:`from_hf_dataset`.

``tokens`` + ``ner_tags`` columns, tags as strings or as integers with ``ClassLabel`` names; decoded with
the same tag schemes as column files (:mod:`.tags`).
"""

from __future__ import annotations

from typing import Any

from ..types import AnnotatedSentence
from .errors import DataFormatError
from .tags import Scheme, _canonical_scheme, _check_tag, _decode, _RawSentence, detect_scheme

__all__ = ["from_hf_dataset"]


def _class_label_names(feature: Any) -> list[str] | None:
    """Names of the ClassLabel inside a Sequence/List feature, or ``None`` when the tags are not ClassLabels."""
    import datasets

    inner = getattr(feature, "feature", None)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    return None


def from_hf_dataset(
    dataset: Any,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    scheme: Scheme = "auto",
    *,
    strict: bool = True,
    name: str | None = None,
) -> list[AnnotatedSentence]:
    """Annotated sentences from a ``datasets.Dataset`` with a token column and a tag column.

    Tags may be strings (``"B-PER"``) or integers whose names come from the column's
    ``Sequence(ClassLabel(names=[...]))`` feature. ``scheme`` and ``strict`` work as in :func:`read_conll`.
    ``source`` is ``"name:row"`` with the 0-based row index (``name`` defaults to the dataset's
    ``info.dataset_name`` and split); errors name the row the same way.

    Example:
        >>> import datasets
        >>> feats = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
        ...     "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER"]))})
        >>> ds = datasets.Dataset.from_dict({"tokens": [["Ada", "Lovelace", "wrote"]], "ner_tags": [[1, 2, 0]]}, features=feats)
        >>> s = from_hf_dataset(ds)[0]
        >>> s.mention_text(s.mentions[0])
        'Ada Lovelace'
    """
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        raise TypeError(
            f"from_hf_dataset takes one split, got a DatasetDict with splits {list(dataset)}. "
            "Fix: pass dataset['train'] (or the split you want)."
        )
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"from_hf_dataset takes a datasets.Dataset, got {type(dataset).__name__}. Fix: build one with "
            "datasets.Dataset.from_dict(...) or load_dataset(...)[split] (an IterableDataset: materialise it first)."
        )
    if name is None:
        info = getattr(dataset, "info", None)
        base = getattr(info, "dataset_name", None) or "datasets.Dataset"
        split = getattr(dataset, "split", None)
        name = f"{base}[{split}]" if split else base
    columns = list(getattr(dataset, "column_names", []) or [])
    for col, arg in ((tokens_column, "tokens_column"), (tags_column, "tags_column")):
        if col not in columns:
            raise DataFormatError(
                name,
                None,
                f"no column {col!r} (columns: {columns}).",
                f"pass {arg}= the name of the right column.",
            )
    canonical = _canonical_scheme(scheme, name)
    names = _class_label_names(dataset.features[tags_column])
    raw: list[_RawSentence] = []
    for row, (tokens, tags) in enumerate(zip(dataset[tokens_column], dataset[tags_column])):
        if len(tokens) != len(tags):
            raise DataFormatError(
                name, row, f"{len(tokens)} tokens but {len(tags)} tags.", "give every token exactly one tag."
            )
        str_tags: list[str] = []
        for t in tags:
            if isinstance(t, str):
                str_tags.append(t.strip())
            elif isinstance(t, int) and names is not None:
                if not 0 <= t < len(names):
                    raise DataFormatError(
                        name,
                        row,
                        f"tag id {t} outside the ClassLabel names (0..{len(names) - 1}).",
                        "fix the id.",
                    )
                str_tags.append(names[t])
            else:
                raise DataFormatError(
                    name,
                    row,
                    f"tag {t!r} is not a string and the column {tags_column!r} has no ClassLabel names.",
                    f"cast the column: dataset.cast_column({tags_column!r}, "
                    "datasets.Sequence(datasets.ClassLabel(names=[...]))), or map ids to tag strings.",
                )
        for tok in tokens:
            if not isinstance(tok, str) or not tok.strip():
                raise DataFormatError(
                    name, row, f"empty or non-string token {tok!r}.", "fix the tokens column."
                )
        for t in str_tags:
            _check_tag(t, name, row)
        raw.append(_RawSentence([t.strip() for t in tokens], str_tags, [row] * len(tokens)))
    detected = canonical == "auto"
    if detected:
        canonical = detect_scheme(r.tags for r in raw)
    out = []
    for row, r in enumerate(raw):
        spans = _decode(r.tags, canonical, strict, name, r.lines, detected)
        out.append(AnnotatedSentence.from_tokens(r.tokens, spans, source=f"{name}:{row}"))
    return out
