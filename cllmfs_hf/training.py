"""The one training path: data -> CLLMFS trainer -> span-constrained evaluation -> adapter folder + report.

``examples/train.py``, ``benchmarks/fewshot.py``, ``benchmarks/train_overhead.py`` and the end-to-end tests
all train through these functions; a benchmark's systems differ only in ``CLLMFSConfig`` values (plain LoRA
SFT is ``contrastive_weight=0, adversarial="none"``, whose loss equals TRL's ``SFTTrainer``'s).

- :func:`build_trainer`: base model (or an adapter to keep training), LoRA from
  :class:`~cllmfs_hf.model_arguments.ModelArguments` (TRL's ``ModelConfig`` plus ``init_adapter``), tokenizer,
  records and the adapter's :class:`~cllmfs_hf.artifact.NERAdapterConfig` -> a ``CLLMFSTrainer``. With
  ``init_adapter`` (two-stage adaptation) it starts from that adapter's LoRA weights, merges its entity types
  and records it as the lineage (:mod:`cllmfs_hf.init_adapter`).
- :func:`train`: runs it (resuming from ``"last"`` = the newest complete checkpoint) and summarises the run.
- :func:`evaluate_adapter`: span-constrained greedy predictions on annotated sentences, with the LoRA deltas
  merged while generating, -> :class:`Evaluation` (scores and the predictions themselves).
- :func:`run`: the main job (what ``make demo`` runs): all of the above plus the zero-shot reference, the
  saved adapter (written by the trainer itself) and ``report.{json,md}`` with plots.

Everything that can fail on user input (data files, entity types, the model name, the output folder, the
LoRA target modules, the Hub settings) fails before the first forward pass.

Example (tiny run on the bundled sample)::

    from cllmfs_hf import CLLMFSConfig
    from cllmfs_hf.training import DataArguments, default_model_config, run

    report = run(DataArguments(), default_model_config(), CLLMFSConfig(output_dir="outputs/demo"))
    print(report["f1"])
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data.arguments import DEMO_DATA_DIR, DataArguments, load_job_data
from .data.descriptions import check_described_labels, read_descriptions
from .data.records import build_records, label_set, records_to_dataset
from .data.types import AnnotatedSentence, Mention
from .init_adapter import SourceAdapter, inspect_init_adapter
from .model_arguments import LORA_TARGET_MODULES, ModelArguments

if TYPE_CHECKING:
    from .evaluation import NERScores
    from .trainer import CLLMFSTrainer

__all__ = [
    "DEMO_DATA_DIR",
    "LOGGED_TERMS",
    "LORA_TARGET_MODULES",
    "DataArguments",
    "ModelArguments",
    "Evaluation",
    "TrainSummary",
    "build_trainer",
    "default_model_config",
    "evaluate_adapter",
    "init_adapter_of",
    "last_complete_checkpoint",
    "load_job_data",
    "run",
]

logger = logging.getLogger(__name__)

#: Loss terms CLLMFSTrainer logs; a run summary keeps the first and last logged value of each, which shows
#: whether InfoNCE / FGM actually moved.
LOGGED_TERMS = (
    "lm_loss",
    "contrastive_loss",
    "contrastive_pos_cos",
    "contrastive_neg_cos",
    "adversarial_loss",
    "adversarial_contrastive_loss",
)


def default_model_config(**overrides: Any) -> ModelArguments:
    """:class:`ModelArguments` (TRL's ``ModelConfig`` + ``init_adapter``) with this library's defaults: the
    embedded SmolLM2, LoRA r=16 on all projections; with ``init_adapter=``, that adapter's base and LoRA shape.

    Example:
        >>> default_model_config(lora_r=8).lora_r
        8
    """
    return ModelArguments(**overrides)


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest ``checkpoint-N`` folder in ``output_dir`` that the Trainer finished writing, or None.

    ``transformers.trainer_utils.get_last_checkpoint`` takes the highest-numbered folder, but a run killed
    while saving leaves a folder without ``trainer_state.json`` (the Trainer writes it after the weights,
    optimizer and RNG states), and resuming from that fails. Such folders are skipped with a warning.
    """
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = {}
    for path in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        suffix = path.name[len(PREFIX_CHECKPOINT_DIR) + 1 :]
        if path.is_dir() and suffix.isdigit():
            steps[int(suffix)] = path
    for step in sorted(steps, reverse=True):
        if (steps[step] / TRAINER_STATE_NAME).is_file():
            return str(steps[step])
        logger.warning(
            "%s has no %s (the run was stopped while saving it): resuming from an earlier checkpoint.",
            steps[step],
            TRAINER_STATE_NAME,
        )
    return None


def _resolve_resume(training_args: Any) -> str | bool | None:
    """``--resume_from_checkpoint``: 'last'/'latest'/'true' -> the newest complete checkpoint (or None with
    a warning); a path must exist (checked before any training)."""
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in {"true", "last", "latest"}:
        found = last_complete_checkpoint(training_args.output_dir)
        if found is None:
            logger.warning(
                "No checkpoint in %s to resume from: training from the start.", training_args.output_dir
            )
        return found
    if isinstance(resume, str) and resume and not Path(resume).is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {resume!r} is not a folder: pass a checkpoint-N folder of an earlier run, "
            "or 'last' for the newest complete one in --output_dir."
        )
    return resume


