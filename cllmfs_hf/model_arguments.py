"""The model options of a training job: TRL's ``ModelConfig`` plus ``init_adapter``, with this library's defaults.

:class:`ModelArguments` is what ``examples/train.py`` parses (TrlParser) and what
:func:`cllmfs_hf.training.default_model_config` builds. Its LoRA options default to None, meaning "not set":
``__post_init__`` then fills them, from the adapter given as ``init_adapter`` (whose LoRA shape a loaded
adapter cannot change: a LoRA option set to another value is refused, naming the option and the adapter's
value), else from :data:`LORA_DEFAULTS`. Without ``init_adapter``, ``model_name_or_path`` defaults to the
embedded SmolLM2; with it, to the adapter's base model, and another base is refused, naming both.

Example:
    >>> ModelArguments().lora_r, ModelArguments(lora_r=8).lora_r
    (16, 8)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trl import ModelConfig

from .models import DEFAULT_MODEL

__all__ = ["LORA_DEFAULTS", "LORA_TARGET_MODULES", "ModelArguments"]

#: LoRA on every projection of the decoder blocks (what "all-linear" selects on Llama-style models, spelled
#: out so that the saved adapter config and the card name the modules).
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
#: The LoRA shape of a job that starts from the base model: r=16 on all projections.
LORA_DEFAULTS: dict[str, Any] = {
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_modules": LORA_TARGET_MODULES,
}
_FROM_ADAPTER = "; with --init_adapter: the adapter's, and another value is refused"


@dataclass
class ModelArguments(ModelConfig):
    """TRL's ``ModelConfig`` (base model, dtype, LoRA) plus ``init_adapter`` (two-stage adaptation)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Base model: a Hub id, a local folder, a .gguf file, or smollm2-135m-instruct (the embedded "
            "default). Default: the embedded default; with --init_adapter, the adapter's base (another base "
            "is refused)."
        },
    )
    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (the only mode of CLLMFS)."})
    lora_r: int | None = field(default=None, metadata={"help": "LoRA rank. Default 16" + _FROM_ADAPTER + "."})
    lora_alpha: int | None = field(
        default=None, metadata={"help": "LoRA alpha. Default 32" + _FROM_ADAPTER + "."}
    )
    lora_dropout: float | None = field(
        default=None, metadata={"help": "LoRA dropout. Default 0.05" + _FROM_ADAPTER + "."}
    )
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "LoRA target modules (names, or all-linear). Default: every projection of the decoder "
            f"blocks ({' '.join(LORA_TARGET_MODULES)}){_FROM_ADAPTER}."
        },
    )
    init_adapter: str | None = field(
        default=None,
        metadata={
            "help": "Continue training this CLLMFS adapter (a folder saved by this script, e.g. "
            "outputs/source/adapter, a Hub id, or general-ner: the general NER adapter shipped with the package) "
            "on the new data: two-stage adaptation. Its base model and "
            "LoRA shape are kept; its entity types and descriptions are merged with the new data's (the new "
            "--descriptions_file wins on conflict); the saved adapter records it as its lineage."
        },
    )

    def __post_init__(self) -> None:
        lora = {name: getattr(self, name) for name in (*LORA_DEFAULTS, "use_rslora", "use_dora")}
        if self.init_adapter:
            from .init_adapter import inspect_init_adapter

            source = inspect_init_adapter(self.init_adapter)
            source.check_base_model(self.model_name_or_path)
            if not self.use_peft:
                raise ValueError(
                    f"--init_adapter {self.init_adapter}: --use_peft false cannot continue a LoRA adapter. Fix: "
                    "drop --use_peft false."
                )
            self.model_name_or_path = self.model_name_or_path or source.base_model
            lora = source.resolve_lora(lora)
        else:
            lora = {k: (LORA_DEFAULTS[k] if v is None and k in LORA_DEFAULTS else v) for k, v in lora.items()}
        for name, value in lora.items():
            setattr(self, name, list(value) if isinstance(value, list) else value)
        self.model_name_or_path = self.model_name_or_path or DEFAULT_MODEL
        super().__post_init__()
