"""Benchmark: ``NERExtractor.predict`` on a ``PeftModel`` unmerged and merged
(:func:`cllmfs_hf.extractor.lora_merge.lora_merged`, what ``predict`` does by default).

The two run on the same records in turn, twice; each is reported as its best time and as a fraction of the
unmerged one (ratios measured in one run), with whether the answers are identical.

    python benchmarks/lora_merge.py --output outputs/bench_lora_merge.json
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO / "cllmfs_hf" / "resources" / "demo" / "crossner_politics" / "test.txt"


@dataclass
class LoraMergeArguments:
    adapter: str = field(
        default="general-ner", metadata={"help": "A saved adapter folder or a bundled name."}
    )
    data: str = field(
        default=str(DEFAULT_DATA), metadata={"help": "Sentences to predict (any dataset file)."}
    )
    sentences: int = field(default=32, metadata={"help": "How many of its sentences."})
    types: list[str] = field(
        default_factory=lambda: ["person", "country", "politicalparty"],
        metadata={"help": "Entity types queried."},
    )
    batch_size: int = field(default=64, metadata={"help": "Records per generate call."})
    max_new_tokens: int = field(default=64, metadata={"help": "Answer cap per record."})
    repeats: int = field(default=2, metadata={"help": "Runs of each mode (the best time is kept)."})
    output: str | None = field(default=None, metadata={"help": "Write the result as JSON here."})


def main(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    from cllmfs_hf.bundled import bundled_adapter_path, is_bundled_name
    from cllmfs_hf.data.readers import read_dataset
    from cllmfs_hf.extractor import NERExtractor, api
    from cllmfs_hf.hub import load_adapter

    (args,) = HfArgumentParser(LoraMergeArguments).parse_args_into_dataclasses(args=argv)
    folder = str(bundled_adapter_path(args.adapter)) if is_bundled_name(args.adapter) else args.adapter
    model, tokenizer, config = load_adapter(folder)
    tokenizer.padding_side = "left"
    extractor = NERExtractor(
        model.eval(),
        tokenizer,
        list(config.entity_types),
        dict(config.type_descriptions),
        type_names=dict(config.type_names),
    )
    texts = [s.text for s in read_dataset(args.data)[: args.sentences]]

    modes = {"unmerged": contextlib.nullcontext, "lora_merged": api.lora_merged}
    default = api.lora_merged
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    answers: dict[str, list] = {}
    try:
        for _ in range(args.repeats):
            for name, context in modes.items():
                api.lora_merged = context  # what predict wraps its batches in
                t = time.perf_counter()
                found = extractor.predict(
                    texts,
                    args.types,
                    batch_size=args.batch_size,
                    max_new_tokens=args.max_new_tokens,
                    progress=False,
                    allow_unknown_types=True,
                )
                seconds[name].append(time.perf_counter() - t)
                answers[name] = [[(m["start"], m["end"], m["label"]) for m in row] for row in found]
    finally:
        api.lora_merged = default
    best = {name: min(times) for name, times in seconds.items()}
    result = {
        "adapter": args.adapter,
        "records": len(texts) * len(args.types),
        "batch_size": args.batch_size,
        "seconds": {name: [round(t, 2) for t in times] for name, times in seconds.items()},
        "fraction_of_unmerged": {name: round(best[name] / best["unmerged"], 3) for name in modes},
        "answers_identical": len({json.dumps(a) for a in answers.values()}) == 1,
    }
    for name in modes:
        print(f"{name:<30} best {best[name]:7.1f} s   {result['fraction_of_unmerged'][name]:.2f} of unmerged")
    print("answers identical:", result["answers_identical"])
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
