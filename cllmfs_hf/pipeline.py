"""The main job, end to end: data -> CLLMFS training -> span-constrained evaluation -> adapter + report.

``examples/train.py`` is a thin command line over :func:`run_training`; tests and benchmarks call it
directly. Everything that can fail on user input (data files, entity types, the model name) is checked
before the first optimisation step.

Example (tiny run on the bundled sample)::

    from trl import ModelConfig
    from cllmfs_hf import CLLMFSConfig
    from cllmfs_hf.pipeline import DataArguments, default_model_config, run_training

    report = run_training(DataArguments(), default_model_config(), CLLMFSConfig(output_dir="outputs/demo"))
    print(report["f1"])
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data.descriptions import read_descriptions
from .data.readers import read_dataset
from .data.records import build_records, label_set, records_to_dataset
from .data.types import AnnotatedSentence

__all__ = [
    "DataArguments",
    "DEMO_DATA_DIR",
    "default_model_config",
    "load_job_data",
    "run_training",
]

logger = logging.getLogger(__name__)

DEMO_DATA_DIR = Path(__file__).resolve().parent / "resources" / "demo" / "crossner_politics"


@dataclass
class DataArguments:
    """What to train on and what to evaluate on."""

    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Training (support set) file in any supported format (CoNLL/BIO/IOB1/IO columns, JSON lines "
            "with character spans). Default: the bundled CrossNER politics 5-shot support set."
        },
    )
    test_file: str | None = field(
        default=None,
        metadata={
            "help": "Test file in any supported format. Default: the bundled CrossNER politics test slice."
        },
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A `datasets` dataset with `tokens` + `ner_tags` columns instead of files: a folder written by "
            "`Dataset(Dict).save_to_disk`, or a Hub dataset id (needs the Hub). Overrides --train_file/--test_file."
        },
    )
    dataset_train_split: str = field(
        default="train", metadata={"help": "Split of --dataset_name to train on."}
    )
    dataset_test_split: str = field(
        default="test", metadata={"help": "Split of --dataset_name to evaluate on."}
    )
    entity_types: list[str] | None = field(
        default=None,
        metadata={
            "help": "Entity type labels to train and query (default: every label of the training data)."
        },
    )
    descriptions_file: str | None = field(
        default=None,
        metadata={"help": "JSON file mapping label -> description, overriding the built-in descriptions."},
    )
    k_shot: int | None = field(
        default=None,
        metadata={
            "help": "Sample a greedy K-shot support set (every type >= K mentions) from the training data. "
            "Default: train on the whole training file (the bundled sample already is a 5-shot set)."
        },
    )
    sample_seed: int = field(default=42, metadata={"help": "Seed of the K-shot sampling."})
    negative_ratio: float = field(
        default=1.0,
        metadata={
            "help": "Fraction of negative records (sentence has no mention of the type) to keep, in [0, 1]."
        },
    )
    max_test_sentences: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N test sentences only (default: all)."}
    )
    eval_batch_size: int = field(default=32, metadata={"help": "Generation batch size for evaluation."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation cap per (sentence, type) record."})
    zero_shot_baseline: bool = field(
        default=True,
        metadata={"help": "Also evaluate the untrained base model on the test set (reported as zero_shot)."},
    )

    def __post_init__(self) -> None:
        if self.k_shot is not None and self.k_shot < 1:
            raise ValueError(f"--k_shot must be >= 1, got {self.k_shot}.")
        if not 0.0 <= self.negative_ratio <= 1.0:
            raise ValueError(f"--negative_ratio must be in [0, 1], got {self.negative_ratio}.")
        if self.max_test_sentences is not None and self.max_test_sentences < 1:
            raise ValueError(f"--max_test_sentences must be >= 1, got {self.max_test_sentences}.")
        if self.eval_batch_size < 1:
            raise ValueError(f"--eval_batch_size must be >= 1, got {self.eval_batch_size}.")
        for name in ("train_file", "test_file", "descriptions_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise FileNotFoundError(
                    f"--{name} {value!r} does not exist or is not a file: pass an existing path."
                )


def default_model_config(**overrides: Any):
    """TRL's ``ModelConfig`` with this library's defaults: the embedded SmolLM2, LoRA r=16 on all linear layers."""
    from trl import ModelConfig

    from .models import DEFAULT_MODEL

    values: dict[str, Any] = dict(
        model_name_or_path=DEFAULT_MODEL,
        use_peft=True,
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    )
    values.update(overrides)
    return ModelConfig(**values)


def load_job_data(
    data_args: DataArguments,
) -> tuple[list[AnnotatedSentence], list[AnnotatedSentence], str, str]:
    """(support sentences, test sentences, train source, test source) as the arguments describe."""
    from .data.sampling import greedy_kshot

    if data_args.dataset_name:
        import datasets

        from .data.readers import from_hf_dataset

        if Path(data_args.dataset_name).is_dir():
            ds = datasets.load_from_disk(data_args.dataset_name)
        else:
            ds = datasets.load_dataset(data_args.dataset_name)
        for split in (data_args.dataset_train_split, data_args.dataset_test_split):
            if split not in ds:
                raise ValueError(
                    f"--dataset_name {data_args.dataset_name!r} has no split {split!r} (has {list(ds)}): "
                    "set --dataset_train_split / --dataset_test_split."
                )
        train = from_hf_dataset(ds[data_args.dataset_train_split])
        test = from_hf_dataset(ds[data_args.dataset_test_split])
        train_src = f"{data_args.dataset_name}[{data_args.dataset_train_split}]"
        test_src = f"{data_args.dataset_name}[{data_args.dataset_test_split}]"
    else:
        train_src = data_args.train_file or str(DEMO_DATA_DIR / "support.txt")
        test_src = data_args.test_file or str(DEMO_DATA_DIR / "test.txt")
        train = read_dataset(train_src)
        test = read_dataset(test_src)
    if data_args.entity_types:
        unknown = sorted(set(data_args.entity_types) - set(label_set(train)))
        if unknown:
            raise ValueError(
                f"--entity_types {unknown} do not occur in the training data {train_src} (its labels: "
                f"{label_set(train)}): fix the names or the file."
            )
    if data_args.k_shot is not None:
        train = greedy_kshot(
            train, data_args.k_shot, labels=data_args.entity_types, seed=data_args.sample_seed
        )
    if data_args.max_test_sentences is not None:
        test = test[: data_args.max_test_sentences]
    if not train:
        raise ValueError(f"No training sentences in {train_src}.")
    if not test:
        raise ValueError(f"No test sentences in {test_src}.")
    return train, test, train_src, test_src


def _dataset_name(source: str) -> str:
    """A short dataset name for reports and the model card: the data file's folder and stem."""
    path = Path(source)
    return f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem


