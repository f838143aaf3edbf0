"""Two-stage adaptation: continue training an existing CLLMFS adapter (``--init_adapter``) on new data.

Stage 1 trains an adapter on broad source data (or it is one somebody shared); stage 2 starts from its LoRA
weights and trains on the target data (typically a K-shot support set). This module holds what stage 2 needs
to know about the adapter it starts from, checked from its files alone before any model is loaded:

- :func:`inspect_init_adapter`: the folder (or Hub id) -> :class:`SourceAdapter`, or an error naming what is
  missing and the fix (no folder, not a PEFT adapter, a PEFT adapter of another task, no
  ``cllmfs_config.json``, missing or truncated weights, weights whose rank disagrees with the config).
- :meth:`SourceAdapter.check_base_model`, :meth:`SourceAdapter.resolve_lora`: the base model must be the
  adapter's; the LoRA shape is the adapter's, and a LoRA option given with another value is refused.
- :meth:`SourceAdapter.merge_types`: the entity types of the new adapter are the source adapter's plus the
  new data's. A type's description is the new ``--descriptions_file``'s when it gives one, else the source
  adapter's, else the built-in one: the target data's description wins on conflict, and a type the new file
  does not describe keeps the prompt it was trained with.
- :meth:`SourceAdapter.lineage`: what the new adapter records about where it started (``cllmfs_config.json``
  ``lineage``, one entry per earlier stage, oldest first; the model card renders it).
- :meth:`SourceAdapter.load_trainable`: ``PeftModel.from_pretrained(base, folder, is_trainable=True)``.

:func:`cllmfs_hf.training.build_trainer` and :func:`cllmfs_hf.training.run` use these; the checks also run
when :class:`cllmfs_hf.model_arguments.ModelArguments` is built, i.e. when ``examples/train.py`` parses its
flags.

Example:
    >>> source = inspect_init_adapter("outputs/source/adapter")  # doctest: +SKIP
    >>> source.merge_types(["politician"], None)[0]  # doctest: +SKIP
    ['LOC', 'MISC', 'ORG', 'PER', 'politician']
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .artifact import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    CLLMFS_CONFIG_NAME,
    NERAdapterConfig,
    _find_pickles,
)
from .models import looks_like_hub_id, portable_model_id

__all__ = ["LINEAGE_KEYS", "SourceAdapter", "inspect_init_adapter", "same_base_model"]

#: What a lineage entry copies from the source adapter's recorded ``training`` (when it recorded them).
LINEAGE_KEYS = (
    "train_data",
    "k_shot",
    "sample_seed",
    "seed",
    "support_sentences",
    "max_steps",
    "num_train_epochs",
)
# ModelConfig option -> the adapter_config.json key it must agree with.
_LORA_KEYS = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_target_modules": "target_modules",
    "use_rslora": "use_rslora",
    "use_dora": "use_dora",
}
_FLAG_OFF = {"use_rslora": False, "use_dora": False}  # booleans whose False default cannot be told from unset


def _fail(reference: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"--init_adapter {reference}: {problem}. Fix: {fix}")


def same_base_model(a: str, b: str) -> bool:
    """Whether two model names or paths name the same base: equal portable ids (the default's short name and
    Hub id are one model; Hub ids compare case-insensitively), or the same existing folder.

    Example:
        >>> same_base_model("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
        True
    """
    pa, pb = portable_model_id(str(a)), portable_model_id(str(b))
    if pa == pb or (looks_like_hub_id(pa) and pa.lower() == pb.lower()):
        return True
    path_a, path_b = Path(str(a)).expanduser(), Path(str(b)).expanduser()
    return path_a.exists() and path_b.exists() and path_a.resolve() == path_b.resolve()


def _local_folder(reference: str) -> Path:
    from .bundled import bundled_adapter_path, is_bundled_name

    if is_bundled_name(reference):  # a shipped adapter (general-ner); a local folder of that name wins
        return bundled_adapter_path(reference)
    path = Path(reference).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(
                f"--init_adapter {reference}: is a file. Fix: pass the adapter folder that holds "
                f"{ADAPTER_CONFIG_NAME} (an earlier run's <output_dir>/adapter)."
            )
        return path
    if not looks_like_hub_id(reference):
        raise FileNotFoundError(
            f"--init_adapter {reference}: no such folder. Fix: pass the adapter folder of an earlier run "
            "(<output_dir>/adapter, e.g. outputs/source/adapter), a Hub repo id (owner/name) or a bundled adapter "
            "(general-ner)."
        )
    from .hub import _local_adapter_folder

    try:
        return _local_adapter_folder(reference, None, None)
    except Exception as err:  # offline, unknown repo, no access: huggingface_hub raises several kinds
        raise FileNotFoundError(
            f"--init_adapter {reference}: not a local folder, and not fetched from the Hub "
            f"({type(err).__name__}: {str(err)[:200]}). Fix: check the path, or pass a Hub repo id while online "
            "(unset HF_HUB_OFFLINE)."
        ) from err


def _read_json_object(path: Path, reference: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise _fail(
            reference,
            f"{path.name}, line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})",
            "re-save the adapter (CLLMFSTrainer.save_model, examples/train.py) or re-download it",
        ) from err
    if not isinstance(data, dict):
        raise _fail(
            reference, f"{path.name} holds a JSON {type(data).__name__}, not an object", "re-save the adapter"
        )
    return data


def _safetensors_shapes(path: Path, reference: str) -> dict[str, list[int]]:
    """Tensor name -> shape from a safetensors header; a file shorter than its header says is refused."""
    size = path.stat().st_size
    fix = "re-save the adapter (the run that wrote it may have been killed) or re-download it"
    with path.open("rb") as handle:
        head = handle.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length < 0 or length > size - 8:
            raise _fail(reference, f"{path.name} is truncated or not a safetensors file ({size} bytes)", fix)
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise _fail(reference, f"{path.name} has a damaged header ({err})", fix) from err
    tensors = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    end = max((int(v.get("data_offsets", [0, 0])[1]) for v in tensors.values()), default=0)
    if 8 + length + end > size:
        raise _fail(
            reference,
            f"{path.name} is truncated: its header describes {8 + length + end} bytes, the file has {size}",
            fix,
        )
    return {k: list(v.get("shape", [])) for k, v in tensors.items()}


@dataclass
class SourceAdapter:
    """An adapter to continue training, checked: where it is and what its two config files say."""

    reference: str  #: the path or Hub id as given (what the lineage records)
    folder: Path  #: the local folder (the Hub snapshot for a repo id)
    adapter_config: dict[str, Any]  #: its adapter_config.json
    ner_config: NERAdapterConfig  #: its cllmfs_config.json

    @property
    def base_model(self) -> str:
        """The base model the adapter was trained on (PEFT's record, else cllmfs_config.json's)."""
        return str(self.adapter_config.get("base_model_name_or_path") or self.ner_config.base_model)

    def lora_values(self) -> dict[str, Any]:
        """The adapter's LoRA shape as ``ModelConfig`` options (``lora_r``, ``lora_alpha``, ...)."""
        values = {option: self.adapter_config.get(key) for option, key in _LORA_KEYS.items()}
        targets = values["lora_target_modules"]
        if isinstance(targets, list):
            values["lora_target_modules"] = sorted(targets)  # PEFT saves a set: its order means nothing
        for flag in _FLAG_OFF:
            values[flag] = bool(values[flag])
        return values

    def check_base_model(self, model_name_or_path: str | None) -> None:
        """Refuse another base model than the adapter's, naming both."""
        if model_name_or_path is not None and not same_base_model(model_name_or_path, self.base_model):
            raise _fail(
                self.reference,
                f"it was trained on the base model {self.base_model!r}, and --model_name_or_path is "
                f"{model_name_or_path!r} (LoRA weights only fit the base they were trained on)",
                f"pass --model_name_or_path {self.base_model} (or leave it out: it defaults to the adapter's base)",
            )

    def resolve_lora(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The value of every LoRA option: the adapter's, or the one given when it equals the adapter's (kept
        as spelled); ``given`` holds the options the user set (None = unset).

        A set option that differs from the adapter's value is refused, naming the option and the adapter's
        value: the LoRA shape of a loaded adapter cannot change, so ignoring the option would be a silent lie.
        """
        adapter = self.lora_values()
        resolved = dict(adapter)
        for option, value in given.items():
            if value is None or (option in _FLAG_OFF and value is _FLAG_OFF[option]):
                continue
            mine = sorted(value) if isinstance(value, (list, tuple)) and not isinstance(value, str) else value
            theirs = adapter.get(option)
            if isinstance(mine, list) and len(mine) == 1 and isinstance(theirs, str):
                mine = mine[0]  # ModelConfig turns a one-item list into its item
            if mine != theirs:
                raise _fail(
                    self.reference,
                    f"--{option} {value!r} conflicts with the adapter, whose {_LORA_KEYS[option]} is {theirs!r} "
                    "(a loaded adapter keeps its LoRA shape)",
                    f"drop --{option} (from the command line and from the --config recipe) to take the adapter's, "
                    "or train from the base model without --init_adapter",
                )
            resolved[option] = value
        return resolved

    def merge_types(
        self, entity_types: Sequence[str], descriptions: Mapping[str, str] | None
    ) -> tuple[list[str], dict[str, str], dict[str, str]]:
        """(entity types, descriptions, type names) of the continued adapter.

        Types: the source adapter's, in its order, then the new data's that it does not have. Descriptions:
        the new ``descriptions`` win (keys match labels case-insensitively, as in
        :func:`cllmfs_hf.data.describe_type`), then the source adapter's. Build the new records with the
        returned descriptions, so that each type is recorded with the prompt it was trained with. Type names:
        the source adapter's for its types (new types get the built-in rule).
        """
        source = self.ner_config
        types = list(source.entity_types) + [t for t in entity_types if t not in source.entity_types]
        merged = dict(source.type_descriptions)
        for key, text in (descriptions or {}).items():
            for old in [k for k in merged if k.lower() == key.lower()]:
                del merged[old]
            merged[key] = text
        return types, merged, dict(source.type_names)

    def lineage(self) -> list[dict[str, Any]]:
        """The continued adapter's ``lineage``: the source adapter's own lineage, then one entry for it."""
        source = self.ner_config
        entry: dict[str, Any] = {
            "adapter": self.reference,
            "base_model": self.base_model,
            "entity_types": list(source.entity_types),
            "library_version": source.library_version,
        }
        entry.update({k: source.training[k] for k in LINEAGE_KEYS if k in source.training})
        return [*[dict(e) for e in source.lineage], entry]

    def load_trainable(self, base_model: Any) -> Any:
        """``PeftModel.from_pretrained(base_model, folder, is_trainable=True)``: the adapter's LoRA weights,
        trainable; errors name the folder (the checks of :func:`inspect_init_adapter` make them rare)."""
        from peft import PeftModel

        if hasattr(base_model, "peft_config"):
            raise TypeError(
                f"--init_adapter {self.reference}: the model given already has a PEFT adapter. Fix: pass the "
                "plain base model (load_base_model(...)) and let init_adapter load the adapter onto it."
            )
        try:
            return PeftModel.from_pretrained(base_model, str(self.folder), is_trainable=True)
        except RuntimeError as err:  # torch's size mismatch: another architecture behind the same name
            raise _fail(
                self.reference,
                f"its weights do not fit the loaded base model ({str(err)[:300]})",
                f"load the base it was trained on, {self.base_model!r}",
            ) from err


def inspect_init_adapter(reference: str | Path) -> SourceAdapter:
    """Check that ``reference`` (a folder, or a Hub repo id) is a complete CLLMFS LoRA adapter: from its files
    alone, before any model is loaded. Each error names what is missing or wrong and the fix."""
    reference = str(reference)
    folder = _local_folder(reference)
    config_path = folder / ADAPTER_CONFIG_NAME
    if not config_path.is_file():
        nested = folder / "adapter" / ADAPTER_CONFIG_NAME
        hint = (
            f"pass {folder / 'adapter'} (the adapter inside this run folder)"
            if nested.is_file()
            else (
                "pass the adapter folder of an earlier run (<output_dir>/adapter), which holds "
                f"{ADAPTER_CONFIG_NAME}, {ADAPTER_WEIGHTS_NAME} and {CLLMFS_CONFIG_NAME}"
            )
        )
        raise _fail(reference, f"no {ADAPTER_CONFIG_NAME}, so it is not a PEFT adapter folder", hint)
    adapter_config = _read_json_object(config_path, reference)
    peft_type, task_type = adapter_config.get("peft_type"), adapter_config.get("task_type")
    if peft_type != "LORA" or task_type not in (None, "CAUSAL_LM"):
        raise _fail(
            reference,
            f"a PEFT adapter of another kind (peft_type {peft_type!r}, task_type {task_type!r}); CLLMFS "
            "continues LoRA adapters of a causal LM (peft_type 'LORA', task_type 'CAUSAL_LM')",
            "pass an adapter saved by cllmfs_hf (examples/train.py, CLLMFSTrainer.save_model), or train from the "
            "base model without --init_adapter",
        )
    if not (folder / CLLMFS_CONFIG_NAME).is_file():
        raise _fail(
            reference,
            f"no {CLLMFS_CONFIG_NAME}, so it is a plain PEFT adapter, not a CLLMFS adapter (its entity types and "
            "descriptions are unknown)",
            "pass an adapter saved by cllmfs_hf; for a LoRA adapter you know was trained on the CLLMFS template, "
            f"write its types with NERAdapterConfig(entity_types=[...]).save({str(folder)!r})",
        )
    ner_config = NERAdapterConfig.load(folder)  # its errors name the file
    weights = folder / ADAPTER_WEIGHTS_NAME
    if not weights.is_file():
        pickles = _find_pickles(folder)
        held = f" (it holds pickle weights {pickles}, which cllmfs_hf does not load)" if pickles else ""
        raise _fail(
            reference,
            f"no {ADAPTER_WEIGHTS_NAME}{held}",
            "re-save the adapter with safetensors (model.save_pretrained(dir, safe_serialization=True)) or "
            "re-download it",
        )
    shapes = _safetensors_shapes(weights, reference)
    ranks = {k: s[0] for k, s in shapes.items() if ".lora_A." in k and s}
    if not ranks:
        raise _fail(
            reference,
            f"{ADAPTER_WEIGHTS_NAME} holds no LoRA weights (no lora_A tensor)",
            "re-save the adapter",
        )
    rank = adapter_config.get("r")
    if not adapter_config.get("rank_pattern"):  # per-module ranks: PEFT checks them when loading
        wrong = sorted(k for k, r in ranks.items() if r != rank)
        if wrong:
            raise _fail(
                reference,
                f"{ADAPTER_WEIGHTS_NAME} has rank {ranks[wrong[0]]} ({wrong[0]}), {ADAPTER_CONFIG_NAME} says r={rank} "
                "(files of two different adapters?)",
                "re-save the adapter, or restore the adapter_config.json it was saved with",
            )
    source = SourceAdapter(reference, folder, adapter_config, ner_config)
    if source.base_model in ("", "None"):
        raise _fail(
            reference,
            f"neither {ADAPTER_CONFIG_NAME} nor {CLLMFS_CONFIG_NAME} records the base model",
            f"set base_model_name_or_path in {config_path} to the base's Hub id or folder",
        )
    return source
