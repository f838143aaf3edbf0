"""Extract entities with a trained adapter (or any base model): a few texts, or a whole corpus file.

    python examples/predict.py --model outputs/demo/adapter --text "Angela Merkel led the CDU ."
    echo "Angela Merkel led the CDU ." | python examples/predict.py --model outputs/demo/adapter
    python examples/predict.py --model outputs/demo/adapter --input_file texts.jsonl --output_file out.jsonl
    accelerate launch examples/predict.py --model outputs/demo/adapter --input_file texts.txt --output_file out.jsonl

Each output line is ``{"id": ..., "text": ..., "entities": [{"start", "end", "text", "label"}, ...]}`` (the
offsets index the input text), one per input line, in input order. ``--input_file`` is JSON lines (``.jsonl``,
a ``text`` field and an optional ``id``, default the line number) or plain text (one text per line). With
``--output_file`` the corpus is streamed in chunks, the run resumes where a killed one stopped, and under
``accelerate launch`` every process takes its own shard (merged in input order at the end); without it the
lines go to standard output. Without ``--entity_types`` an adapter's own entity types are used.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from cllmfs_hf.extractor import NERExtractor, read_corpus


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
        metadata={
            "help": "A corpus file: JSON lines (.jsonl/.ndjson/.json, a `text` field and an optional `id`) or "
            "UTF-8 text, one text per line (empty lines give empty results)."
        },
    )
    output_file: str | None = field(
        default=None,
        metadata={
            "help": "Write the JSON lines here (streamed, resumable, sharded under accelerate launch) instead "
            "of standard output."
        },
    )
    entity_types: list[str] | None = field(
        default=None, metadata={"help": "Entity types to extract (default: the adapter's own types)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Generation batch size."})
    max_new_tokens: int = field(
        default=64, metadata={"help": "Generation cap per (text, type) query, after the preamble."}
    )
    chunk_size: int = field(default=256, metadata={"help": "Texts read, predicted and written at a time."})
    skip_bad_lines: bool = field(
        default=False,
        metadata={"help": "Skip (and count) JSON lines that are not an object with a string text."},
    )
    allow_unknown_types: bool = field(
        default=False,
        metadata={
            "help": "Query --entity_types that the adapter was not trained on (it may still find them)."
        },
    )
    text_field: str = field(default="text", metadata={"help": "The text field of JSON-lines input."})
    id_field: str = field(default="id", metadata={"help": "The id field of JSON-lines input."})

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.output_file and not self.input_file:
            raise ValueError("--output_file needs --input_file (the corpus to predict).")
        if self.text and self.input_file:
            raise ValueError("Pass --text or --input_file, not both.")


def _stdin_texts() -> list[str]:
    if sys.stdin is None or sys.stdin.isatty():
        raise SystemExit("No input: pass --text, --input_file, or pipe text on standard input.")
    texts = []
    for number, raw in enumerate(sys.stdin.buffer, start=1):  # bytes: decoded here, with a clear error
        try:
            texts.append(raw.decode("utf-8").rstrip("\n").rstrip("\r"))
        except UnicodeDecodeError as err:
            raise SystemExit(
                f"standard input, line {number}: not valid UTF-8 ({err.reason} at byte {err.start}): re-encode "
                "the input as UTF-8 (e.g. iconv -f latin1 -t utf-8)."
            ) from None
    if not texts:
        raise SystemExit("No input: standard input was empty; pass --text or --input_file, or pipe text in.")
    return texts


def _print_lines(extractor: NERExtractor, rows: list[tuple[object, str]], args: PredictArguments) -> None:
    keep = [i for i, (_, t) in enumerate(rows) if t.strip()]
    predicted = extractor.predict(
        [rows[i][1] for i in keep],
        args.entity_types,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        allow_unknown_types=args.allow_unknown_types,
    )
    results: list[list[dict]] = [[] for _ in rows]
    for i, entities in zip(keep, predicted):
        results[i] = entities
    for (rid, text), entities in zip(rows, results):
        print(json.dumps({"id": rid, "text": text, "entities": entities}, ensure_ascii=False), flush=True)


def main(argv: list[str] | None = None) -> None:
    (args,) = HfArgumentParser(PredictArguments).parse_args_into_dataclasses(argv)
    rows: list[tuple[object, str]] | None = None
    if args.text:
        rows = list(enumerate(args.text, start=1))
    elif not args.input_file:
        rows = list(enumerate(_stdin_texts(), start=1))  # read before the model loads: no input, no wait
    extractor = NERExtractor.from_pretrained(args.model)
    if args.output_file:
        summary = extractor.predict_file(
            args.input_file,
            args.output_file,
            args.entity_types,
            chunk_size=args.chunk_size,
            skip_bad_lines=args.skip_bad_lines,
            text_field=args.text_field,
            id_field=args.id_field,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            allow_unknown_types=args.allow_unknown_types,
        )
        print(json.dumps(summary.to_dict()), file=sys.stderr)
        return
    if rows is not None:
        _print_lines(extractor, rows, args)
        return
    # a corpus to standard output: streamed a chunk at a time
    records = read_corpus(
        args.input_file,
        text_field=args.text_field,
        id_field=args.id_field,
        skip_bad_lines=args.skip_bad_lines,
    )
    chunk: list[tuple[object, str]] = []
    for record in records:
        chunk.append((record.id, record.text))
        if len(chunk) == args.chunk_size:
            _print_lines(extractor, chunk, args)
            chunk = []
    if chunk:
        _print_lines(extractor, chunk, args)


if __name__ == "__main__":
    main(sys.argv[1:])
