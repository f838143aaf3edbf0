"""The training hyperparameters an adapter records (``cllmfs_config.json`` ``training``) and their groups.

The CLLMFS fields are, by construction, the dataclass fields :class:`cllmfs_hf.config.CLLMFSConfig` adds to
``trl.SFTConfig`` (:func:`cllmfs_fields`): a new knob is recorded without being listed anywhere. Each has a
group (``contrastive``, ``negatives``, ``adversarial``: :func:`cllmfs_field_groups`) that the model card
(:mod:`cllmfs_hf.card`) uses to lay out its Training section. The config (and TRL) is imported on first use.

Example:
    >>> from peft import LoraConfig
    >>> hp = training_hyperparameters(LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj"]), shots=5)
    >>> hp["r"], hp["target_modules"], hp["shots"], training_group("adversarial_epsilon")
    (8, ['q_proj'], 5, 'adversarial')
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["training_hyperparameters", "cllmfs_fields", "cllmfs_field_groups", "training_group"]


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
# The optimisation fields recorded from any training arguments; the CLLMFS fields come from the config.
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
    "activation_checkpointing",
    "completion_only_loss",
)
# Group of a hyperparameter by its name alone: for fields without a declared group and for the keys of
# adapters saved before a field was renamed.
_NEGATIVES_KEYS = {"type_negatives", "non_entity_negatives", "in_batch_negatives", "max_negatives"}


def _group_by_name(name: str) -> str | None:
    if name.startswith("adversarial"):
        return "adversarial"
    if name.startswith("boundary_") or name in _NEGATIVES_KEYS:
        return "negatives"
    if name.startswith("contrastive_"):
        return "contrastive"
    return None


@functools.lru_cache(maxsize=1)
def _cllmfs_field_table() -> tuple[tuple[str, str | None], ...]:
    from trl import SFTConfig

    from . import config

    sft_fields = {f.name for f in dataclasses.fields(SFTConfig)}
    declared = getattr(config, "CLLMFS_FIELD_GROUPS", {})
    return tuple(
        (f.name, f.metadata.get("group") or declared.get(f.name) or _group_by_name(f.name))
        for f in dataclasses.fields(config.CLLMFSConfig)
        if f.name not in sft_fields
    )


def cllmfs_fields() -> tuple[str, ...]:
    """The fields :class:`cllmfs_hf.config.CLLMFSConfig` adds to ``trl.SFTConfig``, in declaration order.

    Imports the config (and TRL) on first call.

    Example:
        >>> {"contrastive_weight", "adversarial_epsilon", "max_negatives"} <= set(cllmfs_fields())
        True
    """
    return tuple(name for name, _ in _cllmfs_field_table())


def cllmfs_field_groups() -> dict[str, str]:
    """CLLMFS field name -> its group (``"contrastive"``, ``"negatives"``, ``"adversarial"``, ...).

    The group is the field's ``metadata["group"]``, else the config's ``CLLMFS_FIELD_GROUPS`` entry, else
    guessed from the name (``adversarial*``, ``boundary_*`` and the ``*_negatives`` switches,
    ``contrastive_*``); a field none of these place is left out.

    Example:
        >>> cllmfs_field_groups()["adversarial_epsilon"]
        'adversarial'
    """
    return {name: group for name, group in _cllmfs_field_table() if group}


def training_group(key: str) -> str | None:
    """The group of a recorded hyperparameter: its CLLMFS field's group, else by its name, else None."""
    return cllmfs_field_groups().get(key) or _group_by_name(key)


def training_hyperparameters(
    peft_config: Any = None, training_args: Any = None, **extra: Any
) -> dict[str, Any]:
    """The hyperparameters worth recording on the card, from a PEFT config and training arguments.

    Args:
        peft_config: a ``peft.LoraConfig`` (or any PEFT config): r, alpha, dropout, target modules, ...
        training_args: a ``CLLMFSConfig`` / ``SFTConfig`` / ``TrainingArguments``: the optimisation fields and
            every CLLMFS field it has (:func:`cllmfs_fields`, all of them for a ``CLLMFSConfig``).
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
        for name in (*_TRAINING_FIELDS, *cllmfs_fields()):
            if hasattr(training_args, name):
                out[name] = _jsonable(getattr(training_args, name))
    for key, value in extra.items():
        out[key] = _jsonable(value)
    return out
