"""predict_file: a corpus streamed into JSON lines, resumed after a kill, sharded and merged in input order;
bad lines named by file:line; examples/predict.py over it (one process and under accelerate launch)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_same_predictions, build_tiny_causal_lm

from cllmfs_hf.extractor import NERExtractor, read_corpus

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
TEXTS = [
    "Ada met Bob in Paris .",
    "",
    "The Labour Party won in New York .",
    "Rain",
    "José Müller flew to Berlin , then to Paris .",
    "   ",
    "Bob and Ada .",
]
PREDICT = dict(max_new_tokens=6, batch_size=4)


def _tiny(tokenizer):
    model = build_tiny_causal_lm("llama", len(tokenizer), seed=5, num_layers=2)
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
    return model.eval()


@pytest.fixture(scope="module")
def extractor(smollm2_tokenizer):
    return NERExtractor(_tiny(smollm2_tokenizer), smollm2_tokenizer, ["LOC", "PER"])


@pytest.fixture(scope="module")
def expected(extractor):
    """What predict gives for TEXTS, text by text (empty texts: no entities)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return [extractor.predict([t], **PREDICT)[0] if t.strip() else [] for t in TEXTS]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(extractor, source, output, **kwargs):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return extractor.predict_file(source, output, chunk_size=3, **PREDICT, **kwargs)


def test_text_and_json_lines_inputs_give_one_line_per_input_line(tmp_path, extractor, expected):
    text_file = tmp_path / "texts.txt"
    text_file.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    summary = _run(extractor, text_file, tmp_path / "out-text.jsonl")
    rows = _read(tmp_path / "out-text.jsonl")
    assert [r["id"] for r in rows] == list(range(1, len(TEXTS) + 1))  # the line numbers
    assert [r["text"] for r in rows] == TEXTS
    assert_same_predictions([r["entities"] for r in rows], expected)
    assert (summary.lines, summary.predicted, summary.resumed) == (len(TEXTS), len(TEXTS), 0)
    meta = json.loads((tmp_path / "out-text.jsonl.meta.json").read_text())
    assert meta["entity_types"] == ["LOC", "PER"] and meta["input_file"] == str(text_file.resolve())

    ids = [f"doc-{i}" if i % 2 else 100 + i for i in range(len(TEXTS))]
    source = _jsonl(
        tmp_path / "texts.jsonl",
        [
            {"text": t} if n == 3 else {"id": i, "text": t, "meta": "kept out"}
            for n, (i, t) in enumerate(zip(ids, TEXTS))
        ],
    )
    _run(extractor, source, tmp_path / "out.jsonl")
    rows = _read(tmp_path / "out.jsonl")
    assert [r["id"] for r in rows] == [*ids[:3], 4, *ids[4:]]  # no id: the line number
    assert_same_predictions([r["entities"] for r in rows], expected)
    assert all(set(r) == {"id", "text", "entities"} for r in rows)


def test_a_killed_run_resumes_without_repeating_or_cutting_lines(tmp_path, extractor, expected):
    source = _jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    output = tmp_path / "out.jsonl"
    _run(extractor, source, output)
    complete = output.read_text(encoding="utf-8")
    lines = complete.splitlines(keepends=True)
    # as a kill leaves it: three complete lines and half of the fourth
    output.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2], encoding="utf-8")
    summary = _run(extractor, source, output)
    assert output.read_text(encoding="utf-8") == complete
    assert (summary.resumed, summary.predicted) == (3, len(TEXTS) - 3)
    again = _run(extractor, source, output)  # nothing left to do
    assert (again.resumed, again.predicted) == (len(TEXTS), 0)
    assert output.read_text(encoding="utf-8") == complete
    changed = _jsonl(tmp_path / "in.jsonl", [{"id": "new", "text": t} for t in TEXTS])
    with pytest.raises(
        ValueError, match="line 1 has id 1, but .*in.jsonl:1 .* has id 'new': the input changed"
    ):
        _run(extractor, changed, output)


def test_an_output_from_other_settings_is_refused(tmp_path, extractor):
    source = _jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS[:2]])
    output = tmp_path / "out.jsonl"
    _run(extractor, source, output)
    with pytest.raises(
        ValueError, match=r"other settings \(entity_types: \['LOC', 'PER'\] there, \['LOC'\] now\)"
    ):
        _run(extractor, source, output, entity_types=["LOC"])
    with pytest.raises(ValueError, match="model: .*another --output_file"):
        _run(extractor, source, output, model_name="someone/else")
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"a": 1}\n')
    with pytest.raises(ValueError, match="not written by predict_file"):
        _run(extractor, source, foreign)


