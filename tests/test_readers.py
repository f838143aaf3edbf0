"""Readers on every real dataset in ../shared/data, on tiny bad-input fixtures, JSON lines and datasets.Dataset.

Counts are checked twice: against an independent count made here from the raw lines (blank-line blocks,
entity starts per scheme, and seqeval's own chunking) and against pinned numbers counted once by hand.
The whole-file checks need ../shared/data (marked ``needs_shared_data``); the datasets.Dataset round trips run
on the committed CrossNER politics excerpt.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from cllmfs_hf.data.readers import (
    DataFormatError,
    detect_scheme,
    find_splits,
    from_hf_dataset,
    read_conll,
    read_dataset,
    read_jsonl,
)
from cllmfs_hf.data.types import AnnotatedSentence, dataset_to_sentences, sentences_to_dataset

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data"

NEEDS_REAL_SPLITS = pytest.mark.needs_shared_data(
    "every real split of ../shared/data, whole: pinned sentence and mention counts, each file's own quirks"
)

# (folder under ../shared/data, split, scheme, sentences, mentions) - counted once from the files.
REAL_SPLITS = [
    ("crossner/politics", "train", "bio", 200, 1304),
    ("crossner/politics", "dev", "bio", 541, 3482),
    ("crossner/politics", "test", "bio", 651, 4209),
    ("crossner/science", "train", "bio", 200, 1075),
    ("crossner/science", "dev", "bio", 450, 2538),
    ("crossner/science", "test", "bio", 543, 3089),
    ("wnut17", "train", "bio", 3394, 1975),
    ("wnut17", "dev", "bio", 1009, 836),
    ("wnut17", "test", "bio", 1287, 1079),
    ("wikigold", "all", "iob1", 1696, 3558),
    ("fewnerd/inter", "dev", "io", 18817, 34830),
    ("bio/NCBI-disease-IOB", "train", "bio", 5424, 5134),
    ("bio/NCBI-disease-IOB", "dev", "bio", 923, 787),
    ("bio/NCBI-disease-IOB", "test", "bio", 940, 960),
]


def raw_blocks(path: Path) -> list[list[tuple[str, str]]]:
    """Independent parse: (token, tag) blocks separated by blank lines, -DOCSTART- lines dropped."""
    blocks: list[list[tuple[str, str]]] = []
    cur: list[tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip() or line.startswith("-DOCSTART-"):
            if cur:
                blocks.append(cur)
            cur = []
            continue
        parts = line.split()
        cur.append((parts[0], parts[-1]))
    if cur:
        blocks.append(cur)
    return blocks


def count_entity_starts(tags: list[str], scheme: str) -> int:
    """Independent mention count: B- tags (BIO); I- after a different tag, plus B- (IOB1); runs (IO)."""
    n = 0
    prev = "O"
    for tag in tags:
        if scheme == "bio":
            n += tag.startswith("B-")
        elif scheme == "iob1":
            n += tag.startswith("B-") or (tag.startswith("I-") and prev[2:] != tag[2:])
        else:
            n += tag != "O" and tag != prev
        prev = tag
    return n


def seqeval_chunks(tags: list[str], scheme: str) -> list[tuple[int, int, str]]:
    """seqeval's lenient chunker: IOB1 and BIO as is, IO after prefixing every tag with I-."""
    if scheme == "io":
        tags = [t if t == "O" else f"I-{t}" for t in tags]
    return sorted((a, b + 1, label) for label, a, b in get_entities(tags))


def token_spans(sentence: AnnotatedSentence) -> list[tuple[int, int, str]]:
    starts = {s: i for i, (s, _) in enumerate(sentence.token_offsets)}
    ends = {e: i + 1 for i, (_, e) in enumerate(sentence.token_offsets)}
    return sorted((starts[m.start], ends[m.end], m.label) for m in sentence.mentions)


@pytest.fixture(scope="module")
def real_corpora(shared_data):
    """Each real split read once: {(folder, split): (path, sentences)}."""
    out = {}
    for folder, split, *_ in REAL_SPLITS:
        path = find_splits(shared_data / folder)[split]
        out[(folder, split)] = (path, read_dataset(path))
    return out


