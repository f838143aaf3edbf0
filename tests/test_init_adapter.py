"""Two-stage adaptation (``--init_adapter``): stage 1 trains and saves an adapter, stage 2 continues it through
the one training path; the checks on the adapter, the LoRA shape and the base model; lineage in the saved
config and card; bad adapter folders refused before any model is loaded. Tiny random models only."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO_ROOT, build_tiny_causal_lm

from cllmfs_hf import training
from cllmfs_hf.artifact import ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, CLLMFS_CONFIG_NAME, NERAdapterConfig
from cllmfs_hf.data.readers import read_dataset
from cllmfs_hf.data.records import build_records
from cllmfs_hf.init_adapter import inspect_init_adapter, same_base_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RECIPE = REPO_ROOT / "examples" / "recipes" / "source_then_target.yaml"
SOURCE_TYPES = ["LOC", "MISC", "ORG", "PER"]


def _train_example():
    spec = importlib.util.spec_from_file_location("train_example", REPO_ROOT / "examples" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A tiny random Llama with the SmolLM2 tokenizer, saved like any local model folder."""
    model = build_tiny_causal_lm("llama", len(smollm2_tokenizer), num_layers=2)
    for config in (model.config, model.generation_config):
        config.pad_token_id, config.eos_token_id = (
            smollm2_tokenizer.pad_token_id,
            smollm2_tokenizer.eos_token_id,
        )
    out = tmp_path_factory.mktemp("tiny_base")
    model.save_pretrained(out)
    smollm2_tokenizer.save_pretrained(out)
    return out


def _args(output_dir: Path, **overrides):
    from cllmfs_hf.config import CLLMFSConfig

    values = dict(
        output_dir=str(output_dir),
        report_to="none",
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=4,
        activation_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
    )
    values.update(overrides)
    return CLLMFSConfig(**values)


def _data(train: Path, test: Path, **overrides) -> training.DataArguments:
    values = dict(
        train_file=str(train),
        test_file=str(test),
        max_test_sentences=2,
        eval_batch_size=16,
        max_new_tokens=8,
        zero_shot_baseline=False,
    )
    values.update(overrides)
    return training.DataArguments(**values)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, tiny_base, wikigold_head) -> Path:
    """Stage 1: 2 steps on WikiGold sentences (4 types, PER described by the user), saved by the main job."""
    root = tmp_path_factory.mktemp("stage1")
    (root / "desc.json").write_text(json.dumps({"PER": "people (stage 1)"}))
    data = _data(wikigold_head, wikigold_head, descriptions_file=str(root / "desc.json"))
    training.run(data, training.default_model_config(model_name_or_path=str(tiny_base)), _args(root / "run"))
    return root / "run" / "adapter"


@pytest.fixture(scope="module")
def small_adapter(tmp_path_factory, tiny_base, smollm2_tokenizer) -> Path:
    """An untrained CLLMFS adapter of another LoRA shape (r=4 on q_proj and v_proj), saved with save_adapter."""
    from peft import LoraConfig, get_peft_model

    from cllmfs_hf.hub import save_adapter
    from cllmfs_hf.models import load_base_model

    lora = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"
    )
    model = get_peft_model(load_base_model(str(tiny_base)), lora)
    out = tmp_path_factory.mktemp("small") / "adapter"
    cfg = NERAdapterConfig(entity_types=["PER"], base_model=str(tiny_base), training={"train_data": "x.txt"})
    return save_adapter(model, smollm2_tokenizer, out, cfg)


