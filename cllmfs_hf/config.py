"""``CLLMFSConfig``: TRL's ``SFTConfig`` plus the contrastive (InfoNCE) and adversarial (FGM) terms.

The total training loss is ``L = L_lm + contrastive_weight * L_cl + adversarial_weight * L_adv``
(METHOD.md sections 2 and 3). Each weight at 0 switches its term off; with both at 0 the trainer computes
exactly the plain ``SFTTrainer`` loss.

Defaults that differ from ``SFTConfig`` (and why):

- ``remove_unused_columns=False``: the span columns of the instruction records must reach the collator.
- ``dataset_kwargs={"skip_prepare_dataset": True}``: the CLLMFS collator tokenizes the records itself, so the
  token positions of the type name and of every mention come from the same tokenization as the input ids.
- ``bf16``: on only where a CUDA device supports it (SFTConfig turns it on everywhere, which on CPU means
  slow bfloat16 autocast).
- ``packing`` / ``padding_free`` are rejected: span positions need one example per row.

Example:
    >>> from cllmfs_hf.config import CLLMFSConfig
    >>> cfg = CLLMFSConfig(output_dir="out", contrastive_weight=0.5, adversarial="none", report_to="none")
    >>> cfg.remove_unused_columns, cfg.dataset_kwargs["skip_prepare_dataset"]
    (False, True)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any

from trl import SFTConfig

__all__ = [
    "AdversarialConfig",
    "CLLMFSConfig",
    "CLLMFS_FIELD_GROUPS",
    "CONTRASTIVE_ANCHORS",
    "FGM_BACKWARDS",
    "ContrastiveConfig",
    "NegativeSamplingConfig",
    "check_layer_spec",
    "resolve_layer_index",
]

logger = logging.getLogger(__name__)

_POOLINGS = ("mean", "endpoints")
#: What the InfoNCE anchor is (the collator points cl_anchor_span at it).
CONTRASTIVE_ANCHORS = ("type_name", "prompt_end")
_ANCHORS = CONTRASTIVE_ANCHORS
_CENTERINGS = ("none", "prompt_mean", "prompt_standardize")
_EPSILON_SCALES = ("absolute", "embedding_norm")
_ADVERSARIAL_MODES = ("none", "fgm")
_ADVERSARIAL_NORMS = ("sequence", "token")
FGM_BACKWARDS = ("auto", "single", "double")


def check_layer_spec(layer: Any) -> str:
    """Validate a ``contrastive_layer`` value on its own: ``"index"`` or ``"fraction"`` (the one place it is checked).

    Example:
        >>> check_layer_spec(0.75), check_layer_spec(-1), check_layer_spec(24.0)
        ('fraction', 'index', 'index')
    """
    if isinstance(layer, bool) or not isinstance(layer, (int, float)):
        raise TypeError(
            f"contrastive_layer must be an int layer index or a float fraction of depth, got {layer!r}."
        )
    if isinstance(layer, float) and not (layer.is_integer() and layer >= 2):
        if not 0.0 < layer <= 1.0:
            raise ValueError(
                f"contrastive_layer={layer} is a fraction of depth and must be in (0, 1]; pass an int to pick a "
                "layer index instead."
            )
        return "fraction"
    return "index"


def resolve_layer_index(layer: float | int, num_layers: int) -> int:
    """The 0-based decoder layer whose output feeds the contrastive term.

    ``layer`` is either an index (a Python ``int``, negative counts from the end, or a whole-number float
    ``>= 2`` as a command line gives it) or a fraction of the depth in ``(0, 1]``: the output of layer
    ``round(fraction * num_layers)`` counted from 1, i.e. index ``max(1, round(fraction * num_layers)) - 1``
    (Python's ``round``: a half goes to the even neighbour, so 0.75 of SmolLM2's 30 layers is layer 22, index 21).

    Example:
        >>> resolve_layer_index(0.75, 32), resolve_layer_index(0.75, 30), resolve_layer_index(-1, 4), resolve_layer_index(1.0, 4)
        (23, 21, 3, 3)
    """
    if num_layers < 1:
        raise ValueError(
            f"The model has {num_layers} decoder layers; the contrastive term needs at least one."
        )
    if check_layer_spec(layer) == "fraction":
        return max(1, round(layer * num_layers)) - 1
    index = int(layer)
    if not -num_layers <= index < num_layers:
        raise ValueError(
            f"contrastive_layer={layer} is out of range for a model with {num_layers} decoder layers: use an index "
            f"in [-{num_layers}, {num_layers - 1}] or a fraction of depth in (0, 1]."
        )
    return index % num_layers


# ---- sub-configs: each group of CLLMFS knobs is declared and validated once, here ------------------------
# CLLMFSConfig inherits all three, so the knobs stay flat command-line options (--boundary_shift 1), while
# the collator, the loss and the saved hyperparameters take a group as one object.


@dataclass
class ContrastiveConfig:
    """The hidden-state InfoNCE term (METHOD.md section 2).

    Example:
        >>> ContrastiveConfig(contrastive_layer=0.5).contrastive_enabled
        True
    """

    # Defaults from the dev-split study (benchmarks/results/README.md, "Dev-split study"): at weight 0.1 on raw
    # states the term was inert (its loss did not move; the answers equalled plain SFT's); centred, at weight 1.0
    # with a 30% warm-up, it learns (InfoNCE falls, the anchor-positive vs -negative cosine gap widens) and was
    # the best dev setting (+0.8 F1 over SFT on NCBI-disease + WNUT-17 dev, CI -1.3 to +2.6: not significant).
    contrastive_weight: float = field(
        default=1.0,
        metadata={"help": "Weight lambda_cl of the hidden-state InfoNCE term. 0 switches the term off."},
    )
    contrastive_layer: float = field(
        default=0.75,
        metadata={
            "help": "Decoder layer whose output states feed the InfoNCE term: a fraction of depth in (0, 1] "
            "(0.75 = the output of layer round(0.75 * num_layers)), or a 0-based layer index (an int; negative "
            "counts from the end)."
        },
    )
    contrastive_temperature: float = field(
        default=0.1,
        metadata={"help": "Temperature tau of the InfoNCE softmax over cosine similarities (> 0)."},
    )
    contrastive_pooling: str = field(
        default="mean",
        metadata={
            "help": "Span representation of a mention: 'mean' (mean over the span's token states) or 'endpoints' "
            "(mean of its first and last token states). The anchor (type name) is always the mean.",
            "choices": list(_POOLINGS),
        },
    )
    contrastive_anchor: str = field(
        default="type_name",
        metadata={
            "help": "Anchor of the InfoNCE term: 'type_name' (mean state of the type-name tokens of the "
            "instruction) or 'prompt_end' (the state of the last prompt token, which in a causal decoder has seen "
            "the type, its description and the sentence).",
            "choices": list(_ANCHORS),
        },
    )
    contrastive_centering: str = field(
        default="prompt_mean",
        metadata={
            "help": "Anisotropy correction before the cosines: 'none'; 'prompt_mean' (subtract each sequence's "
            "mean state over its non-padding prompt tokens, attention sinks left out, which removes the direction "
            "all states share); "
            "'prompt_standardize' (also divide each dimension by its standard deviation over those tokens).",
            "choices": list(_CENTERINGS),
        },
    )
    contrastive_warmup_ratio: float = field(
        default=0.3,
        metadata={
            "help": "Share of the training steps over which the contrastive weight ramps linearly from 0 to "
            "contrastive_weight, in [0, 1) (0 = the full weight from the first step)."
        },
    )
    decoder_layers_path: str | None = field(
        default=None,
        metadata={
            "help": "Dotted attribute path from the base model to its list of decoder layers, for architectures "
            "the trainer does not find on its own (e.g. 'model.layers', 'transformer.h')."
        },
    )

    def __post_init__(self) -> None:
        self.validate_contrastive()

    def validate_contrastive(self) -> None:
        if not self.contrastive_weight >= 0.0:
            raise ValueError(
                f"CLLMFSConfig: contrastive_weight must be >= 0 (0 switches the term off), got {self.contrastive_weight}."
            )
        if not self.contrastive_temperature > 0.0:
            raise ValueError(
                f"CLLMFSConfig: contrastive_temperature must be > 0, got {self.contrastive_temperature} (try 0.1)."
            )
        check_layer_spec(self.contrastive_layer)
        for name, choices in (
            ("contrastive_pooling", _POOLINGS),
            ("contrastive_anchor", _ANCHORS),
            ("contrastive_centering", _CENTERINGS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"CLLMFSConfig: {name}={getattr(self, name)!r}; choose one of {list(choices)}."
                )
        if not 0.0 <= self.contrastive_warmup_ratio < 1.0:
            raise ValueError(
                f"CLLMFSConfig: contrastive_warmup_ratio must be in [0, 1), got {self.contrastive_warmup_ratio} "
                "(0 = no warm-up)."
            )

    @property
    def contrastive_enabled(self) -> bool:
        """True when the InfoNCE term contributes to the loss."""
        return self.contrastive_weight > 0.0


@dataclass
class NegativeSamplingConfig:
    """Which negatives the InfoNCE term contrasts each gold mention with (PEFT ``LoftQConfig`` style sub-config).

    ``CLLMFSDataCollator`` takes it whole (boundary, other-type and non-entity negatives are built per record);
    the trainer reads ``in_batch_negatives``. A ``CLLMFSConfig`` is a ``NegativeSamplingConfig``.

    Example:
        >>> NegativeSamplingConfig(boundary_shift=1, non_entity_negatives=0).max_negatives
        32
    """

    boundary_negatives: bool = field(
        default=True,
        metadata={
            "help": "Use boundary negatives: the gold span with start or end shifted by 1..boundary_shift tokens."
        },
    )
    boundary_shift: int = field(
        default=2,
        metadata={"help": "Largest shift, in tokens, of a boundary negative (>= 1)."},
    )
    type_negatives: bool = field(
        default=True,
        metadata={"help": "Use the mentions of the other entity types in the same sentence as negatives."},
    )
    non_entity_negatives: int = field(
        default=2,
        metadata={
            "help": "Number of random non-entity spans (overlapping no mention of any type) sampled per record as "
            "negatives (0 disables). Sampling is deterministic for a record and `seed`."
        },
    )
    in_batch_negatives: bool = field(
        default=True,
        metadata={
            "help": "Also use the gold mentions of the other records in the batch whose type differs as negatives."
        },
    )
    max_negatives: int = field(
        default=32,
        metadata={
            "help": "Cap on the within-record negatives per mention (boundary first, then other-type, then "
            "non-entity); in-batch negatives come on top. >= 1."
        },
    )

    def __post_init__(self) -> None:
        self.validate_negative_sampling()

    def validate_negative_sampling(self) -> None:
        if self.boundary_shift < 1:
            raise ValueError(
                f"CLLMFSConfig: boundary_shift must be >= 1, got {self.boundary_shift} "
                "(set boundary_negatives=False to switch boundary negatives off)."
            )
        if self.non_entity_negatives < 0:
            raise ValueError(
                f"CLLMFSConfig: non_entity_negatives must be >= 0 (0 disables them), got {self.non_entity_negatives}."
            )
        if self.max_negatives < 1:
            raise ValueError(f"CLLMFSConfig: max_negatives must be >= 1, got {self.max_negatives}.")

    @classmethod
    def from_config(cls, config: Any) -> NegativeSamplingConfig:
        """The negative-sampling knobs of ``config`` (a CLLMFSConfig or any object with these attributes)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass
