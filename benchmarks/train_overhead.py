"""Cost of the CLLMFS auxiliary terms per training step: the CLLMFS trainer with and without its terms.

Three variants train the same base model (LoRA r=16 on all linear projections, the library's default
``ModelConfig``) on the same batches of real instruction records (CrossNER politics train, shuffled with
``--seed``). Every trainer is built by the library's one training path, ``cllmfs_hf.training.build_trainer``;
the variants differ only in the ``CLLMFSConfig`` values of :data:`VARIANT_CONFIGS` (the same values as the
few-shot benchmark's ``sft`` / ``cllmfs_infonce`` / ``cllmfs_full`` systems):

- ``sft``: ``contrastive_weight=0, adversarial="none"``: plain LoRA SFT (the LM loss only, exactly TRL's
  ``SFTTrainer`` loss),
- ``infonce``: the InfoNCE term, ``adversarial="none"`` (target: no extra forward),
- ``infonce_fgm``: InfoNCE + FGM with one backward per micro-batch (``adversarial_backward="single"``, the path
  every engine runs: g = dL/de by ``torch.autograd.grad``, then one backward of the clean + adversarial loss),
- ``infonce_fgm_double``: InfoNCE + FGM with two backward passes (``adversarial_backward="double"``, the
  ``auto`` choice on one device or DDP: one backward pass fewer).

Timing: one optimizer step = ``trainer.training_step`` (forward, loss, backward; FGM's second forward and
backward) + ``optimizer.step()`` + ``zero_grad``, on a batch collated beforehand by the CLLMFS collator
(collation is timed apart, as ``collate_seconds``). The three variants run interleaved (sft, infonce,
infonce_fgm, sft, ...) on the same batch each round, so machine load drifts affect all alike; ``--warmup``
rounds are excluded. Reported: the median seconds per step and the ratios of medians.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` during the timed steps of each variant (reset before
it). On CPU, peak resident set size (RSS), sampled every 2 ms from ``/proc/self/statm`` during the steps,
with each variant in its own child process started with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors
return to the OS and RSS tracks live memory (otherwise glibc keeps freed memory and the peak of one variant
hides in another's). The ratio includes the model weights, optimizer state and activations, i.e. the whole
process footprint during training.

Usage (``--help`` lists every flag)::

    python benchmarks/train_overhead.py --output outputs/bench/train_overhead.json
    python benchmarks/train_overhead.py --model Qwen/Qwen2.5-0.5B-Instruct --steps 5 --batch_size 8 --output o.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

VARIANTS = ("sft", "infonce", "infonce_fgm", "infonce_fgm_double")
#: The only CLLMFSConfig values in which the variants differ (on top of one shared config, see _build).
VARIANT_CONFIGS: dict[str, dict[str, Any]] = {
    "sft": {"contrastive_weight": 0.0, "adversarial": "none"},
    "infonce": {"adversarial": "none"},
    "infonce_fgm": {"adversarial": "fgm", "adversarial_backward": "single"},
    "infonce_fgm_double": {"adversarial": "fgm", "adversarial_backward": "double"},
}
DEFAULT_DATA = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "crossner" / "politics" / "train.txt"
)


@dataclass
class OverheadArguments:
    """The command line of this benchmark (one ``--field_name`` per field)."""

    output: str = field(metadata={"help": "JSON file to write the figures to."})
    model: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Base model: the built-in default, a Hub id, a local folder or a .gguf file."},
    )
    data: str = field(
        default=str(DEFAULT_DATA),
        metadata={
            "help": "BIO file of real sentences (default: CrossNER politics train under ../shared/data)."
        },
    )
    steps: int = field(default=4, metadata={"help": "Timed steps per variant (after the warm-up)."})
    warmup: int = field(default=1, metadata={"help": "Untimed rounds first."})
    batch_size: int = field(default=4, metadata={"help": "Records per step."})
    max_length: int = field(default=512, metadata={"help": "Max tokens per record."})
    seed: int = field(
        default=0, metadata={"help": "Seed of the record shuffle, the LoRA init and the collator."}
    )
    threads: int | None = field(
        default=None, metadata={"help": "torch intra-op threads (default: torch's choice)."}
    )
    activation_checkpointing: bool = field(
        default=False, metadata={"help": "Train with activation (gradient) checkpointing."}
    )
    skip_memory: bool = field(
        default=False, metadata={"help": "Time only; skip the peak-memory measurement."}
    )
    memory_steps: int = field(default=2, metadata={"help": "Steps per variant in the memory measurement."})
    memory_child: str | None = field(
        default=None,
        metadata={"help": argparse.SUPPRESS, "choices": list(VARIANTS)},  # internal: one CPU memory child
    )

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "max_length", "memory_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}.")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1 (or unset), got {self.threads}.")
        if not Path(self.data).is_file():
            raise FileNotFoundError(
                f"--data {self.data} not found: pass a BIO file (e.g. ../shared/data/crossner/politics/train.txt)."
            )


def _parse(argv: list[str] | None = None) -> OverheadArguments:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(
        OverheadArguments,
        description=__doc__.split("\n\n")[0],
        epilog="See the module docstring and benchmarks/README.md for the method.",
    )
    try:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    except (ValueError, FileNotFoundError) as exc:  # a check of OverheadArguments: a usage error
        parser.error(str(exc))
    return args


def _records(args: OverheadArguments, count: int) -> tuple[list[dict[str, Any]], list[str]]:
    """``count`` shuffled instruction records of ``--data`` and the entity types they were built for."""
    from cllmfs_hf.data.readers import read_conll
    from cllmfs_hf.data.records import build_records, label_set

    sentences = read_conll(args.data)
    types = label_set(sentences)
    records = build_records(sentences, types)
    random.Random(args.seed).shuffle(records)
    if len(records) < count:
        raise SystemExit(f"{args.data} gives {len(records)} records; {count} are needed.")
    return records[:count], types


def _build(
    variant: str,
    args: OverheadArguments,
    tokenizer: Any,
    records: list[dict[str, Any]],
    entity_types: list[str],
    out: Path,
):
    """A trainer for ``variant`` on a fresh copy of the base model (``cllmfs_hf.training.build_trainer``), with
    its optimizer created. The variants share every setting but their :data:`VARIANT_CONFIGS` entry."""
    from cllmfs_hf.config import CLLMFSConfig
    from cllmfs_hf.training import build_trainer, default_model_config

    training_args = CLLMFSConfig(
        output_dir=str(out / variant),
        report_to="none",
        per_device_train_batch_size=args.batch_size,
        learning_rate=2e-4,
        max_length=args.max_length,
        activation_checkpointing=args.activation_checkpointing,
        save_strategy="no",
        seed=args.seed,
        disable_tqdm=True,
        **VARIANT_CONFIGS[variant],
    )
    trainer = build_trainer(
        default_model_config(model_name_or_path=args.model),
        training_args,
        records,
        entity_types=entity_types,
        tokenizer=tokenizer,
        lineage={"benchmark": "train_overhead", "variant": variant},
    )
    if (
        args.activation_checkpointing
    ):  # the Trainer turns it on in train(), which this benchmark does not call
        trainer.model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    trainer.model.to(trainer.args.device)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def _batches(args: OverheadArguments, tokenizer: Any, records: list[dict[str, Any]]) -> tuple[list, float]:
    """Collated batches (the same for every variant) and the median seconds to collate one."""
    from cllmfs_hf.collator import CLLMFSDataCollator

    collator = CLLMFSDataCollator(tokenizer, max_length=args.max_length, padding_side="right", seed=args.seed)
    batches, times = [], []
    for i in range(0, len(records), args.batch_size):
        t0 = time.perf_counter()
        batches.append(collator(records[i : i + args.batch_size]))
        times.append(time.perf_counter() - t0)
    return batches, statistics.median(times)


def _step(trainer: Any, batch: dict[str, Any]) -> float:
    import torch

    # Every variant gets the whole batch: the trainer takes the span columns out (unused at contrastive_weight=0).
    device = trainer.args.device
    inputs = {k: v.to(device) for k, v in batch.items()}
    num_items = (inputs["labels"][:, 1:] != -100).sum()
    model = trainer.model
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer.training_step(model, inputs, num_items)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


class _RssSampler:
    """Peak resident set size of this process, sampled in a thread (bytes)."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.interval)

    def __enter__(self) -> _RssSampler:
        self.peak = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def _memory_child(args: OverheadArguments) -> None:
    """Run one variant for a few steps and print its peak RSS during the steps as JSON (CPU only)."""
    import torch

    from cllmfs_hf.models import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    variant = args.memory_child
    tokenizer = load_tokenizer(args.model, padding_side="right")
    records, types = _records(args, args.batch_size * (args.memory_steps + 1))
    batches, _ = _batches(args, tokenizer, records)
    out = Path(args.output).with_suffix(".work")
    trainer = _build(variant, args, tokenizer, records, types, out)
    _step(trainer, batches[0])  # warm-up: optimizer state exists afterwards
    with _RssSampler() as sampler:
        before = sampler.peak
        for batch in batches[1:]:
            _step(trainer, batch)
    print(json.dumps({"variant": variant, "rss_before_bytes": before, "peak_rss_bytes": sampler.peak}))


