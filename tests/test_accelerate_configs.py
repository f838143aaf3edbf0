"""Every accelerate config parses; DeepSpeed and FSDP configs build their plugins on CPU as `accelerate launch` would."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

CONFIG_DIR = Path(__file__).resolve().parents[1] / "accelerate_configs"
EXPECTED = {
    "cpu_multiprocess.yaml": "MULTI_CPU",
    "single_gpu.yaml": "NO",
    "multi_gpu.yaml": "MULTI_GPU",
    "deepspeed_zero2.yaml": "DEEPSPEED",
    "deepspeed_zero3.yaml": "DEEPSPEED",
    "fsdp.yaml": "FSDP",
}


def _launch_args(config: Path):
    args = launch_command_parser().parse_args(["--config_file", str(config), "examples/train.py"])
    args, defaults, _ = _validate_launch_command(args)
    return args, defaults


def test_every_config_is_present_commented_and_parses():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(EXPECTED)
    for name, kind in EXPECTED.items():
        path = CONFIG_DIR / name
        assert path.read_text().startswith("#"), f"{name} must start with a comment saying when to use it"
        assert load_config_from_file(str(path)).distributed_type.value == kind
        # which CLLMFS terms it supports (all of them since the one-backward FGM path, issue 16)
        assert "# CLLMFS terms: InfoNCE yes, FGM yes" in path.read_text(), name
        _launch_args(path)


@pytest.mark.parametrize("name,stage", [("deepspeed_zero2.yaml", 2), ("deepspeed_zero3.yaml", 3)])
def test_deepspeed_configs_build_their_plugin(name, stage):
    pytest.importorskip("deepspeed", reason="install the extra: pip install 'cllmfs-hf[deepspeed]'")
    from accelerate.utils import DeepSpeedPlugin

    args, defaults = _launch_args(CONFIG_DIR / name)
    assert args.use_deepspeed
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    with mock.patch.dict(os.environ, env):
        plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage
    assert plugin.deepspeed_config["zero_optimization"]["stage"] == stage
    assert plugin.deepspeed_config["gradient_clipping"] == 1.0


def test_fsdp_config_builds_its_plugin():
    from accelerate.utils import FullyShardedDataParallelPlugin

    args, _ = _launch_args(CONFIG_DIR / "fsdp.yaml")
    assert args.use_fsdp
    with mock.patch.dict(os.environ, prepare_multi_gpu_env(args)):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.reshard_after_forward is True
    assert "transformer_auto_wrap_policy" in getattr(plugin.auto_wrap_policy, "__name__", "")