class AdversarialConfig:
    """The adversarial embedding term, FGM (METHOD.md section 3).

    Example:
        >>> AdversarialConfig(adversarial="none").adversarial_enabled
        False
    """

    # Off by default, from dev evidence: on CrossNER politics dev (GPU sweep) InfoNCE + FGM at epsilon 0.1 gave
    # 7.3 F1 against 8.3 for InfoNCE alone, and epsilon 1.0 broke the output format (0.0); FGM also doubles the
    # step time. The term is one flag away (--adversarial fgm) and the benchmark's cllmfs_full runs it.
    adversarial: str = field(
        default="none",
        metadata={
            "help": "Adversarial embedding augmentation: 'fgm' (perturb the input embedding outputs by "
            "epsilon * g/||g|| and add the LM loss of a second forward) or 'none' (the default: on dev splits "
            "FGM did not help at the default model's scale and doubles the step time).",
            "choices": list(_ADVERSARIAL_MODES),
        },
    )
    adversarial_epsilon: float = field(
        # 1.0 (the usual FGM value for BERT encoders) made SmolLM2-135M answer "none" to every record on CrossNER
        # politics dev (F1 0.0 after 8 epochs); 0.1 and 0.03 kept it learning (F1 7.3 / 7.4).
        default=0.1,
        metadata={
            "help": "FGM step size epsilon: the L2 norm of the perturbation per unit of `adversarial_norm` (> 0). "
            "Scale it with the model's embedding norms: too large and the model learns to answer 'none'."
        },
    )
    adversarial_epsilon_scale: str = field(
        default="absolute",
        metadata={
            "help": "What epsilon measures: 'absolute' (the perturbation's L2 norm per `adversarial_norm` unit) or "
            "'embedding_norm' (a fraction of the clean embedding outputs' L2 norm over the same unit, so one value "
            "works across models whose embedding scales differ; 0.05 = a perturbation of 5 percent).",
            "choices": list(_EPSILON_SCALES),
        },
    )
    adversarial_norm: str = field(
        default="sequence",
        metadata={
            "help": "Unit over which g is L2-normalised: 'sequence' (per sequence, over all its tokens) or 'token'.",
            "choices": list(_ADVERSARIAL_NORMS),
        },
    )
    adversarial_weight: float = field(
        default=1.0,
        metadata={"help": "Weight lambda_adv of the adversarial LM loss. 0 switches the term off."},
    )
    adversarial_contrastive: bool = field(
        default=False,
        metadata={
            "help": "Also compute the InfoNCE term on the perturbed forward and add it to the adversarial loss "
            "(L_adv = L_lm(e + r) + contrastive_weight * L_cl(e + r), the contrastive weight after its warm-up), "
            "so the span representations are trained to stay separated under the perturbation too. Needs "
            "adversarial='fgm' and contrastive_weight > 0. Off by default: on dev splits it cost 2.2 F1 against "
            "FGM alone (95 percent CI -4.3 to -0.3; benchmarks/results/README.md, lever study, third round)."
        },
    )
    adversarial_backward: str = field(
        default="auto",
        metadata={
            "help": "How FGM back-propagates per micro-batch. 'single': g = dL/de by torch.autograd.grad, then ONE "
            "backward of L_lm + w * L_adv; runs on every engine (DDP, FSDP, DeepSpeed ZeRO-2/3) but needs "
            "non-reentrant activation checkpointing (torch.autograd.grad fails under reentrant; TRL's reentrant "
            "choice for PEFT + ZeRO-3 is switched to non-reentrant, an explicit use_reentrant=True is refused). "
            "'double': the clean backward leaves g, a second backward adds the adversarial gradient; one backward "
            "pass fewer (faster), any checkpointing, one device or DDP only. 'auto': 'single' under DeepSpeed or "
            "FSDP, else 'double'. Both give the same gradients.",
            "choices": list(FGM_BACKWARDS),
        },
    )

    def __post_init__(self) -> None:
        self.validate_adversarial()

    def validate_adversarial(self) -> None:
        if self.adversarial not in _ADVERSARIAL_MODES:
            raise ValueError(
                f"CLLMFSConfig: adversarial={self.adversarial!r}; choose one of {list(_ADVERSARIAL_MODES)}."
            )
        if not self.adversarial_weight >= 0.0:
            raise ValueError(
                f"CLLMFSConfig: adversarial_weight must be >= 0 (0 switches the term off), got {self.adversarial_weight}."
            )
        if not self.adversarial_epsilon > 0.0:
            raise ValueError(
                f"CLLMFSConfig: adversarial_epsilon must be > 0, got {self.adversarial_epsilon} "
                "(set adversarial='none' to switch the term off)."
            )
        if self.adversarial_epsilon_scale not in _EPSILON_SCALES:
            raise ValueError(
                f"CLLMFSConfig: adversarial_epsilon_scale={self.adversarial_epsilon_scale!r}; choose one of "
                f"{list(_EPSILON_SCALES)}."
            )
        if self.adversarial_backward not in FGM_BACKWARDS:
            raise ValueError(
                f"CLLMFSConfig: adversarial_backward={self.adversarial_backward!r}; choose one of {list(FGM_BACKWARDS)}."
            )
        if self.adversarial_norm not in _ADVERSARIAL_NORMS:
            raise ValueError(
                f"CLLMFSConfig: adversarial_norm={self.adversarial_norm!r}; choose one of {list(_ADVERSARIAL_NORMS)}."
            )

    @property
    def adversarial_enabled(self) -> bool:
        """True when the FGM term contributes to the loss."""
        return self.adversarial == "fgm" and self.adversarial_weight > 0.0


