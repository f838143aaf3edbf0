"""Adapters shipped inside the package, loadable offline by a short name.

``general-ner`` is the default model (SmolLM2-135M-Instruct) already taught the task on broad data (the
recipe ``examples/recipes/general_ner.yaml``; what it saw and did not see is in its model card). It is the
first stage of the two-stage workflow: a user adapts it to their domain with a handful of sentences::

    NERExtractor.from_pretrained("general-ner")               # zero-shot, offline
    python examples/train.py --init_adapter general-ner ...   # K-shot adaptation from it

A local folder of the same name wins over the bundled one (``./general-ner`` is an ordinary path). A bundled
adapter is an ordinary adapter folder (bf16 weights, its model card and licence), so it pushes to the Hub
like any other (:func:`cllmfs_hf.hub.push_to_hub`). :func:`compact_adapter_copy` makes such a folder from a
trained adapter (``examples/bundle_adapter.py``).

Example:
    >>> from cllmfs_hf.bundled import BUNDLED_ADAPTERS, bundled_adapter_path
    >>> sorted(BUNDLED_ADAPTERS)
    ['general-ner']
    >>> bundled_adapter_path("general-ner").name
    'general-ner'
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .artifact import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME

__all__ = [
    "BUNDLED_ADAPTERS",
    "BUNDLED_DIR",
    "bundled_adapter_path",
    "is_bundled_name",
    "compact_adapter_copy",
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


# Files of an adapter folder that a compact copy keeps as they are (the weights are rewritten).
_KEPT_SUFFIXES = (".json", ".jinja", ".txt", ".model")


def compact_adapter_copy(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    dtype: str = "bfloat16",
    license_text: str | None = None,
    license_id: str | None = None,
    card_note: str | None = None,
) -> Path:
    """Write a shippable copy of the CLLMFS adapter ``source`` to ``target``: its weights cast to ``dtype``,
    its configs, tokenizer files and model card, plus ``LICENSE`` (``license_text``), the card's ``license``
    metadata (``license_id``) and ``card_note`` appended to the card. ``source`` is checked as
    ``--init_adapter`` checks it; ``target`` is replaced atomically (the old one stays if anything fails).

    Example:
        >>> compact_adapter_copy("outputs/general_ner/adapter", "cllmfs_hf/resources/adapters/general-ner",
        ...                      license_text=open("LICENSE").read(), license_id="apache-2.0")  # doctest: +SKIP
    """
    import torch
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file, save_file

    from .init_adapter import inspect_init_adapter

    folder = inspect_init_adapter(str(source)).folder  # errors name what is missing and the fix
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype) or not torch_dtype.is_floating_point:
        raise ValueError(
            f"dtype {dtype!r} is not a torch floating-point dtype: pass bfloat16, float16 or float32."
        )
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    try:
        weights = load_file(str(folder / ADAPTER_WEIGHTS_NAME))
        save_file(
            {k: v.to(torch_dtype).contiguous() for k, v in weights.items()},
            str(staging / ADAPTER_WEIGHTS_NAME),
            metadata={"format": "pt"},
        )
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix in _KEPT_SUFFIXES:
                shutil.copy2(path, staging / path.name)
        if license_text is not None:
            (staging / "LICENSE").write_text(license_text.rstrip() + "\n", encoding="utf-8")
        readme = folder / "README.md"
        if readme.is_file():
            card = ModelCard(readme.read_text(encoding="utf-8"))
            if license_id is not None:
                card.data.license = license_id
            text = str(card)
            if card_note:
                text = text.rstrip() + "\n\n" + card_note.strip() + "\n"
            (staging / "README.md").write_text(text, encoding="utf-8")
        # mkdtemp makes the folder private (0700); a package folder is readable by everyone
        os.chmod(staging, 0o755)
        for path in staging.iterdir():
            os.chmod(path, 0o644)
        size = sum(p.stat().st_size for p in staging.iterdir())
        if size > MAX_BUNDLED_BYTES:
            raise ValueError(
                f"The compact copy of {folder} is {size / 2**20:.1f} MiB, over the {MAX_BUNDLED_BYTES // 2**20} MiB "
                "a bundled adapter may take: use a smaller LoRA rank or fewer target modules, or dtype bfloat16."
            )
        from .hub import _replace_folder

        _replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
