"""Adapters shipped inside the package, loadable offline by a short name.

``general-ner`` is the default model (SmolLM2-135M-Instruct) already taught the task on broad data (the
recipe ``examples/recipes/general_ner.yaml``; what it saw and did not see is in its model card). It is the
first stage of the two-stage workflow: a user adapts it to their domain with a handful of sentences::

    NERExtractor.from_pretrained("general-ner")               # zero-shot, offline
    python examples/train.py --init_adapter general-ner ...   # K-shot adaptation from it

A local folder of the same name wins over the bundled one (``./general-ner`` is an ordinary path). A bundled
adapter is an ordinary adapter folder (bf16 weights, its model card and licence), so it pushes to the Hub
like any other (:func:`cllmfs_hf.hub.push_to_hub`). :func:`cllmfs_hf.compact.compact_adapter_copy` makes such
a folder from a trained adapter (``examples/bundle_adapter.py``).

Example:
    >>> from cllmfs_hf.bundled import BUNDLED_ADAPTERS, bundled_adapter_path
    >>> sorted(BUNDLED_ADAPTERS)
    ['general-ner']
    >>> bundled_adapter_path("general-ner").name
    'general-ner'
"""

from __future__ import annotations

import os
from pathlib import Path

from .artifact import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME

__all__ = [
    "BUNDLED_ADAPTERS",
    "BUNDLED_DIR",
    "bundled_adapter_path",
    "is_bundled_name",
]

#: Where the shipped adapters live (package data, see pyproject's ``resources/**/*``).
BUNDLED_DIR = Path(__file__).parent / "resources" / "adapters"

#: Short name -> what it is (one line, shown in errors and ``--help``).
BUNDLED_ADAPTERS: dict[str, str] = {
    "general-ner": "SmolLM2-135M-Instruct taught NER on CrossNER natural science (17 types); never saw politics "
    "or biomedicine",
}

#: Size cap of a shipped adapter folder (the package stays small).
MAX_BUNDLED_BYTES = 25 * 1024 * 1024


def is_bundled_name(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` refers to a shipped adapter: one of :data:`BUNDLED_ADAPTERS`, and no local path of
    that name exists (a local folder always wins)."""
    name = str(name)
    return name in BUNDLED_ADAPTERS and not Path(name).expanduser().exists()


def bundled_adapter_path(name: str) -> Path:
    """The folder of the shipped adapter ``name``.

    Raises:
        KeyError: ``name`` is not a shipped adapter (the message lists those that are).
        FileNotFoundError: the package was installed without its data files.
    """
    if name not in BUNDLED_ADAPTERS:
        raise KeyError(
            f"{name!r} is not a bundled adapter: the bundled ones are {sorted(BUNDLED_ADAPTERS)}; pass one of "
            "them, an adapter folder or a Hub repo id."
        )
    folder = BUNDLED_DIR / name
    if not (folder / ADAPTER_CONFIG_NAME).is_file() or not (folder / ADAPTER_WEIGHTS_NAME).is_file():
        raise FileNotFoundError(
            f"The bundled adapter {name!r} is missing from this installation ({folder} has no "
            f"{ADAPTER_CONFIG_NAME} or {ADAPTER_WEIGHTS_NAME}). Fix: reinstall cllmfs-hf with its package data "
            "(pip install --force-reinstall cllmfs-hf, or pip install -e . in a checkout)."
        )
    return folder
