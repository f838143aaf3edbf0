"""Train a tiny random Llama with CLLMFSTrainer (LoRA + InfoNCE + FGM) under ``accelerate launch`` and save it.

Run by ``tests/test_trainer_distributed.py``:

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 tests/scripts/train_tiny_distributed.py \
        --tokenizer TOKENIZER_DIR --data tests/fixtures/data/crossner_politics_train_head.txt --output OUT_DIR

(``--cpu --num_processes 2`` starts a single process in accelerate 1.15; ``--multi_gpu`` uses torchrun, and
``use_cpu=True`` below makes every process join a gloo group.)

Each rank writes ``OUT_DIR/rank{N}.json`` (world size, a checksum of its LoRA weights, its logged losses) so the
test can check that the ranks stayed in sync; the adapter itself is saved once, by the main process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for conftest.build_tiny_causal_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (with a chat template)")
    parser.add_argument("--data", required=True, help="a BIO file of real sentences")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--sentences", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--use_cpu",
        choices=["true", "false"],
        default="true",
        help="TrainingArguments.use_cpu: true for DDP over gloo; false under DeepSpeed (DS_ACCELERATOR=cpu) and FSDP, "
        "whose accelerate plugins are off when accelerate is told to use the CPU",
    )
    parser.add_argument(
        "--checkpointing",
        choices=["on", "off"],
        default="on",
        help="activation checkpointing (non-reentrant)",
    )
    cli = parser.parse_args()

    import torch
    from conftest import build_tiny_causal_lm
    from peft import LoraConfig
    from transformers import AutoTokenizer

    from cllmfs_hf.artifact import NERAdapterConfig
    from cllmfs_hf.config import CLLMFSConfig
    from cllmfs_hf.data.readers import read_conll
    from cllmfs_hf.data.records import build_records, label_set, records_to_dataset
    from cllmfs_hf.trainer import CLLMFSTrainer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(cli.tokenizer)
    model = build_tiny_causal_lm("llama", len(tokenizer), seed=cli.seed)
    sentences = read_conll(cli.data)[: cli.sentences]
    records = build_records(sentences, negative_ratio=0.3)
    args = CLLMFSConfig(
        output_dir=cli.output,
        report_to="none",
        use_cpu=cli.use_cpu == "true",
        # Without an accelerator, accelerate 1.16 picks no backend for DeepSpeed / FSDP and counts 1 process
        # while DeepSpeed's own group has 2 (DeepSpeed then asserts "train_batch_size ... 4 != 2 * 2 * 2").
        ddp_backend=None if cli.use_cpu == "true" else "gloo",
        bf16=False,
        max_steps=cli.steps,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        seed=cli.seed,
        activation_checkpointing=cli.checkpointing == "on",
        contrastive_weight=1.0,
        adversarial="fgm",
        disable_tqdm=True,
    )
    trainer = CLLMFSTrainer(
        model,
        args=args,
        train_dataset=records_to_dataset(records),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0),
        # a model built from a config has no name: the saved adapter must still say which base it is for
        adapter_config=NERAdapterConfig.from_training(
            label_set(sentences), base_model="tests/tiny-random-llama"
        ),
    )
    trainer.train()
    trainer.save_model(cli.output)
    # Under ZeRO-3 and FSDP each rank holds a shard only: no checksum of the replicas there.
    sharded = trainer.is_fsdp_enabled or (
        trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3
    )
    lora = [p.detach().double() for n, p in trainer.model.named_parameters() if "lora_" in n]
    report = {
        "world_size": trainer.accelerator.num_processes,
        "rank": trainer.accelerator.process_index,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "fgm_backward": trainer.fgm_backward,
        "lora_checksum": None if sharded else float(sum((p * (i + 1)).sum() for i, p in enumerate(lora))),
        "logs": [h for h in trainer.state.log_history if "loss" in h],
    }
    Path(cli.output, f"rank{report['rank']}.json").write_text(json.dumps(report, indent=1))
    # end the process group before exit, as accelerate asks: a rank once aborted ("terminate called without
    # an active exception") while the interpreter tore down a live gloo group
    trainer.accelerator.end_training()


if __name__ == "__main__":
    main()