_SUB_CONFIGS = {
    "contrastive": ContrastiveConfig,
    "negatives": NegativeSamplingConfig,
    "adversarial": AdversarialConfig,
}

#: Every CLLMFS knob (the fields CLLMFSConfig adds to SFTConfig) -> its group, derived from the sub-configs.
CLLMFS_FIELD_GROUPS: dict[str, str] = {
    f.name: group for group, sub in _SUB_CONFIGS.items() for f in fields(sub)
}


@dataclass
class CLLMFSConfig(SFTConfig, ContrastiveConfig, NegativeSamplingConfig, AdversarialConfig):
    """Training arguments for :class:`cllmfs_hf.trainer.CLLMFSTrainer`: all of ``SFTConfig`` plus the fields of
    :class:`ContrastiveConfig`, :class:`NegativeSamplingConfig` and :class:`AdversarialConfig` (flat options).

    Example:
        >>> cfg = CLLMFSConfig(output_dir="out", contrastive_layer=0.5, adversarial="fgm", report_to="none")
        >>> (cfg.contrastive_temperature, cfg.adversarial_epsilon)
        (0.1, 0.1)
    """

    # ---- SFTConfig defaults changed for this trainer ----------------------------------------------------
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the record columns with span offsets must reach the CLLMFS collator."},
    )
    dataset_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Forced to {'skip_prepare_dataset': True}: the CLLMFS collator tokenizes the instruction "
            "records itself."
        },
    )
    bf16: bool | None = field(
        default=None,
        metadata={
            "help": "bfloat16 mixed precision. If not set: on when a CUDA device supports bfloat16 and fp16 is off, "
            "off otherwise (SFTConfig would turn it on on CPU too)."
        },
    )

    def __post_init__(self) -> None:
        if self.bf16 is None:
            import torch

            self.bf16 = bool(
                not self.fp16
                and not self.use_cpu
                and torch.cuda.is_available()
                and torch.cuda.is_bf16_supported()
            )
        if self.remove_unused_columns:
            logger.warning(
                "CLLMFSConfig: remove_unused_columns=True would drop the span columns the contrastive term needs; "
                "setting it to False."
            )
            self.remove_unused_columns = False
        kwargs = self.dataset_kwargs
        if isinstance(kwargs, str):
            import json

            kwargs = json.loads(kwargs)
        kwargs = dict(kwargs or {})
        if kwargs.get("skip_prepare_dataset") is False:
            raise ValueError(
                "CLLMFSConfig: dataset_kwargs={'skip_prepare_dataset': False} is not supported: the CLLMFS collator "
                "tokenizes the records itself so span positions match the input ids. Remove that key."
            )
        kwargs["skip_prepare_dataset"] = True
        self.dataset_kwargs = kwargs
        super().__post_init__()
        self._validate_cllmfs()

    def _validate_cllmfs(self) -> None:
        if self.packing or self.eval_packing:
            raise ValueError(
                "CLLMFSConfig: packing is not supported: the contrastive term needs one example per row to locate "
                "span positions. Set packing=False (and eval_packing=False)."
            )
        if self.padding_free:
            raise ValueError(
                "CLLMFSConfig: padding_free=True concatenates examples into one row, which breaks per-example span "
                "positions. Set padding_free=False."
            )
        if self.truncation_mode != "keep_start":
            raise ValueError(
                f"CLLMFSConfig: truncation_mode={self.truncation_mode!r} is not supported (it can cut the instruction "
                "and the type name the anchor needs). Use truncation_mode='keep_start'."
            )
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"CLLMFSConfig: max_length must be >= 1 or None, got {self.max_length}.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError(
                "CLLMFSConfig: push_to_hub=True needs hub_model_id, the repository to create or update: pass "
                "--hub_model_id owner/name (checked now so that a run does not fail after training)."
            )
        self.validate_contrastive()
        self.validate_negative_sampling()
        self.validate_adversarial()
        if self.adversarial_contrastive and not (self.adversarial_enabled and self.contrastive_enabled):
            raise ValueError(
                "CLLMFSConfig: adversarial_contrastive=True feeds the InfoNCE term from the FGM forward, so it needs "
                f"adversarial='fgm' with adversarial_weight > 0 and contrastive_weight > 0 (got adversarial="
                f"{self.adversarial!r}, adversarial_weight={self.adversarial_weight}, contrastive_weight="
                f"{self.contrastive_weight}). Turn both terms on, or set adversarial_contrastive=False."
            )

    @property
    def training_objective(self) -> str:
        """What the loss is, in words, for reports: which of the CLLMFS terms are on besides the LM loss.

        Example:
            >>> CLLMFSConfig(output_dir="out", contrastive_weight=0.0, report_to="none").training_objective
            'plain LoRA SFT, LM loss only'
        """
        terms = [
            name
            for name, on in (("InfoNCE", self.contrastive_enabled), ("FGM", self.adversarial_enabled))
            if on
        ]
        if not terms:
            return "plain LoRA SFT, LM loss only"
        return "CLLMFS: LM + " + " + ".join(terms)