def _check_output_dir(training_args: Any) -> None:
    out = Path(training_args.output_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(
            f"--output_dir {str(out)!r} exists and is a file: choose a folder (it will hold the adapter, the "
            "report and checkpoints)."
        )


def _shards_parameters(training_args: Any) -> bool:
    """True under FSDP or DeepSpeed ZeRO-3, where the Trainer, not us, places the parameters."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(getattr(training_args, "fsdp", None)) or is_deepspeed_zero3_enabled()


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def build_trainer(
    model_args: Any,
    training_args: Any,
    records: Sequence[Mapping[str, Any]] | Any,
    *,
    entity_types: Sequence[str],
    descriptions: Mapping[str, str] | None = None,
    model: Any = None,
    tokenizer: Any = None,
    lineage: Mapping[str, Any] | None = None,
) -> CLLMFSTrainer:
    """A ``CLLMFSTrainer`` for ``records`` (from :func:`cllmfs_hf.data.build_records`, or their dataset).

    Args:
        model_args: :class:`ModelArguments` (or TRL's ``ModelConfig``): the base model and its dtype, and the
            LoRA shape (``use_peft``, ``lora_r``, ``lora_alpha``, ``lora_dropout``, ``lora_target_modules``).
            With ``init_adapter`` set, training starts from that CLLMFS adapter: its LoRA weights are loaded
            onto the base (``PeftModel.from_pretrained(base, folder, is_trainable=True)``, and no
            ``peft_config`` goes to the trainer, which would refuse one beside a PeftModel); the saved adapter's
            entity types and descriptions are the source adapter's merged with these
            (:meth:`cllmfs_hf.init_adapter.SourceAdapter.merge_types`: the ones given here win), and it
            records the source adapter in its ``lineage``.
        training_args: a :class:`~cllmfs_hf.config.CLLMFSConfig` (the CLLMFS terms and everything of SFTConfig).
        records: the training records.
        entity_types, descriptions: what the adapter extracts and how the records described it; recorded in
            the adapter folder the trainer writes (``cllmfs_config.json`` and the card).
        model: an already loaded base model (e.g. the one the zero-shot reference ran), or a ``PeftModel`` to
            keep training in memory (its LoRA shape is kept; no new adapter is added; not with
            ``init_adapter``). Default: load ``model_args.model_name_or_path``.
        tokenizer: the tokenizer (default: loaded for the model).
        lineage: extra facts recorded with the training hyperparameters (e.g. ``{"k_shot": 5}``).
    """
    from transformers import set_seed
    from trl import get_peft_config

    from .artifact import NERAdapterConfig
    from .models import load_base_model, load_tokenizer, portable_model_id
    from .trainer import CLLMFSTrainer

    _check_output_dir(training_args)
    set_seed(training_args.seed)  # the LoRA initialisation below draws from it
    if tokenizer is None:
        tokenizer = load_tokenizer(model_args.model_name_or_path, padding_side="right")
    if model is None:
        model = load_base_model(model_args.model_name_or_path, dtype=model_args.dtype)
    source = init_adapter_of(model_args)
    type_names: dict[str, str] = {}
    if source is not None:
        source.check_base_model(model_args.model_name_or_path)
        model = source.load_trainable(model)
        entity_types, descriptions, type_names = source.merge_types(entity_types, descriptions)
    continuing = hasattr(model, "peft_config")
    peft_config = None if continuing else get_peft_config(model_args)
    if peft_config is not None and not continuing:
        _check_lora_targets(model, peft_config)
    dataset = records if hasattr(records, "column_names") else records_to_dataset(list(records))
    adapter_config = NERAdapterConfig.from_training(
        list(entity_types),
        descriptions,
        base_model=portable_model_id(model_args.model_name_or_path),
        training=dict(lineage or {}),
        type_names=type_names,
        lineage=source.lineage() if source is not None else None,
    )
    return CLLMFSTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        adapter_config=adapter_config,
    )


def init_adapter_of(model_args: Any) -> SourceAdapter | None:
    """The checked adapter that ``model_args.init_adapter`` names (files only, no model loaded), or None."""
    reference = getattr(model_args, "init_adapter", None)
    return inspect_init_adapter(reference) if reference else None


def _check_lora_targets(model: Any, peft_config: Any) -> None:
    """A LoRA target module that matches nothing fails here, naming the model's linear module names."""
    targets = peft_config.target_modules
    if targets is None or isinstance(targets, str):  # "all-linear" or a regex: PEFT checks it
        return
    from torch import nn

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    unknown = sorted(set(targets) - names)
    if unknown:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(
            f"--lora_target_modules {unknown} match no module of {type(model).__name__} (its linear layers: "
            f"{linear}): fix the names, or pass all-linear."
        )


@dataclass
class TrainSummary:
    """What :func:`train` measured."""

    seconds: float
    steps: int
    last_loss: float | None
    loss_terms: dict[str, list[float]]


def loss_terms(log_history: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """``{term: [first, last]}`` logged value of each CLLMFS loss term (:data:`LOGGED_TERMS`)."""
    return {
        name: [float(values[0]), float(values[-1])]
        for name in LOGGED_TERMS
        if (values := [h[name] for h in log_history if name in h])
    }


def train(trainer: CLLMFSTrainer, resume_from_checkpoint: str | bool | None = None) -> TrainSummary:
    """Train and summarise: seconds, optimisation steps, the last logged loss and each term's first/last value."""
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    seconds = time.perf_counter() - start
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    last = float(losses[-1]) if losses else (float(output.training_loss) if output else None)
    return TrainSummary(seconds, int(trainer.state.global_step), last, loss_terms(history))


@dataclass
class Evaluation:
    """What :func:`evaluate_adapter` measured: the scores, the predictions per sentence, time and stats."""

    scores: NERScores
    predictions: list[list[Mention]]
    seconds: float
    stats: dict[str, Any]


def evaluate_adapter(
    model: Any,
    tokenizer: Any,
    sentences: Sequence[AnnotatedSentence],
    *,
    entity_types: Sequence[str],
    descriptions: Mapping[str, str] | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 64,
) -> Evaluation:
    """Span-constrained greedy extraction on annotated sentences, scored with exact-span micro P/R/F1.

    ``model`` is a base model (zero-shot) or a ``PeftModel``; for the latter ``NERExtractor.predict`` merges the
    LoRA deltas into the base weights while generating and restores the model afterwards
    (:func:`~cllmfs_hf.extractor.lora_merge.lora_merged`), so the adapter saved afterwards is the trained one.
    """
    from .evaluation import evaluate_sentences
    from .extractor import NERExtractor

    was_training = model.training
    model.eval()
    extractor = NERExtractor(model, tokenizer, entity_types=list(entity_types), descriptions=descriptions)
    start = time.perf_counter()
    try:
        predictions = extractor.predict_mentions(
            [s.text for s in sentences], batch_size=batch_size, max_new_tokens=max_new_tokens, progress=False
        )
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    predictions = [list(p) for p in predictions]
    return Evaluation(
        evaluate_sentences(list(sentences), predictions), predictions, seconds, extractor.last_stats.to_dict()
    )


def _dataset_name(source: str) -> str:
    """A short dataset name for reports and the model card: the data file's folder and stem."""
    path = Path(source)
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def run(data_args: DataArguments, model_args: Any, training_args: Any) -> dict[str, Any]:
    """The main job: train CLLMFS on the support set, evaluate with span-constrained decoding, and save the
    adapter (written by the trainer: PEFT files, tokenizer, ``cllmfs_config.json``, model card) and the report.

    Returns the report dict (also written to ``<output_dir>/report.json`` on the main process).
    """
    from .models import load_base_model, load_tokenizer
    from .report import write_report

    # 1. Everything that can fail on user input fails here, before any forward pass.
    descriptions = read_descriptions(data_args.descriptions_file) if data_args.descriptions_file else None
    support, test, train_src, test_src = load_job_data(data_args)
    entity_types = list(data_args.entity_types or label_set(support))
    if descriptions:
        check_described_labels(descriptions, entity_types, data_args.descriptions_file)
    source = init_adapter_of(model_args)
    if source is not None:  # the records prompt each type as the adapter will record it (the new file wins)
        source.check_base_model(model_args.model_name_or_path)
        descriptions = source.merge_types(entity_types, descriptions)[1]
    records = build_records(
        support,
        entity_types,
        descriptions,
        negative_ratio=data_args.negative_ratio,
        seed=data_args.sample_seed,
    )
    _check_output_dir(training_args)
    resume = _resolve_resume(training_args)
    tokenizer = load_tokenizer(model_args.model_name_or_path, padding_side="right")
    model = load_base_model(model_args.model_name_or_path, dtype=model_args.dtype)
    shots = (
        f"{data_args.k_shot}-shot greedy sample (seed {data_args.sample_seed})"
        if data_args.k_shot
        else f"{len(support)}-sentence support set"
    )
    trainer = build_trainer(
        model_args,
        training_args,
        records,
        entity_types=entity_types,
        descriptions=descriptions,
        model=model,
        tokenizer=tokenizer,
        lineage={
            "train_data": train_src,
            "k_shot": data_args.k_shot,
            "sample_seed": data_args.sample_seed,
            "support_sentences": len(support),
        },
    )
    output_dir = Path(training_args.output_dir)
    report: dict[str, Any] = {
        "model": model_args.model_name_or_path,
        "train_file": train_src,
        "test_file": test_src,
        "support_sentences": len(support),
        "train_records": len(records),
        "test_sentences": len(test),
        "entity_types": entity_types,
    }
    if source is not None:
        report["init_adapter"] = source.reference
    eval_kwargs = dict(
        entity_types=entity_types,
        descriptions=descriptions,
        batch_size=data_args.eval_batch_size,
        max_new_tokens=data_args.max_new_tokens,
    )

    # 2. Zero-shot reference on the same test sentences: the trainer's model with its LoRA adapter disabled
    # is exactly the base model. With --init_adapter, the source adapter as loaded is the other reference:
    # what stage 1 alone gives on the target.
    with_base = data_args.zero_shot_baseline
    with_source = source is not None and data_args.init_adapter_baseline
    if (with_base or with_source) and _is_main_process():
        peft_model = trainer.accelerator.unwrap_model(trainer.model)
        if not _shards_parameters(training_args):
            peft_model.to(training_args.device)  # generate on the training device
        if with_base:
            with peft_model.disable_adapter():
                report["zero_shot"] = _scores_dict(
                    evaluate_adapter(peft_model.base_model.model, tokenizer, test, **eval_kwargs)
                )
        if with_source:
            report["init_adapter_zero_shot"] = _scores_dict(
                evaluate_adapter(peft_model, tokenizer, test, **eval_kwargs)
            )

    # 3. Train.
    summary = train(trainer, resume_from_checkpoint=resume)
    report["train_seconds"] = summary.seconds
    report["train_steps"] = summary.steps
    report["objective"] = training_args.training_objective
    report["loss_terms"] = summary.loss_terms
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return report

    # 4. Evaluate the trained adapter with span-constrained decoding.
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    evaluation = evaluate_adapter(peft_model, tokenizer, test, **eval_kwargs)
    scores = _scores_dict(evaluation)
    report["eval_seconds"] = evaluation.seconds
    report.update({k: scores[k] for k in ("precision", "recall", "f1", "per_type")})

    # 5. The trainer writes the adapter folder (atomically, with its card and scores) and pushes it.
    trainer.record_evaluation(
        scores,
        dataset_name=_dataset_name(test_src),
        protocol=f"{shots}, {len(test)} test sentences, span-constrained decoding",
    )
    adapter_dir = trainer.save_model(str(output_dir / "adapter"))
    report["adapter_dir"] = str(adapter_dir)
    paths = write_report(output_dir, report, trainer.state.log_history)
    report["report_paths"] = {k: str(v) for k, v in paths.items()}
    if training_args.push_to_hub:
        report["hub_url"] = str(trainer.push_to_hub())
    return report


def _scores_dict(evaluation: Evaluation) -> dict[str, Any]:
    return evaluation.scores.to_dict()
