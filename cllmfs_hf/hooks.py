"""Where the auxiliary terms read the model: its decoder layers, a layer's hidden states, the embedding output.

- :func:`find_decoder_layers`: the decoder layer list of a causal LM, through PEFT / DDP wrappers.
- ``HiddenCapture``: a forward hook that keeps one layer's output of the SAME forward that computes the LM
  loss (TRL's fused LM head returns no hidden states). transformers checkpoints a layer's ``forward``, not
  its ``__call__``, so the hook sees a tensor with a graph under gradient checkpointing too.
- ``EmbeddingGradCapture`` / ``perturb_embeddings``: the embedding output e whose gradient FGM needs
  (g = dL/de), and a forward on ``e + r``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["EmbeddingGradCapture", "HiddenCapture", "find_decoder_layers", "perturb_embeddings"]

_LAYER_PATHS = (
    "model.layers",  # Llama, Qwen2, Mistral, Gemma, Phi3, ...
    "model.language_model.layers",  # vision-language wrappers
    "model.decoder.layers",  # OPT
    "transformer.h",  # GPT-2, Falcon, ...
    "gpt_neox.layers",
    "transformer.blocks",
)


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def find_decoder_layers(model: nn.Module, path: str | None = None) -> nn.ModuleList:
    """The decoder layers of a causal LM, looking through PEFT (and DDP) wrappers.

    Example:
        >>> layers = find_decoder_layers(model)  # doctest: +SKIP
        >>> len(layers)  # doctest: +SKIP
        30
    """
    base = model
    while hasattr(base, "module") and isinstance(base.module, nn.Module):  # DDP / accelerate wrappers
        base = base.module
    if hasattr(base, "get_base_model"):  # PeftModel
        base = base.get_base_model()
    paths = (path,) if path else _LAYER_PATHS
    for candidate in paths:
        try:
            layers = _get_path(base, candidate)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList) and len(layers) > 0:
            return layers
    if path:
        raise ValueError(
            f"decoder_layers_path={path!r} does not lead to a non-empty nn.ModuleList on {type(base).__name__}: "
            "check the attribute names with print(model)."
        )
    raise ValueError(
        f"Cannot find the decoder layers of {type(base).__name__} (tried {', '.join(_LAYER_PATHS)}): the "
        "contrastive term needs them. Set CLLMFSConfig.decoder_layers_path to the dotted path of its decoder "
        "layer list, or set contrastive_weight=0."
    )


class HiddenCapture:
    """Forward hook that keeps the first output of a decoder layer during one forward."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.hidden: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self.hidden is None:
            out = output[0] if isinstance(output, (tuple, list)) else output
            if hasattr(out, "last_hidden_state"):
                out = out.last_hidden_state
            self.hidden = out

    def __enter__(self) -> HiddenCapture:
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()


class EmbeddingGradCapture:
    """Forward hook on the input embedding: keeps its output ``e`` of the first call, as part of the graph.

    A frozen embedding's output gets ``requires_grad`` (as a leaf), so ``dL/de`` exists. With ``retain=True``
    (the two-backward FGM path) a non-leaf output also keeps ``.grad`` after ``backward()``; the one-backward
    path reads ``dL/de`` with ``torch.autograd.grad`` and needs no retained ``.grad``.
    """

    def __init__(self, embedding: nn.Module, retain: bool = True) -> None:
        self.embedding = embedding
        self.retain = retain
        self.output: torch.Tensor | None = None
        self._handle = None

    def _hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor | None:
        if self.output is not None or not torch.is_grad_enabled():
            return None
        if not output.requires_grad:
            output = output.detach().requires_grad_(True)
        elif self.retain:
            output.retain_grad()
        self.output = output
        return output

    def __enter__(self) -> EmbeddingGradCapture:
        self._handle = self.embedding.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()


@contextlib.contextmanager
def perturb_embeddings(embedding: nn.Module, delta: torch.Tensor) -> Iterator[None]:
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if output.shape != delta.shape:
            raise RuntimeError(
                f"FGM: the perturbation has shape {tuple(delta.shape)} but the embedding output has "
                f"{tuple(output.shape)}; the second forward must see the same batch."
            )
        return output + delta.to(output.dtype)

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
