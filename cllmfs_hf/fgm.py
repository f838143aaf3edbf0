"""FGM training steps of ``CLLMFSTrainer`` (METHOD.md section 3): one backward per micro-batch, or two.

- ``"single"`` (:meth:`FGMStepMixin._fgm_single_backward_step`): the clean loss is computed as the Trainer
  would; ``g = dL_clean/de`` comes from ``torch.autograd.grad(L_clean, e, retain_graph=True)`` on the embedding
  output ``e`` only, so no parameter ``.grad`` is touched and no gradient hook of DDP / ZeRO fires (a DeepSpeed
  engine's output hooks are kept out: :func:`_outside_engine_backward`); then a forward on ``e + r`` and ONE
  ``accelerator.backward(L_clean + w * L_adv)``. DeepSpeed steps its engine on every backward and FSDP
  reduce-scatters on every backward, so this is the path for those engines. Its price: the clean graph is
  back-propagated twice (once to ``e`` for g, once for the parameters): on CPU a step costs 2.93 SFT steps
  against 1.93 for ``"double"`` (benchmarks/train_overhead.py, SmolLM2-135M).
- ``"double"`` (:meth:`FGMStepMixin._fgm_double_backward_step`): the clean backward leaves g on ``e``
  (retained by a hook, DDP all-reduce skipped with ``no_sync``), a second forward on ``e + r`` and a second
  backward. One backward pass fewer, and it works with reentrant activation checkpointing; not under
  DeepSpeed (the engine would step twice per micro-batch) nor FSDP (untested there).
- ``"auto"``: ``single`` under DeepSpeed and FSDP, ``double`` otherwise (see :func:`resolve_fgm_backward`).

Activation checkpointing: ``torch.autograd.grad`` raises under REENTRANT checkpointing ("checkpoint is
incompatible with .grad()"), which TRL turns on for PEFT + DeepSpeed ZeRO-3. The single path therefore needs
non-reentrant checkpointing: an explicit ``use_reentrant=True`` is refused before training (with the fix),
and when TRL (not the user) chose reentrant for PEFT + ZeRO-3 (trl#2514, a workaround for older DeepSpeed),
the first step re-binds the layers to non-reentrant checkpointing, which trains ZeRO-3 here
(tests/test_engines.py). Non-reentrant is also torch's recommended mode and transformers' default.

Both paths normalise every term exactly like ``Trainer.training_step`` + TRL's ``compute_loss``: LM and
adversarial losses by the token count of the whole accumulated batch (``num_items_in_batch``), otherwise
divided by the accumulation steps; the logged ``adversarial_loss`` is unweighted and on the scale of ``loss``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from typing import Any

import torch
from accelerate.utils import DistributedType
from torch import nn
from transformers.training_args import OptimizerNames

from .collator import SPAN_KEYS
from .config import FGM_BACKWARDS
from .hooks import EmbeddingGradCapture, perturb_embeddings
from .losses import fgm_perturbation

__all__ = [
    "FGM_BACKWARDS",
    "FGMStepMixin",
    "checkpointing_is_reentrant",
    "resolve_fgm_backward",
    "use_non_reentrant_checkpointing",
]


logger = logging.getLogger(__name__)


def checkpointing_is_reentrant(model: nn.Module) -> bool:
    """True when some module of ``model`` runs activation checkpointing in the reentrant mode.

    Reads the checkpoint function transformers installed on the layers (``_gradient_checkpointing_func``), so it
    sees what really runs, whatever the arguments said; torch's own default (``use_reentrant`` unset) counts as
    reentrant, the conservative answer.
    """
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) is True:
            func = getattr(module, "_gradient_checkpointing_func", None)
            keywords = getattr(func, "keywords", None) or {}
            if keywords.get("use_reentrant", True) is not False:
                return True
    return False


def use_non_reentrant_checkpointing(model: nn.Module) -> bool:
    """Re-bind every reentrant checkpoint function of ``model`` with ``use_reentrant=False`` (other keywords
    kept); returns True when one was changed."""
    changed = False
    for module in model.modules():
        func = getattr(module, "_gradient_checkpointing_func", None)
        if (
            isinstance(func, functools.partial)
            and (func.keywords or {}).get("use_reentrant", True) is not False
        ):
            module._gradient_checkpointing_func = functools.partial(
                func.func, *func.args, **{**(func.keywords or {}), "use_reentrant": False}
            )
            changed = True
    return changed


def resolve_fgm_backward(trainer: Any, user_reentrant: bool) -> str:
    """``"single"`` or ``"double"``: the FGM path this trainer runs, from ``args.adversarial_backward``.

    Called at the end of ``CLLMFSTrainer.__init__`` (the engine is known; ``user_reentrant``: the user's own
    ``activation_checkpointing_kwargs`` asked for ``use_reentrant=True``, read before TRL could change them).
    Raises ``ValueError`` naming the fix for a choice the engine or the checkpointing cannot run.
    """
    args = trainer.args
    requested = getattr(args, "adversarial_backward", "auto")
    if requested not in FGM_BACKWARDS:
        raise ValueError(
            f"CLLMFSConfig: adversarial_backward={requested!r}; choose one of {list(FGM_BACKWARDS)}."
        )
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    engine = "DeepSpeed" if trainer.is_deepspeed_enabled else "FSDP"
    if requested == "double" and sharded:
        where = (
            f"the accelerate config's distributed_type: DEEPSPEED (ZeRO stage {trainer.accelerator.state.deepspeed_plugin.zero_stage}) or --deepspeed"
            if trainer.is_deepspeed_enabled
            else "the accelerate config's distributed_type: FSDP or --fsdp"
        )
        raise ValueError(
            f"adversarial_backward='double' does not run under {engine} ({where}): the engine steps (DeepSpeed) "
            "or reduce-scatters (FSDP) on every backward, and the double path does two per micro-batch. Use "
            "--adversarial_backward single (or auto), or --adversarial none."
        )
    mode = requested if requested != "auto" else ("single" if sharded else "double")
    if mode == "single" and args.activation_checkpointing and user_reentrant:
        fix = "" if sharded else ", or --adversarial_backward double"
        raise ValueError(
            f"adversarial_backward={requested!r} runs the one-backward FGM path{f' (needed under {engine})' if sharded else ''}, "
            "which takes dL/de with torch.autograd.grad: that fails under reentrant activation checkpointing, and "
            "activation_checkpointing_kwargs sets use_reentrant=True. Set activation_checkpointing_kwargs="
            f"{{'use_reentrant': False}} (or activation_checkpointing=False){fix}."
        )
    return mode


@contextlib.contextmanager
def _outside_engine_backward(model: nn.Module) -> Iterator[None]:
    """Keep a DeepSpeed engine out of the ``torch.autograd.grad`` call that takes g = dL/de.

    DeepSpeed (0.19) hooks the engine's forward outputs so that any backward through them (1) runs the engine's
    backward prologue, which queues its epilogue: the gradient reduction of a backward that computed no
    parameter gradient (ZeRO-2 fails with ``IndexError`` in ``reduce_ipg_grads``), and (2) divides the
    outputs' gradient by the accumulation steps, which would scale the LM part of g but not the InfoNCE part
    (it reads a hidden state, not an output) and so turn g. Both are looked up on the engine at call time:
    shadowing ``_backward_prologue`` and ``gradient_accumulation_steps`` for this call skips (1) and makes
    (2) a division by 1. The one ``engine.backward`` that follows is untouched.
    """
    if not callable(getattr(model, "_backward_prologue", None)) or not callable(
        getattr(model, "gradient_accumulation_steps", None)
    ):
        yield
        return
    model._backward_prologue = lambda: None
    model.gradient_accumulation_steps = lambda: 1
    try:
        yield
    finally:
        del model._backward_prologue
        del model.gradient_accumulation_steps


class FGMStepMixin:
    """The two FGM training steps of ``CLLMFSTrainer`` (a Trainer subclass supplies every attribute used)."""

    def _input_embeddings(self) -> nn.Module:
        embedding = self.model.get_input_embeddings()
        if embedding is None:
            raise ValueError(
                f"{type(self.model).__name__} exposes no input embeddings; FGM needs them (set adversarial='none')."
            )
        return embedding

    def _perturbation(self, grad: torch.Tensor, clean: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        args = self.cllmfs_args
        return fgm_perturbation(
            grad,
            args.adversarial_epsilon,
            args.adversarial_norm,
            inputs.get("attention_mask"),
            reference=clean if args.adversarial_epsilon_scale == "embedding_norm" else None,
        )

    def _fgm_single_backward_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any
    ) -> torch.Tensor:
        """``Trainer.training_step`` with FGM folded in: one ``accelerator.backward`` per micro-batch.

        Mirrors transformers 5.25's ``Trainer.training_step`` (context parallelism, ``model.train()``,
        ``compute_loss_context_manager``, n_gpu mean, accumulation scaling, DeepSpeed ``scale_wrt_gas=False``,
        LOMO's learning rate); SageMaker model parallelism is not supported (it runs its own backward).
        """
        if use_non_reentrant_checkpointing(
            self.model
        ):  # only TRL's choice reaches here (see module docstring)
            logger.warning(
                "FGM: activation checkpointing switched to non-reentrant (TRL chose reentrant for PEFT + ZeRO-3; "
                "the one-backward FGM path needs torch.autograd.grad, which reentrant checkpointing refuses)."
            )
        cp_context, inputs = self._prepare_context_parallel_inputs(model, inputs)
        with cp_context():
            model.train()
            if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
                self.optimizer.train()
            inputs = self._prepare_inputs(inputs)
            adv_inputs = dict(inputs)  # compute_loss pops the span columns from `inputs`
            embedding = self._input_embeddings()
            with EmbeddingGradCapture(embedding, retain=False) as capture:
                with self.compute_loss_context_manager():
                    clean = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
            del inputs
            if capture.output is None or not capture.output.requires_grad:
                raise RuntimeError(
                    "FGM found no embedding output in the clean forward: the model's forward did not use "
                    "get_input_embeddings() as a module. Set adversarial='none' for this model."
                )
            # Only w.r.t. e: no parameter .grad is written and no DDP / DeepSpeed / FSDP gradient hook fires;
            # retain_graph keeps the clean graph for the one backward below.
            with _outside_engine_backward(model):
                (grad,) = torch.autograd.grad(clean, capture.output, retain_graph=True)
            delta = self._perturbation(grad, capture.output, adv_inputs)
            del grad
            adv = self._adversarial_loss(model, adv_inputs, embedding, delta, num_items_in_batch)
            if self.args.n_gpu > 1:
                clean, adv = clean.mean(), adv.mean()
            ga_scaled = self._ga_scaled(num_items_in_batch)
            total = clean + self.cllmfs_args.adversarial_weight * adv
            if not ga_scaled:
                total = total / self.current_gradient_accumulation_steps
            kwargs: dict[str, Any] = {}
            if self.args.optim in [OptimizerNames.LOMO, OptimizerNames.ADALOMO]:
                kwargs["learning_rate"] = self._get_learning_rate()
            if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
                kwargs["scale_wrt_gas"] = False  # as Trainer.training_step (transformers#35808)
            self.accelerator.backward(total, **kwargs)
            ga = self.current_gradient_accumulation_steps if ga_scaled else 1
            self._log_term("train", "adversarial_loss", adv.detach() * ga)
            return total.detach()

    def _fgm_double_backward_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any, clean_step: Any
    ) -> torch.Tensor:
        """Clean step (``clean_step``: the Trainer's own ``training_step``), then a second forward and backward."""
        args = self.cllmfs_args
        embedding = self._input_embeddings()
        # The clean backward must not all-reduce under DDP: the adversarial backward that follows does it once.
        with EmbeddingGradCapture(embedding) as capture, self.accelerator.no_sync(model):
            clean = clean_step(model, inputs, num_items_in_batch)
        if capture.output is None or capture.output.grad is None:
            raise RuntimeError(
                "FGM found no gradient on the input embedding output after the clean backward: the model's forward "
                "did not use get_input_embeddings() as a module. Set adversarial='none' for this model."
            )
        prepared = self._prepare_inputs(inputs)
        delta = self._perturbation(capture.output.grad, capture.output, prepared)
        capture.output.grad = None
        adv = self._adversarial_loss(model, prepared, embedding, delta, num_items_in_batch)
        ga_scaled = self._ga_scaled(num_items_in_batch)
        weighted = args.adversarial_weight * adv
        if not ga_scaled:
            weighted = weighted / self.current_gradient_accumulation_steps
        self.accelerator.backward(weighted)
        ga = self.current_gradient_accumulation_steps if ga_scaled else 1
        self._log_term("train", "adversarial_loss", adv.detach() * ga)
        return clean + weighted.detach()

    def _adversarial_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        embedding: nn.Module,
        delta: torch.Tensor,
        num_items_in_batch: Any,
    ) -> torch.Tensor:
        """LM loss of a forward on the perturbed embedding outputs, normalised exactly like TRL's LM loss; with
        ``adversarial_contrastive``, plus the weighted InfoNCE of that forward's states (normalised like the clean
        one)."""
        args = self.cllmfs_args
        spans = {k: inputs[k] for k in SPAN_KEYS if k in inputs}
        model_inputs = {k: v for k, v in inputs.items() if k not in SPAN_KEYS}
        model_inputs["use_cache"] = False
        use_cl = args.adversarial_contrastive and args.contrastive_enabled and bool(spans)
        prompt_mask = self._centering_mask(model_inputs) if use_cl else None
        capture = self._contrastive_capture() if use_cl else contextlib.nullcontext()
        with self.compute_loss_context_manager(), perturb_embeddings(embedding, delta), capture:
            outputs = model(**model_inputs, fused_lm_head=True)
        per_token = -outputs.log_probs
        if self.args.loss_type == "dft":
            per_token = per_token * outputs.log_probs.exp().detach()
        num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = per_token.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        if use_cl:
            training = num_items_in_batch is not None
            cl, _ = self._contrastive_term(
                capture, spans, prompt_mask, training=training, num_items_in_batch=num_items_in_batch
            )
            ga = self.current_gradient_accumulation_steps if self._ga_scaled(num_items_in_batch) else 1
            self._log_term("train", "adversarial_contrastive_loss", cl.detach() * ga)
            loss = loss + self.contrastive_weight_now(training) * cl.to(loss.dtype)
        return loss
