"""Train a few-shot NER adapter with CLLMFS, evaluate it with span-constrained decoding, save adapter + report.

    python examples/train.py                                   # the default job (bundled sample, SmolLM2)
    accelerate launch examples/train.py --config examples/recipes/demo.yaml
    python examples/train.py --train_file my_train.conll --test_file my_test.conll --k_shot 5 \\
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --output_dir outputs/mine
    python examples/train.py --help                            # every option, documented

Options come from three dataclasses: `DataArguments` (data), TRL's `ModelConfig` (base model and LoRA) and
`CLLMFSConfig` (training, contrastive and adversarial terms, logging, checkpoints, Hub). A YAML recipe given
with `--config` sets defaults; command-line flags override it.
"""

from __future__ import annotations

import json
import logging
import sys

from trl import ModelConfig, TrlParser

from cllmfs_hf.config import CLLMFSConfig
from cllmfs_hf.pipeline import DataArguments, default_model_config, run_training

# Defaults of the default job; a recipe (--config) or flags override them.
DEMO_DEFAULTS = dict(
    output_dir="outputs/demo",
    learning_rate=2e-4,
    num_train_epochs=2,
    per_device_train_batch_size=8,
    logging_steps=1,
    save_strategy="steps",
    save_steps=10,
    save_total_limit=2,
    report_to="none",
)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = TrlParser((DataArguments, ModelConfig, CLLMFSConfig), description=__doc__.split("\n\n")[0])
    # TrlParser reads --config itself before argparse runs; declared here so that --help documents it.
    parser.add_argument(
        "--config",
        default=None,
        help="YAML recipe whose keys set option defaults (flags still override them).",
    )
    model_defaults = {
        k: v for k, v in vars(default_model_config()).items() if k.startswith(("lora_", "use_peft"))
    }
    parser.set_defaults(
        **DEMO_DEFAULTS, **model_defaults, model_name_or_path=default_model_config().model_name_or_path
    )
    # the fourth value is the namespace of --config, already applied by TrlParser
    data_args, model_args, training_args, _ = parser.parse_args_and_config(argv)
    report = run_training(data_args, model_args, training_args)
    if "f1" in report:
        summary = {k: report.get(k) for k in ("precision", "recall", "f1", "train_seconds", "adapter_dir")}
        if "zero_shot" in report:
            summary["zero_shot_f1"] = report["zero_shot"]["f1"]
        print(json.dumps(summary, indent=2))
        print(
            f"F1 {100 * report['f1']:.1f} (zero-shot base: {100 * report['zero_shot']['f1']:.1f})"
            if "zero_shot" in report
            else f"F1 {100 * report['f1']:.1f}"
        )
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
