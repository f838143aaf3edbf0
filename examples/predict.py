"""Extract entities with a trained adapter (or any base model), printing one JSON line per text.

    python examples/predict.py --model outputs/demo/adapter --text "Angela Merkel led the CDU ."
    python examples/predict.py --model outputs/demo/adapter --input_file texts.txt --entity_types person party
    echo "Angela Merkel led the CDU ." | python examples/predict.py --model outputs/demo/adapter

Each output line is ``{"text": ..., "entities": [{"start", "end", "text", "label"}, ...]}``; the offsets index
the input text. Without ``--entity_types`` an adapter's own entity types are used.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from cllmfs_hf.extractor import NERExtractor


@dataclass
class PredictArguments:
    model: str = field(
        default="outputs/demo/adapter",
        metadata={
            "help": "An adapter folder or Hub repo saved by train.py, or a base model (Hub id, path, or "
            "`smollm2-135m-instruct`)."
        },
    )
    text: list[str] | None = field(
        default=None, metadata={"help": "Text(s) to tag, given on the command line."}
    )
    input_file: str | None = field(
        default=None,
        metadata={"help": "A UTF-8 file with one text per line (blank lines are kept as empty results)."},
    )
    entity_types: list[str] | None = field(
        default=None, metadata={"help": "Entity types to extract (default: the adapter's own types)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Generation batch size."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation cap per (text, type) query."})


def read_texts(args: PredictArguments) -> list[str]:
    if args.text:
        return list(args.text)
    if args.input_file:
        try:
            with open(args.input_file, encoding="utf-8") as handle:
                return [line.rstrip("\n") for line in handle]
        except UnicodeDecodeError as exc:
            raise SystemExit(
                f"{args.input_file}: not valid UTF-8 ({exc}); re-encode the file as UTF-8."
            ) from exc
    if sys.stdin.isatty():
        raise SystemExit("No input: pass --text, --input_file, or pipe text on standard input.")
    return [line.rstrip("\n") for line in sys.stdin]


def main(argv: list[str] | None = None) -> list[list[dict]]:
    (args,) = HfArgumentParser(PredictArguments).parse_args_into_dataclasses(argv)
    texts = read_texts(args)
    extractor = NERExtractor.from_pretrained(args.model)
    # Blank lines give empty results rather than an error, so output lines match input lines one to one.
    keep = [i for i, t in enumerate(texts) if t.strip()]
    predicted = extractor.predict(
        [texts[i] for i in keep],
        args.entity_types,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    results: list[list[dict]] = [[] for _ in texts]
    for i, entities in zip(keep, predicted):
        results[i] = entities
    for text, entities in zip(texts, results):
        print(json.dumps({"text": text, "entities": entities}, ensure_ascii=False))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
