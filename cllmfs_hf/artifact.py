"""What a saved CLLMFS adapter folder is: its file names, ``cllmfs_config.json`` and the recorded hyperparameters.

An adapter folder is a standard PEFT adapter (``adapter_config.json``, ``adapter_model.safetensors``) plus
``cllmfs_config.json`` (:class:`NERAdapterConfig`: entity types, descriptions, type names, versions, training
hyperparameters, metrics), a model card and the tokenizer files. The prompt template is not saved: this
library prompts and decodes with the built-in one (:mod:`cllmfs_hf.template`).

This module only describes the artifact; :mod:`cllmfs_hf.hub` writes, reads and shares folders and
:mod:`cllmfs_hf.card` renders the model card. It imports neither of them.

Example:
    >>> cfg = NERAdapterConfig(entity_types=["PER", "LOC"])
    >>> NERAdapterConfig.from_dict(cfg.to_dict()) == cfg, cfg.format_version == CLLMFS_CONFIG_FORMAT
    (True, True)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data.descriptions import describe_type
from .data.labels import type_name as derive_type_name
from .hyperparameters import cllmfs_field_groups, cllmfs_fields, training_group, training_hyperparameters
from .models import looks_like_hub_id
from .template import INPUT_PREFIX, INSTRUCTION_TEMPLATE, PREAMBLE, SPAN_CLOSE, SPAN_OPEN

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import EvalResult

__all__ = [
    "CLLMFS_CONFIG_NAME",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "CLLMFS_CONFIG_FORMAT",
    "EvalResultSpec",
    "normalise_eval_results",
    "NERAdapterConfig",
    # the recorded training hyperparameters (defined in cllmfs_hf.hyperparameters)
    "training_hyperparameters",
    "cllmfs_fields",
    "cllmfs_field_groups",
    "training_group",
]

logger = logging.getLogger(__name__)

CLLMFS_CONFIG_NAME = "cllmfs_config.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
#: Layout version of ``cllmfs_config.json``. 2: the prompt template is no longer saved (it is built in).
CLLMFS_CONFIG_FORMAT = 2
# Saved by format 1, read by nothing: accepted on load only with the built-in value, then dropped.
_LEGACY_TEMPLATE_KEYS = {
    "instruction_template": INSTRUCTION_TEMPLATE,
    "input_prefix": INPUT_PREFIX,
    "preamble": PREAMBLE,
    "span_open": SPAN_OPEN,
    "span_close": SPAN_CLOSE,
}


#: Suffixes of pickled weights, which an adapter folder must not hold (safetensors only).
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def _find_pickles(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix.lower() in _PICKLE_SUFFIXES
    )


def _library_version() -> str:
    from . import __version__

    return __version__


def _check_json_value(value: Any, where: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{where} must hold only JSON values (str, int, finite float, bool, None, lists, dicts with str keys): "
            f"{err}. Convert the value (e.g. str(path), list(tuple), float(tensor))."
        ) from err


# --------------------------------------------------------------------------------------------------------
# Evaluation results
# --------------------------------------------------------------------------------------------------------

_RESULT_KEYS = frozenset("dataset dataset_name protocol split config metrics precision recall f1".split())


@dataclass
class EvalResultSpec:
    """One evaluation result for the card: a dataset, its protocol and P/R/F1 (fractions in [0, 1]).

    ``dataset`` is the dataset id (the model-index ``dataset.type``); ``dataset_name`` a readable name
    (default: ``dataset``); ``protocol`` how it was evaluated (shots, sampling, seeds, episodes) and is
    appended to the readable name; ``split`` the evaluated split. ``metrics`` maps a metric name (``f1``,
    ``precision``, ``recall``, ...) to its value.

    Example:
        >>> EvalResultSpec.from_mapping({"dataset": "conll2003", "protocol": "5-shot", "f1": 0.5}).full_name
        'conll2003 (5-shot)'
    """

    dataset: str = field(metadata={"help": "Dataset id, e.g. 'DFKI-SLT/few-nerd' or 'conll2003'."})
    protocol: str = field(metadata={"help": "Evaluation protocol, e.g. '5-shot, greedy sampling, 3 seeds'."})
    metrics: dict[str, float] = field(metadata={"help": "Metric name -> value, fractions in [0, 1]."})
    dataset_name: str | None = field(default=None, metadata={"help": "Readable dataset name."})
    split: str = field(default="test", metadata={"help": "The evaluated split."})
    config: str | None = field(default=None, metadata={"help": "Dataset configuration (subset), if any."})

    def __post_init__(self) -> None:
        for name in ("dataset", "protocol", "split"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"Evaluation result field {name!r} must be a non-empty string, got {value!r}: "
                    "give e.g. dataset='conll2003', protocol='5-shot, 3 seeds', split='test'."
                )
        if not self.metrics:
            raise ValueError(
                f"Evaluation result for {self.dataset!r} has no metric: give precision / recall / f1 "
                "(fractions in [0, 1])."
            )
        for name, value in self.metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(
                    f"Metric {name!r} of {self.dataset!r} must be a finite number, got {value!r}."
                )
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(
                    f"Metric {name!r} of {self.dataset!r} is {value}: give fractions in [0, 1] "
                    "(e.g. 0.512 for 51.2 F1), as cllmfs_hf.evaluation.NERScores reports them."
                )

    @property
    def full_name(self) -> str:
        """The readable dataset name with the protocol, as the model-index shows it."""
        return f"{self.dataset_name or self.dataset} ({self.protocol})"

    @classmethod
    def from_mapping(cls, item: Mapping[str, Any], where: str = "eval_results[0]") -> EvalResultSpec:
        """Build from a dict: ``dataset``, ``protocol``, optional ``dataset_name`` / ``split`` / ``config``,
        and the metrics either under ``metrics`` or as top-level ``precision`` / ``recall`` / ``f1``."""
        if not isinstance(item, Mapping):
            raise TypeError(f"{where} must be a mapping or an EvalResultSpec, got {type(item).__name__}.")
        unknown = sorted(set(item) - _RESULT_KEYS)
        if unknown:
            raise ValueError(
                f"{where} has unknown keys {unknown}: use {sorted(_RESULT_KEYS)} (other metrics go under 'metrics')."
            )
        for required in ("dataset", "protocol"):
            if required not in item:
                raise ValueError(
                    f"{where} is missing {required!r}: every result needs its dataset id and its evaluation "
                    "protocol (e.g. {'dataset': 'conll2003', 'protocol': '5-shot, 3 seeds', 'f1': 0.51})."
                )
        metrics = dict(item.get("metrics") or {})
        for name in ("precision", "recall", "f1"):
            if name in item:
                metrics[name] = item[name]
        return cls(
            dataset=item["dataset"],
            protocol=item["protocol"],
            metrics=metrics,
            dataset_name=item.get("dataset_name"),
            split=item.get("split", "test"),
            config=item.get("config"),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that :meth:`from_mapping` reads back."""
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "metrics": dict(self.metrics),
        }
        if self.dataset_name:
            out["dataset_name"] = self.dataset_name
        out["split"] = self.split
        if self.config:
            out["config"] = self.config
        return out

    def to_hub(self) -> list[EvalResult]:
        """One ``huggingface_hub.EvalResult`` per metric (task type token-classification)."""
        from huggingface_hub import EvalResult

        return [
            EvalResult(
                task_type="token-classification",
                task_name="Named Entity Recognition",
                dataset_type=self.dataset,
                dataset_name=self.full_name,
                dataset_config=self.config,
                dataset_split=self.split,
                metric_type=name,
                metric_name=name.replace("_", " ").title() if name != "f1" else "F1",
                metric_value=round(float(value), 4),
            )
            for name, value in self.metrics.items()
        ]


