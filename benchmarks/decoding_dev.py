"""Decoding options compared on a dev split: the same adapter, the same sentences, F1 with a paired bootstrap.

For choosing a decoding default on evidence that never touches a test split: a finished adapter (for example the
shipped ``general-ner``, or one ``examples/train.py`` saved) extracts every type of a dataset folder's dev split
(a fixed random sample, as ``benchmarks/fewshot.py --eval_split dev`` draws it) once per ``SpanConstraintConfig``
variant, through ``NERExtractor.predict_mentions`` (what ``predict`` and ``evaluate`` run). It reports each
variant's micro P/R/F1, generated tokens, answers cut at the cap and seconds, and the paired bootstrap of every
variant's F1 minus the first one's over the dev sentences.

Usage::

    python benchmarks/decoding_dev.py --model general-ner --dataset crossner/politics \\
        --variants ordered_spans=false ordered_spans=true --output outputs/bench/ordered-spans-dev.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:  # run as a script: make `benchmarks.*` importable
    sys.path.insert(0, str(_REPO_ROOT))

from benchmarks.fewshot import _resolve_dataset, load_dataset_folder  # noqa: E402
from benchmarks.stats import paired_bootstrap, per_sentence_counts  # noqa: E402
from cllmfs_hf.decoding import SpanConstraintConfig  # noqa: E402


def parse_variant(text: str) -> dict[str, bool | int | float | None]:
    """``"name=value,name=value"`` (SpanConstraintConfig fields) -> keyword arguments; ``"default"`` -> {}."""
    if text == "default":
        return {}
    known = {f.name: f for f in fields(SpanConstraintConfig)}
    out: dict[str, bool | int | float | None] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep or name not in known or name == "preamble_in_prompt":
            raise ValueError(
                f"--variants: {part!r} is not NAME=VALUE with a SpanConstraintConfig field; choose among "
                f"{sorted(set(known) - {'preamble_in_prompt'})} (e.g. ordered_spans=false), or 'default'."
            )
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            out[name] = lowered == "true"
        elif lowered == "none":
            out[name] = None
        else:
            try:
                out[name] = int(value) if value.strip().lstrip("-").isdigit() else float(value)
            except ValueError as exc:
                raise ValueError(
                    f"--variants: {part!r}: {value!r} is not true/false/none or a number."
                ) from exc
    SpanConstraintConfig(**out)  # checked once, with the config's own messages
    return out


@dataclass
class DecodingDevArguments:
    """The command line of this benchmark (one ``--field_name`` per field)."""

    output: str = field(
        metadata={"help": "Where to write the JSON results (a .md table is written beside it)."}
    )
    model: str = field(
        default="general-ner", metadata={"help": "An adapter (folder, Hub id or bundled name)."}
    )
    dataset: str = field(
        default="crossner/politics",
        metadata={"help": "A dataset folder with train and dev splits (relative: under ../shared/data)."},
    )
    variants: list[str] = field(
        default_factory=lambda: ["ordered_spans=false", "default"],
        metadata={
            "help": "SpanConstraintConfig variants, each NAME=VALUE[,NAME=VALUE] or 'default'; the first is "
            "the reference of the bootstrap."
        },
    )
    max_sentences: int = field(default=40, metadata={"help": "Dev sentences (a fixed random sample)."})
    sample_seed: int = field(default=0, metadata={"help": "Seed of the dev sample."})
    batch_size: int = field(default=32, metadata={"help": "Records per generate call."})
    max_new_tokens: int = field(default=64, metadata={"help": "Answer cap (the training path's default)."})

    def __post_init__(self) -> None:
        if len(self.variants) < 2:
            raise ValueError("--variants: give at least two (the first is the reference).")
        for name in ("max_sentences", "batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")


def main(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(DecodingDevArguments, description=__doc__.split("\n\n")[0])
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
        variants = [(v, parse_variant(v)) for v in args.variants]
    except ValueError as exc:
        parser.error(str(exc))

    from cllmfs_hf.extractor import NERExtractor

    bundle = load_dataset_folder(
        _resolve_dataset(args.dataset),
        max_test_sentences=args.max_sentences,
        sample_seed=args.sample_seed,
        eval_split="dev",
    )
    extractor = NERExtractor.from_pretrained(args.model)
    gold = [s.mentions for s in bundle.test]
    texts = [s.text for s in bundle.test]
    runs = []
    for name, options in variants:
        ex = NERExtractor(
            extractor.model,
            extractor.tokenizer,
            bundle.entity_types,
            {**extractor.descriptions, **(bundle.descriptions or {})},
            type_names=extractor.type_names,
            constraint=SpanConstraintConfig(**options),
        )
        start = time.perf_counter()
        predicted = ex.predict_mentions(
            texts,
            bundle.entity_types,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            progress=False,
            allow_unknown_types=True,
        )
        seconds = time.perf_counter() - start
        counts = per_sentence_counts(gold, [list(p) for p in predicted])
        tp, fp, fn = (sum(c[i] for c in counts) for i in range(3))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        runs.append(
            {
                "variant": name,
                "options": options,
                "precision": round(p, 4),
                "recall": round(r, 4),
                "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4),
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "seconds": round(seconds, 1),
                "stats": ex.last_stats.to_dict(),
                "counts": counts,
            }
        )
        print(f"{name}: F1 {100 * runs[-1]['f1']:.1f}, {seconds:.0f} s")
    reference = runs[0]
    for run in runs[1:]:
        run["minus_reference"] = paired_bootstrap(reference["counts"], run["counts"]).to_dict()
    result = {
        "model": args.model,
        "dataset": bundle.path,
        "split": "dev",
        "dev_file": bundle.files.get("dev"),
        "sentences": len(texts),
        "sample_seed": args.sample_seed,
        "dev_indices": bundle.test_indices,
        "entity_types": bundle.entity_types,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "command": " ".join(
            ["python", "benchmarks/decoding_dev.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "runs": runs,
    }
    rows = [
        "| variant | P | R | F1 | F1 - first (95% CI) | generated tokens | cut at cap | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        diff = run.get("minus_reference")
        ci = (
            f"{100 * diff['delta']:+.1f} ({100 * diff['low']:+.1f} to {100 * diff['high']:+.1f})"
            if diff
            else "reference"
        )
        rows.append(
            f"| {run['variant']} | {100 * run['precision']:.1f} | {100 * run['recall']:.1f} | {100 * run['f1']:.1f} | "
            f"{ci} | "
            f"{run['stats']['generated_tokens']} | {run['stats']['truncated']} | {run['seconds']} |"
        )
    table = "\n".join(rows)
    print(table)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(
        f"# Decoding variants on {bundle.name} dev ({len(texts)} sentences), {args.model}\n\n"
        f"Command: `{result['command']}`\n\n{table}\n",
        encoding="utf-8",
    )
    return result


if __name__ == "__main__":
    main()
