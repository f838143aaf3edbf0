"""A shippable copy of a trained adapter: bf16 weights, its configs, tokenizer and card, a licence and a card
note (what ``examples/bundle_adapter.py`` runs to make ``cllmfs_hf/resources/adapters/<name>``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from . import bundled
from .artifact import ADAPTER_WEIGHTS_NAME, _replace_folder

__all__ = ["compact_adapter_copy"]


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
        if size > bundled.MAX_BUNDLED_BYTES:
            raise ValueError(
                f"The compact copy of {folder} is {size / 2**20:.1f} MiB, over the {bundled.MAX_BUNDLED_BYTES // 2**20} MiB "
                "a bundled adapter may take: use a smaller LoRA rank or fewer target modules, or dtype bfloat16."
            )
        _replace_folder(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