_SCORE_KEYS = ("precision", "recall", "f1")


def normalise_eval_results(
    eval_results: Any, dataset_name: str | None, protocol: str | None
) -> tuple[list[EvalResultSpec], dict[str, Any]]:
    """EvalResultSpecs (and per-type scores) from a list of results, one result, or one score set.

    A score set (a :class:`cllmfs_hf.evaluation.NERScores` or its ``to_dict()``) is described by
    ``dataset_name`` and ``protocol``; its ``per_type`` scores are returned beside the one spec.
    """
    if hasattr(eval_results, "to_dict") and all(hasattr(eval_results, k) for k in _SCORE_KEYS):
        eval_results = eval_results.to_dict()  # a NERScores
    if isinstance(eval_results, EvalResultSpec):
        return [eval_results], {}
    if isinstance(eval_results, Mapping) and "dataset" in eval_results:
        return [EvalResultSpec.from_mapping(eval_results, "eval_results")], {}
    if isinstance(eval_results, Mapping):  # one score set
        missing = [k for k in _SCORE_KEYS if k not in eval_results]
        if missing:
            raise ValueError(
                f"eval_results has neither 'dataset' (one result) nor {missing} (a score set): pass a list of "
                "results, one result dict, or NERScores.to_dict()."
            )
        if not dataset_name or not protocol:
            logger.warning(
                "save_adapter got a score set without %s: the card will say 'not recorded'. Pass dataset_name= "
                "and protocol= (e.g. '5-shot, greedy sampling, seed 0').",
                " and ".join(n for n, v in (("dataset_name", dataset_name), ("protocol", protocol)) if not v),
            )
        spec = EvalResultSpec(
            dataset=dataset_name or "dataset not recorded",
            protocol=protocol or "protocol not recorded",
            metrics={k: float(eval_results[k]) for k in _SCORE_KEYS},
        )
        per_type = eval_results.get("per_type") or {}
        if not isinstance(per_type, Mapping):
            raise ValueError(
                f"eval_results['per_type'] must be a dict label -> scores, got {type(per_type).__name__}."
            )
        return [spec], {str(k): dict(v) for k, v in per_type.items()}
    if isinstance(eval_results, (str, bytes)) or not isinstance(eval_results, Sequence):
        raise TypeError(
            f"eval_results must be a list of results, one result dict or a NERScores, got {type(eval_results).__name__}."
        )
    specs = [
        r if isinstance(r, EvalResultSpec) else EvalResultSpec.from_mapping(r, f"eval_results[{i}]")
        for i, r in enumerate(eval_results)
    ]
    return specs, {}