def _memory_cpu(args: OverheadArguments) -> dict[str, dict[str, int]]:
    results = {}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    base = [sys.executable, str(Path(__file__).resolve()), "--output", args.output, "--model", args.model]
    base += ["--data", args.data, "--batch_size", str(args.batch_size), "--max_length", str(args.max_length)]
    base += ["--seed", str(args.seed), "--memory_steps", str(args.memory_steps)]
    if args.threads:
        base += ["--threads", str(args.threads)]
    if args.activation_checkpointing:
        base.append("--activation_checkpointing")
    for variant in VARIANTS:
        proc = subprocess.run(base + ["--memory_child", variant], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"memory measurement of {variant} failed:\n{proc.stderr[-3000:]}")
        line = [x for x in proc.stdout.splitlines() if x.startswith("{")][-1]
        results[variant] = json.loads(line)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = _parse(argv)
    if args.memory_child:
        _memory_child(args)
        return {}
    import torch
    import transformers
    import trl

    from cllmfs_hf.models import load_tokenizer

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(args.model, padding_side="right")
    rounds = args.warmup + args.steps
    records, types = _records(args, args.batch_size * rounds)
    batches, collate_seconds = _batches(args, tokenizer, records)
    out = Path(args.output).with_suffix(".work")
    trainers = {v: _build(v, args, tokenizer, records, types, out) for v in VARIANTS}
    cuda = torch.cuda.is_available()
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    peaks: dict[str, int] = {v: 0 for v in VARIANTS}
    for r, batch in enumerate(batches):
        for variant in VARIANTS:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            seconds = _step(trainers[variant], batch)
            if cuda and r >= args.warmup:
                peaks[variant] = max(peaks[variant], torch.cuda.max_memory_allocated())
            if r >= args.warmup:
                times[variant].append(seconds)
        print(
            f"round {r + 1}/{rounds}: " + ", ".join(f"{v} {times[v][-1]:.2f}s" for v in VARIANTS if times[v]),
            flush=True,
        )
    median = {v: statistics.median(times[v]) for v in VARIANTS}
    result: dict[str, Any] = {
        "infonce_step_ratio": median["infonce"] / median["sft"],
        "infonce_fgm_step_ratio": median["infonce_fgm"] / median["sft"],
        "infonce_fgm_double_step_ratio": median["infonce_fgm_double"] / median["sft"],
        **{f"{v}_step_seconds": median[v] for v in VARIANTS},
        "collate_seconds": collate_seconds,
        "step_seconds_all": times,
    }
    del trainers
    if cuda:
        result["memory_method"] = "torch.cuda.max_memory_allocated during the timed steps"
        result.update({f"{v}_peak_mem_bytes": peaks[v] for v in VARIANTS})
        result["infonce_peak_mem_ratio"] = peaks["infonce"] / peaks["sft"]
        result["infonce_fgm_peak_mem_ratio"] = peaks["infonce_fgm"] / peaks["sft"]
    elif not args.skip_memory:
        mem = _memory_cpu(args)
        result["memory_method"] = (
            "peak RSS sampled every 2 ms from /proc/self/statm during the steps, one child process per variant, "
            "MALLOC_MMAP_THRESHOLD_=65536"
        )
        result.update({f"{v}_peak_mem_bytes": mem[v]["peak_rss_bytes"] for v in VARIANTS})
        result.update({f"{v}_rss_before_steps_bytes": mem[v]["rss_before_bytes"] for v in VARIANTS})
        result["infonce_peak_mem_ratio"] = mem["infonce"]["peak_rss_bytes"] / mem["sft"]["peak_rss_bytes"]
        result["infonce_fgm_peak_mem_ratio"] = (
            mem["infonce_fgm"]["peak_rss_bytes"] / mem["sft"]["peak_rss_bytes"]
        )
    result.update(
        {
            "model": args.model,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "warmup": args.warmup,
            "max_length": args.max_length,
            "activation_checkpointing": args.activation_checkpointing,
            "variant_configs": VARIANT_CONFIGS,
            "mean_tokens_per_batch": statistics.mean(float(b["attention_mask"].sum()) for b in batches),
            "device": "cuda:" + torch.cuda.get_device_name() if cuda else f"cpu ({os.cpu_count()} cores)",
            "torch_threads": torch.get_num_threads(),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "trl": trl.__version__,
            },
            "python": platform.python_version(),
            "targets": {
                "infonce_step_ratio": 1.10,
                "infonce_fgm_step_ratio": 2.0,  # issue 16, the one-backward path on CPU
                "infonce_fgm_double_step_ratio": 2.2,
                "infonce_peak_mem_ratio": 1.05,
            },
        }
    )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    _print_table(result)
    return result


def _print_table(result: dict[str, Any]) -> None:
    print(
        f"\nTraining step cost on {result['model']} ({result['device']}, batch {result['batch_size']}, "
        f"~{result['mean_tokens_per_batch']:.0f} tokens/batch, median of {result['steps']} steps)"
    )
    print(f"{'variant':<20}{'s/step':>10}{'ratio':>9}{'peak mem MiB':>15}")
    for v in VARIANTS:
        secs = result[f"{v}_step_seconds"]
        mem = result.get(f"{v}_peak_mem_bytes")
        mem_s = f"{mem / 2**20:15.0f}" if mem else f"{'-':>15}"
        print(f"{v:<20}{secs:10.2f}{secs / result['sft_step_seconds']:9.3f}{mem_s}")
    targets = result["targets"]
    for key, target in targets.items():
        if key in result:
            status = "ok" if result[key] <= target else "OVER"
            print(f"{key:<32}{result[key]:8.3f}  (target <= {target}) {status}")
    print(f"collate_seconds (CLLMFS collator, per batch): {result['collate_seconds']:.3f}")


if __name__ == "__main__":
    main()
