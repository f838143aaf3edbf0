"""Sharing an adapter folder: :func:`push_to_hub` uploads a folder written by
:func:`cllmfs_hf.hub.save_adapter` (or the trainer's ``save_model``) as it is, model card included
(``PeftModel.push_to_hub`` would replace the card)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .artifact import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    CLLMFS_CONFIG_NAME,
    NERAdapterConfig,
    _find_pickles,
)
from .models import looks_like_hub_id

__all__ = ["push_to_hub"]

logger = logging.getLogger("cllmfs_hf.hub")  # the logger these messages always had


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
