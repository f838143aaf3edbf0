"""Benchmark of span-constrained decoding and batched extraction (issue 4).

Two figures, measured in one run on the same model and inputs:

- ``constrained_token_time_ratio``: per-token decoding time with ``SpanConstrainedLogitsProcessor`` divided
  by the time without it. The constrained batch runs first (greedy, until every row ends); the
  unconstrained batch then runs for exactly the same number of steps (``min_new_tokens = max_new_tokens``),
  so both decode the same number of tokens over the same prompts. The vocabulary trie is built before
  timing (it is built once per tokenizer and cached; its build time is reported separately), while the
  per-sentence automata start cold, as they do for new sentences. Target: <= 1.10.
- ``batched_predict_speedup``: records (sentence x type) per second of ``NERExtractor.predict`` with
  batching, divided by the same records predicted one at a time (``predict([text], [type], batch_size=1)``).
  Target: >= 4. Batched predict also encodes the prompt prefix shared by a type's records once; the speed-up
  of the same batches without that cache is reported beside it.
- ``extraction_speedup``: records per second of batched ``predict`` as it runs by default (the answer's
  preamble prefilled in the prompt; continuous batching: ended records leave the batch, waiting ones join it)
  over the same records the way extraction ran before both (``NERExtractor(prefill_preamble=False, drop_finished_rows=False)``: the preamble
  generated token by token, its cap raised by the preamble's tokens so both leave the same room for spans,
  and ``model.generate`` keeping every row until the longest answer ends); each change alone is reported
  beside it. ``prefill_answers_identical`` says whether every answer is the same. Target: >= 3.
- ``processor_ms_per_row_step``: milliseconds spent inside the processor per row and decoding step (the
  model excluded), greedy on ``--processor_batch`` (64) real sentences at once, automata cold; the median of
  ``--processor_repeats`` (3) runs, each listed in ``processor_ms_per_row_step_runs``. Target: <= 0.03.
  ``processor_ms_per_row_step_automata_built``: the same calls replayed through a new processor whose
  sentences' automata exist (as for a sentence's second and later entity types): the masking alone.
  ``processor_ms_per_answering_row_step``: the time per row-step of rows that had not ended (``model.generate``
  keeps ended rows in the batch until the last one ends; an ended row costs the processor almost nothing).
  ``predict_constraint_ms_per_row_step``: the same cost inside the batched ``predict`` timed below, from the
  processors' own clocks (``last_stats.constraint_seconds``), where every row is a record still answering and
  a sentence's entity types share its automaton; ``predict_constraint_share_of_time`` is its share of
  ``predict``'s time.

Usage::

    python benchmarks/decoding.py --output outputs/bench_decoding.json
    python benchmarks/decoding.py --model path/or/hub-id --sentences 32 --batch_size 16 --output out.json
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "crossner" / "politics" / "test.txt"


from cllmfs_hf.decoding.processor import _ENDED  # noqa: E402  (the state of a row that emitted EOS)


class _Timed:
    """Wraps a logits processor: the time inside its calls (its own clock, construction excluded), the rows of
    those that had not ended, and optionally each call's input."""

    def __init__(self, processor, record: bool = False) -> None:
        self.processor = processor
        self._construction_seconds = processor.seconds
        # each call's input_ids, to replay the processor alone
        self.calls: list | None = [] if record else None
        self.answering_row_steps = 0  # row-steps of rows that had not ended (nor left the constraint)

    @property
    def seconds(self) -> float:
        return self.processor.seconds - self._construction_seconds

    @property
    def row_steps(self) -> int:
        return self.processor.row_steps

    def __call__(self, input_ids, scores):
        if self.calls is not None:
            self.calls.append(input_ids.clone())
        out = self.processor(input_ids, scores)
        # an ended row costs the processor almost nothing (EOS alone is allowed): count the others apart
        self.answering_row_steps += sum(
            state is not None and state is not _ENDED for _group, state in self.processor._last_states
        )
        return out


def _mentions(results: list[list[dict]]) -> list[list[dict]]:
    """The predicted mentions without their scores (which batching changes in their last bits)."""
    return [[{k: v for k, v in m.items() if k != "score"} for m in found] for found in results]


