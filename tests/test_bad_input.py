"""Bad input never goes silent: a table of bad or awkward inputs across the layers, each with the clear error
(naming the input and the fix) or the correct result it must give. Issue 15's probe, kept as tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cllmfs_hf.data.descriptions import check_described_labels
from cllmfs_hf.data.labels import check_entity_types
from cllmfs_hf.data.records import build_records, records_to_dataset
from cllmfs_hf.data.sampling import SamplingError, greedy_kshot
from cllmfs_hf.data.types import AnnotatedSentence
from cllmfs_hf.extractor.validation import check_texts
from cllmfs_hf.template import PREAMBLE, format_completion, parse_output

REPO = Path(__file__).resolve().parents[1]
SENTENCE = AnnotatedSentence.from_tokens(
    ["Ada", "met", "Bob", "in", "Paris", "."], [(0, 1, "PER"), (4, 5, "LOC")]
)


def _records(types):
    return build_records([SENTENCE], types)


def _sample(labels):
    return greedy_kshot([SENTENCE], 1, labels=labels)


# (id, call, expected exception, message pattern)
ERRORS = [
    ("types-bare-string", lambda: _records("PER"), TypeError, r"got the string 'PER': pass \['PER'\]"),
    ("types-empty-name", lambda: _records(["PER", " "]), ValueError, r"entity_types\[1\] is an empty label"),
    ("types-none-entry", lambda: _records(["PER", None]), TypeError, r"entity_types\[1\] must be a str label"),
    ("types-empty-list", lambda: _records([]), ValueError, "entity_types is empty"),
    ("types-not-a-list", lambda: check_entity_types(3), TypeError, "must be a list of labels, got int"),
    ("records-none", lambda: records_to_dataset([]), ValueError, "records_to_dataset got no records"),
    ("sample-labels-empty", lambda: _sample([]), SamplingError, "labels is empty: pass the types to sample"),
    ("sample-labels-string", lambda: _sample("PER"), SamplingError, r"got the string 'PER': pass \['PER'\]"),
    ("sample-labels-unknown", lambda: _sample(["ORG"]), SamplingError, r"labels \['ORG'\] have no mention"),
    (
        "descriptions-misspelled",
        lambda: check_described_labels({"politican": "people in politics"}, ["politician"], "d.json"),
        ValueError,
        r"d.json describes \['politican'\], which is not an entity type of this job \(the types: \['politician'\]\)",
    ),
    ("texts-bare-string", lambda: check_texts("Ada met Bob"), TypeError, r"call predict\(\[text\]\)"),
    ("texts-surrogate", lambda: check_texts(["ok", "Jos\udce9"]), ValueError, r"texts\[1\] holds '\\udce9' at character 3"),
    ("texts-not-str", lambda: check_texts(["ok", 3]), TypeError, r"texts\[1\] must be a str, got int"),
    ("parse-not-str", lambda: parse_output(None, "Ada"), TypeError, "needs the generated text and the input sentence"),
]  # fmt: skip


@pytest.mark.parametrize("call, error, message", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_input_gives_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_repeated_types_give_one_record_each():
    assert [r["label"] for r in _records(["PER", "LOC", "PER"])] == ["PER", "LOC"]


def test_described_labels_match_in_any_case():
    check_described_labels({"per": "people", "LOC": "places"}, ["PER", "loc"], "d.json")


def test_an_answer_of_thousands_of_items_parses_without_recursion():
    sentence = "Bob met Bob . " * 800
    parsed = parse_output(format_completion(["Bob"] * 1600), sentence)
    assert len(parsed.spans) == 1600 and parsed.well_formed and parsed.dropped == 0
    # the backtracking still finds the split when the input itself holds the close delimiter
    parsed = parse_output(PREAMBLE + " <<< a >>> b >>>", "a >>> b")
    assert parsed.texts == ["a >>> b"] and parsed.well_formed


def _script(name: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args],
        input=stdin,
        capture_output=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )


@pytest.mark.parametrize("value", ["0", "-1"])
def test_evaluate_example_refuses_max_sentences_below_one(tmp_path, value):
    data = tmp_path / "test.txt"
    data.write_text("Ada B-PER\n\n")
    proc = _script("evaluate_ner.py", "--test_file", str(data), "--max_sentences", value)
    assert proc.returncode != 0
    assert (
        f"--max_sentences must be >= 1 (or left out for all sentences), got {value}" in proc.stderr.decode()
    )


def test_predict_example_names_the_stdin_line_that_is_not_utf8():
    proc = _script("predict.py", "--model", "unused", stdin=b"Ada met Bob .\nJos\xe9\n")
    assert proc.returncode != 0
    assert "standard input, line 2: not valid UTF-8" in proc.stderr.decode()


def test_predict_example_has_the_allow_unknown_types_option():
    proc = _script("predict.py", "--help")
    assert proc.returncode == 0 and "--allow_unknown_types" in proc.stdout.decode()


def test_the_corpus_reader_names_file_and_line(tmp_path):
    from cllmfs_hf.extractor import read_corpus

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": "ok"}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"in.jsonl:2: not JSON"):
        list(read_corpus(source))


def test_a_json_lines_span_whose_text_disagrees_with_its_offsets_is_refused(tmp_path):
    from cllmfs_hf.data.readers import DataFormatError, read_jsonl

    source = tmp_path / "spans.jsonl"
    record = {
        "text": "Ada Lovelace wrote .",
        "entities": [{"start": 0, "end": 11, "label": "PER", "text": "Ada Lovelace"}],
    }
    source.write_text(json.dumps(record) + "\n")
    with pytest.raises(
        DataFormatError,
        match=r"spans.jsonl:1.*says its text is 'Ada Lovelace', but the offsets cover 'Ada Lovelac'",
    ):
        read_jsonl(source)
    record["entities"][0]["end"] = 12
    source.write_text(json.dumps(record) + "\n")
    assert [m.end for m in read_jsonl(source)[0].mentions] == [12]


def test_a_column_file_with_cr_only_line_endings_is_read_line_by_line(tmp_path):
    from cllmfs_hf.data.readers import read_dataset

    source = tmp_path / "mac.bio"
    source.write_bytes(b"Ada B-PER\rmet O\rBob B-PER\r\rParis B-LOC\r")
    sentences = read_dataset(source)
    assert [s.text for s in sentences] == ["Ada met Bob", "Paris"]
    assert [len(s.mentions) for s in sentences] == [2, 1]


@pytest.mark.parametrize("name", ["outputs/demo/adaptr", "./no/such/model", "/no/such/model"])
def test_a_mistyped_model_path_is_named_as_a_missing_path(name):
    from cllmfs_hf.models import resolve_model_path

    with pytest.raises(FileNotFoundError, match=f"'{name}' does not exist and is not a Hub id"):
        resolve_model_path(name)
    assert resolve_model_path("gpt2") == "gpt2"  # a legacy Hub id without an owner is still passed through


@pytest.mark.parametrize(
    "record",
    [
        {"text": "Ada met Bob .", "label": [[0, 3, "PER"], [8, 11, "PER"]]},  # doccano
        {"text": "Ada met Bob .", "ents": [{"start": 0, "end": 3, "label": "PER"}, [8, 11, "PER"]]},  # spaCy
        {
            "text": "Ada met Bob .",
            "spans": [{"start": 0, "end": 3, "label": "PER"}, {"start": 8, "end": 11, "label": "PER"}],
        },
    ],
    ids=["doccano", "spacy", "prodigy"],
)
def test_common_json_lines_layouts_are_read(tmp_path, record):
    from cllmfs_hf.data.readers import read_jsonl

    source = tmp_path / "data.jsonl"
    source.write_text(json.dumps(record) + "\n")
    assert [(m.start, m.end, m.label) for m in read_jsonl(source)[0].mentions] == [
        (0, 3, "PER"),
        (8, 11, "PER"),
    ]


def test_spans_under_an_unknown_key_are_an_error_and_no_mentions_at_all_warns(tmp_path):
    from cllmfs_hf.data.readers import DataFormatError, read_jsonl

    source = tmp_path / "data.jsonl"
    source.write_text(json.dumps({"text": "Ada met Bob .", "annotations": [[0, 3, "PER"]]}) + "\n")
    with pytest.raises(
        DataFormatError, match=r"data.jsonl:1.*spans under 'annotations', which is not a span key"
    ):
        read_jsonl(source)
    source.write_text(json.dumps({"text": "Ada met Bob .", "meta": {"source": "x"}}) + "\n")
    with pytest.warns(UserWarning, match="none of its 1 records has a mention"):
        assert read_jsonl(source)[0].mentions == []


def test_conllu_comment_lines_are_skipped_and_a_hash_token_is_still_a_token(tmp_path):
    from cllmfs_hf.data.readers import read_dataset

    source = tmp_path / "data.conll"
    source.write_text(
        "# sent_id = 1\n# text = Ada met Bob\nAda B-PER\nmet O\nBob B-PER\n\n# O\nParis B-LOC\n"
    )
    sentences = read_dataset(source)
    assert [s.text for s in sentences] == ["Ada met Bob", "# Paris"]
    assert [[m.label for m in s.mentions] for s in sentences] == [["PER", "PER"], ["LOC"]]


def test_a_digit_tag_and_swapped_columns_are_refused(tmp_path):
    from cllmfs_hf.data.readers import DataFormatError, read_dataset

    typo = tmp_path / "typo.io"
    typo.write_text("Ada person\nmet O\nBob 0\n")
    with pytest.raises(DataFormatError, match=r"typo.io:3.*tag '0' has no letter.*typo for 'O'"):
        read_dataset(typo)
    words = " ".join(f"w{i}" for i in range(30)).split()
    swapped = tmp_path / "swapped.txt"
    swapped.write_text("".join(f"O {w}\n" for w in words))
    with pytest.raises(
        DataFormatError, match=r"swapped.txt:1.*holds 30 different types in 30 tokens.*column order"
    ):
        read_dataset(swapped)


@pytest.mark.parametrize(
    "text", ["北京是中国的首都，上海是最大的城市。" * 40, "https://example.org/" + "a1b2c3d4" * 200]
)
def test_windows_overlap_in_text_without_spaces(smollm2_tokenizer, text):
    from cllmfs_hf.extractor.windows import count_tokens, split_windows

    windows = split_windows(smollm2_tokenizer, text, budget=64, overlap=16)
    assert len(windows) > 3 and windows[0][0] == 0 and windows[-1][1] == len(text)
    for (s1, e1), (s2, e2) in zip(windows, windows[1:]):
        assert s2 < e1 < e2  # consecutive windows overlap, and every character is in some window
        assert count_tokens(smollm2_tokenizer, text[s1:e1]) <= 64
        assert count_tokens(smollm2_tokenizer, text[s1:e1][s2 - s1 :]) >= 4  # a real overlap, not one char


def test_a_window_overlap_of_zero_is_refused(smollm2_tokenizer):
    from conftest import build_tiny_causal_lm

    from cllmfs_hf.extractor import NERExtractor

    model = build_tiny_causal_lm("llama", len(smollm2_tokenizer), num_layers=1)
    with pytest.raises(
        ValueError, match="window_overlap must be an integer >= 1 .* mention cut by a window edge"
    ):
        NERExtractor(model, smollm2_tokenizer, ["LOC"], window_overlap=0)


@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    from conftest import build_tiny_causal_lm

    out = tmp_path_factory.mktemp("tiny_llm")
    build_tiny_causal_lm("llama", len(smollm2_tokenizer), num_layers=1).save_pretrained(out)
    smollm2_tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize(
    "setting, error, message",
    [
        (
            {"resume_from_checkpoint": "/nope"},
            FileNotFoundError,
            "--resume_from_checkpoint '/nope' is not a folder",
        ),
        ({"output_dir": "FILE"}, FileExistsError, "exists and is a file: choose a folder"),
        ({"lora_target_modules": ["q_proj", "qv_proj"]}, ValueError, r"\['qv_proj'\] match no module"),
    ],
    ids=["resume-missing", "output-dir-is-a-file", "lora-target-typo"],
)
def test_the_main_job_fails_before_its_first_forward_pass(
    tmp_path, tiny_llm_dir, monkeypatch, setting, error, message
):
    from cllmfs_hf import training
    from cllmfs_hf.config import CLLMFSConfig

    def no_forward(*args, **kwargs):
        raise AssertionError("the zero-shot evaluation ran before the bad setting was refused")

    monkeypatch.setattr(training, "evaluate_adapter", no_forward)
    (tmp_path / "FILE").write_text("not a folder")
    output_dir = str(tmp_path / setting.get("output_dir", "run"))
    args = {k: v for k, v in setting.items() if k not in ("output_dir", "lora_target_modules")}
    model_args = training.default_model_config(model_name_or_path=str(tiny_llm_dir))
    if "lora_target_modules" in setting:
        model_args.lora_target_modules = setting["lora_target_modules"]
    training_args = CLLMFSConfig(output_dir=output_dir, report_to="none", use_cpu=True, max_steps=1, **args)
    with pytest.raises(error, match=message):
        training.run(training.DataArguments(max_test_sentences=2), model_args, training_args)


def test_an_edited_template_in_a_saved_config_is_refused_not_ignored():
    from cllmfs_hf.artifact import NERAdapterConfig

    with pytest.raises(
        ValueError, match=r"x/cllmfs_config.json: instruction_template is 'Find \{type\}.', not the built-in"
    ):
        NERAdapterConfig.from_dict(
            {"entity_types": ["PER"], "instruction_template": "Find {type}."}, source="x/cllmfs_config.json"
        )


# The committed bad data files (tests/fixtures/data): each names its file, its line and the fix.
BAD_FILES = [
    ("bad_json.jsonl", ":2: invalid JSON"),
    ("blank_lines_only.txt", ":1: the file is empty"),
    ("corpus.xml", ":1: unknown format"),
    ("duplicate_span.jsonl", r":1: entities\[1\] = \(0, 3, 'PER'\) is listed twice"),
    ("empty.txt", ":1: the file is empty"),
    ("empty_tag.tsv", ":4: empty tag"),
    ("invalid_utf8.txt", ":4: invalid UTF-8"),
    ("missing_tag.tsv", ":5: 1 TAB-separated columns"),
    ("missing_text.jsonl", ":2: missing or empty 'text'"),
    ("multi_label.conll", ":4: multi-label tag"),
    ("short_span.jsonl", r":1: entities\[0\] = \[0, 3\] is neither an object nor"),
    ("span_out_of_range.jsonl", ":2: .* is outside the text"),
    ("stray_inside.bio", ":5: 'I-LOC' after 'O' continues no entity"),
    ("unknown_prefix.tsv", ":1: unknown tag prefix 'S-'"),
    ("whitespace_span.jsonl", ":1: .* starts or ends with whitespace"),
    ("wrong_columns.tsv", ":6: 3 TAB-separated columns"),
]


@pytest.mark.parametrize("name, message", BAD_FILES, ids=[n for n, _ in BAD_FILES])
def test_each_bad_data_file_names_its_line_and_the_fix(fixture_data, name, message):
    from cllmfs_hf.data.readers import DataFormatError, read_dataset

    with pytest.raises(DataFormatError, match=f"{name}{message}.*Fix: "):
        read_dataset(fixture_data / name)


@pytest.fixture(scope="module")
def tiny_extractor(smollm2_tokenizer):
    from conftest import build_tiny_causal_lm

    from cllmfs_hf.extractor import NERExtractor

    model = build_tiny_causal_lm("llama", len(smollm2_tokenizer), num_layers=1)
    return NERExtractor(model, smollm2_tokenizer, ["LOC"])


PREDICT_ERRORS = [
    ("batch-size-0", {"batch_size": 0}, ValueError, "batch_size must be an integer >= 1"),
    ("max-new-tokens-0", {"max_new_tokens": 0}, ValueError, "max_new_tokens must be None or an integer >= 1"),
    ("threshold-negative", {"threshold": -0.1}, ValueError, r"threshold must be None or a probability in \[0, 1\]"),
    ("threshold-bool", {"threshold": True}, ValueError, "threshold must be None or a probability"),
    ("type-unknown", {"entity_types": ["PER"]}, ValueError, r"Unknown entity type\(s\) \['PER'\].*--allow_unknown_types"),
    ("type-bare-string", {"entity_types": "LOC"}, TypeError, r"got the string 'LOC'"),
    ("beams-many-returns", {"num_beams": 2, "num_return_sequences": 2}, ValueError, "num_return_sequences must be 1"),
]  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, error, message", [e[1:] for e in PREDICT_ERRORS], ids=[e[0] for e in PREDICT_ERRORS]
)
def test_predict_refuses_bad_arguments(tiny_extractor, kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny_extractor.predict(["Ada flew to Paris ."], **kwargs)


def test_a_no_break_space_inside_a_token_is_part_of_the_token(tmp_path):
    from cllmfs_hf.data.readers import read_dataset

    source = tmp_path / "nbsp.txt"
    source.write_text("New\u00a0York B-LOC\nis O\nbig O\n", encoding="utf-8")
    (sentence,) = read_dataset(source)
    assert sentence.tokens == ["New\u00a0York", "is", "big"]
    assert [sentence.mention_text(m) for m in sentence.mentions] == ["New\u00a0York"]


def test_a_span_that_cuts_a_combining_accent_is_refused(tmp_path):
    from cllmfs_hf.data.readers import DataFormatError, read_jsonl

    source = tmp_path / "accent.jsonl"
    text = "Jose\u0301 met Ada ."  # 'José' spelled with a combining acute accent
    source.write_text(json.dumps({"text": text, "entities": [[0, 4, "PER"]]}) + "\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"accent.jsonl:1.*cuts the combining mark .* \(U\+0301\) at 4"):
        read_jsonl(source)
    source.write_text(json.dumps({"text": text, "entities": [[0, 5, "PER"]]}) + "\n", encoding="utf-8")
    assert read_jsonl(source)[0].mentions[0].end == 5
