"""examples/train.py end to end on a tiny random model and the bundled real sample: outputs, failures before
training, a 2-process accelerate run, and kill-then-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO_ROOT, build_tiny_causal_lm

TRAIN = REPO_ROOT / "examples" / "train.py"
FAST = [
    "--max_test_sentences",
    "3",
    "--eval_batch_size",
    "16",
    "--max_new_tokens",
    "12",
    "--per_device_train_batch_size",
    "4",
    "--activation_checkpointing",
    "false",
    "--logging_steps",
    "1",
    "--report_to",
    "none",
]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer_dir) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer, saved like any local model folder."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    model = build_tiny_causal_lm("llama", len(tok), num_layers=2)
    model.config.pad_token_id = tok.pad_token_id
    model.config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    out = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", CLLMFS_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    env.pop("RANK", None)
    return env


def _run(args: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=REPO_ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=timeout
    )


def test_train_py_writes_adapter_report_and_plots(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    proc = _run(
        [
            sys.executable,
            str(TRAIN),
            "--model_name_or_path",
            str(tiny_model_dir),
            "--output_dir",
            str(out),
            "--max_steps",
            "3",
            *FAST,
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    for key in ("precision", "recall", "f1", "per_type", "train_seconds", "zero_shot"):
        assert key in report
    assert 0.0 <= report["f1"] <= 1.0 and report["train_steps"] == 3
    assert report["support_sentences"] == 12 and report["test_sentences"] == 3
    report_md = (out / "report.md").read_text()
    assert report_md.startswith("# CLLMFS run report")
    # the report says what trained the adapter (the default job: the LM loss and the InfoNCE term)
    assert report["objective"] == "CLLMFS: LM + InfoNCE"
    assert f"| this adapter ({report['objective']}) |" in report_md
    assert (out / "loss_components.png").stat().st_size > 0 and (out / "per_type_f1.png").stat().st_size > 0
    adapter = out / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "cllmfs_config.json", "README.md"):
        assert (adapter / name).is_file(), name
    ner_config = json.loads((adapter / "cllmfs_config.json").read_text())
    assert sorted(ner_config["entity_types"]) == sorted(report["entity_types"])
    assert "F1" in proc.stdout


def test_help_documents_every_option(tmp_path):
    proc = _run([sys.executable, str(TRAIN), "--help"], tmp_path, timeout=120)
    assert proc.returncode == 0
    for option in (
        "--train_file",
        "--k_shot",
        "--contrastive_weight",
        "--adversarial",
        "--lora_r",
        "--model_name_or_path",
        "--resume_from_checkpoint",
        "--push_to_hub",
        "--config",
    ):
        assert option in proc.stdout, option


def test_bad_data_file_fails_before_training(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Angela\tB-politician\nMerkel\tI-politician\n\nled\tI-party\n", encoding="utf-8")
    out = tmp_path / "run"
    proc = _run(
        [
            sys.executable,
            str(TRAIN),
            "--model_name_or_path",
            str(tiny_model_dir),
            "--train_file",
            str(bad),
            "--output_dir",
            str(out),
            *FAST,
        ],
        tmp_path,
    )
    assert proc.returncode != 0
    assert str(bad) in proc.stderr and ":4" in proc.stderr  # file and line of the I- that continues nothing
    assert not (out / "adapter").exists() and not list(out.glob("checkpoint-*"))


def test_unknown_model_fails_before_training(tmp_path):
    out = tmp_path / "run"
    proc = _run(
        [
            sys.executable,
            str(TRAIN),
            "--model_name_or_path",
            str(tmp_path / "no-such-model"),
            "--output_dir",
            str(out),
            *FAST,
        ],
        tmp_path,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "no-such-model" in proc.stderr
    assert not list(out.glob("checkpoint-*"))


def test_two_process_cpu_run_saves_one_adapter(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    proc = _run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(REPO_ROOT / "accelerate_configs" / "cpu_multiprocess.yaml"),
            "--num_processes",
            "2",
            str(TRAIN),
            "--model_name_or_path",
            str(tiny_model_dir),
            "--output_dir",
            str(out),
            "--max_steps",
            "2",
            "--zero_shot_baseline",
            "false",
            *FAST,
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((out / "report.json").read_text())["train_steps"] == 2
    # rank 0 alone writes: no stray temporary adapter folders are left behind
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("adapter")) == ["adapter"]


def test_resume_skips_a_checkpoint_the_run_was_killed_while_writing(tmp_path, caplog):
    from cllmfs_hf.training import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "missing") is None
    assert last_complete_checkpoint(tmp_path) is None
    for step in (2, 4, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"")
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "checkpoint-12").write_text("a file, not a checkpoint folder")
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    with caplog.at_level("WARNING", logger="cllmfs_hf.training"):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert "checkpoint-10 has no trainer_state.json" in caplog.text


def test_killed_run_resumes_from_last_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        str(TRAIN),
        "--model_name_or_path",
        str(tiny_model_dir),
        "--output_dir",
        str(out),
        "--max_steps",
        "40",
        "--save_steps",
        "2",
        "--save_total_limit",
        "2",
        "--zero_shot_baseline",
        "false",
        *FAST,
    ]
    proc = subprocess.Popen(
        args, cwd=REPO_ROOT, env=_env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(out.glob("checkpoint-4")):
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be interrupted: {proc.stderr.read()[-3000:]}")
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter").exists(), "a killed run must not leave an adapter folder"
    resumed = _run([*args, "--resume_from_checkpoint", "last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert (
        "Continuing training from checkpoint" in resumed.stderr + resumed.stdout
        or "resum" in (resumed.stderr + resumed.stdout).lower()
    )
    report = json.loads((out / "report.json").read_text())
    assert report["train_steps"] == 40
    from safetensors.torch import load_file

    assert load_file(out / "adapter" / "adapter_model.safetensors")  # written whole, loadable


def test_demo_recipe_is_the_default_job_from_the_general_adapter():
    """examples/recipes/demo.yaml (what `make demo` runs) writes out what `python examples/train.py` does with no
    arguments, except that it starts from the shipped general-ner adapter: 4 epochs, no raw-base baseline, and
    a target stage without the InfoNCE term (the dev evidence for adapting general-ner), 64 records per generate
    call."""
    import dataclasses
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_example", TRAIN)
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    recipe = REPO_ROOT / "examples" / "recipes" / "demo.yaml"
    defaults = train.parse_args([])
    from_recipe = train.parse_args(["--config", str(recipe)])
    differ = {
        "init_adapter": "general-ner",
        "zero_shot_baseline": False,
        "num_train_epochs": 4,
        "contrastive_weight": 0.0,
        "eval_batch_size": 64,
    }
    for a, b in zip(defaults, from_recipe):
        fields = [f.name for f in dataclasses.fields(a)]
        assert {f: getattr(a, f) for f in fields if f not in differ} == {
            f: getattr(b, f) for f in fields if f not in differ
        }
        assert {f: getattr(b, f) for f in fields if f in differ} == {
            f: differ[f] for f in fields if f in differ
        }
    assert "examples/train.py --config examples/recipes/demo.yaml" in (REPO_ROOT / "Makefile").read_text()
    data_args, model_args, training_args = defaults
    assert training_args.adversarial == "none" and training_args.contrastive_weight > 0
    assert model_args.model_name_or_path == "smollm2-135m-instruct" and model_args.use_peft
    assert data_args.train_file is None and training_args.output_dir == "outputs/demo"
