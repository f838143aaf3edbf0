"""The few-shot benchmark harness end to end (benchmarks/fewshot.py) on a tiny dataset made from real sentences.

The dataset folder holds real CrossNER politics sentences restricted to two types, written as JSON lines (train)
and IOB1 columns (test), formats CrossNER does not use, so nothing can be special-cased to ../shared/data. The
LLM is a tiny random Llama saved with the SmolLM2 tokenizer, the encoder a tiny random BERT saved with
MiniLM's tokenizer; every trained system runs 2 steps.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import fewshot  # noqa: E402
from benchmarks.encoder_baseline import default_encoder_path  # noqa: E402
from benchmarks.fewshot import (  # noqa: E402
    CORE_SYSTEMS,
    SOURCE_SYSTEM,
    SYSTEMS,
    BenchConfig,
    SchemaError,
    config_from_args,
    load_dataset_folder,
    render_markdown,
    summarize,
    validate_result,
)
from cllmfs_hf.data.readers import read_dataset  # noqa: E402
from cllmfs_hf.data.sampling import restrict_labels  # noqa: E402
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
def tiny_dataset(tmp_path: Path, shared_data: Path) -> Path:
    folder = tmp_path / "tiny_politics"
    folder.mkdir()
    train = _pick(read_dataset(shared_data / "crossner" / "politics" / "train.txt"), 6, 30)
    test = _pick(read_dataset(shared_data / "crossner" / "politics" / "test.txt"), 4, 22)
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
def tiny_source(tmp_path: Path, shared_data: Path) -> Path:
    """The first real WikiGold sentences (IOB1, CoNLL types), one file that names no split."""
    folder = tmp_path / "tiny_wikigold"
    folder.mkdir()
    lines = (shared_data / "wikigold" / "wikigold.conll.txt").read_text(encoding="utf-8").splitlines()
    kept, sentences = [], 0
    for line in lines:
        kept.append(line)
        if not line.strip():
            sentences += 1
            if sentences == 12:
                break
    (folder / "wikigold_sample.conll").write_text("\n".join(kept) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def tiny_llm_dir(tmp_path: Path, tiny_model_factory, smollm2_tokenizer) -> Path:
    out = tmp_path / "tiny_llm"
    model = tiny_model_factory("llama", smollm2_tokenizer, num_layers=4)
    model.save_pretrained(out)
    smollm2_tokenizer.save_pretrained(out)
    return out


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
    tiny_encoder_dir, shared_data, one_thread
) -> None:
    """First-subword labels, chunking and span conversion line up: a tiny encoder can memorise its support set."""
    import torch

    from benchmarks.encoder_baseline import bio_label_list, train_encoder
    from cllmfs_hf.evaluation import evaluate_sentences

    torch.set_num_threads(one_thread)
    train = [
        restrict_labels(s, TYPES)
        for s in read_dataset(shared_data / "crossner" / "politics" / "train.txt")[:6]
    ]
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


def test_dataset_folder_reading(tiny_dataset: Path, shared_data: Path) -> None:
    b = load_dataset_folder(tiny_dataset, max_test_sentences=3, sample_seed=0)
    assert sorted(b.files) == ["test", "train"]
    assert b.entity_types == sorted(TYPES)
    assert len(b.test) == 3 and b.test_total == 4 and b.test_indices == sorted(b.test_indices)
    assert b.descriptions == {"politician": "names of elected officials"}
    # The IOB1 test file reads back to the same mentions as the original BIO sentences.
    original = _pick(read_dataset(shared_data / "crossner" / "politics" / "test.txt"), 4, 22)
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
    assert cfg.systems == ["zero_shot", "sft", "cllmfs_full", "encoder"]
    cfg = config_from_args(
        ["--preset", "quick", "--datasets", str(tiny_dataset), "--max-steps", "3", "--k", "1", "5"]
    )
    assert (cfg.max_steps, cfg.k, cfg.seeds) == (3, [1, 5], [0, 1])
    cfg = config_from_args(
        ["--preset", "full", "--datasets", str(tiny_dataset), "--max-test-sentences", "all"]
    )
    assert cfg.systems == list(CORE_SYSTEMS) and cfg.k == [1, 5] and cfg.seeds == [0, 1, 2]
    with pytest.raises(ValueError, match="needs --source-dataset"):
        config_from_args(["--datasets", str(tiny_dataset), "--systems", "sft", SOURCE_SYSTEM])
    assert cfg.max_test_sentences is None and cfg.max_steps is None and cfg.epochs == 4.0
    assert fewshot.plan_steps(108, cfg) == 54
    with pytest.raises(ValueError, match="--epochs none needs --max-steps"):
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
    base = ["--datasets", str(tiny_dataset), "--cllmfs-overrides"]
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
    with pytest.raises(ValueError, match="--adversarial-epsilon"):
        config_from_args([*base, "adversarial_epsilon=0.5"])
    with pytest.raises(ValueError, match="twice"):
        config_from_args([*base, "contrastive_layer=0.5", "contrastive_layer=0.25"])
    # The value goes through CLLMFSConfig's own checks.
    with pytest.raises(ValueError, match="contrastive_temperature=-1"):
        config_from_args([*base, "contrastive_temperature=-1"])


@pytest.mark.slow
def test_harness_end_to_end(
    tiny_dataset, tiny_source, tiny_llm_dir, tiny_encoder_dir, tmp_path, one_thread, capsys
) -> None:
    output = tmp_path / "bench" / "fewshot.json"
    argv = [
        "--datasets", str(tiny_dataset),
        "--model", str(tiny_llm_dir),
        "--encoder-model", str(tiny_encoder_dir),
        "--k", "1",
        "--seeds", "0", "1",
        "--systems", *SYSTEMS,
        "--source-dataset", str(tiny_source),
        "--source-sentences", "4",
        "--source-steps", "1",
        "--max-test-sentences", "3",
        "--max-steps", "2",
        "--batch-size", "2",
        "--eval-batch-size", "16",
        "--max-new-tokens", "12",
        "--bootstrap-resamples", "200",
        "--torch-threads", str(one_thread),
        "--cllmfs-overrides", "contrastive_layer=0.5",
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
        if run["system"] == "zero_shot":
            assert run["steps"] == 0 and run["train_seconds"] == 0.0
        else:
            assert run["steps"] == run["planned_steps"] == 2, run["system"]
            assert run["train_seconds"] > 0
        assert run["source_steps"] == (1 if run["system"] == SOURCE_SYSTEM else 0)
        assert run["eval_seconds"] > 0
    zero = [r for r in runs if r["system"] == "zero_shot"]
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
        "| dataset | K | zero_shot | sft | cllmfs_infonce | cllmfs_full | encoder | source_then_target |"
        in text
    )
    assert "| **average** | 1 |" in text and "Paired differences" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "| tiny_politics | 1 |" in capsys.readouterr().out

    # Each CLLMFS run records whether its terms moved; the baselines have none.
    for run in runs:
        names = set(run["loss_terms"])
        if run["system"] in ("cllmfs_infonce", "cllmfs_full", SOURCE_SYSTEM):
            assert {"lm_loss", "contrastive_loss"} <= names, run["system"]
            assert ("adversarial_loss" in names) == (run["system"] != "cllmfs_infonce")
            assert all(len(v) == 2 for v in run["loss_terms"].values())
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
        fewshot.main([*argv, "--resume", "--max-steps", "3"])

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


def test_committed_quick_result_is_valid_and_its_table_is_rendered_from_it() -> None:
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    result = json.loads((results / "quick-cpu.json").read_text(encoding="utf-8"))
    validate_result(result)
    assert result["complete"] is True and result["config"]["preset"] == "quick"
    assert (results / "quick-cpu.md").read_text(encoding="utf-8") == render_markdown(result)