@NEEDS_REAL_SPLITS
@pytest.mark.parametrize("folder,split,scheme,n_sentences,n_mentions", REAL_SPLITS)
def test_real_split_counts(real_corpora, folder, split, scheme, n_sentences, n_mentions):
    path, sentences = real_corpora[(folder, split)]
    blocks = raw_blocks(path)
    assert len(sentences) == len(blocks) == n_sentences
    independent = sum(count_entity_starts([t for _, t in b], scheme) for b in blocks)
    assert sum(len(s.mentions) for s in sentences) == independent == n_mentions
    assert detect_scheme([[t for _, t in b] for b in blocks]) == scheme


@NEEDS_REAL_SPLITS
@pytest.mark.parametrize("folder,split,scheme", [r[:3] for r in REAL_SPLITS])
def test_real_split_mentions_match_seqeval_and_tokens(real_corpora, folder, split, scheme):
    path, sentences = real_corpora[(folder, split)]
    blocks = raw_blocks(path)
    for sentence, block in zip(sentences, blocks, strict=True):
        tags = [t for _, t in block]
        assert sentence.tokens == [w for w, _ in block]
        assert token_spans(sentence) == seqeval_chunks(tags, scheme)
        if scheme == "bio":
            assert sentence.to_bio() == tags
    # source is "path:line" of the sentence's first token line
    lines = path.read_text(encoding="utf-8").split("\n")
    for sentence in sentences:
        where, line_no = sentence.source.rsplit(":", 1)
        n = int(line_no)
        assert where == str(path)
        assert lines[n - 1].split()[0] == sentence.tokens[0]
        assert n == 1 or not lines[n - 2].strip() or lines[n - 2].startswith("-DOCSTART-")


@pytest.mark.needs_shared_data("the whole Few-NERD INTER dev file: all 13 of its types")
def test_few_nerd_labels_keep_dataset_spelling(real_corpora):
    _, sentences = real_corpora[("fewnerd/inter", "dev")]
    labels = {m.label for s in sentences for m in s.mentions}
    assert len(labels) == 13
    assert {"person-other", "art-painting", "building-library"} <= labels


@pytest.mark.needs_shared_data("the whole WikiGold file: IOB1 read strictly, leniently and as BIO, all of it")
def test_wikigold_explicit_schemes(shared_data, real_corpora):
    path, iob1 = real_corpora[("wikigold", "all")]
    with pytest.raises(DataFormatError) as err:
        read_conll(path, scheme="bio")
    msg = str(err.value)
    assert f"{path}:1:" in msg and "'I-MISC'" in msg and "scheme='iob1'" in msg and "strict=False" in msg
    # A lenient BIO reading (stray I- repaired into B-) chunks IOB1 exactly like the IOB1 reading.
    lenient = read_conll(path, scheme="bio", strict=False)
    assert [s.mentions for s in lenient] == [s.mentions for s in iob1]


@pytest.mark.needs_shared_data("WNUT-17 emerging.test.conll, the real file with multi-label tags")
def test_wnut_multilabel_test_file_rejected(shared_data):
    path = shared_data / "wnut17" / "emerging.test.conll"
    with pytest.raises(DataFormatError) as err:
        read_dataset(path)
    msg = str(err.value)
    first_bad = next(
        i + 1
        for i, ln in enumerate(path.read_text(encoding="utf-8").split("\n"))
        if "," in ln.split("\t")[-1]
    )
    assert msg.startswith(f"{path}:{first_bad}:")
    assert "emerging.test.annotated" in msg and "multi-label" in msg


# ---------------------------------------------------------------------------------------------------------
# find_splits
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.needs_shared_data("the real dataset folders' layouts: split names, nesting, multi-label files")
def test_find_splits_real_layouts(shared_data):
    names = lambda d: {k: v.name for k, v in find_splits(shared_data / d).items()}  # noqa: E731
    assert names("crossner/politics") == {"train": "train.txt", "dev": "dev.txt", "test": "test.txt"}
    assert names("bio") == {"train": "train.tsv", "dev": "devel.tsv", "test": "test.tsv"}  # one level down
    assert names("wnut17") == {
        "train": "wnut17train.conll",
        "dev": "emerging.dev.conll",
        "test": "emerging.test.annotated",  # the multi-label emerging.test.conll is set aside
    }
    assert names("wikigold") == {"all": "wikigold.conll.txt"}
    assert names("fewnerd") == {"dev": "dev.txt"}
    with pytest.raises(DataFormatError) as err:
        find_splits(shared_data / "crossner")
    assert "politics/train.txt" in str(err.value) and "science/train.txt" in str(err.value)


