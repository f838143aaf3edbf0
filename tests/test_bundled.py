"""The adapters shipped inside the package (cllmfs_hf.bundled): the compact copy, name resolution, and the
shipped general-ner adapter itself (its files, its card and licence, and what it answers on real sentences)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cllmfs_hf import bundled
from cllmfs_hf.bundled import (
    BUNDLED_ADAPTERS,
    BUNDLED_DIR,
    bundled_adapter_path,
    is_bundled_name,
)
from cllmfs_hf.compact import compact_adapter_copy
from cllmfs_hf.hub import NERAdapterConfig, is_adapter_folder, load_adapter, save_adapter
from cllmfs_hf.init_adapter import inspect_init_adapter

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny_adapter(tmp_path: Path, tiny_model_factory, smollm2_tokenizer) -> tuple[Path, Path]:
    """(a tiny random base folder, a float32 CLLMFS adapter of it with a model card)."""
    from peft import LoraConfig, get_peft_model

    base = tmp_path / "base"
    model = tiny_model_factory("llama", smollm2_tokenizer, num_layers=2)
    model.save_pretrained(base)
    smollm2_tokenizer.save_pretrained(base)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    cfg = NERAdapterConfig(
        entity_types=["LOC", "PER"], base_model=str(base), training={"train_data": "g.txt"}
    )
    return base, save_adapter(peft_model, smollm2_tokenizer, tmp_path / "run" / "adapter", cfg)


def test_compact_copy_is_bf16_with_licence_and_card_and_loads(tiny_adapter, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    base, source = tiny_adapter
    target = compact_adapter_copy(
        source,
        tmp_path / "ship" / "general-ner",
        license_text="Apache-2.0 and MIT notices",
        license_id="apache-2.0",
        card_note="## What it saw\nSome sentences.",
    )
    original = load_file(str(source / "adapter_model.safetensors"))
    copied = load_file(str(target / "adapter_model.safetensors"))
    assert set(copied) == set(original)
    for name, tensor in copied.items():
        assert tensor.dtype == torch.bfloat16
        torch.testing.assert_close(tensor.float(), original[name].to(torch.bfloat16).float())
    assert (target / "LICENSE").read_text(encoding="utf-8") == "Apache-2.0 and MIT notices\n"
    card = (target / "README.md").read_text(encoding="utf-8")
    assert "license: apache-2.0" in card and card.rstrip().endswith("## What it saw\nSome sentences.")
    for name in ("adapter_config.json", "cllmfs_config.json", "tokenizer_config.json"):
        assert (target / name).read_bytes() == (source / name).read_bytes()
    # the copy is an adapter like any other: checked as --init_adapter, loaded as by from_pretrained
    assert inspect_init_adapter(target).ner_config.entity_types == ["LOC", "PER"]
    model, _, cfg = load_adapter(target)
    assert cfg.entity_types == ["LOC", "PER"] and hasattr(model, "peft_config")
    assert not list((tmp_path / "ship").glob(".general-ner.*"))  # no staging folder left behind
    assert target.stat().st_mode & 0o777 == 0o755  # package data: readable by everyone
    assert {p.stat().st_mode & 0o777 for p in target.iterdir()} == {0o644}


def test_compact_copy_refuses_bad_input_and_keeps_the_old_target(tiny_adapter, tmp_path, monkeypatch) -> None:
    _, source = tiny_adapter
    target = tmp_path / "ship" / "general-ner"
    compact_adapter_copy(source, target)
    before = sorted(p.name for p in target.iterdir())
    with pytest.raises(ValueError, match="not a torch floating-point dtype.*bfloat16"):
        compact_adapter_copy(source, target, dtype="int8")
    with pytest.raises(FileNotFoundError, match="--init_adapter .*no such folder"):
        compact_adapter_copy(tmp_path / "nowhere", target)
    monkeypatch.setattr(bundled, "MAX_BUNDLED_BYTES", 1000)
    with pytest.raises(ValueError, match=r"MiB, over the 0 MiB.*smaller LoRA rank"):
        compact_adapter_copy(source, target)
    assert sorted(p.name for p in target.iterdir()) == before
    assert not list(target.parent.glob(".general-ner.*"))


def test_bundled_names_resolve_and_a_local_folder_wins(tmp_path: Path, monkeypatch) -> None:
    assert sorted(BUNDLED_ADAPTERS) == ["general-ner"]
    with pytest.raises(KeyError, match=r"'nope' is not a bundled adapter.*general-ner"):
        bundled_adapter_path("nope")
    monkeypatch.chdir(tmp_path)
    assert is_bundled_name("general-ner")
    (tmp_path / "general-ner").mkdir()  # a user's own folder of that name is what they mean
    assert not is_bundled_name("general-ner") and not is_adapter_folder("general-ner")
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(bundled, "BUNDLED_DIR", tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing from this installation.*reinstall"):
        bundled_adapter_path("general-ner")


# --------------------------------------------------------------------------------------------------------
# The shipped general-ner adapter
# --------------------------------------------------------------------------------------------------------
SHIPPED = BUNDLED_DIR / "general-ner"
SCIENCE_TYPES = [
    "academicjournal",
    "astronomicalobject",
    "award",
    "chemicalcompound",
    "chemicalelement",
    "country",
    "discipline",
    "enzyme",
    "event",
    "location",
    "misc",
    "organisation",
    "person",
    "protein",
    "scientist",
    "theory",
    "university",
]


def test_the_shipped_adapter_is_small_complete_and_says_what_it_saw() -> None:
    import torch
    from safetensors.torch import load_file

    from cllmfs_hf.models import DEFAULT_MODEL_HUB_ID

    assert bundled_adapter_path("general-ner") == SHIPPED
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size <= 25 * 2**20, f"{size / 2**20:.1f} MiB"
    assert {t.dtype for t in load_file(str(SHIPPED / "adapter_model.safetensors")).values()} == {
        torch.bfloat16
    }
    source = inspect_init_adapter("general-ner")
    assert source.folder == SHIPPED and source.base_model == DEFAULT_MODEL_HUB_ID
    assert source.ner_config.entity_types == SCIENCE_TYPES
    training = json.loads((SHIPPED / "cllmfs_config.json").read_text(encoding="utf-8"))["training"]
    # trained on CrossNER science dev only: never the politics domain nor the reported test sets
    assert Path(training["train_data"]).as_posix().endswith("crossner/science/dev.txt")
    assert "politics" not in json.dumps(training)
    licence = (SHIPPED / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence and "MIT License" in licence and "Zihan Liu" in licence
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert "license: apache-2.0" in card and "**What it did not see.** CrossNER politics" in card
    assert is_adapter_folder("general-ner")
    # shipped as package data
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert '"resources/**/*"' in pyproject
    assert not [p for p in SHIPPED.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_the_shipped_adapter_finds_entities_on_real_sentences_offline(monkeypatch) -> None:
    """What from_pretrained("general-ner") answers on CrossNER politics test sentences (a domain it never saw),
    greedy and offline: the first thing a user sees."""
    from cllmfs_hf.data.readers import read_dataset
    from cllmfs_hf.extractor import NERExtractor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    extractor = NERExtractor.from_pretrained(
        "general-ner", entity_types=["person", "country", "organisation"]
    )
    assert extractor.entity_types == ["person", "country", "organisation"]
    head = REPO / "tests" / "fixtures" / "data"
    sentences = [s for s in read_dataset(head / "crossner_politics_test_head.txt") if len(s.tokens) <= 40][:8]
    predicted = extractor.predict([s.text for s in sentences])
    for sentence, mentions in zip(sentences, predicted):
        for m in mentions:
            assert sentence.text[m["start"] : m["end"]] == m["text"]
    found = {(m["text"], m["label"]) for ms in predicted for m in ms}
    gold = {(s.text[m.start : m.end], m.label) for s in sentences for m in s.mentions}
    # it finds real entities (not "none" to everything)
    assert found, "the general adapter answered none to every query"
    assert len(found & gold) >= 2, (sorted(found), sorted(gold))


def test_train_example_accepts_the_bundled_name() -> None:
    from cllmfs_hf.model_arguments import ModelArguments

    args = ModelArguments(init_adapter="general-ner")
    assert args.model_name_or_path.lower() in ("huggingfacetb/smollm2-135m-instruct", "smollm2-135m-instruct")
    assert (args.lora_r, args.lora_alpha) == (16, 32)
    assert os.fspath(inspect_init_adapter(args.init_adapter).folder) == os.fspath(SHIPPED)