@dataclass
class DecodingArguments:
    """The command line of this benchmark (one ``--field_name`` per field)."""

    output: str = field(metadata={"help": "Where to write the JSON results."})
    model: str | None = field(
        default=None, metadata={"help": "Base model (default: the built-in smollm2-135m-instruct)."}
    )
    data: str = field(
        default=str(DEFAULT_DATA), metadata={"help": "A dataset file readable by read_dataset."}
    )
    sentences: int = field(default=8, metadata={"help": "Sentences for the throughput comparison."})
    types: list[str] = field(
        default_factory=lambda: ["person", "politicalparty"], metadata={"help": "Entity types queried."}
    )
    batch_size: int = field(default=16, metadata={"help": "Records per generate call when batching."})
    ratio_batch: int = field(default=4, metadata={"help": "Rows of the batch timed for the token ratio."})
    processor_batch: int = field(
        default=64, metadata={"help": "Rows of the batch whose processor time per row-step is measured."}
    )
    max_new_tokens: int = field(default=32, metadata={"help": "Answer cap for both measurements."})
    repeats: int = field(default=3, metadata={"help": "Repetitions of the token-time measurement."})
    processor_repeats: int = field(
        default=3, metadata={"help": "Cold runs of the processor measurement (their median is reported)."}
    )
    max_words: int = field(default=40, metadata={"help": "Use sentences of at most this many tokens."})

    def __post_init__(self) -> None:
        for name in (
            "sentences",
            "batch_size",
            "ratio_batch",
            "processor_batch",
            "max_new_tokens",
            "repeats",
            "processor_repeats",
            "max_words",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")


def _parse(argv: list[str] | None) -> DecodingArguments:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(DecodingArguments, description=__doc__.split("\n\n")[0])
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as exc:  # a check of DecodingArguments: a usage error
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    import torch
    from transformers import LogitsProcessorList

    from cllmfs_hf.data.readers import read_dataset
    from cllmfs_hf.decoding import SpanConstrainedLogitsProcessor, VocabularyTrie
    from cllmfs_hf.extractor import NERExtractor
    from cllmfs_hf.extractor.prefix_cache import layout_batch
    from cllmfs_hf.models import DEFAULT_MODEL

    model_name = args.model or DEFAULT_MODEL
    t0 = time.perf_counter()
    extractor = NERExtractor.from_pretrained(model_name)
    load_seconds = time.perf_counter() - t0
    model, tokenizer = extractor.model, extractor.tokenizer
    VocabularyTrie._cache.clear()
    t0 = time.perf_counter()
    trie = VocabularyTrie.for_tokenizer(tokenizer)
    trie_seconds = time.perf_counter() - t0
    extractor.trie = trie

    sentences = [s.text for s in read_dataset(args.data) if 3 <= len(s.tokens) <= args.max_words]
    if len(sentences) < max(args.sentences, args.ratio_batch, args.processor_batch):
        raise SystemExit(f"{args.data} has only {len(sentences)} sentences of 3..{args.max_words} tokens.")

    # ---- per-token time with vs without the processor ------------------------------------------------
    label = args.types[0]
    ratio_sents = sentences[: args.ratio_batch]
    prompts = [extractor._prompt_ids(label, s) for s in ratio_sents]
    width = max(map(len, prompts))
    input_ids = torch.full((len(prompts), width), extractor.pad_token_id, dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p) :] = torch.tensor(p)
        attention[i, width - len(p) :] = 1
    common = dict(
        input_ids=input_ids,
        attention_mask=attention,
        do_sample=False,
        eos_token_id=extractor.eos_token_ids,
        pad_token_id=extractor.pad_token_id,
    )
    with torch.inference_mode():
        model.generate(**common, max_new_tokens=4)  # warm-up
    ratios, per_token_c, per_token_u, proc_share = [], [], [], []
    steps = 0
    for _ in range(args.repeats):
        trie._automata.clear()  # per-sentence automata start cold every repeat
        timed = _Timed(  # the extractor's constraint: its prompts end with the preamble
            SpanConstrainedLogitsProcessor(
                tokenizer, ratio_sents, extractor.constraint, eos_token_id=extractor.eos_token_ids
            )
        )
        with torch.inference_mode():
            t = time.perf_counter()
            out = model.generate(
                **common, max_new_tokens=args.max_new_tokens, logits_processor=LogitsProcessorList([timed])
            )
            tc = time.perf_counter() - t
            steps = out.shape[1] - width
            t = time.perf_counter()
            out_u = model.generate(**common, max_new_tokens=steps, min_new_tokens=steps)
            tu = time.perf_counter() - t
        assert out_u.shape[1] - width == steps
        ratios.append(tc / tu)
        per_token_c.append(tc / (steps * len(prompts)))
        per_token_u.append(tu / (steps * len(prompts)))
        proc_share.append(timed.seconds / tc)
    ratio = statistics.median(ratios)
    share = statistics.median(proc_share)

    # ---- processor time per row and step at a large batch (model time excluded) ---------------------
    big = sentences[: args.processor_batch]
    big_ids, big_attention = layout_batch(
        [extractor._prompt_ids(label, s) for s in big], None, extractor.pad_token_id
    )
    # several cold runs, the median reported (one run moves by tens of percent on this machine); a collection
    # of the garbage left by loading the model is done before each, not inside the processor's calls
    processor_runs: list[_Timed] = []
    for run in range(args.processor_repeats):
        trie._automata.clear()
        gc.collect()
        timed_run = _Timed(
            SpanConstrainedLogitsProcessor(
                tokenizer, big, extractor.constraint, eos_token_id=extractor.eos_token_ids
            ),
            record=run == 0,
        )
        with torch.inference_mode():
            model.generate(
                input_ids=big_ids,
                attention_mask=big_attention,
                do_sample=False,
                eos_token_id=extractor.eos_token_ids,
                pad_token_id=extractor.pad_token_id,
                max_new_tokens=args.max_new_tokens,
                logits_processor=LogitsProcessorList([timed_run]),
            )
        processor_runs.append(timed_run)
    timed_big = processor_runs[0]  # its calls are replayed below
    processor_run_ms = [1000 * t.seconds / t.row_steps for t in processor_runs]
    processor_ms = statistics.median(processor_run_ms)
    processor_answering_ms = statistics.median(
        1000 * t.seconds / max(1, t.answering_row_steps) for t in processor_runs
    )
    # the same calls replayed through a new processor whose automata are built (as for a sentence's second and
    # later entity types, which share its automaton): the cost of the masking itself
    vocab_width = model.get_output_embeddings().weight.shape[0]
    warm = _Timed(
        SpanConstrainedLogitsProcessor(
            tokenizer, big, extractor.constraint, eos_token_id=extractor.eos_token_ids
        )
    )
    blank = torch.zeros((len(big), vocab_width))
    for ids in timed_big.calls:
        warm(ids, blank.clone())
    processor_warm_ms = 1000 * warm.seconds / warm.row_steps

    # ---- batched predict vs one record at a time ----------------------------------------------------
    texts = sentences[: args.sentences]
    records = len(texts) * len(args.types)

    def timed_predict(ex, cap):
        """``ex.predict`` of the benchmark's texts and types, automata cold: (mentions, seconds, stats)."""
        trie._automata.clear()
        t = time.perf_counter()
        found = ex.predict(
            texts,
            args.types,
            batch_size=args.batch_size,
            max_new_tokens=cap,
            progress=False,
            allow_unknown_types=True,
        )
        return found, time.perf_counter() - t, ex.last_stats.to_dict()

    batched, batched_seconds, batched_stats = timed_predict(extractor, args.max_new_tokens)
    # the same batches without the shared-prefix cache: how much batching alone gives
    extractor.prefix_cache = False
    unshared, unshared_seconds, _ = timed_predict(extractor, args.max_new_tokens)
    extractor.prefix_cache = True
    trie._automata.clear()
    t = time.perf_counter()
    naive: list[list[dict]] = [[] for _ in texts]
    for i, text in enumerate(texts):
        for label in args.types:
            naive[i] += extractor.predict(
                [text],
                [label],
                batch_size=1,
                max_new_tokens=args.max_new_tokens,
                progress=False,
                allow_unknown_types=True,
            )[0]
    naive_seconds = time.perf_counter() - t

    # the same batches the way extraction ran before: the preamble generated token by token, and every row kept
    # in model.generate's batch until the longest answer ends
    def variant(**options):
        return NERExtractor(
            model,
            tokenizer,
            extractor.entity_types,
            extractor.descriptions,
            type_names=extractor.type_names,
            **options,
        )

    per_token = variant(prefill_preamble=False, drop_finished_rows=False)
    preamble_tokens = per_token._preamble_tokens
    generated_preamble, per_token_seconds, per_token_stats = timed_predict(
        per_token, args.max_new_tokens + preamble_tokens
    )
    # each of the two changes alone
    prefill_only, prefill_only_seconds, _ = timed_predict(
        variant(drop_finished_rows=False), args.max_new_tokens
    )
    drop_only, drop_only_seconds, _ = timed_predict(
        variant(prefill_preamble=False), args.max_new_tokens + preamble_tokens
    )
    same = sum(
        sorted(map(json.dumps, a)) == sorted(map(json.dumps, b))
        for a, b in zip(_mentions(batched), _mentions(naive))
    ) / len(texts)

    result = {
        "model": model_name,
        "device": str(extractor._device()),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "load_seconds": round(load_seconds, 2),
        "trie_build_seconds": round(trie_seconds, 3),
        "constrained_token_time_ratio": round(ratio, 4),
        "constrained_token_time_ratios": [round(r, 4) for r in ratios],
        "constrained_seconds_per_token": round(statistics.median(per_token_c), 5),
        "unconstrained_seconds_per_token": round(statistics.median(per_token_u), 5),
        "processor_share_of_constrained_time": round(share, 4),
        # the ratio the processor alone causes (its own time over the rest of the constrained run): robust to
        # the machine's load changing between the two timed runs
        "processor_overhead_ratio": round(1.0 / (1.0 - share), 4),
        "ratio_batch_rows": len(prompts),
        "ratio_steps": steps,
        "records": records,
        "batch_size": args.batch_size,
        "batched_seconds": round(batched_seconds, 2),
        "naive_seconds": round(naive_seconds, 2),
        "batched_records_per_second": round(records / batched_seconds, 3),
        "naive_records_per_second": round(records / naive_seconds, 3),
        "batched_predict_speedup": round(naive_seconds / batched_seconds, 3),
        "batched_equals_naive_fraction": round(same, 3),
        "batched_without_prefix_cache_seconds": round(unshared_seconds, 2),
        "batched_predict_speedup_without_prefix_cache": round(naive_seconds / unshared_seconds, 3),
        "prefix_cache_changes_predictions": _mentions(unshared) != _mentions(batched),
        "batched_stats": batched_stats,
        "processor_ms_per_row_step": round(processor_ms, 4),
        "processor_ms_per_row_step_runs": [round(ms, 4) for ms in processor_run_ms],
        "processor_ms_per_row_step_automata_built": round(processor_warm_ms, 4),
        "processor_answering_row_steps": timed_big.answering_row_steps,
        "processor_ms_per_answering_row_step": round(processor_answering_ms, 4),
        # the constraint inside batched predict (continuous batching: every row masked is a record answering,
        # and a sentence's entity types share its automaton), from the processors' own clocks
        "predict_constraint_ms_per_row_step": round(
            1000 * batched_stats["constraint_seconds"] / max(1, batched_stats["constrained_row_steps"]), 4
        ),
        "predict_constraint_share_of_time": round(batched_stats["constraint_seconds"] / batched_seconds, 4),
        "processor_batch_rows": len(big),
        "processor_row_steps": timed_big.row_steps,
        "per_token_preamble_seconds": round(per_token_seconds, 2),
        "per_token_preamble_records_per_second": round(records / per_token_seconds, 3),
        "extraction_speedup": round(per_token_seconds / batched_seconds, 3),
        "extraction_speedup_prefill_only": round(per_token_seconds / prefill_only_seconds, 3),
        "extraction_speedup_drop_finished_rows_only": round(per_token_seconds / drop_only_seconds, 3),
        "variants_answers_identical": _mentions(prefill_only) == _mentions(batched) == _mentions(drop_only),
        "prefill_answers_identical": _mentions(generated_preamble) == _mentions(batched),
        "prefill_identical_fraction": round(
            sum(a == b for a, b in zip(_mentions(generated_preamble), _mentions(batched))) / len(texts), 3
        ),
        "per_token_preamble_stats": per_token_stats,
        "targets": {
            "constrained_token_time_ratio": "<= 1.10",
            "batched_predict_speedup": ">= 4",
            "extraction_speedup": ">= 3",
            "processor_ms_per_row_step": "<= 0.03",
        },
    }
    rows = [
        ("constrained_token_time_ratio", result["constrained_token_time_ratio"], "<= 1.10"),
        ("  per token, constrained (s)", result["constrained_seconds_per_token"], ""),
        ("  per token, unconstrained (s)", result["unconstrained_seconds_per_token"], ""),
        ("  processor share of time", result["processor_share_of_constrained_time"], ""),
        ("  overhead ratio from processor time", result["processor_overhead_ratio"], ""),
        ("processor_ms_per_row_step", result["processor_ms_per_row_step"], "<= 0.03"),
        ("  the same, automata built", result["processor_ms_per_row_step_automata_built"], ""),
        ("  per row-step of a row still answering", result["processor_ms_per_answering_row_step"], ""),
        ("  per row-step inside batched predict", result["predict_constraint_ms_per_row_step"], ""),
        ("  share of batched predict's time", result["predict_constraint_share_of_time"], ""),
        ("batched_predict_speedup", result["batched_predict_speedup"], ">= 4"),
        ("  batched records/s", result["batched_records_per_second"], ""),
        ("  naive records/s", result["naive_records_per_second"], ""),
        ("  speedup without prefix cache", result["batched_predict_speedup_without_prefix_cache"], ""),
        ("extraction_speedup", result["extraction_speedup"], ">= 3"),
        ("  prefilled preamble alone", result["extraction_speedup_prefill_only"], ""),
        ("  continuous batching alone", result["extraction_speedup_drop_finished_rows_only"], ""),
        ("  answers identical (fraction of texts)", result["prefill_identical_fraction"], "1.0"),
        ("trie build (s, once per tokenizer)", result["trie_build_seconds"], ""),
    ]
    print(f"{'metric':<38}{'value':>12}  target")
    for name, value, target in rows:
        print(f"{name:<38}{value:>12}  {target}")
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
