"""The few-shot benchmark harness end to end (benchmarks/fewshot.py) on a tiny dataset made from real sentences.

The dataset folder holds real CrossNER politics sentences restricted to two types, written as JSON lines (train)
and IOB1 columns (test), formats CrossNER does not use, so nothing can be special-cased to ../shared/data. The
sentences come from the committed excerpts in tests/fixtures/data (see SOURCE.md there): nothing here needs
../shared. The LLM is a tiny random Llama saved with the SmolLM2 tokenizer, the encoder a tiny random BERT saved
with MiniLM's tokenizer; every trained system runs 2 steps.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import fewshot  # noqa: E402
from benchmarks.encoder_baseline import default_encoder_path  # noqa: E402
from benchmarks.fewshot import (  # noqa: E402
    ADAPTER_SFT_SYSTEM,
    ADAPTER_SYSTEM,
    ADAPTER_ZERO_SHOT,
    CORE_SYSTEMS,
    SOURCE_SYSTEM,
    SYSTEMS,
    UNTRAINED_SYSTEMS,
    BenchConfig,
    SchemaError,
    config_from_args,
    load_dataset_folder,
    render_markdown,
    summarize,
    validate_result,
)
from cllmfs_hf.data.readers import read_dataset  # noqa: E402
from cllmfs_hf.data.sampling import SamplingError, restrict_labels  # noqa: E402
from cllmfs_hf.data.types import AnnotatedSentence  # noqa: E402

TYPES = ("country", "politician")


def _iob1_lines(sentence: AnnotatedSentence) -> list[str]:
    """IOB1 tags: I- starts an entity; B- only when it directly follows a mention of the same type."""
    tags = sentence.to_bio()
    out = []
    for i, (tok, tag) in enumerate(zip(sentence.tokens, tags)):
        if tag.startswith("B-"):
            prev = tags[i - 1] if i else "O"
            tag = tag if prev[2:] == tag[2:] else "I-" + tag[2:]
        out.append(f"{tok} {tag}")
    return out + [""]


def _pick(sentences: list[AnnotatedSentence], n: int, max_tokens: int) -> list[AnnotatedSentence]:
    """The first short sentences holding each type in turn (so both types are covered), in file order."""
    short = [restrict_labels(s, TYPES) for s in sentences if len(s.tokens) <= max_tokens]
    per_type = {t: [i for i, s in enumerate(short) if s.mentions_of(t)] for t in TYPES}
    chosen: list[int] = []
    while len(chosen) < n:
        before = len(chosen)
        for t in TYPES:
            nxt = next((i for i in per_type[t] if i not in chosen), None)
            if nxt is not None and len(chosen) < n:
                chosen.append(nxt)
        assert len(chosen) > before, "not enough short real sentences with the two types"
    return [short[i] for i in sorted(chosen)]


@pytest.fixture
def tiny_dataset(
    tmp_path: Path, politics_train_head: Path, politics_train_country: Path, politics_test_head: Path
) -> Path:
    folder = tmp_path / "tiny_politics"
    folder.mkdir()
    # train sentences 1-40, then 67, 86 and 109 (short ones with a country): the picks of the whole train file
    pool = read_dataset(politics_train_head) + read_dataset(politics_train_country)
    train = _pick(pool, 6, 30)
    test = _pick(read_dataset(politics_test_head), 4, 22)
    with (folder / "train.jsonl").open("w", encoding="utf-8") as fh:
        for s in train:
            ents = [[m.start, m.end, m.label] for m in s.mentions]
            fh.write(json.dumps({"text": s.text, "entities": ents}) + "\n")
    (folder / "test.iob").write_text(
        "\n".join(line for s in test for line in _iob1_lines(s)), encoding="utf-8"
    )
    (folder / "descriptions.json").write_text(
        json.dumps({"politician": "names of elected officials"}), "utf-8"
    )
    (folder / "SOURCE.md").write_text("Sentences from CrossNER politics (MIT), restricted to two types.\n")
    return folder


@pytest.fixture
def tiny_source(tmp_path: Path, wikigold_head: Path) -> Path:
    """The first real WikiGold sentences (IOB1, CoNLL types), one file that names no split."""
    folder = tmp_path / "tiny_wikigold"
    folder.mkdir()
    (folder / "wikigold_sample.conll").write_bytes(wikigold_head.read_bytes())
    return folder


@pytest.fixture
def tiny_llm_dir(tmp_path: Path, tiny_model_factory, smollm2_tokenizer) -> Path:
    out = tmp_path / "tiny_llm"
    model = tiny_model_factory("llama", smollm2_tokenizer, num_layers=4)
    model.save_pretrained(out)
    smollm2_tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def tiny_init_adapter(tmp_path: Path, tiny_llm_dir: Path, smollm2_tokenizer) -> Path:
    """A finished CLLMFS adapter of tiny_llm_dir (the benchmark's LoRA shape, other types) for the adapter_*
    systems: what the shipped general-ner is for the default model."""
    from peft import LoraConfig, get_peft_model

    from cllmfs_hf.hub import NERAdapterConfig, save_adapter
    from cllmfs_hf.models import load_base_model
    from cllmfs_hf.training import LORA_TARGET_MODULES

    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=list(LORA_TARGET_MODULES),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(load_base_model(str(tiny_llm_dir)), lora)
    cfg = NERAdapterConfig(
        entity_types=["LOC", "PER"], base_model=str(tiny_llm_dir), training={"train_data": "g.txt"}
    )
    return save_adapter(model, smollm2_tokenizer, tmp_path / "general" / "adapter", cfg)


@pytest.fixture
def tiny_encoder_dir(tmp_path: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path / "tiny_encoder"
    tok = AutoTokenizer.from_pretrained(default_encoder_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def one_thread():
    """One torch thread: on a CPU shared with other jobs two OpenMP threads spin against each other."""
    import torch

    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


def test_encoder_baseline_memorises_real_sentences_through_chunks(
    tiny_encoder_dir, politics_train_head, one_thread
) -> None:
    """First-subword labels, chunking and span conversion line up: a tiny encoder can memorise its support set."""
    import torch

    from benchmarks.encoder_baseline import bio_label_list, train_encoder
    from cllmfs_hf.evaluation import evaluate_sentences

    torch.set_num_threads(one_thread)
    train = [restrict_labels(s, TYPES) for s in read_dataset(politics_train_head)[:6]]
    enc = train_encoder(
        train,
        TYPES,
        model_name_or_path=str(tiny_encoder_dir),
        steps=60,
        learning_rate=3e-3,
        batch_size=6,
        seed=0,
    )
    assert enc.steps_done == 60 and enc.labels == bio_label_list(TYPES) and enc.max_length == 64
    chunks = [enc.chunks(s) for s in train]
    assert any(len(c) > 1 for c in chunks), "a real sentence longer than the 64-token window must be split"
    for s, c in zip(train, chunks):
        assert c[0][0] == 0 and c[-1][1] == len(s.tokens)
        assert all(a[1] == b[0] for a, b in zip(c, c[1:]))  # consecutive, nothing dropped
    pred = enc.predict(train)
    assert evaluate_sentences(train, pred).f1 >= 0.9
    starts = {(i, a) for i, s in enumerate(train) for a, _ in s.token_offsets}
    assert all((i, m.start) in starts and m.label in TYPES for i, p in enumerate(pred) for m in p)

    nested = AnnotatedSentence.from_text(
        "Joe Biden visited Ohio", [(0, 9, "politician"), (4, 9, "politician")]
    )
    with pytest.warns(UserWarning, match="1 support mentions overlap"):
        enc2 = train_encoder([nested], TYPES, model_name_or_path=str(tiny_encoder_dir), steps=1)
    assert enc2.overlapping_mentions == 1


def test_dataset_folder_reading(tiny_dataset: Path, politics_test_head: Path) -> None:
    b = load_dataset_folder(tiny_dataset, max_test_sentences=3, sample_seed=0)
    assert sorted(b.files) == ["test", "train"]
    assert b.entity_types == sorted(TYPES)
    assert len(b.test) == 3 and b.test_total == 4 and b.test_indices == sorted(b.test_indices)
    assert b.descriptions == {"politician": "names of elected officials"}
    # The IOB1 test file reads back to the same mentions as the original BIO sentences.
    original = _pick(read_dataset(politics_test_head), 4, 22)
    assert [[(m.start, m.end, m.label) for m in original[i].mentions] for i in b.test_indices] == [
        [(m.start, m.end, m.label) for m in s.mentions] for s in b.test
    ]
    again = load_dataset_folder(tiny_dataset, max_test_sentences=3, sample_seed=0)
    assert again.test_indices == b.test_indices  # the sample is fixed for a seed

    (tiny_dataset / "descriptions.json").write_text(json.dumps({"presidnet": "typo"}), "utf-8")
    with pytest.raises(ValueError, match=r"descriptions\.json.*presidnet.*Fix"):
        load_dataset_folder(tiny_dataset)
    (tiny_dataset / "descriptions.json").write_text("{not json", "utf-8")
    with pytest.raises(ValueError, match=r"descriptions\.json:1: not valid JSON"):
        load_dataset_folder(tiny_dataset)
    (tiny_dataset / "descriptions.json").unlink()
    (tiny_dataset / "test.iob").unlink()
    with pytest.raises(ValueError, match="no test split found"):
        load_dataset_folder(tiny_dataset)


def test_cli_presets_and_validation(tiny_dataset: Path) -> None:
    cfg = config_from_args(["--preset", "quick", "--datasets", str(tiny_dataset)])
    assert (cfg.k, cfg.seeds, cfg.max_test_sentences, cfg.max_steps, cfg.epochs) == (
        [5],
        [0, 1],
        40,
        30,
        None,
    )
    assert cfg.datasets == [str(tiny_dataset)]
    assert fewshot.plan_steps(5, cfg) == fewshot.plan_steps(500, cfg) == 30
    assert cfg.systems == [
        "zero_shot",
        "sft",
        "cllmfs_infonce",
        "encoder",
        ADAPTER_ZERO_SHOT,
        ADAPTER_SFT_SYSTEM,
    ]
    assert cfg.init_adapter == "general-ner"
    cfg = config_from_args(
        ["--preset", "quick", "--datasets", str(tiny_dataset), "--max_steps", "3", "--k", "1", "5"]
    )
    assert (cfg.max_steps, cfg.k, cfg.seeds) == (3, [1, 5], [0, 1])
    cfg = config_from_args(
        ["--preset", "full", "--datasets", str(tiny_dataset), "--max_test_sentences", "all"]
    )
    assert cfg.systems == list(CORE_SYSTEMS) and cfg.k == [1, 5] and cfg.seeds == [0, 1, 2]
    with pytest.raises(ValueError, match="needs --source_dataset"):
        config_from_args(["--datasets", str(tiny_dataset), "--systems", "sft", SOURCE_SYSTEM])
    with pytest.raises(ValueError, match="need --init_adapter"):
        config_from_args(["--datasets", str(tiny_dataset), "--systems", "sft", ADAPTER_SYSTEM])
    # the adapter is checked when the config is built, before any training
    with pytest.raises(FileNotFoundError, match="--init_adapter .*no such folder"):
        config_from_args(
            ["--datasets", str(tiny_dataset), "--systems", ADAPTER_ZERO_SHOT, "--init_adapter", "missing/x/y"]
        )
    with pytest.raises(ValueError, match="base model"):
        config_from_args(
            ["--datasets", str(tiny_dataset), "--model", str(tiny_dataset), "--systems", ADAPTER_ZERO_SHOT,
             "--init_adapter", "general-ner"]
        )  # fmt: skip
    assert cfg.max_test_sentences is None and cfg.max_steps is None and cfg.epochs == 4.0
    assert fewshot.plan_steps(108, cfg) == 54
    with pytest.raises(ValueError, match="--epochs none needs --max_steps"):
        config_from_args(["--datasets", str(tiny_dataset), "--epochs", "none"])
    with pytest.raises(FileNotFoundError, match="not a folder"):
        BenchConfig(datasets=[str(tiny_dataset / "missing")])
    with pytest.raises(ValueError, match="--k needs integers >= 1"):
        BenchConfig(datasets=[str(tiny_dataset)], k=[0])
    with pytest.raises(ValueError, match=r"\.json"):
        BenchConfig(datasets=[str(tiny_dataset)], output="out.txt")
    with pytest.raises(SystemExit):
        config_from_args(["--datasets", str(tiny_dataset), "--systems", "gpt4"])
    with pytest.raises(ValueError, match="twice"):
        fewshot._dataset_names([str(tiny_dataset), str(tiny_dataset)])
    assert fewshot._dataset_names(["/a/x/politics", "/b/y/politics", "/c/wnut"]) == [
        "x/politics",
        "y/politics",
        "wnut",
    ]


def test_cllmfs_overrides_are_checked_before_any_training(tiny_dataset: Path) -> None:
    base = ["--datasets", str(tiny_dataset), "--cllmfs_overrides"]
    cfg = config_from_args(
        [*base, "contrastive_layer=0.5", "contrastive_temperature=0.05", "boundary_negatives=false"]
    )
    assert (
        fewshot.cllmfs_overrides(cfg)
        == cfg.cllmfs_kwargs
        == {
            "contrastive_layer": 0.5,
            "contrastive_temperature": 0.05,
            "boundary_negatives": False,
        }
    )
    assert config_from_args(["--datasets", str(tiny_dataset)]).cllmfs_overrides == []
    with pytest.raises(ValueError, match="not NAME=VALUE"):
        config_from_args([*base, "contrastive_layer"])
    with pytest.raises(ValueError, match=r"'learning_rate' is not a CLLMFS setting.*contrastive_temperature"):
        config_from_args([*base, "learning_rate=1e-3"])
    with pytest.raises(ValueError, match="--adversarial_epsilon"):
        config_from_args([*base, "adversarial_epsilon=0.5"])
    with pytest.raises(ValueError, match="twice"):
        config_from_args([*base, "contrastive_layer=0.5", "contrastive_layer=0.25"])
    # The value goes through CLLMFSConfig's own checks.
    with pytest.raises(ValueError, match="contrastive_temperature=-1"):
        config_from_args([*base, "contrastive_temperature=-1"])
    # A knob of the FGM forward needs an FGM system to act on; it is inert on the others.
    with pytest.raises(
        ValueError, match="acts on the systems that train with FGM.*Add one, or drop the override"
    ):
        config_from_args([*base, "adversarial_contrastive=true", "--systems", "sft", "cllmfs_infonce"])
    cfg = config_from_args([*base, "adversarial_contrastive=true", "--systems", "sft", "cllmfs_full"])
    built = {
        system: fewshot.training_config(cfg, system, steps=2, seed=0, output_dir="out")
        for system in ("sft", "cllmfs_infonce", "cllmfs_full")
    }
    assert {s: c.adversarial_contrastive for s, c in built.items()} == {
        "sft": False,
        "cllmfs_infonce": False,
        "cllmfs_full": True,
    }
    # FGM switched off by its weight flag: inert there too, not a config error in the middle of a run
    cfg = config_from_args(
        [*base, "adversarial_contrastive=true", "--systems", "cllmfs_full", "--adversarial_weight", "0"]
    )
    assert not fewshot.training_config(
        cfg, "cllmfs_full", steps=2, seed=0, output_dir="out"
    ).adversarial_contrastive


@pytest.mark.slow
def test_harness_end_to_end(
    tiny_dataset, tiny_source, tiny_llm_dir, tiny_init_adapter, tiny_encoder_dir, tmp_path, one_thread, capsys
) -> None:
    output = tmp_path / "bench" / "fewshot.json"
    argv = [
        "--datasets", str(tiny_dataset),
        "--model", str(tiny_llm_dir),
        "--encoder_model", str(tiny_encoder_dir),
        "--k", "1",
        "--seeds", "0", "1",
        "--systems", *SYSTEMS,
        "--source_dataset", str(tiny_source),
        "--source_sentences", "4",
        "--source_steps", "1",
        "--init_adapter", str(tiny_init_adapter),
        "--max_test_sentences", "3",
        "--max_steps", "2",
        "--batch_size", "2",
        "--eval_batch_size", "16",
        "--max_new_tokens", "12",
        "--bootstrap_resamples", "200",
        "--torch_threads", str(one_thread),
        "--cllmfs_overrides", "contrastive_layer=0.5",
        "--output", str(output),
    ]  # fmt: skip
    assert fewshot.main(argv) == 0

    result = json.loads(output.read_text(encoding="utf-8"))
    validate_result(result)
    assert result["complete"] is True
    runs = result["runs"]
    assert len(runs) == 1 * 1 * 2 * len(SYSTEMS)
    for run in runs:
        assert run["test_sentences"] == 3
        if run["system"] in UNTRAINED_SYSTEMS:
            assert run["steps"] == run["planned_steps"] == 0 and run["train_seconds"] == 0.0
        else:
            assert run["steps"] == run["planned_steps"] == 2, run["system"]
            assert run["train_seconds"] > 0
        assert run["source_steps"] == (1 if run["system"] == SOURCE_SYSTEM else 0)
        assert run["eval_seconds"] > 0
    for system in UNTRAINED_SYSTEMS:  # evaluated once per dataset, reused for the other seed
        zero = [r for r in runs if r["system"] == system]
        assert [r["reused"] for r in zero] == [False, True]
        assert zero[0]["per_sentence_counts"] == zero[1]["per_sentence_counts"]
    # Both seeds share the support-set sizes that their own greedy sampling gave.
    by = {(r["seed"], r["system"]): r for r in runs}
    for seed in (0, 1):
        sizes = {by[(seed, s)]["support_sentences"] for s in SYSTEMS}
        assert len(sizes) == 1

    # summary: K as a string -> system -> mean F1 over seeds (one dataset)
    assert list(result["summary"]) == ["1"]
    assert sorted(result["summary"]["1"]) == sorted(SYSTEMS)
    for system in SYSTEMS:
        f1s = [by[(s, system)]["f1"] for s in (0, 1)]
        assert result["summary"]["1"][system] == pytest.approx(sum(f1s) / 2)
    ds_name = next(iter(result["datasets"]))
    assert ds_name == "tiny_politics"
    assert result["datasets"][ds_name]["descriptions_file"].endswith("descriptions.json")
    pairs = {(c["system_a"], c["system_b"]) for c in result["comparisons"]}
    assert ("sft", "cllmfs_full") in pairs and ("sft", "cllmfs_infonce") in pairs
    assert ("cllmfs_infonce", "cllmfs_full") in pairs and ("encoder", "cllmfs_full") in pairs
    assert ("cllmfs_full", SOURCE_SYSTEM) in pairs
    assert ("zero_shot", ADAPTER_ZERO_SHOT) in pairs and ("cllmfs_infonce", ADAPTER_SYSTEM) in pairs
    assert (ADAPTER_ZERO_SHOT, ADAPTER_SYSTEM) in pairs and (ADAPTER_ZERO_SHOT, ADAPTER_SFT_SYSTEM) in pairs
    assert (ADAPTER_SFT_SYSTEM, ADAPTER_SYSTEM) in pairs
    assert result["config"]["init_adapter"] == str(tiny_init_adapter)
    assert result["source"]["entity_types"] == ["LOC", "MISC", "ORG", "PER"]
    n_source = len(read_dataset(tiny_source / "wikigold_sample.conll"))
    assert n_source >= 10 and result["source"]["sentences"] == n_source
    assert result["source"]["sentences_per_run"] == 4
    for c in result["comparisons"]:
        assert c["low"] <= c["high"] and c["n_sentences"] == 3 and c["n_seeds"] == 2

    md = Path(result["artifacts"]["markdown"])
    png = Path(result["artifacts"]["plot"])
    assert md == output.with_suffix(".md") and png == output.with_suffix(".png")
    text = md.read_text(encoding="utf-8")
    assert (
        "| dataset | K | zero_shot | sft | cllmfs_infonce | cllmfs_full | encoder | source_then_target | "
        "adapter_zero_shot | adapter_then_target | adapter_then_sft |" in text
    )
    assert "| **average** | 1 |" in text and "Paired differences" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "| tiny_politics | 1 |" in capsys.readouterr().out

    # Each CLLMFS run records whether its terms moved; the baselines have none (sft, trained by the same
    # trainer with both weights at 0, logs its LM loss only).
    for run in runs:
        names = set(run["loss_terms"])
        if run["system"] in ("cllmfs_infonce", "cllmfs_full", SOURCE_SYSTEM, ADAPTER_SYSTEM):
            assert {"lm_loss", "contrastive_loss"} <= names, run["system"]
            assert ("adversarial_loss" in names) == (run["system"] in ("cllmfs_full", SOURCE_SYSTEM))
            assert all(len(v) == 2 for v in run["loss_terms"].values())
        elif run["system"] in ("sft", ADAPTER_SFT_SYSTEM):
            assert names == {"lm_loss"}, run["loss_terms"]
            assert run["loss_terms"]["lm_loss"][1] == pytest.approx(run["train_loss"], abs=1e-3)
        else:
            assert names == set(), run["system"]

    # --resume keeps the runs an interrupted benchmark wrote and does only the missing one.
    partial = copy.deepcopy(result)
    dropped = partial["runs"].pop()
    partial["complete"] = False
    output.write_text(json.dumps(partial), encoding="utf-8")
    assert fewshot.main([*argv, "--resume"]) == 0
    resumed = json.loads(output.read_text(encoding="utf-8"))
    assert resumed["complete"] is True and len(resumed["runs"]) == len(runs)
    assert resumed["runs"][:-1] == partial["runs"]  # kept as they were (timings included): not re-run
    assert resumed["runs"][-1]["system"] == dropped["system"] and resumed["runs"][-1]["steps"] == 2
    with pytest.raises(ValueError, match=r"--resume: .* other settings \(max_steps: 2 then, 3 now\)"):
        fewshot.main([*argv, "--resume", "--max_steps", "3"])
    assert all(r["commit"] == resumed["environment"]["commit"] for r in resumed["runs"])
    assert [o["runs_kept"] for o in resumed["resumed_from"]] == [len(runs) - 1]

    # --resume with a system added runs only that system's runs; one left out has its runs dropped.
    def key(r):
        return (r["dataset"], r["k"], r["seed"], r["system"])

    without_sft = copy.deepcopy(resumed)
    without_sft["runs"] = [r for r in without_sft["runs"] if r["system"] != "sft"]
    without_sft["config"]["systems"] = [s for s in SYSTEMS if s != "sft"]
    output.write_text(json.dumps(without_sft), encoding="utf-8")
    assert fewshot.main([*argv, "--resume"]) == 0
    added = json.loads(output.read_text(encoding="utf-8"))
    validate_result(added)
    assert added["complete"] is True and sorted(map(key, added["runs"])) == sorted(map(key, runs))
    kept = {key(r): r for r in without_sft["runs"]}
    for r in added["runs"]:
        if r["system"] == "sft":
            assert r["steps"] == 2 and r["commit"] == added["environment"]["commit"]
        else:
            assert r == kept[key(r)]  # not re-run
    assert added["resumed_from"][-1]["systems"] == without_sft["config"]["systems"]
    assert len(added["resumed_from"]) == 2
    fewer = [s for s in SYSTEMS if s != "encoder"]
    assert fewshot.main([*argv, "--systems", *fewer, "--resume"]) == 0  # the later --systems wins
    dropped_encoder = json.loads(output.read_text(encoding="utf-8"))
    assert {r["system"] for r in dropped_encoder["runs"]} == set(fewer)
    assert dropped_encoder["runs"] == [r for r in added["runs"] if r["system"] != "encoder"]
    assert dropped_encoder["resumed_from"][-1]["runs_dropped"] == 2
    assert "sittings (`--resume`)" in output.with_suffix(".md").read_text(encoding="utf-8")

    # Two datasets: the average row and the stratified bootstrap over datasets, from the same real runs.
    two = copy.deepcopy(result)
    two["datasets"]["copy"] = two["datasets"][ds_name]
    two["runs"] += [{**r, "dataset": "copy"} for r in copy.deepcopy(result["runs"])]
    two.update(summarize(two))
    validate_result(two)
    avg = [c for c in two["comparisons"] if c["dataset"] == "average"]
    assert avg and all(c["n_sentences"] == 6 for c in avg)
    for c in avg:
        same = next(
            x for x in two["comparisons"]
            if x["dataset"] == ds_name and (x["system_a"], x["system_b"]) == (c["system_a"], c["system_b"])
        )  # fmt: skip
        assert c["delta"] == pytest.approx(same["delta"])
    assert "| **average** | 1 |" in render_markdown(two)

    # The validator catches what it documents.
    broken = copy.deepcopy(result)
    broken["runs"][0]["f1"] = 1.5
    with pytest.raises(SchemaError, match=r"runs\[0\]\.f1"):
        validate_result(broken)
    broken = copy.deepcopy(result)
    broken["runs"].pop()
    with pytest.raises(SchemaError, match="missing"):
        validate_result(broken)
    broken = copy.deepcopy(result)
    broken["runs"][1]["tp"] += 1
    with pytest.raises(SchemaError, match="per_sentence_counts"):
        validate_result(broken)
    broken = copy.deepcopy(result)
    del broken["summary"]["1"]
    with pytest.raises(SchemaError, match="summary"):
        validate_result(broken)


@pytest.mark.parametrize("name", ["quick-cpu", "quick-cpu-2026-12-06"])
def test_committed_quick_result_is_valid_and_its_table_is_rendered_from_it(name: str) -> None:
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    result = json.loads((results / f"{name}.json").read_text(encoding="utf-8"))
    validate_result(result)
    assert result["complete"] is True and result["config"]["preset"] == "quick"
    assert (results / f"{name}.md").read_text(encoding="utf-8") == render_markdown(result)


def test_recipes_hold_the_old_preset_values(tmp_path: Path, monkeypatch) -> None:
    """benchmarks/recipes/{quick,full}.yaml are the presets that used to be a dict in fewshot.py, value for value."""
    import yaml

    shared = tmp_path / "shared_data"
    for name in ("crossner/politics", "crossner/science", "wnut17", "bio/NCBI-disease-IOB"):
        (shared / name).mkdir(parents=True)
    monkeypatch.setenv("CLLMFS_SHARED_DATA", str(shared))
    # The old PRESETS, written out.
    old_quick = {
        "datasets": [str(shared / "crossner/politics"), str(shared / "bio/NCBI-disease-IOB")],
        "k": [5],
        "seeds": [0, 1],
        # the shipped general NER adapter (2026-12-04), adapted with SFT (the dev study of 2026-12-06)
        "systems": ["zero_shot", "sft", "cllmfs_infonce", "encoder", ADAPTER_ZERO_SHOT, ADAPTER_SFT_SYSTEM],
        "init_adapter": "general-ner",
        "max_test_sentences": 40,
        "max_steps": 30,
        "epochs": None,
        "negative_ratio": 0.3,  # from the dev study (2026-12-04); the old preset kept every negative record
        "preset": "quick",
    }
    old_full = {
        "k": [1, 5],
        "seeds": [0, 1, 2],
        "systems": ["zero_shot", "sft", "cllmfs_infonce", "cllmfs_full", "encoder"],
        "max_test_sentences": None,
        "max_steps": None,
        "epochs": 4.0,
        "preset": "full",
    }
    defaults = BenchConfig().to_dict()  # every other field keeps its default, as the old presets did
    for name, old in (("quick", old_quick), ("full", old_full)):
        path = fewshot.RECIPES_DIR / f"{name}.yaml"
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert set(raw) <= set(defaults), path
        expected = {**defaults, **old}
        assert config_from_args(["--config", str(path)]).to_dict() == expected
        assert config_from_args(["--preset", name]).to_dict() == expected
        assert BenchConfig.from_preset(name).to_dict() == expected
    assert sorted(fewshot.available_recipes()) == ["full", "quick"]
    # The committed quick result was made with the same values, except the two the dev study changed after it
    # (2026-12-04; its complete re-run is pending, benchmarks/results/README.md says so): it kept every negative
    # record and ran cllmfs_full. Nothing else may differ.
    committed = json.loads(
        (Path(fewshot.__file__).parent / "results" / "quick-cpu.json").read_text(encoding="utf-8")
    )["config"]
    expected = {**defaults, **old_quick, "datasets": committed["datasets"]}
    changed_since = {"negative_ratio": 1.0, "systems": ["zero_shot", "sft", "cllmfs_full", "encoder"]}
    if committed["negative_ratio"] == expected["negative_ratio"]:
        changed_since = {}  # re-run with the current recipe
    expected.update(changed_since)
    # A field added after that run is absent from it; every field it has holds the recipe's value.
    assert set(committed) <= set(expected)
    assert committed == {name: expected[name] for name in committed}

    # Explicit flags override the recipe; a recipe with an unknown key, or an unknown recipe, fails.
    cfg = config_from_args(["--config", str(fewshot.RECIPES_DIR / "quick.yaml"), "--seeds", "3"])
    assert (cfg.seeds, cfg.k, cfg.preset) == ([3], [5], "quick")
    bad = tmp_path / "bad.yaml"
    bad.write_text("k: [5]\nmax_step: 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"\['max_step'\] are not BenchConfig fields"):
        config_from_args(["--config", str(bad)])
    with pytest.raises(ValueError, match="no recipe .*nope.yaml.*full.*quick"):
        config_from_args(["--preset", "nope"])
    with pytest.raises(ValueError, match="give one of --preset and --config"):
        config_from_args(["--preset", "quick", "--config", str(bad)])


@pytest.mark.slow
def test_every_llm_system_trains_through_the_shared_driver(
    tiny_dataset, tiny_source, tiny_llm_dir, tiny_init_adapter, tmp_path, one_thread, monkeypatch
) -> None:
    """zero_shot, sft, cllmfs_* and source_then_target all go through cllmfs_hf.training (build_trainer, train,
    evaluate_adapter), with one LoRA config, and their training configs differ only in SYSTEM_CONFIGS values."""
    from cllmfs_hf import training
    from cllmfs_hf.trainer import CLLMFSTrainer

    calls: dict[str, list] = {"build": [], "train": [], "evaluate": []}
    real_build, real_train, real_evaluate = training.build_trainer, training.train, training.evaluate_adapter

    def build_trainer(model_args, training_args, records, **kwargs):
        trainer = real_build(model_args, training_args, records, **kwargs)
        calls["build"].append(
            {
                "trainer": trainer,
                "model_args": model_args,
                "args": training_args.to_dict(),
                "entity_types": list(kwargs["entity_types"]),
                "continues": getattr(model_args, "init_adapter", None) is not None,
            }
        )
        return trainer

    def train(trainer, *args, **kwargs):
        summary = real_train(trainer, *args, **kwargs)
        calls["train"].append((trainer, summary))
        return summary

    def evaluate_adapter(model, tokenizer, sentences, **kwargs):
        evaluation = real_evaluate(model, tokenizer, sentences, **kwargs)
        calls["evaluate"].append({"peft": hasattr(model, "peft_config"), "evaluation": evaluation, **kwargs})
        return evaluation

    monkeypatch.setattr(training, "build_trainer", build_trainer)
    monkeypatch.setattr(training, "train", train)
    monkeypatch.setattr(training, "evaluate_adapter", evaluate_adapter)

    llm_systems = [*UNTRAINED_SYSTEMS, *fewshot.SYSTEM_CONFIGS]
    assert sorted(llm_systems) == sorted(s for s in SYSTEMS if s != "encoder")
    output = tmp_path / "driver.json"
    argv = [
        "--datasets", str(tiny_dataset),
        "--model", str(tiny_llm_dir),
        "--k", "1",
        "--seeds", "0",
        "--systems", *llm_systems,
        "--source_dataset", str(tiny_source),
        "--source_sentences", "3",
        "--init_adapter", str(tiny_init_adapter),
        "--max_test_sentences", "2",
        "--max_steps", "1",
        "--epochs", "none",
        "--batch_size", "2",
        "--max_new_tokens", "6",
        "--bootstrap_resamples", "20",
        "--torch_threads", str(one_thread),
        "--cllmfs_overrides", "contrastive_layer=0.5",
        "--output", str(output),
    ]  # fmt: skip
    assert fewshot.main(argv) == 0
    result = json.loads(output.read_text(encoding="utf-8"))
    runs = {r["system"]: r for r in result["runs"]}
    assert sorted(runs) == sorted(llm_systems)

    # One build + one train per trained system (two for source_then_target: source stage, then target stage),
    # in the order the systems ran; every trainer is the CLLMFS trainer.
    trained = [s for s in result["config"]["systems"] if s not in UNTRAINED_SYSTEMS]
    order = [s for s in trained for _ in range(2 if s == SOURCE_SYSTEM else 1)]
    assert len(calls["build"]) == len(calls["train"]) == len(order)
    for system, built, (trainer, summary) in zip(order, calls["build"], calls["train"]):
        built["system"] = system
        assert trainer is built["trainer"] and isinstance(trainer, CLLMFSTrainer)
        assert summary.steps == 1
    source_stage, target_stage = [b for b in calls["build"] if b["system"] == SOURCE_SYSTEM]
    # the target stage continues the saved source adapter, as --init_adapter does
    assert not source_stage["continues"] and target_stage["continues"]
    assert target_stage["trainer"].adapter_config.lineage[-1]["entity_types"] == ["LOC", "MISC", "ORG", "PER"]
    assert source_stage["entity_types"] == ["LOC", "MISC", "ORG", "PER"]
    assert target_stage["entity_types"] == sorted(TYPES)
    assert runs[SOURCE_SYSTEM]["source_steps"] == 1
    # adapter_then_target and adapter_then_sft continue --init_adapter (its types merged with the target's), as
    # train.py does
    from_adapter = [b for b in calls["build"] if b["system"] in (ADAPTER_SYSTEM, ADAPTER_SFT_SYSTEM)]
    assert [b["system"] for b in from_adapter] == [ADAPTER_SYSTEM, ADAPTER_SFT_SYSTEM]
    for built in from_adapter:
        assert built["continues"] and built["model_args"].init_adapter == str(tiny_init_adapter)
        assert built["trainer"].adapter_config.lineage[-1]["entity_types"] == ["LOC", "PER"]
    # the CLLMFS target stage keeps the InfoNCE term, the SFT one trains the LM loss only
    assert (
        from_adapter[0]["args"]["contrastive_weight"] > 0
        and from_adapter[1]["args"]["contrastive_weight"] == 0
    )

    # One LoRA config for every system, from the benchmark's flags.
    lora = [dataclasses.replace(c["model_args"], init_adapter=None) for c in calls["build"]]
    assert all(m == lora[0] for m in lora)
    assert (lora[0].model_name_or_path, lora[0].lora_r, lora[0].lora_alpha) == (str(tiny_llm_dir), 16, 32)
    assert lora[0].lora_target_modules == result["config"]["lora_target_modules"]

    # The configs differ from sft's only in the SYSTEM_CONFIGS keys (and their output folders).
    sft = next(c["args"] for c in calls["build"] if c["system"] == "sft")
    assert (sft["contrastive_weight"], sft["adversarial"]) == (0.0, "none")
    for built in calls["build"]:
        system, args = built["system"], built["args"]
        differ = {k for k in args if k != "output_dir" and args[k] != sft[k]}
        allowed = set(fewshot.SYSTEM_CONFIGS[system]) | set(fewshot.SYSTEM_CONFIGS["sft"])
        assert differ <= allowed, (system, {k: (sft[k], args[k]) for k in differ})
        assert all(args[k] == v for k, v in fewshot.SYSTEM_CONFIGS[system].items()), system
        assert args["contrastive_layer"] == 0.5 and args["max_steps"] == 1 and args["seed"] == 0
        assert args["activation_checkpointing"] is False and args["save_strategy"] == "no"
    assert {c["system"] for c in calls["build"]} == set(fewshot.SYSTEM_CONFIGS)

    # Every LLM system, zero_shot included, is scored by evaluate_adapter; the run records its scores.
    assert len(calls["evaluate"]) == len(llm_systems)
    for system, ev in zip(result["config"]["systems"], calls["evaluate"]):
        assert ev["peft"] == (system != "zero_shot"), system  # adapter_zero_shot: the adapter, untrained
        assert ev["max_new_tokens"] == 6 and ev["entity_types"] == sorted(TYPES)
        evaluation, run = ev["evaluation"], runs[system]
        assert (run["tp"], run["fp"], run["fn"]) == (
            evaluation.scores.tp,
            evaluation.scores.fp,
            evaluation.scores.fn,
        )
        assert run["eval_seconds"] == evaluation.seconds and run["prediction_stats"] == evaluation.stats
        assert len(run["per_sentence_counts"]) == len(evaluation.predictions) == 2


def test_a_type_rarer_than_k_never_aborts_the_benchmark(
    tiny_dataset, tiny_llm_dir, tiny_encoder_dir, tmp_path, one_thread
) -> None:
    """The few-shot literature's rule: a type with fewer than K train mentions gets all it has (recorded in the
    run and warned), or is skipped on request; it never aborts the run."""
    from collections import Counter

    counts = Counter(m.label for s in read_dataset(next(tiny_dataset.glob("train.*"))) for m in s.mentions)
    rare, common = sorted(counts, key=lambda t: (counts[t], t))
    k = counts[rare] + 1
    assert counts[common] >= k, counts  # the fixture: one type short of K, the other not
    base = [
        "--datasets", str(tiny_dataset), "--model", str(tiny_llm_dir), "--encoder_model", str(tiny_encoder_dir),
        "--k", str(k), "--seeds", "0", "--systems", "zero_shot", "encoder", "--max_test_sentences", "3",
        "--max_steps", "1", "--max_new_tokens", "8", "--bootstrap_resamples", "50",
        "--torch_threads", str(one_thread),
    ]  # fmt: skip
    taken = tmp_path / "take_all.json"
    assert fewshot.main([*base, "--output", str(taken)]) == 0
    result = json.loads(taken.read_text(encoding="utf-8"))
    assert result["complete"] and {r["system"] for r in result["runs"]} == {"zero_shot", "encoder"}
    assert all(r["rare_types"] == {rare: counts[rare]} and r["skipped_types"] == [] for r in result["runs"])

    skipped = tmp_path / "skip.json"
    assert fewshot.main([*base, "--rare_types", "skip", "--output", str(skipped)]) == 0
    result = json.loads(skipped.read_text(encoding="utf-8"))
    assert all(r["skipped_types"] == [rare] for r in result["runs"])
    assert all(rare not in r["per_type"] for r in result["runs"])  # neither trained nor scored

    with pytest.raises(SamplingError, match=rf"fewer than k={k} .*'{rare}': {counts[rare]}"):
        fewshot.main([*base, "--rare_types", "error", "--output", str(tmp_path / "error.json")])