def test_stage2_starts_from_the_stage1_weights(stage1, tiny_base, politics_train_head, tmp_path):
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    model_args = training.default_model_config(model_name_or_path=str(tiny_base), init_adapter=str(stage1))
    records = build_records(read_dataset(politics_train_head)[:2], ["person"])
    trainer = training.build_trainer(model_args, _args(tmp_path / "run"), records, entity_types=["person"])
    start = get_peft_model_state_dict(trainer.model)
    saved = load_file(stage1 / ADAPTER_WEIGHTS_NAME)
    assert sorted(start) == sorted(saved)
    for name, tensor in saved.items():
        assert start[name].equal(tensor), name
    assert all(p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" in n)
    assert trainer.adapter_config.entity_types == [*SOURCE_TYPES, "person"]
    assert trainer.adapter_config.type_descriptions["PER"] == "people (stage 1)"


def test_two_stage_run_merges_types_and_records_the_lineage(
    stage1, tiny_base, politics_train_head, politics_test_head, wikigold_head, tmp_path
):
    (tmp_path / "desc.json").write_text(json.dumps({"person": "people in politics (stage 2)"}))
    data = _data(
        politics_train_head,
        politics_test_head,
        k_shot=1,
        sample_seed=3,
        descriptions_file=str(tmp_path / "desc.json"),
        zero_shot_baseline=True,
    )
    model_args = training.default_model_config(init_adapter=str(stage1))  # the base: the adapter's
    assert model_args.model_name_or_path == str(tiny_base)
    report = training.run(data, model_args, _args(tmp_path / "run", seed=7))
    assert report["train_steps"] == 2 and report["init_adapter"] == str(stage1)
    assert {"zero_shot", "init_adapter_zero_shot"} <= set(report)  # the raw base and the stage-1 adapter
    report_md = (tmp_path / "run" / "report.md").read_text()
    assert f"| `{stage1}` as it was, before this training |" in report_md

    adapter = Path(report["adapter_dir"])
    saved = json.loads((adapter / CLLMFS_CONFIG_NAME).read_text())
    target_types = report["entity_types"]
    assert saved["entity_types"] == SOURCE_TYPES + [t for t in target_types if t not in SOURCE_TYPES]
    assert saved["type_descriptions"]["PER"] == "people (stage 1)"  # kept from the source adapter
    assert saved["type_descriptions"]["person"] == "people in politics (stage 2)"
    (entry,) = saved["lineage"]
    assert entry["adapter"] == str(stage1) and entry["entity_types"] == SOURCE_TYPES
    assert entry["train_data"] == str(wikigold_head) and entry["base_model"] == str(tiny_base)
    assert saved["training"]["train_data"] == str(politics_train_head)
    assert (saved["training"]["k_shot"], saved["training"]["sample_seed"], saved["training"]["seed"]) == (
        1,
        3,
        7,
    )
    assert saved["training"]["r"] == 16  # the adapter's LoRA shape

    card = (adapter / "README.md").read_text()
    assert "**Lineage** (two-stage adaptation)" in card and f"`{stage1}`" in card
    assert str(politics_train_head) in card and str(wikigold_head) in card
    from safetensors.torch import load_file

    before, after = load_file(stage1 / ADAPTER_WEIGHTS_NAME), load_file(adapter / ADAPTER_WEIGHTS_NAME)
    assert any(not before[k].equal(after[k]) for k in before)  # stage 2 trained the loaded weights
    # a third stage keeps the whole chain, oldest first
    chain = inspect_init_adapter(adapter).lineage()
    assert [e["adapter"] for e in chain] == [str(stage1), str(adapter)]


def test_the_stage1_reference_is_reported_without_the_raw_base_and_can_be_turned_off(
    stage1, politics_train_head, politics_test_head, tmp_path
):
    model_args = training.default_model_config(init_adapter=str(stage1))
    data = _data(politics_train_head, politics_test_head, k_shot=1, zero_shot_baseline=False)
    report = training.run(data, model_args, _args(tmp_path / "a", max_steps=1))
    assert "init_adapter_zero_shot" in report and "zero_shot" not in report
    data = _data(politics_train_head, politics_test_head, k_shot=1, init_adapter_baseline=False)
    report = training.run(data, model_args, _args(tmp_path / "b", max_steps=1))
    assert "init_adapter_zero_shot" not in report and "zero_shot" not in report


def test_the_lora_shape_comes_from_the_adapter_and_a_conflicting_flag_is_refused(small_adapter, tiny_base):
    args = training.default_model_config(init_adapter=str(small_adapter))
    assert (args.lora_r, args.lora_alpha, args.lora_dropout) == (4, 8, 0.0)
    assert sorted(args.lora_target_modules) == ["q_proj", "v_proj"]
    same = training.default_model_config(
        init_adapter=str(small_adapter), lora_r=4, lora_target_modules=["v_proj", "q_proj"]
    )
    assert same.lora_r == 4  # a flag equal to the adapter's value is fine
    with pytest.raises(
        ValueError, match=r"--lora_r 16 conflicts with the adapter, whose r is 4.*Fix: drop --lora_r"
    ):
        training.default_model_config(init_adapter=str(small_adapter), lora_r=16)
    with pytest.raises(
        ValueError, match=r"--lora_target_modules \['q_proj'\] conflicts .* \['q_proj', 'v_proj'\]"
    ):
        training.default_model_config(init_adapter=str(small_adapter), lora_target_modules=["q_proj"])
    with pytest.raises(
        ValueError, match="--use_dora True conflicts with the adapter, whose use_dora is False"
    ):
        training.default_model_config(init_adapter=str(small_adapter), use_dora=True)
    # the same through examples/train.py's flags, before any model is loaded
    train = _train_example()
    _, parsed, _ = train.parse_args(["--init_adapter", str(small_adapter)])
    assert parsed.lora_r == 4 and parsed.model_name_or_path == str(tiny_base)
    with pytest.raises(ValueError, match="--lora_alpha 32 conflicts with the adapter, whose lora_alpha is 8"):
        train.parse_args(["--init_adapter", str(small_adapter), "--lora_alpha", "32"])
    with pytest.raises(ValueError, match="--lora_r 16 conflicts"):  # the recipe's LoRA keys count as given
        train.parse_args(["--config", str(RECIPE), "--init_adapter", str(small_adapter)])


def test_another_base_model_is_refused_naming_both(small_adapter, tiny_base):
    with pytest.raises(
        ValueError,
        match=rf"trained on the base model '{tiny_base}', and --model_name_or_path is 'smollm2-135m-instruct'",
    ):
        training.default_model_config(
            init_adapter=str(small_adapter), model_name_or_path="smollm2-135m-instruct"
        )
    assert same_base_model("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert training.default_model_config(
        init_adapter=str(small_adapter), model_name_or_path=str(tiny_base)
    ).use_peft


def test_merged_descriptions_the_new_data_wins(small_adapter):
    source = inspect_init_adapter(small_adapter)
    types, descriptions, names = source.merge_types(["LOC", "PER"], {"per": "persons (target)"})
    assert types == ["PER", "LOC"]
    assert descriptions["per"] == "persons (target)" and "PER" not in descriptions
    assert NERAdapterConfig.from_training(types, descriptions, type_names=names).type_descriptions["PER"] == (
        "persons (target)"
    )


def _copy(adapter: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(adapter, folder)
    return folder


def _no_cllmfs_config(folder: Path) -> None:
    (folder / CLLMFS_CONFIG_NAME).unlink()


def _other_task(folder: Path) -> None:
    config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    config["task_type"] = "SEQ_CLS"
    (folder / ADAPTER_CONFIG_NAME).write_text(json.dumps(config))
    _no_cllmfs_config(folder)


def _truncated(folder: Path) -> None:
    data = (folder / ADAPTER_WEIGHTS_NAME).read_bytes()
    (folder / ADAPTER_WEIGHTS_NAME).write_bytes(data[: len(data) // 2])


def _no_adapter_config(folder: Path) -> None:
    (folder / ADAPTER_CONFIG_NAME).unlink()


def _pickle_weights(folder: Path) -> None:
    (folder / ADAPTER_WEIGHTS_NAME).rename(folder / "adapter_model.bin")


def _other_rank(folder: Path) -> None:
    config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    config["r"] = 8
    (folder / ADAPTER_CONFIG_NAME).write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (
            _no_cllmfs_config,
            ValueError,
            r"no cllmfs_config\.json, so it is a plain PEFT adapter.*Fix: .*NERAdapterConfig",
        ),
        (
            _other_task,
            ValueError,
            r"a PEFT adapter of another kind \(peft_type 'LORA', task_type 'SEQ_CLS'\)",
        ),
        (_truncated, ValueError, r"adapter_model\.safetensors is truncated.*Fix: re-save the adapter"),
        (
            _no_adapter_config,
            ValueError,
            r"no adapter_config\.json, so it is not a PEFT adapter folder\. Fix:",
        ),
        (
            _pickle_weights,
            ValueError,
            r"no adapter_model\.safetensors \(it holds pickle weights \['adapter_model\.bin'\]",
        ),
        (_other_rank, ValueError, r"has rank 4 .*adapter_config\.json says r=8"),
    ],
    ids=[
        "not-cllmfs",
        "other-task",
        "truncated-safetensors",
        "no-adapter-config",
        "pickle-only",
        "rank-mismatch",
    ],
)
def test_a_bad_adapter_folder_is_refused_before_any_model_loads(
    small_adapter, tmp_path, monkeypatch, damage, error, message
):
    from cllmfs_hf import models

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad --init_adapter was refused")

    monkeypatch.setattr(models, "load_base_model", no_load)
    folder = _copy(small_adapter, tmp_path)
    damage(folder)
    with pytest.raises(error, match=message):
        training.default_model_config(init_adapter=str(folder))
    with pytest.raises(error, match=message):  # the script's flags go through the same check
        _train_example().parse_args(["--init_adapter", str(folder), "--output_dir", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_a_missing_path_a_file_and_a_run_folder_are_named(stage1, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"--init_adapter .*/nope/adapter: no such folder\. Fix: pass the adapter"
    ):
        training.default_model_config(init_adapter=str(tmp_path / "nope" / "adapter"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file. Fix: pass the adapter folder"):
        training.default_model_config(init_adapter=str(tmp_path / "file.txt"))
    with pytest.raises(ValueError, match=rf"Fix: pass {stage1} \(the adapter inside this run folder\)"):
        training.default_model_config(init_adapter=str(stage1.parent))
    with pytest.raises(
        FileNotFoundError,
        match=r"not a local folder, and not fetched from the Hub .*\(unset HF_HUB_OFFLINE\)",
    ):
        training.default_model_config(init_adapter="nobody/not-cached-anywhere")


def test_lineage_round_trips_and_older_files_load(tmp_path):
    entry = {"adapter": "me/general-ner", "entity_types": ["PER"], "train_data": "wikigold", "k_shot": None}
    cfg = NERAdapterConfig(entity_types=["PER", "LOC"], lineage=[entry])
    assert NERAdapterConfig.load(cfg.save(tmp_path)) == cfg
    plain = NERAdapterConfig(entity_types=["PER"])
    assert "lineage" not in plain.to_dict()  # single-stage files stay readable by versions without the field
    assert NERAdapterConfig.from_dict(plain.to_dict()).lineage == []
    with pytest.raises(ValueError, match="lineage must be a list of dicts"):
        NERAdapterConfig(entity_types=["PER"], lineage={"adapter": "x"})


def test_the_recipe_parses_for_both_stages(stage1, tiny_base, wikigold_head, politics_train_head):
    train = _train_example()
    _, model_args, training_args = train.parse_args(
        ["--config", str(RECIPE), "--model_name_or_path", str(tiny_base), "--train_file", str(wikigold_head)]
    )
    assert model_args.init_adapter is None and model_args.lora_r == 16
    assert training_args.output_dir == "outputs/source"
    data_args, model_args, _ = train.parse_args(
        [
            "--config",
            str(RECIPE),
            "--init_adapter",
            str(stage1),
            "--train_file",
            str(politics_train_head),
            "--k_shot",
            "5",
        ]
    )
    assert model_args.init_adapter == str(stage1) and model_args.model_name_or_path == str(tiny_base)
    assert data_args.k_shot == 5


def test_train_py_refuses_a_plain_peft_adapter_before_training(small_adapter, tmp_path):
    import os
    import subprocess
    import sys

    folder = _copy(small_adapter, tmp_path)
    _no_cllmfs_config(folder)
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CLLMFS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "examples" / "train.py"),
            "--init_adapter",
            str(folder),
            "--output_dir",
            str(out),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert f"--init_adapter {folder}: no cllmfs_config.json" in proc.stderr
    assert not out.exists()