def _shards_parameters(training_args) -> bool:
    """True under FSDP or DeepSpeed ZeRO-3, where the Trainer, not us, places the parameters."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(getattr(training_args, "fsdp", None)) or is_deepspeed_zero3_enabled()


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


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


def run_training(data_args: DataArguments, model_args, training_args) -> dict[str, Any]:
    """Train CLLMFS on the support set, evaluate with span-constrained decoding, save adapter and report.

    Returns the report dict (also written to ``<output_dir>/report.json`` on the main process).
    """
    from trl import get_peft_config

    from .extractor import NERExtractor
    from .hub import NERAdapterConfig, push_to_hub, save_adapter
    from .models import load_base_model, load_tokenizer, portable_model_id
    from .report import write_report
    from .trainer import CLLMFSTrainer

    # 1. Everything that can fail on user input fails here, before any training.
    descriptions = read_descriptions(data_args.descriptions_file) if data_args.descriptions_file else None
    support, test, train_src, test_src = load_job_data(data_args)
    entity_types = list(data_args.entity_types or label_set(support))
    records = build_records(
        support,
        entity_types,
        descriptions,
        negative_ratio=data_args.negative_ratio,
        seed=data_args.sample_seed,
    )
    train_dataset = records_to_dataset(records)
    tokenizer = load_tokenizer(model_args.model_name_or_path, padding_side="right")
    model = load_base_model(model_args.model_name_or_path, dtype=model_args.dtype)
    output_dir = Path(training_args.output_dir)

    # 2. Zero-shot reference on the same test sentences, before LoRA touches the model.
    report: dict[str, Any] = {
        "model": model_args.model_name_or_path,
        "train_file": train_src,
        "test_file": test_src,
        "support_sentences": len(support),
        "train_records": len(records),
        "test_sentences": len(test),
        "entity_types": entity_types,
    }
    eval_kwargs = dict(batch_size=data_args.eval_batch_size, max_new_tokens=data_args.max_new_tokens)
    if not _shards_parameters(training_args):
        # Generate on the training device (the Trainer would move the model there anyway).
        model.to(training_args.device)
    if data_args.zero_shot_baseline and _is_main_process():
        zero_shot = NERExtractor(model, tokenizer, entity_types=entity_types, descriptions=descriptions)
        report["zero_shot"] = zero_shot.evaluate(test, **eval_kwargs).to_dict()

    # 3. Train. Pushing is done by us at the end (the Trainer's own push replaces the model card).
    push, hub_model_id = training_args.push_to_hub, training_args.hub_model_id
    training_args.push_to_hub = False
    trainer = CLLMFSTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in {"true", "last", "latest"}:
        resume = last_complete_checkpoint(output_dir)
        if resume is None:
            logger.warning("No checkpoint in %s to resume from: training from the start.", output_dir)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    report["train_seconds"] = time.perf_counter() - start
    report["train_steps"] = trainer.state.global_step

    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return report

    # 4. Evaluate the trained adapter with span-constrained decoding.
    peft_model = trainer.accelerator.unwrap_model(trainer.model)
    peft_model.eval()
    start = time.perf_counter()
    extractor = NERExtractor(peft_model, tokenizer, entity_types=entity_types, descriptions=descriptions)
    # Generate with the LoRA deltas folded into the base weights (no extra matmuls per step); unmerged before
    # saving, so the adapter written is exactly the trained one.
    peft_model.merge_adapter()
    try:
        scores = extractor.evaluate(test, **eval_kwargs).to_dict()
    finally:
        peft_model.unmerge_adapter()
    report["eval_seconds"] = time.perf_counter() - start
    report.update({k: scores[k] for k in ("precision", "recall", "f1", "per_type")})

    # 5. Save the adapter (atomically, with its model card) and the report.
    ner_config = NERAdapterConfig.from_training(
        entity_types,
        descriptions,
        base_model=portable_model_id(model_args.model_name_or_path),
        metrics={k: report[k] for k in ("precision", "recall", "f1")},
    )
    shots = (
        f"{data_args.k_shot}-shot greedy sample (seed {data_args.sample_seed})"
        if data_args.k_shot
        else (f"{len(support)}-sentence support set")
    )
    adapter_dir = save_adapter(
        peft_model,
        tokenizer,
        output_dir / "adapter",
        ner_config,
        training_args=training_args,
        eval_results=scores,
        dataset_name=_dataset_name(test_src),
        protocol=f"{shots}, {len(test)} test sentences, span-constrained decoding",
    )
    report["adapter_dir"] = str(adapter_dir)
    paths = write_report(output_dir, report, trainer.state.log_history)
    report["report_paths"] = {k: str(v) for k, v in paths.items()}
    if push:
        if not hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (the repository id to create or update).")
        report["hub_url"] = push_to_hub(
            adapter_dir, hub_model_id, private=bool(training_args.hub_private_repo)
        )
    return report