# --------------------------------------------------------------------------------------------------------
# cllmfs_config.json
# --------------------------------------------------------------------------------------------------------


@dataclass
class NERAdapterConfig:
    """What a saved adapter needs to be queried like it was trained: saved as ``cllmfs_config.json``.

    Missing descriptions and type names are filled from the built-in tables at construction
    (:func:`cllmfs_hf.data.describe_type`, :func:`cllmfs_hf.data.type_name`), so the saved file is explicit.
    The prompt template is the built-in one (:mod:`cllmfs_hf.template`) and is not part of the file.

    Example:
        >>> cfg = NERAdapterConfig(entity_types=["PER", "politicalparty"])
        >>> cfg.type_names
        {'PER': 'person', 'politicalparty': 'political party'}
        >>> NERAdapterConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    entity_types: list[str] = field(
        metadata={"help": "The labels the adapter extracts, as the dataset spells them."}
    )
    type_descriptions: dict[str, str] = field(
        default_factory=dict, metadata={"help": "Label -> description used in the instruction."}
    )
    type_names: dict[str, str] = field(
        default_factory=dict, metadata={"help": "Label -> readable type name used in the instruction."}
    )
    library_version: str = field(
        default_factory=_library_version, metadata={"help": "cllmfs_hf version that saved the adapter."}
    )
    base_model: str | None = field(
        default=None, metadata={"help": "Portable id of the base model (a Hub id); save_adapter fills it."}
    )
    training: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Training hyperparameters (training_hyperparameters)."}
    )
    metrics: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "Evaluation metrics; 'eval_results' (EvalResultSpec dicts) feed the card."},
    )
    format_version: int = field(
        default=CLLMFS_CONFIG_FORMAT, metadata={"help": "Version of this file's layout."}
    )
    lineage: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={
            "help": "Earlier training stages, oldest first, when the adapter continued another one "
            "(--init_adapter): each the source adapter's path or id and what it was trained on. Saved only "
            "when not empty, so single-stage files stay readable by older versions."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.entity_types, str) or not isinstance(self.entity_types, Sequence):
            raise ValueError(
                f"entity_types must be a list of labels, got {self.entity_types!r}: e.g. entity_types=['PER', 'LOC']."
            )
        self.entity_types = list(self.entity_types)
        if not self.entity_types:
            raise ValueError(
                "entity_types is empty: give the labels the adapter was trained on, e.g. ['PER', 'LOC']."
            )
        for i, label in enumerate(self.entity_types):
            if not isinstance(label, str) or not label.strip() or label != label.strip():
                raise ValueError(
                    f"entity_types[{i}] = {label!r} is not a valid label: use non-empty strings without "
                    "surrounding whitespace (cllmfs_hf.data.normalize_label)."
                )
        duplicates = sorted({t for t in self.entity_types if self.entity_types.count(t) > 1})
        if duplicates:
            raise ValueError(f"entity_types lists {duplicates} more than once: give each label once.")
        for name in ("type_descriptions", "type_names"):
            mapping = getattr(self, name)
            if not isinstance(mapping, Mapping):
                raise ValueError(f"{name} must be a dict label -> text, got {type(mapping).__name__}.")
            unknown = sorted(set(mapping) - set(self.entity_types))
            if unknown:
                raise ValueError(
                    f"{name} has labels {unknown} that are not in entity_types {self.entity_types}: add them to "
                    "entity_types or remove them."
                )
            for label, text in mapping.items():
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"{name}[{label!r}] must be a non-empty string, got {text!r}.")
        self.type_descriptions = {
            label: self.type_descriptions.get(label) or describe_type(label) for label in self.entity_types
        }
        self.type_names = {
            label: self.type_names.get(label) or derive_type_name(label) for label in self.entity_types
        }
        if self.base_model is not None and (
            not isinstance(self.base_model, str) or not self.base_model.strip()
        ):
            raise ValueError(f"base_model must be a non-empty model id or None, got {self.base_model!r}.")
        if not isinstance(self.training, Mapping):
            raise ValueError(
                f"training must be a dict of hyperparameters, got {type(self.training).__name__}."
            )
        self.training = dict(self.training)
        _check_json_value(self.training, "training")
        if self.metrics is not None:
            if not isinstance(self.metrics, Mapping):
                raise ValueError(f"metrics must be a dict or None, got {type(self.metrics).__name__}.")
            self.metrics = dict(self.metrics)
            _check_json_value(self.metrics, "metrics")
            if "eval_results" in self.metrics:  # validate now, not when the card is built
                results = self.metrics["eval_results"]
                if not isinstance(results, list):
                    raise ValueError(
                        "metrics['eval_results'] must be a list of result dicts (EvalResultSpec.to_dict())."
                    )
                for i, item in enumerate(results):
                    EvalResultSpec.from_mapping(item, f"metrics['eval_results'][{i}]")
        if not isinstance(self.lineage, list) or not all(isinstance(e, Mapping) for e in self.lineage):
            raise ValueError(
                f"lineage must be a list of dicts (one per earlier training stage), got {self.lineage!r}."
            )
        self.lineage = [dict(e) for e in self.lineage]
        _check_json_value(self.lineage, "lineage")
        if not isinstance(self.format_version, int) or self.format_version > CLLMFS_CONFIG_FORMAT:
            raise ValueError(
                f"format_version {self.format_version!r} is newer than this cllmfs_hf understands "
                f"({CLLMFS_CONFIG_FORMAT}): upgrade cllmfs_hf (pip install -U cllmfs-hf)."
            )

    # ---- prompting helpers --------------------------------------------------------------------------------
    def describe(self, label: str) -> str:
        """The description of ``label`` (the recorded one, or the built-in table for a new label)."""
        return self.type_descriptions.get(label) or describe_type(label)

    def type_name(self, label: str) -> str:
        """The readable name of ``label`` used in the instruction."""
        return self.type_names.get(label) or derive_type_name(label)

    @classmethod
    def from_training(
        cls,
        entity_types: Sequence[str],
        descriptions: Mapping[str, str] | None = None,
        *,
        base_model: str | None = None,
        training: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        type_names: Mapping[str, str] | None = None,
        lineage: Sequence[Mapping[str, Any]] | None = None,
    ) -> NERAdapterConfig:
        """The config of an adapter trained on ``entity_types``, with the descriptions the records used.

        ``descriptions`` is the same user mapping given to :func:`cllmfs_hf.data.build_records` (it may cover
        more types; keys match labels case-insensitively); each label gets exactly the description its
        training records carried (:func:`cllmfs_hf.data.describe_type`).

        Example:
            >>> NERAdapterConfig.from_training(["PER"], {"per": "people", "LOC": "places"}).type_descriptions
            {'PER': 'people'}
        """
        labels = list(entity_types) if not isinstance(entity_types, str) else entity_types
        if isinstance(labels, str) or not labels:
            raise ValueError(f"entity_types must be a non-empty list of labels, got {entity_types!r}.")
        return cls(
            entity_types=labels,
            type_descriptions={label: describe_type(label, descriptions) for label in labels},
            type_names=dict(type_names or {}),
            base_model=base_model,
            training=dict(training or {}),
            metrics=dict(metrics) if metrics is not None else None,
            lineage=[dict(e) for e in lineage or []],
        )

    # ---- serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every field (``lineage`` only when not empty)."""
        data = dataclasses.asdict(self)
        if not data["lineage"]:
            del data["lineage"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "cllmfs_config") -> NERAdapterConfig:
        """Build from :meth:`to_dict` output; unknown or missing keys raise an error naming ``source``.

        A format-1 file's template keys are dropped when they hold the built-in values, and refused otherwise
        (this library prompts and decodes with the built-in template only).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}.")
        data = dict(data)
        for key, builtin in _LEGACY_TEMPLATE_KEYS.items():
            saved = data.pop(key, builtin)
            if saved != builtin:
                raise ValueError(
                    f"{source}: {key} is {saved!r}, not the built-in {builtin!r}: this cllmfs_hf "
                    "prompts and decodes with the built-in template only: retrain the adapter, or restore the "
                    "built-in value."
                )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"{source}: unknown fields {unknown} (written by a newer cllmfs_hf?): upgrade cllmfs_hf "
                "(pip install -U cllmfs-hf) or remove them."
            )
        if "entity_types" not in data:
            raise ValueError(f"{source}: missing the required field 'entity_types'.")
        if isinstance(data.get("format_version"), int) and data["format_version"] < CLLMFS_CONFIG_FORMAT:
            data["format_version"] = CLLMFS_CONFIG_FORMAT  # what is left is the current layout
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``cllmfs_config.json`` into ``directory`` (created if needed); returns the file path."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CLLMFS_CONFIG_NAME
        tmp = folder / (CLLMFS_CONFIG_NAME + ".part")
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> NERAdapterConfig:
        """Read ``cllmfs_config.json`` from an adapter folder, the file itself, or a Hub repo id."""
        path = Path(directory).expanduser()
        if not path.exists() and looks_like_hub_id(str(directory)):
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(str(directory), CLLMFS_CONFIG_NAME))
        if path.is_dir():
            path = path / CLLMFS_CONFIG_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: {path.parent} is not a CLLMFS adapter folder (save one with "
                "cllmfs_hf.hub.save_adapter), or, for a plain PEFT adapter, pass its types: "
                "NERExtractor.from_pretrained(folder, entity_types=[...])."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}, line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})."
            ) from err
        return cls.from_dict(data, source=str(path))


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an existing folder; the old one is restored if the move fails."""
    if not target.exists():
        os.rename(new, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    old.rmdir()
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
