"""Evaluate an adapter (or a base model) on a dataset file: the whole test set, or N-way K-shot episodes.

    python examples/evaluate_ner.py --model outputs/demo/adapter --test_file ../shared/data/crossner/politics/test.txt
    python examples/evaluate_ner.py --model outputs/demo/adapter --test_file dev.txt --episodes 20 --n_way 5 \\
        --k_shot 1 --output outputs/eval.json

Prints micro P/R/F1 with per-type scores and saves them as JSON (``--output``). In episode mode each episode's
query set is tagged with that episode's N types and the counts are summed over all episodes (METHOD.md s.5).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from cllmfs_hf.data.readers import read_dataset
from cllmfs_hf.data.sampling import sample_episodes
from cllmfs_hf.evaluation import ScoreAccumulator
from cllmfs_hf.extractor import NERExtractor


@dataclass
class EvaluateArguments:
    model: str = field(
        default="outputs/demo/adapter",
        metadata={"help": "An adapter folder or Hub repo saved by train.py, or a base model."},
    )
    test_file: str = field(
        default=None, metadata={"help": "Dataset file in any supported format (required)."}
    )
    entity_types: list[str] | None = field(
        default=None,
        metadata={"help": "Types to evaluate (default: the adapter's types, else the file's labels)."},
    )
    max_sentences: int | None = field(
        default=None, metadata={"help": "Evaluate on the first N sentences only."}
    )
    episodes: int = field(
        default=0, metadata={"help": "Number of N-way K-shot episodes (0: whole test set)."}
    )
    n_way: int = field(default=5, metadata={"help": "Types per episode."})
    k_shot: int = field(default=1, metadata={"help": "K of the K~2K-shot support set of each episode."})
    n_query: int = field(
        default=1, metadata={"help": "Query mentions per type (n_query~2n_query) per episode."}
    )
    seed: int = field(default=0, metadata={"help": "Episode sampling seed."})
    batch_size: int = field(default=32, metadata={"help": "Generation batch size."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation cap per (sentence, type) record."})
    output: str | None = field(default=None, metadata={"help": "Write the scores as JSON to this path."})

    def __post_init__(self) -> None:
        if not self.test_file:
            raise ValueError("--test_file is required: a dataset file in any supported format.")
        if self.max_sentences is not None and self.max_sentences < 1:
            raise ValueError(
                f"--max_sentences must be >= 1 (or left out for all sentences), got {self.max_sentences}."
            )
        if not Path(self.test_file).is_file():
            raise FileNotFoundError(f"--test_file {self.test_file!r} does not exist: pass an existing file.")


def main(argv: list[str] | None = None) -> dict:
    (args,) = HfArgumentParser(EvaluateArguments).parse_args_into_dataclasses(argv)
    sentences = read_dataset(args.test_file)
    if args.max_sentences:
        sentences = sentences[: args.max_sentences]
    extractor = NERExtractor.from_pretrained(args.model)
    kwargs = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    if args.episodes:
        total = ScoreAccumulator()
        episodes = sample_episodes(
            sentences,
            args.n_way,
            args.k_shot,
            args.n_query,
            n_episodes=args.episodes,
            seed=args.seed,
            labels=args.entity_types,
        )
        for episode in episodes:
            total.merge(extractor.score(episode.query, entity_types=list(episode.types), **kwargs))
        scores = total.result()
        protocol = f"{args.episodes} episodes, {args.n_way}-way {args.k_shot}~{2 * args.k_shot}-shot"
    else:
        scores = extractor.evaluate(sentences, entity_types=args.entity_types, **kwargs)
        protocol = f"{len(sentences)} sentences"
    print(f"{args.model} on {args.test_file} ({protocol})")
    print(scores)
    result = {"model": args.model, "test_file": args.test_file, "protocol": protocol, **scores.to_dict()}
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
