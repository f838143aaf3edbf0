"""A 2-process CPU run under ``accelerate launch`` trains a tiny model with CLLMFSTrainer and saves it once.

accelerate 1.15 starts ONE process for ``accelerate launch --num_processes 2 --cpu`` (the simple launcher; only an
``mpirun`` hostfile makes it start more), so the test launches with ``--multi_gpu --num_processes 2`` (torchrun)
and the script sets ``use_cpu=True``: each process then joins a gloo group (DistributedType.MULTI_CPU). The test
checks that the world size really is 2.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "scripts" / "train_tiny_distributed.py"


def test_two_process_training_saves_once(sentencepiece_tokenizer_dir, politics_train_head, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.fail(f"accelerate CLI not found beside {sys.executable}: install accelerate in the venv.")
    out = tmp_path / "run"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "ACCELERATE_USE_CPU": "true",
        # the package of this checkout (a git worktree), not whichever one the venv's editable install points to
        "PYTHONPATH": os.pathsep.join([str(SCRIPT.parents[2]), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    }
    cmd = [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(SCRIPT),
        "--tokenizer",
        str(sentencepiece_tokenizer_dir),
        "--data",
        str(politics_train_head),
        "--output",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=SCRIPT.parents[2])
    assert proc.returncode == 0, proc.stderr[-4000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    # DDP kept the replicas identical: the FGM clean backward skips the all-reduce, the adversarial one does it
    assert reports[0]["lora_checksum"] == pytest.approx(reports[1]["lora_checksum"], rel=1e-6)
    logs = reports[0]["logs"]
    assert len(logs) == 2
    for h in logs:
        assert all(math.isfinite(h[k]) for k in ("loss", "lm_loss", "contrastive_loss", "adversarial_loss"))
    saved = sorted(p.name for p in out.iterdir())
    assert "adapter_model.safetensors" in saved and "adapter_config.json" in saved
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
