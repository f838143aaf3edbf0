"""LoRA deltas folded into the base weights while extracting.

A ``PeftModel`` computes every adapted projection as ``base(x) + B(A(dropout(x)))``; merged (``W + scale * B @
A``) it computes ``base(x)`` alone. On the 2-core CPU, ``predict`` with general-ner took 0.80-0.86 of the unmerged
time (``benchmarks/lora_merge.py``, benchmarks/results/README.md "Decoding"); swapping the LoRA wrappers out for
their base layers as well measured no further gain, so they stay. :func:`lora_merged` merges for the duration of
a block (``NERExtractor.predict`` on a ``PeftModel``, e.g. the evaluation after training) and unmerges on exit
(the weights come back up to the rounding of one add and one subtract), so the adapter saved afterwards is the
trained one; :func:`merge_lora_for_inference` merges for good (``NERExtractor.from_pretrained`` of an adapter).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["lora_merged", "merge_lora_for_inference"]


def _lora_layers(model: Any) -> list[Any]:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return []
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def _mergeable(model: Any, layers: list[Any]) -> bool:
    """Whether merging is exact and harmless here: LoRA layers, all active and unmerged, on a base that is not
    quantized (merging into 4- or 8-bit weights would round the deltas)."""
    if not layers:
        return False
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "hf_quantizer", None) is not None or getattr(base, "quantization_method", None):
        return False
    return all(not m.merged and not m.disable_adapters and m.active_adapters for m in layers)


@contextmanager
def lora_merged(model: Any) -> Iterator[Any]:
    """Within the block, ``model``'s LoRA layers compute with their deltas merged into the base weights; on exit
    they are unmerged. A model without LoRA layers (a base model, or one merged for good), with adapters
    disabled or already merged, or on a quantized base is left as it is.

    Example:
        >>> import torch
        >>> with lora_merged(torch.nn.Linear(2, 2)) as m:  # no LoRA layers: nothing changes
        ...     m(torch.ones(1, 2)).shape
        torch.Size([1, 2])
    """
    layers = _lora_layers(model)
    if not _mergeable(model, layers):
        yield model
        return
    try:
        for layer in layers:
            layer.merge()
        yield model
    finally:
        for layer in layers:
            if layer.merged:
                layer.unmerge()


def merge_lora_for_inference(model: Any) -> Any:
    """``model`` with its LoRA layers merged into the base weights for good (``merge_and_unload``): for a model
    loaded only to extract, which then runs as a plain model at every call with no merge and unmerge (whose
    rounding would otherwise add up over many calls). Returned unchanged where :func:`lora_merged` would leave
    it as it is."""
    if not _mergeable(model, _lora_layers(model)):
        return model
    return model.merge_and_unload()
