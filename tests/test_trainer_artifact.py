"""The trainer owns its artifact: save_model, create_model_card and push_to_hub give the complete adapter folder
(PEFT files, tokenizer, cllmfs_config.json with every CLLMFS field, this library's card)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from trl import SFTConfig

from cllmfs_hf.artifact import NERAdapterConfig
from cllmfs_hf.config import CLLMFS_FIELD_GROUPS, CLLMFSConfig
from cllmfs_hf.data.readers import read_conll
from cllmfs_hf.data.records import build_records, records_to_dataset
from cllmfs_hf.trainer import CLLMFSTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def records(politics_train_head):
    return build_records(read_conll(politics_train_head)[:6], ["politician", "country"], seed=0)


def _trainer(tmp_path, tokenizer, model, records, **overrides) -> CLLMFSTrainer:
    from peft import LoraConfig

    args = CLLMFSConfig(
        **{
            "output_dir": str(tmp_path / "run"),
            "report_to": "none",
            "use_cpu": True,
            "max_steps": 2,
            "per_device_train_batch_size": 4,
            "save_strategy": "no",
            "activation_checkpointing": False,
            "disable_tqdm": True,
            "adversarial": "none",
            **overrides,
        }
    )
    return CLLMFSTrainer(
        model,
        args=args,
        train_dataset=records_to_dataset(records),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
        adapter_config=NERAdapterConfig.from_training(
            ["politician", "country"], {"politician": "people in politics"}, base_model="me/tiny-base"
        ),
    )


def test_every_cllmfs_field_is_a_field_of_one_sub_config():
    cllmfs = {f.name for f in dataclasses.fields(CLLMFSConfig)} - {
        f.name for f in dataclasses.fields(SFTConfig)
    }
    assert cllmfs == set(CLLMFS_FIELD_GROUPS)


def test_save_model_writes_the_whole_adapter_folder(tmp_path, smollm2_tokenizer, tiny_model_factory, records):
    trainer = _trainer(tmp_path, smollm2_tokenizer, tiny_model_factory("llama", smollm2_tokenizer), records)
    trainer.train()
    trainer.record_evaluation(
        {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "per_type": {}},
        dataset_name="crossner/politics",
        protocol="6 sentences",
    )
    folder = Path(trainer.save_model(str(tmp_path / "adapter")))
    for name in ("adapter_config.json", "adapter_model.safetensors", "cllmfs_config.json", "README.md"):
        assert (folder / name).is_file(), name
    saved = json.loads((folder / "cllmfs_config.json").read_text())
    assert saved["entity_types"] == ["politician", "country"]
    assert saved["type_descriptions"]["politician"] == "people in politics"
    # every CLLMFS knob is recorded, by construction (decoder_layers_path once went missing)
    assert set(CLLMFS_FIELD_GROUPS) <= set(saved["training"])
    assert saved["metrics"]["eval_results"][0]["dataset"] == "crossner/politics"
    card = (folder / "README.md").read_text()
    assert "library_name: peft" in card and "politician" in card and "crossner/politics" in card
    assert NERAdapterConfig.load(folder).entity_types == ["politician", "country"]


def test_checkpoints_carry_the_config_and_card(tmp_path, smollm2_tokenizer, tiny_model_factory, records):
    trainer = _trainer(
        tmp_path,
        smollm2_tokenizer,
        tiny_model_factory("llama", smollm2_tokenizer),
        records,
        save_strategy="steps",
        save_steps=1,
    )
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "cllmfs_config.json").is_file() and (
        checkpoint / "adapter_model.safetensors"
    ).is_file()
    assert "cllmfs" in (checkpoint / "README.md").read_text()


def test_create_model_card_writes_this_librarys_card(
    tmp_path, smollm2_tokenizer, tiny_model_factory, records
):
    trainer = _trainer(tmp_path, smollm2_tokenizer, tiny_model_factory("llama", smollm2_tokenizer), records)
    trainer.create_model_card(model_name="tiny-ner", license="apache-2.0")
    card = (tmp_path / "run" / "README.md").read_text()
    assert "library_name: peft" in card and "tiny-ner" in card and "politician" in card


def test_push_to_hub_uploads_the_complete_folder(
    tmp_path, smollm2_tokenizer, tiny_model_factory, records, fake_hub
):
    trainer = _trainer(
        tmp_path,
        smollm2_tokenizer,
        tiny_model_factory("llama", smollm2_tokenizer),
        records,
        hub_model_id="me/tiny-ner",
    )
    trainer.train()
    trainer.push_to_hub()
    (upload,) = fake_hub["uploads"]
    assert upload["repo_id"] == "me/tiny-ner"
    for name in ("adapter_config.json", "adapter_model.safetensors", "cllmfs_config.json", "README.md"):
        assert name in upload["files"], (name, upload["files"])
    assert "me/tiny-ner" in upload["readme"] and "library_name: peft" in upload["readme"]
    assert not (tmp_path / "run" / ".hub-upload").exists()


def test_push_to_hub_without_a_repo_id_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="--hub_model_id owner/name"):
        CLLMFSConfig(output_dir=str(tmp_path), report_to="none", push_to_hub=True)
