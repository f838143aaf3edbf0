"""What a training job reads: :class:`DataArguments` (the data options of ``examples/train.py``) and
:func:`load_job_data` (support and test sentences as the arguments describe, K-shot sampling included).

Example:
    >>> support, test, _, _ = load_job_data(DataArguments(max_test_sentences=5))
    >>> len(test)
    5
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .readers import read_dataset
from .records import label_set
from .sampling import RARE_TYPE_POLICIES
from .types import AnnotatedSentence

__all__ = ["DEMO_DATA_DIR", "DataArguments", "load_job_data"]

#: The bundled sample: CrossNER politics, a 5-shot support set and a 50-sentence test slice (MIT licence).
DEMO_DATA_DIR = Path(__file__).resolve().parents[1] / "resources" / "demo" / "crossner_politics"


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
    rare_types: str = field(
        default="take_all",
        metadata={
            "help": "With --k_shot, a type that has fewer than K mentions in the training data: 'take_all' (every "
            "mention it has, with a warning), 'skip' (left out of the job: of training and of the test gold, with a "
            "warning) or 'error'.",
            "choices": list(RARE_TYPE_POLICIES),
        },
    )
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
    init_adapter_baseline: bool = field(
        default=True,
        metadata={
            "help": "With --init_adapter, also evaluate that adapter as it is, before this training, on the test "
            "set (reported as init_adapter_zero_shot): what the first stage alone gives. Independent of "
            "--zero_shot_baseline."
        },
    )

    def __post_init__(self) -> None:
        if self.k_shot is not None and self.k_shot < 1:
            raise ValueError(f"--k_shot must be >= 1, got {self.k_shot}.")
        if self.rare_types not in RARE_TYPE_POLICIES:
            raise ValueError(
                f"--rare_types must be one of {list(RARE_TYPE_POLICIES)}, got {self.rare_types!r}."
            )
        if not 0.0 <= self.negative_ratio <= 1.0:
            raise ValueError(f"--negative_ratio must be in [0, 1], got {self.negative_ratio}.")
        if self.max_test_sentences is not None and self.max_test_sentences < 1:
            raise ValueError(f"--max_test_sentences must be >= 1, got {self.max_test_sentences}.")
        if self.eval_batch_size < 1:
            raise ValueError(f"--eval_batch_size must be >= 1, got {self.eval_batch_size}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        for name in ("train_file", "test_file", "descriptions_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise FileNotFoundError(
                    f"--{name} {value!r} does not exist or is not a file: pass an existing path."
                )


def load_job_data(
    data_args: DataArguments,
) -> tuple[list[AnnotatedSentence], list[AnnotatedSentence], str, str]:
    """(support sentences, test sentences, train source, test source) as the arguments describe."""
    from .sampling import greedy_kshot, rare_type_counts, restrict_labels

    if data_args.dataset_name:
        import datasets

        from .readers import from_hf_dataset

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
        rare = rare_type_counts(train, data_args.k_shot, labels=data_args.entity_types)
        train = greedy_kshot(
            train,
            data_args.k_shot,
            labels=data_args.entity_types,
            seed=data_args.sample_seed,
            rare_types=data_args.rare_types,
        )
        if rare and data_args.rare_types == "skip":
            kept = label_set(train)
            test = [restrict_labels(s, kept) for s in test]
    if data_args.max_test_sentences is not None:
        test = test[: data_args.max_test_sentences]
    if not train:
        raise ValueError(f"No training sentences in {train_src}.")
    if not test:
        raise ValueError(f"No test sentences in {test_src}.")
    return train, test, train_src, test_src