def test_bad_lines_are_named_or_skipped_and_counted(tmp_path, extractor):
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"text": "Ada met Bob ."}\n{"text": "cut\n["a list"]\n{"id": 9}\n{"text": "Paris ."}\n'
    )
    with pytest.raises(ValueError, match=r"in.jsonl:2: not JSON .*--skip_bad_lines"):
        _run(extractor, source, tmp_path / "out.jsonl")
    summary = _run(extractor, source, tmp_path / "skipped.jsonl", skip_bad_lines=True)
    assert (summary.bad_lines, summary.bad_line_numbers, summary.predicted) == (3, [2, 3, 4], 2)
    assert [r["id"] for r in _read(tmp_path / "skipped.jsonl")] == [1, 5]
    for content, message in [
        ('{"id": 9}\n', r":1: no string 'text' field \(keys: \['id'\]\)"),
        ('["a list"]\n', ":1: a JSON list, not an object"),
        ('{"text": 3}\n', ":1: 'text' is int, not a string"),
        ('{"text": "a", "id": [1]}\n', ":1: the 'id' field must be a string or an integer"),
    ]:
        source.write_text(content)
        with pytest.raises(ValueError, match=message):
            list(read_corpus(source))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(read_corpus(tmp_path / "missing.jsonl"))


def test_an_empty_input_gives_an_empty_output(tmp_path, extractor):
    for name in ("empty.txt", "empty.jsonl"):
        source = tmp_path / name
        source.write_text("")
        summary = _run(extractor, source, tmp_path / f"{name}.out")
        assert (tmp_path / f"{name}.out").read_text() == "" and summary.lines == 0


def test_shards_are_merged_in_input_order(tmp_path, extractor, expected):
    source = _jsonl(tmp_path / "in.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(TEXTS)])
    output = tmp_path / "out.jsonl"
    first = _run(extractor, source, output, process_index=1, num_processes=3)
    assert not first.merged and not output.exists()  # the other shards are not done yet
    _run(extractor, source, output, process_index=0, num_processes=3)
    last = _run(extractor, source, output, process_index=2, num_processes=3)
    assert last.merged
    rows = _read(output)
    assert [r["id"] for r in rows] == [f"t{i}" for i in range(len(TEXTS))]
    assert_same_predictions([r["entities"] for r in rows], expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl", "out.jsonl.meta.json"]
    with pytest.raises(ValueError, match="processes: 3 there, 1 now"):
        _run(extractor, source, output)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    out = tmp_path_factory.mktemp("tiny_predict_model")
    _tiny(smollm2_tokenizer).save_pretrained(out)
    smollm2_tokenizer.save_pretrained(out)
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def test_predict_example_streams_a_corpus_and_says_when_there_is_no_input(tmp_path, tiny_model_dir):
    script = [sys.executable, str(REPO / "examples" / "predict.py"), "--model", str(tiny_model_dir)]
    flags = ["--entity_types", "LOC", "--max_new_tokens", "4", "--chunk_size", "2"]
    proc = subprocess.run(
        script, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=_env(), timeout=120
    )
    assert proc.returncode != 0 and "standard input was empty" in proc.stderr
    source = tmp_path / "in.txt"
    source.write_text("Ada met Bob in Paris .\n\nRain in Spain .\n")
    out = subprocess.run(
        [*script, *flags, "--input_file", str(source)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["id"], r["text"]) for r in rows] == [
        (1, "Ada met Bob in Paris ."),
        (2, ""),
        (3, "Rain in Spain ."),
    ]
    assert rows[1]["entities"] == []


def test_predict_example_under_accelerate_launch_takes_one_shard_per_process(tmp_path, tiny_model_dir):
    accelerate = Path(sys.executable).with_name("accelerate")
    source = _jsonl(tmp_path / "in.jsonl", [{"id": f"t{i}", "text": t} for i, t in enumerate(TEXTS)])
    flags = [
        "--entity_types",
        "LOC",
        "PER",
        "--max_new_tokens",
        "6",
        "--batch_size",
        "4",
        "--chunk_size",
        "3",
    ]
    common = [
        str(REPO / "examples" / "predict.py"),
        "--model",
        str(tiny_model_dir),
        *flags,
        "--input_file",
        str(source),
    ]
    launched = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
         *common, "--output_file", str(tmp_path / "two.jsonl")],
        capture_output=True, text=True, env={**_env(), "CUDA_VISIBLE_DEVICES": ""}, timeout=600,
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-4000:]
    single = subprocess.run(
        [sys.executable, *common, "--output_file", str(tmp_path / "one.jsonl")],
        capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    two, one = _read(tmp_path / "two.jsonl"), _read(tmp_path / "one.jsonl")
    assert [r["id"] for r in two] == [f"t{i}" for i in range(len(TEXTS))]
    assert_same_predictions([r["entities"] for r in two], [r["entities"] for r in one])
    assert json.loads((tmp_path / "two.jsonl.meta.json").read_text())["processes"] == 2
    assert not list(tmp_path.glob("two.jsonl.shard-*"))
