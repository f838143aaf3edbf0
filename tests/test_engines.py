"""CLLMFS (LoRA + InfoNCE + FGM) under real engines on CPU: DeepSpeed ZeRO-2 / ZeRO-3 and FSDP2, 2 processes each.

Each run is ``accelerate launch --config_file`` on a copy of the repo's ``accelerate_configs/`` file, changed only
where a CPU box needs it (2 processes, no mixed precision, the script's accumulation steps), and trains the tiny
random Llama of ``tests/scripts/train_tiny_distributed.py`` for 3 steps with activation checkpointing. The checks:
the run finishes, the one-backward FGM path ran, exactly one adapter is saved and it loads, and the per-step
losses equal a DDP run of the same seed within 1e-3.

On CPU: DeepSpeed runs its CPU accelerator (``DS_ACCELERATOR=cpu``) over gloo; the script passes
``ddp_backend="gloo"`` there, because accelerate 1.16 picks no backend for DeepSpeed / FSDP without an
accelerator and then counts 1 process while DeepSpeed's group has 2. FSDP cannot run through ``accelerate
launch`` on CPU (accelerate 1.16 enables its plugin only on accelerators): that case is a strict xfail that
shows the limitation and flips when accelerate lifts it. Marked slow (still run by ``make test``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "scripts" / "train_tiny_distributed.py"
STEPS = 3
ACCUMULATION = 2  # the script's gradient_accumulation_steps

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        # the package of this checkout, whatever the venv's editable install points to
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        **extra,
    }


def _launch(
    prefix: list[str], out: Path, tokenizer: Path, data: Path, env: dict[str, str], use_cpu: bool
) -> list[dict]:
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.fail(f"accelerate CLI not found beside {sys.executable}: install accelerate in the venv.")
    cmd = [
        str(accelerate),
        "launch",
        *prefix,
        str(SCRIPT),
        "--tokenizer",
        str(tokenizer),
        "--data",
        str(data),
        "--output",
        str(out),
        "--steps",
        str(STEPS),
        "--use_cpu",
        "true" if use_cpu else "false",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-6000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def ddp_reference(sentencepiece_tokenizer_dir, politics_train_head, tmp_path_factory):
    """The DDP (gloo) run every engine is compared with: same script, seed and data."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    prefix = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    prefix += ["--dynamo_backend", "no"]
    reports = _launch(
        prefix, out, sentencepiece_tokenizer_dir, politics_train_head, _env(ACCELERATE_USE_CPU="true"), True
    )
    assert [r["world_size"] for r in reports] == [2, 2]
    return reports


def _cpu_config(name: str, tmp_path: Path) -> Path:
    """The repo's ``accelerate_configs/<name>`` with the changes a 2-process CPU run needs."""
    config = yaml.safe_load((ROOT / "accelerate_configs" / name).read_text())
    config.update(num_processes=2, mixed_precision="no", use_cpu=False)
    if "deepspeed_config" in config:
        config["deepspeed_config"]["gradient_accumulation_steps"] = ACCUMULATION
        config["deepspeed_config"]["zero3_init_flag"] = False  # the script builds its model before the args
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def _check_adapter(out: Path, tokenizer_dir: Path) -> None:
    """Exactly one adapter under ``out``, and it loads onto the tiny base with non-empty LoRA weights."""
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from conftest import build_tiny_causal_lm
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    adapters = sorted(out.rglob("adapter_model.safetensors"))
    assert [p.parent for p in adapters] == [out], adapters
    assert not list(out.rglob("adapter_model.bin"))
    weights = load_file(str(adapters[0]))
    assert weights and all(t.numel() > 0 for t in weights.values())
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    model = PeftModel.from_pretrained(build_tiny_causal_lm("llama", len(tokenizer)), str(out))
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(weights)
    assert any(float(p.abs().sum()) > 0 for n, p in loaded.items() if "lora_B" in n)  # trained, not the init
    assert all(torch.isfinite(p).all() for p in loaded.values())
    assert json.loads((out / "cllmfs_config.json").read_text())


@pytest.mark.parametrize(
    "name,kind",
    [
        ("deepspeed_zero2.yaml", "DEEPSPEED"),
        ("deepspeed_zero3.yaml", "DEEPSPEED"),
        pytest.param(
            "fsdp.yaml",
            "FSDP",
            # accelerate 1.16 (state.py, AcceleratorState.__init__) turns the FSDP plugin on only for the
            # MULTI_GPU / MULTI_XPU / MULTI_NPU / ... types, never MULTI_CPU or NO: on a CPU box the run is plain
            # data parallel without FSDP (distributed_type NO, seen here). strict: when accelerate runs FSDP on
            # CPU, this starts passing and must become a normal case.
            marks=pytest.mark.xfail(
                strict=True, reason="accelerate 1.16 does not enable FSDP without an accelerator (MULTI_CPU)"
            ),
        ),
    ],
)
def test_engine_trains_like_ddp(
    name, kind, ddp_reference, sentencepiece_tokenizer_dir, politics_train_head, tmp_path
):
    if kind == "DEEPSPEED":
        pytest.importorskip("deepspeed", reason="install the extra: pip install 'cllmfs-hf[deepspeed]'")
    out = tmp_path / "run"
    reports = _launch(
        ["--config_file", str(_cpu_config(name, tmp_path))],
        out,
        sentencepiece_tokenizer_dir,
        politics_train_head,
        _env(DS_ACCELERATOR="cpu"),
        False,
    )
    assert [r["world_size"] for r in reports] == [2, 2]
    assert {r["distributed_type"] for r in reports} == {f"DistributedType.{kind}"}
    assert {r["fgm_backward"] for r in reports} == {"single"}
    reference = [h["loss"] for h in ddp_reference[0]["logs"]]
    for report in reports:
        logs = report["logs"]
        assert len(logs) == STEPS
        for h in logs:
            assert all(
                math.isfinite(h[k]) for k in ("loss", "lm_loss", "contrastive_loss", "adversarial_loss")
            )
            assert h["adversarial_loss"] > 0 and h["contrastive_loss"] > 0
        assert [h["loss"] for h in logs] == pytest.approx(reference, abs=1e-3)
    _check_adapter(out, sentencepiece_tokenizer_dir)