def test_find_splits_generic_rules(tmp_path):
    for name in (
        "Training.jsonl",
        "validation.jsonl",
        "my_test_v2.jsonl",
        "notes.md",
        "LICENSE.txt",
        "contest.txt",
    ):
        (tmp_path / name).write_text("{}\n")
    assert {k: v.name for k, v in find_splits(tmp_path).items()} == {
        "train": "Training.jsonl",
        "dev": "validation.jsonl",
        "test": "my_test_v2.jsonl",
    }
    both = tmp_path / "two"
    both.mkdir()
    (both / "train_dev.txt").write_text("a\tO\n")
    with pytest.raises(DataFormatError, match="several splits"):
        find_splits(both)
    twice = tmp_path / "twice"
    twice.mkdir()
    for name in ("test.txt", "test.tsv"):
        (twice / name).write_text("a\tO\n")
    with pytest.raises(DataFormatError, match=r"several candidate test files: .*test.tsv.*test.txt"):
        find_splits(twice)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "README.md").write_text("x")
    with pytest.raises(DataFormatError, match="no data file"):
        find_splits(empty)
    with pytest.raises(FileNotFoundError):
        find_splits(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------------
# Bad input: one tiny committed file per defect; the error names the file, the line and a fix.
# ---------------------------------------------------------------------------------------------------------
BAD_FILES = [
    ("wrong_columns.tsv", {}, 6, "3 TAB-separated columns"),
    ("missing_tag.tsv", {}, 5, "1 TAB-separated columns"),
    ("empty_tag.tsv", {}, 4, "empty tag"),
    ("stray_inside.bio", {}, 5, "continues no entity"),
    ("stray_inside.bio", {"scheme": "iob1"}, 1, "B- only separates"),
    ("unknown_prefix.tsv", {}, 1, "unknown tag prefix 'S-'"),
    ("empty.txt", {}, 1, "empty"),
    ("blank_lines_only.txt", {}, 1, "empty"),
    ("invalid_utf8.txt", {}, 4, "invalid UTF-8"),
    ("multi_label.conll", {}, 4, "multi-label tag"),
    ("prefixed.io", {"scheme": "io"}, 1, "has a B- prefix"),
    ("corpus.xml", {}, 1, "unknown format"),
    ("bad_json.jsonl", {}, 2, "invalid JSON"),
    ("span_out_of_range.jsonl", {}, 2, "outside the text"),
    ("missing_text.jsonl", {}, 2, "missing or empty 'text'"),
    ("whitespace_span.jsonl", {}, 1, "starts or ends with whitespace"),
    ("duplicate_span.jsonl", {}, 1, "listed twice"),
    ("short_span.jsonl", {}, 1, "neither an object nor a [start, end, label] triple"),
]


@pytest.mark.parametrize("name,kwargs,line,problem", BAD_FILES, ids=[f"{b[0]}-{b[2]}" for b in BAD_FILES])
def test_bad_input_names_file_line_and_fix(name, kwargs, line, problem):
    path = FIXTURES / name
    with pytest.raises(DataFormatError) as err:
        read_dataset(path, **kwargs)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert problem in msg
    assert " Fix: " in msg and len(err.value.fix) > 10
    assert (err.value.path, err.value.line) == (str(path), line)


def test_stray_inside_repair_is_explicit():
    path = FIXTURES / "stray_inside.bio"
    repaired = read_conll(path, strict=False)
    assert [(s.mention_text(m), m.label) for s in repaired for m in s.mentions] == [
        ("Ada", "PER"),
        ("Paris", "LOC"),
    ]
    assert [s.to_bio() for s in repaired][1] == ["O", "B-LOC"]  # written back as proper IOB2


def test_folder_and_missing_file_errors(tmp_path):
    with pytest.raises(DataFormatError, match="find_splits"):
        read_dataset(FIXTURES)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_conll(tmp_path / "nope.txt")
    with pytest.raises(ValueError, match="unknown tag scheme 'bioes'"):
        read_conll(FIXTURES / "stray_inside.bio", scheme="bioes")  # type: ignore[arg-type]
    with pytest.raises(DataFormatError, match="tag_column=5 but the file has 2 columns"):
        read_conll(FIXTURES / "stray_inside.bio", tag_column=5)


# ---------------------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------------------
def test_conll2003_four_columns_docstart_and_iob1():
    path = FIXTURES / "conll2003_style.txt"
    sentences = read_conll(path)
    assert [s.source for s in sentences] == [f"{path}:3", f"{path}:15"]
    got = [[(s.mention_text(m), m.label) for m in s.mentions] for s in sentences]
    assert got == [
        [("Ada Lovelace", "PER"), ("Charles Babbage", "PER"), ("Smith", "PER"), ("London", "LOC")],
        [("Analytical Engine", "MISC")],
    ]
    # the chunk column (B-NP/I-NP) read as the tag column on request
    chunks = read_conll(path, tag_column=2, scheme="bio")
    assert [chunks[1].mention_text(m) for m in chunks[1].mentions] == ["The Analytical Engine", "worked"]
    assert (
        read_dataset(path.with_name("conll2003_style.txt"), scheme="iob1")[0].mentions
        == sentences[0].mentions
    )


def test_read_jsonl_keys_tokens_and_lines():
    path = FIXTURES / "good.jsonl"
    sentences = read_jsonl(path)
    assert [s.source for s in sentences] == [f"{path}:{n}" for n in (1, 3, 4, 5)]
    assert [[(s.mention_text(m), m.label) for m in s.mentions] for s in sentences] == [
        [("Ada Lovelace", "PER"), ("Babbage", "PER")],
        [],
        [("Rome", "LOC"), ("Italy", "LOC")],
        [],
    ]
    # tokens are split at mention boundaries so BIO tags exist for every mention
    assert sentences[0].tokens == ["Ada", "Lovelace", "met", "Babbage", "."]
    assert sentences[2].tokens == ["Rome", "(", "Italy", ")", "is", "old."]
    assert sentences[2].to_bio() == ["B-LOC", "O", "B-LOC", "O", "O", "O"]
    array = read_dataset(FIXTURES / "good_array.json")
    assert [s.source.rsplit(":", 1)[1] for s in array] == ["2", "3"]
    assert [(s.mention_text(m), m.label) for s in array for m in s.mentions] == [
        ("Ada", "PER"),
        ("Oslo", "LOC"),
    ]


def test_read_dataset_sniffs_unknown_extensions(tmp_path):
    col = tmp_path / "corpus.data"
    col.write_text("Ada B-PER\nwrote O\n", encoding="utf-8")
    assert read_dataset(col)[0].mentions[0].label == "PER"
    js = tmp_path / "corpus.records"
    js.write_text(json.dumps({"text": "Ada wrote", "entities": [[0, 3, "PER"]]}) + "\n", encoding="utf-8")
    assert read_dataset(js)[0].mention_text(read_dataset(js)[0].mentions[0]) == "Ada"
    with pytest.raises(TypeError, match="read_jsonl takes no options"):
        read_dataset(FIXTURES / "good.jsonl", scheme="bio")


def test_detect_scheme_rule():
    assert detect_scheme([["O", "O"]]) == "io"
    assert detect_scheme([["person-actor", "person-actor", "O"]]) == "io"
    assert detect_scheme([["I-PER", "B-PER"], ["O", "B-LOC"]]) == "bio"  # a B- after O decides
    assert detect_scheme([["I-PER", "B-PER", "O", "I-LOC"]]) == "iob1"
    assert detect_scheme([["B-PER", "B-PER"]]) == "bio"


@settings(max_examples=40, deadline=None)
@given(
    data=st.lists(
        st.tuples(
            st.sampled_from(["Ada", "met", "Bob", "in", "Oslo", ".", "x-y"]),
            st.sampled_from(["O", "PER", "LOC"]),
        ),
        min_size=1,
        max_size=12,
    ),
    scheme=st.sampled_from(["bio", "io", "iob1"]),
)
def test_write_then_read_round_trip(data, scheme):
    """Mentions written in a scheme are read back identically (IO cannot split same-type neighbours)."""
    tokens = [w for w, _ in data]
    spans: list[tuple[int, int, str]] = []
    i = 0
    while i < len(data):
        label = data[i][1]
        if label == "O":
            i += 1
            continue
        j = i + 1
        while j < len(data) and data[j][1] == label and (j - i) < 2:
            j += 1
        spans.append((i, j, label))
        i = j
    if scheme == "io":  # merge same-type neighbours, as IO files do
        merged: list[tuple[int, int, str]] = []
        for a, b, label in spans:
            if merged and merged[-1][1] == a and merged[-1][2] == label:
                merged[-1] = (merged[-1][0], b, label)
            else:
                merged.append((a, b, label))
        spans = merged
    sentence = AnnotatedSentence.from_tokens(tokens, spans)
    bio = sentence.to_bio()
    if scheme == "io":
        tags = [t if t == "O" else t[2:] for t in bio]
    elif scheme == "iob1":
        tags = [
            t if t == "O" or (t.startswith("B-") and k > 0 and bio[k - 1][2:] == t[2:]) else "I-" + t[2:]
            for k, t in enumerate(bio)
        ]
    else:
        tags = bio
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "x.tsv"
        path.write_text("".join(f"{w}\t{t}\n" for w, t in zip(tokens, tags)), encoding="utf-8")
        (back,) = read_conll(path, scheme=scheme)
    assert back.tokens == tokens and back.mentions == sentence.mentions


# ---------------------------------------------------------------------------------------------------------
# datasets.Dataset
# ---------------------------------------------------------------------------------------------------------
def test_round_trip_through_datasets(politics_train_head):
    sentences = read_dataset(politics_train_head)
    back = dataset_to_sentences(sentences_to_dataset(sentences))
    assert back == sentences


def test_from_hf_dataset_classlabel_and_strings(politics_train_head):
    path = politics_train_head
    sentences = read_dataset(path)
    blocks = raw_blocks(path)
    names = ["O"] + sorted({t for b in blocks for _, t in b} - {"O"})
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    ds = datasets.Dataset.from_dict(
        {
            "tokens": [[w for w, _ in b] for b in blocks],
            "ner_tags": [[names.index(t) for _, t in b] for b in blocks],
        },
        features=features,
    )
    from_ids = from_hf_dataset(ds, name="politics")
    assert [s.mentions for s in from_ids] == [s.mentions for s in sentences]
    assert [s.text for s in from_ids] == [s.text for s in sentences]
    assert from_ids[7].source == "politics:7"
    strings = datasets.Dataset.from_dict(
        {"words": [[w for w, _ in b] for b in blocks], "tags": [[t for _, t in b] for b in blocks]}
    )
    from_str = from_hf_dataset(strings, tokens_column="words", tags_column="tags")
    assert [s.mentions for s in from_str] == [s.mentions for s in sentences]


def test_from_hf_dataset_errors():
    ints = datasets.Dataset.from_dict({"tokens": [["Ada", "wrote"]], "ner_tags": [[1, 0]]})
    with pytest.raises(DataFormatError, match=r"no ClassLabel names.*cast_column"):
        from_hf_dataset(ints)
    with pytest.raises(DataFormatError, match=r"no column 'labels'"):
        from_hf_dataset(ints, tags_column="labels")
    ragged = datasets.Dataset.from_dict(
        {"tokens": [["Ada"], ["Ada", "wrote"]], "ner_tags": [["B-PER"], ["B-PER"]]}
    )
    with pytest.raises(DataFormatError, match=r":1: 2 tokens but 1 tags"):
        from_hf_dataset(ragged)
    stray = datasets.Dataset.from_dict(
        {"tokens": [["Ada"], ["in", "Oslo"]], "ner_tags": [["B-PER"], ["O", "I-LOC"]]}
    )
    with pytest.raises(DataFormatError, match=r"^datasets.Dataset:1: 'I-LOC' after 'O' continues no entity"):
        from_hf_dataset(stray, scheme="bio")


def test_from_hf_dataset_rejects_non_datasets():
    ds = datasets.Dataset.from_dict({"tokens": [["Ada"]], "ner_tags": [["B-PER"]]})
    with pytest.raises(TypeError, match=r"DatasetDict with splits \['train'\].*dataset\['train'\]"):
        from_hf_dataset(datasets.DatasetDict({"train": ds}))
    with pytest.raises(TypeError, match="takes a datasets.Dataset, got list"):
        from_hf_dataset([{"tokens": ["Ada"], "ner_tags": ["B-PER"]}])


def test_docstart_line_does_not_decide_the_separator(tmp_path):
    path = tmp_path / "doc.tsv"
    path.write_text("-DOCSTART- -X- O\n\nNew York\tB-LOC\nis\tO\n", encoding="utf-8")
    (sentence,) = read_conll(path)
    assert sentence.tokens == ["New York", "is"] and sentence.source == f"{path}:3"
    assert sentence.mention_text(sentence.mentions[0]) == "New York"
