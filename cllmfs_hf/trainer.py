"""``CLLMFSTrainer``: TRL's ``SFTTrainer`` (LoRA SFT) plus hidden-state InfoNCE and FGM (METHOD.md sections 2-3).

- LM loss and TRL's metrics come from ``SFTTrainer.compute_loss`` (fused LM head, completion-only loss).
- InfoNCE is computed from the SAME forward: a forward hook on the chosen decoder layer captures its output
  (TRL's fused head returns no hidden states). transformers checkpoints a layer's ``forward``, not its
  ``__call__``, so the hook sees a tensor with a graph under gradient checkpointing too.
- FGM runs in ``training_step`` (:mod:`cllmfs_hf.fgm`): g = dL/de on the embedding output,
  ``r = epsilon * g / ||g||`` per sequence, a second forward on ``e + r`` gives the adversarial LM loss (plus,
  with ``adversarial_contrastive``, the weighted InfoNCE of that forward's states).
  ``adversarial_backward="single"`` takes g with ``torch.autograd.grad`` and calls ONE
  ``accelerator.backward(L_clean + w * L_adv)`` (every engine: DDP, FSDP, DeepSpeed ZeRO-2/3; needs
  non-reentrant checkpointing); ``"double"`` backpropagates the clean loss first and the adversarial loss
  second (one backward pass fewer; DDP and one device only, any checkpointing).
- Gradient accumulation: the LM and adversarial losses are normalised by the token count of the whole
  accumulated batch (TRL's ``num_items_in_batch``); the InfoNCE sum is normalised by the number of
  (anchor, mention) pairs of the whole accumulated batch (counted in ``get_batch_samples``, across processes
  when ``average_tokens_across_devices``), so 2 x batch 2 equals 1 x batch 4 for every term.
- Logged through the Trainer's normal logging: ``loss``, ``lm_loss``, ``contrastive_loss``,
  ``adversarial_loss``, ``contrastive_pos_cos``, ``contrastive_neg_cos`` plus TRL's metrics (and
  ``adversarial_contrastive_loss`` with ``adversarial_contrastive``). Term values are unweighted and on the same
  scale as ``loss``, so ``loss = lm_loss + w_cl * contrastive_loss + w_adv * adversarial_loss``, where
  ``adversarial_loss`` is the whole adversarial objective (its LM loss, plus ``w_cl *
  adversarial_contrastive_loss`` when that is on).

Example:
    >>> from peft import LoraConfig
    >>> from cllmfs_hf.config import CLLMFSConfig
    >>> from cllmfs_hf.data.records import build_records, records_to_dataset
    >>> trainer = CLLMFSTrainer(  # doctest: +SKIP
    ...     model, args=CLLMFSConfig(output_dir="out", report_to="none"),
    ...     train_dataset=records_to_dataset(build_records(sentences)), processing_class=tokenizer,
    ...     peft_config=LoraConfig(r=16, target_modules="all-linear"))
    >>> trainer.train()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.trainer import TRAINING_ARGS_NAME
from trl import SFTTrainer

from .artifact import NERAdapterConfig
from .collator import REQUIRED_RECORD_KEYS, SPAN_KEYS, CLLMFSDataCollator
from .config import CLLMFSConfig, NegativeSamplingConfig, resolve_layer_index
from .fgm import FGMStepMixin, resolve_fgm_backward
from .hooks import HiddenCapture, find_decoder_layers
from .hub import prepare_adapter_files, save_adapter
from .hub import push_to_hub as push_folder
from .losses import ContrastiveTerms, contrastive_loss_terms, count_contrastive_pairs

__all__ = ["CLLMFSTrainer", "find_decoder_layers"]

logger = logging.getLogger(__name__)


class CLLMFSTrainer(FGMStepMixin, SFTTrainer):
    """LoRA SFT on CLLMFS instruction records with the InfoNCE and FGM terms (see the module docstring).

    Takes the arguments of ``SFTTrainer``; ``args`` must be a :class:`~cllmfs_hf.config.CLLMFSConfig` and the
    datasets must hold records from :func:`cllmfs_hf.data.records.build_records` (the collator is built
    from ``args`` unless one is passed).

    The trainer owns its artifact (SpanMarker style): ``save_model`` writes a complete adapter folder (PEFT
    files, tokenizer, ``cllmfs_config.json`` from ``adapter_config``, the model card), ``create_model_card``
    writes this library's card, and ``push_to_hub`` uploads such a folder, card intact. ``adapter_config``
    (a :class:`~cllmfs_hf.artifact.NERAdapterConfig`) says what the adapter extracts; by default the labels
    of ``train_dataset`` with their built-in descriptions.
    """

    def __init__(
        self,
        model: Any,
        args: CLLMFSConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        adapter_config: NERAdapterConfig | None = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = CLLMFSConfig(output_dir="cllmfs-output")
        if not isinstance(args, CLLMFSConfig):
            raise TypeError(
                f"CLLMFSTrainer needs args=CLLMFSConfig(...), got {type(args).__name__}: build a CLLMFSConfig "
                "(it accepts every SFTConfig field)."
            )
        if processing_class is None:
            if not isinstance(model, str):
                raise ValueError(
                    "CLLMFSTrainer needs processing_class=<tokenizer> when the model is an instance (the collator "
                    "tokenizes the records itself)."
                )
            from transformers import AutoTokenizer

            processing_class = AutoTokenizer.from_pretrained(model)
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = args.pad_token or tokenizer.eos_token
        for name, dataset in (("train_dataset", train_dataset), *self._named_eval(eval_dataset)):
            self._check_columns(name, dataset)
        # Read before SFTTrainer.__init__, which may set use_reentrant=True itself (PEFT + ZeRO-3).
        user_reentrant = (args.activation_checkpointing_kwargs or {}).get("use_reentrant") is True
        if data_collator is None:
            data_collator = CLLMFSDataCollator(
                tokenizer,
                max_length=args.max_length,
                pad_to_multiple_of=args.pad_to_multiple_of,
                completion_only_loss=args.completion_only_loss is not False,
                negatives=NegativeSamplingConfig.from_config(args),
                seed=args.seed,
                anchor=args.contrastive_anchor,
            )
        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # TRL mirrors the pad token onto the model only when it builds its own collator.
        self.model.config.get_text_config().pad_token_id = tokenizer.pad_token_id
        if getattr(self.model, "generation_config", None) is not None:
            self.model.generation_config.pad_token_id = tokenizer.pad_token_id

        self._decoder_layers = find_decoder_layers(self.model, args.decoder_layers_path)
        self.contrastive_layer_index = resolve_layer_index(args.contrastive_layer, len(self._decoder_layers))
        self._pairs_in_step: torch.Tensor | None = None
        # After Trainer.__init__: the engine (DeepSpeed / FSDP) and the checkpointing mode are known by now.
        self.fgm_backward = resolve_fgm_backward(self, user_reentrant) if args.adversarial_enabled else None
        self.adapter_config = adapter_config or self._default_adapter_config(train_dataset)
        self._evaluation: dict[str, Any] = {}
        if isinstance(data_collator, CLLMFSDataCollator) and hasattr(train_dataset, "__len__"):
            self._audit(data_collator, train_dataset)

    # ---- setup helpers ----------------------------------------------------------------------------------
    @staticmethod
    def _named_eval(eval_dataset: Any) -> list[tuple[str, Any]]:
        if eval_dataset is None:
            return []
        if isinstance(eval_dataset, dict):
            return [(f"eval_dataset[{k!r}]", v) for k, v in eval_dataset.items()]
        return [("eval_dataset", eval_dataset)]

    @staticmethod
    def _check_columns(name: str, dataset: Any) -> None:
        if dataset is None:
            return
        columns = getattr(dataset, "column_names", None)
        if columns is None:
            try:
                columns = list(next(iter(dataset)).keys())
            except (StopIteration, TypeError, AttributeError):
                return
        missing = [k for k in REQUIRED_RECORD_KEYS if k not in columns]
        if missing:
            raise ValueError(
                f"{name} lacks the columns {missing} (has {list(columns)}): build it with "
                "cllmfs_hf.data.records.build_records + records_to_dataset."
            )

    @staticmethod
    def _audit(collator: CLLMFSDataCollator, dataset: Any) -> None:
        counts = collator.audit(dataset)
        if counts["completion_truncated"]:
            logger.warning(
                "%d of %d training records have their completion entirely cut by max_length=%s (longest record: %d "
                "tokens); they are kept but add no LM loss. Raise max_length.",
                counts["completion_truncated"],
                counts["records"],
                collator.max_length,
                counts["longest"],
            )
        if counts["dropped_mentions"]:
            logger.warning(
                "%d gold mention(s) are cut by max_length=%s and left out of the contrastive term.",
                counts["dropped_mentions"],
                collator.max_length,
            )
        if counts["unmapped_spans"]:
            logger.warning(
                "%d span(s) of the training records map to no prompt token and are left out of the contrastive term.",
                counts["unmapped_spans"],
            )

    # ---- the artifact: the trainer writes the whole adapter folder -------------------------------------
    def _default_adapter_config(self, train_dataset: Any) -> NERAdapterConfig:
        labels = list(train_dataset["label"]) if hasattr(train_dataset, "column_names") else []
        if not labels and train_dataset is not None and hasattr(train_dataset, "__iter__"):
            labels = [r["label"] for r in train_dataset]
        if not labels:
            raise ValueError(
                "CLLMFSTrainer cannot tell the entity types of the adapter (no train_dataset 'label' column): pass "
                "adapter_config=NERAdapterConfig.from_training(entity_types, descriptions)."
            )
        return NERAdapterConfig.from_training(sorted(set(labels)))

    def record_evaluation(self, scores: Any, *, dataset_name: str, protocol: str) -> None:
        """Scores (a ``NERScores`` or its dict) that the saved config and the card's model-index will carry."""
        self._evaluation = {"eval_results": scores, "dataset_name": dataset_name, "protocol": protocol}

    def _adapter_tokenizer(self) -> Any:
        return getattr(self.processing_class, "tokenizer", self.processing_class)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> str:
        """Save a complete adapter folder into ``output_dir`` (default ``args.output_dir``); returns its path.

        A folder of its own is written atomically (:func:`cllmfs_hf.hub.save_adapter`); checkpoints, the run
        folder itself and sharded (FSDP / ZeRO-3) models go through the Trainer's own saving, then get
        ``cllmfs_config.json`` and the card beside the weights.
        """
        folder = str(output_dir or self.args.output_dir)
        in_place = _internal_call or self.is_fsdp_enabled or self.is_deepspeed_enabled
        if in_place or Path(folder).resolve() == Path(self.args.output_dir).resolve():
            super().save_model(folder, _internal_call=True)
            if self.args.should_save:
                try:
                    config, card = prepare_adapter_files(
                        self.accelerator.unwrap_model(self.model),
                        self.adapter_config,
                        training_args=self.args,
                        **self._evaluation,
                    )
                except ValueError as err:
                    if not _internal_call:
                        raise
                    # A checkpoint of a model that has no base id (built from a config in memory) keeps its
                    # weights; the final save_model names the fix.
                    logger.warning("Checkpoint %s has no cllmfs_config.json: %s", folder, err)
                else:
                    config.save(folder)
                    (Path(folder) / "README.md").write_text(card, encoding="utf-8")
        elif self.args.should_save:
            save_adapter(
                self.accelerator.unwrap_model(self.model),
                self._adapter_tokenizer(),
                folder,
                self.adapter_config,
                training_args=self.args,
                **self._evaluation,
            )
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)
        return folder

    def create_model_card(self, **card_kwargs: Any) -> None:
        """Write this library's model card (not TRL's) as ``README.md`` in ``args.output_dir``.

        Accepts ``model_name``, ``license``, ``language``, ``tags`` and ``dataset`` (datasets); the other
        keyword arguments of ``Trainer.create_model_card`` are not used by this card.
        """
        if not self.is_world_process_zero():
            return
        kwargs = {
            k: card_kwargs[k] for k in ("model_name", "license", "language", "tags") if k in card_kwargs
        }
        if card_kwargs.get("dataset"):
            data = card_kwargs["dataset"]
            kwargs["datasets"] = [data] if isinstance(data, str) else list(data)
        _, card = prepare_adapter_files(
            self.accelerator.unwrap_model(self.model),
            self.adapter_config,
            training_args=self.args,
            repo_id=self.args.hub_model_id,
            **kwargs,
            **self._evaluation,
        )
        Path(self.args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.args.output_dir) / "README.md").write_text(card, encoding="utf-8")

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **card_kwargs: Any,
    ) -> str | None:
        """Upload the complete adapter folder (weights, tokenizer, ``cllmfs_config.json``, this library's card)
        to ``args.hub_model_id``; returns the commit URL on the main process."""
        if not self.args.hub_model_id:
            raise ValueError("push_to_hub needs args.hub_model_id (owner/name): set --hub_model_id.")
        staging = Path(self.args.output_dir) / ".hub-upload"
        self.save_model(str(staging), _internal_call=True)
        if not self.is_world_process_zero():
            return None
        try:
            # The Trainer's pickled arguments stay local: the Hub gets safetensors only, and every
            # hyperparameter is in cllmfs_config.json already.
            (staging / TRAINING_ARGS_NAME).unlink(missing_ok=True)
            _, card = prepare_adapter_files(
                self.accelerator.unwrap_model(self.model),
                self.adapter_config,
                training_args=self.args,
                repo_id=self.args.hub_model_id,
                **card_kwargs,
                **self._evaluation,
            )
            (staging / "README.md").write_text(card, encoding="utf-8")
            return push_folder(
                staging,
                self.args.hub_model_id,
                private=bool(self.args.hub_private_repo if private is None else private),
                token=token if token is not None else self.args.hub_token,
                commit_message=commit_message or "Upload CLLMFS NER adapter",
                revision=revision,
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @property
    def cllmfs_args(self) -> CLLMFSConfig:
        return self.args  # type: ignore[return-value]

    # ---- gradient accumulation: count the contrastive pairs of the whole accumulated batch --------------
    def get_batch_samples(
        self, epoch_iterator: Iterator, num_batches: int, device: torch.device
    ) -> tuple[list, Any]:
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        pairs = torch.tensor(sum(count_contrastive_pairs(b) for b in batch_samples), device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            pairs = self.accelerator.gather(pairs).sum()
        self._pairs_in_step = pairs
        return batch_samples, num_items_in_batch

    def _ga_scaled(self, num_items_in_batch: Any) -> bool:
        """True when the Trainer leaves gradient-accumulation scaling to the loss (TRL's token normalisation)."""
        if self.loss_is_scaled_for_ga is not None:
            return bool(self.loss_is_scaled_for_ga)
        return bool(
            (self.model_accepts_loss_kwargs and num_items_in_batch is not None) or self.compute_loss_func
        )

    def _log_term(self, mode: str, name: str, value: torch.Tensor | float) -> None:
        value = (
            torch.as_tensor(value, dtype=torch.float32, device=self.accelerator.device).detach().reshape(1)
        )
        self._metrics[mode][name].append(float(self.accelerator.gather_for_metrics(value).mean()))

    # ---- loss -------------------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        args = self.cllmfs_args
        spans = {k: inputs.pop(k) for k in SPAN_KEYS if k in inputs}
        mode = "train" if self.model.training else "eval"
        use_cl = args.contrastive_enabled and bool(spans)
        prompt_mask = self._centering_mask(inputs) if use_cl else None
        capture = self._contrastive_capture() if use_cl else None
        with capture if capture is not None else contextlib.nullcontext():
            result = super().compute_loss(
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        loss, outputs = result if return_outputs else (result, None)
        training = mode == "train" and num_items_in_batch is not None
        ga = (
            self.current_gradient_accumulation_steps
            if training and self._ga_scaled(num_items_in_batch)
            else 1
        )
        self._log_term(mode, "lm_loss", loss.detach() * ga)

        if use_cl:
            cl, terms = self._contrastive_term(
                capture, spans, prompt_mask, training=training, num_items_in_batch=num_items_in_batch
            )
            loss = loss + self.contrastive_weight_now(training) * cl.to(loss.dtype)
            self._log_term(mode, "contrastive_loss", cl.detach() * ga)
            if terms.num_pairs:
                self._metrics[mode]["contrastive_pos_cos"].append(terms.pos_cos)
                if terms.neg_cos == terms.neg_cos:  # not NaN
                    self._metrics[mode]["contrastive_neg_cos"].append(terms.neg_cos)
        elif args.contrastive_enabled:
            raise ValueError(
                f"contrastive_weight={args.contrastive_weight} but the batch has none of {list(SPAN_KEYS)}: the "
                "data collator does not carry span positions. Use cllmfs_hf.collator.CLLMFSDataCollator (the "
                "default) or set contrastive_weight=0."
            )
        return (loss, outputs) if return_outputs else loss

    def _centering_mask(self, inputs: dict[str, Any]) -> torch.Tensor | None:
        """The prompt's own tokens (no padding, no answer), over which each row's mean state is taken; None
        without centring. Read before the forward, which may consume ``labels``."""
        if self.cllmfs_args.contrastive_centering == "none":
            return None
        mask = inputs["attention_mask"].bool()
        if "labels" in inputs:
            mask = mask & (inputs["labels"] == -100)
        return mask

    def _contrastive_capture(self) -> HiddenCapture:
        return HiddenCapture(self._decoder_layers[self.contrastive_layer_index])

    def _contrastive_term(
        self,
        capture: HiddenCapture,
        spans: dict[str, Any],
        prompt_mask: torch.Tensor | None,
        *,
        training: bool,
        num_items_in_batch: Any,
    ) -> tuple[torch.Tensor, ContrastiveTerms]:
        """The InfoNCE loss of the states one forward left in ``capture`` (clean or FGM-perturbed), normalised
        like the LM loss, and its terms (pair count, cosines) for logging."""
        args = self.cllmfs_args
        if capture.hidden is None:
            raise RuntimeError(
                f"The forward hook on decoder layer {self.contrastive_layer_index} saw no output: the model's "
                "forward does not run its decoder layers as modules. Set decoder_layers_path or contrastive_weight=0."
            )
        terms = contrastive_loss_terms(
            capture.hidden,
            spans["cl_anchor_span"],
            spans["cl_positive_spans"],
            spans["cl_negative_spans"],
            spans["cl_row_label"],
            temperature=args.contrastive_temperature,
            pooling=args.contrastive_pooling,
            in_batch_negatives=args.in_batch_negatives,
            centering=args.contrastive_centering,
            token_mask=prompt_mask,
        )
        if training and self._pairs_in_step is not None and self._ga_scaled(num_items_in_batch):
            # Normalise by the pairs of the whole accumulated batch, like TRL's token count for the LM loss.
            denom = self._pairs_in_step.to(terms.loss_sum.device).clamp(min=1)
            cl = terms.loss_sum / denom
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                cl = cl * self.accelerator.num_processes
        else:
            cl = terms.loss_sum / max(terms.num_pairs, 1)
        return cl, terms

    def contrastive_weight_now(self, training: bool = True) -> float:
        """The contrastive weight of the current step: ``contrastive_weight`` after a linear warm-up over
        ``contrastive_warmup_ratio`` of the training steps (step s of N counts as ``(s + 1) / warm-up steps``)."""
        args = self.cllmfs_args
        warmup = args.contrastive_warmup_ratio * max(self.state.max_steps, 0)
        if not training or warmup <= 0:
            return args.contrastive_weight
        return args.contrastive_weight * min(1.0, (self.state.global_step + 1) / warmup)

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        if not self.cllmfs_args.adversarial_enabled:
            return super().training_step(model, inputs, num_items_in_batch)
        if self.fgm_backward == "double":
            return self._fgm_double_backward_step(model, inputs, num_items_in_batch, super().training_step)
        with self.maybe_activation_offload_context:  # what SFTTrainer.training_step adds to the Trainer's
            return self._fgm_single_backward_step(model, inputs, num_items_in_batch)
