"""Instruction records (sentence x type), the template round trip, datasets/TRL compatibility, labels, descriptions."""

from __future__ import annotations

import re

import pytest

from cllmfs_hf.data.descriptions import TYPE_DESCRIPTIONS, describe_type
from cllmfs_hf.data.labels import normalize_label, type_name
from cllmfs_hf.data.readers import find_splits, read_conll, read_dataset
from cllmfs_hf.data.records import build_records, label_set, records_to_dataset
from cllmfs_hf.data.types import AnnotatedSentence, dataset_to_sentences, sentences_to_dataset
from cllmfs_hf.template import (
    INPUT_PREFIX,
    PREAMBLE,
    SPAN_CLOSE,
    SPAN_OPEN,
    format_completion,
    render_user_content,
)

FEWNERD_66 = """
art-broadcastprogram art-film art-music art-other art-painting art-writtenart building-airport building-hospital
building-hotel building-library building-other building-restaurant building-sportsfacility building-theater
event-attack/battle/war/militaryconflict event-disaster event-election event-other event-protest event-sportsevent
location-GPE location-bodiesofwater location-island location-mountain location-other location-park
location-road/railway/highway/transit organization-company organization-education
organization-government/governmentagency organization-media/newspaper organization-other
organization-politicalparty organization-religion organization-showorganization organization-sportsleague
organization-sportsteam other-astronomything other-award other-biologything other-chemicalthing other-currency
other-disease other-educationaldegree other-god other-language other-law other-livingthing other-medical person-actor
person-artist/author person-athlete person-director person-other person-politician person-scholar person-soldier
product-airplane product-car product-food product-game product-other product-ship product-software product-train
product-weapon
""".split()

DATASET_FOLDERS = [
    "crossner/politics",
    "crossner/science",
    "wnut17",
    "wikigold",
    "fewnerd/inter",
    "bio/NCBI-disease-IOB",
]


def _parse_completion(text: str) -> list[str]:
    """Mention texts of a completion, read back with the template's own constants."""
    assert text.startswith(PREAMBLE), text
    rest = text[len(PREAMBLE) :]
    pattern = re.compile(rf" {re.escape(SPAN_OPEN)} (.+?) {re.escape(SPAN_CLOSE)}")
    found, pos = [], 0
    for match in pattern.finditer(rest):
        assert match.start() == pos, f"garbage between spans in {text!r}"
        found.append(match.group(1))
        pos = match.end()
    assert pos == len(rest), f"trailing text in {text!r}"
    return found


def _check_record(record: dict, sentence: AnnotatedSentence) -> None:
    content = record["prompt"][0]["content"]
    assert record["prompt"][0]["role"] == "user" and len(record["prompt"]) == 1
    assert record["completion"][0]["role"] == "assistant" and len(record["completion"]) == 1
    label = record["label"]
    # The prompt is exactly the template's rendering.
    expected, type_span, offset = render_user_content(type_name(label), describe_type(label), sentence.text)
    assert content == expected
    assert record["type_span"] == list(type_span) and record["sentence_offset"] == offset
    assert content[slice(*record["type_span"])] == record["type_name"] == type_name(label)
    assert content[record["sentence_offset"] :] == record["sentence"] == sentence.text
    assert content[: record["sentence_offset"]].endswith(INPUT_PREFIX)
    # Spans slice to the mention texts, the completion lists them in order, negatives have none.
    gold = sentence.mentions_of(label)
    assert record["spans"] == [[m.start, m.end] for m in gold]
    texts = [record["sentence"][s:e] for s, e in record["spans"]]
    assert texts == [sentence.mention_text(m) for m in gold]
    assert _parse_completion(record["completion"][0]["content"]) == texts
    assert record["completion"][0]["content"] == format_completion(texts)
    assert record["is_negative"] == (not gold)
    others = [m for m in sentence.mentions if m.label != label]
    assert record["other_spans"] == [[m.start, m.end] for m in others]
    assert record["other_labels"] == [m.label for m in others]


# ----------------------------------------------------------------------------------------------------------------
# records


def test_one_record_per_sentence_and_type_including_negatives():
    s1 = AnnotatedSentence.from_tokens(
        ["Ada", "met", "Bob", "in", "Paris"], [(0, 1, "PER"), (2, 3, "PER"), (4, 5, "LOC")]
    )
    s2 = AnnotatedSentence.from_tokens(["Nothing", "here"], [])
    records = build_records([s1, s2], ["PER", "LOC", "ORG"])
    assert [(r["sentence"], r["label"]) for r in records] == [
        (s1.text, "PER"),
        (s1.text, "LOC"),
        (s1.text, "ORG"),
        (s2.text, "PER"),
        (s2.text, "LOC"),
        (s2.text, "ORG"),
    ]
    assert [r["is_negative"] for r in records] == [False, False, True, True, True, True]
    assert records[0]["completion"][0]["content"] == f"{PREAMBLE} <<< Ada >>> <<< Bob >>>"
    assert records[2]["completion"][0]["content"] == PREAMBLE  # a negative: preamble, no spans
    for r in records:
        _check_record(r, s1 if r["sentence"] == s1.text else s2)
    # Default label set: the labels present, sorted.
    assert [r["label"] for r in build_records([s1], None)] == ["LOC", "PER"]
    with pytest.raises(ValueError, match="No entity types"):
        build_records([s2], None)


def test_negative_ratio_keeps_positives_and_subsamples_negatives_deterministically(politics_train_head):
    sentences = read_conll(politics_train_head)
    types = label_set(sentences)
    full = build_records(sentences, types)
    assert len(full) == len(sentences) * len(types)
    positives = [r for r in full if not r["is_negative"]]
    negatives = [r for r in full if r["is_negative"]]
    assert positives and negatives
    none = build_records(sentences, types, negative_ratio=0.0)
    assert [(r["sentence"], r["label"]) for r in none] == [(r["sentence"], r["label"]) for r in positives]
    half = build_records(sentences, types, negative_ratio=0.5, seed=3)
    assert half == build_records(sentences, types, negative_ratio=0.5, seed=3)
    assert half != build_records(sentences, types, negative_ratio=0.5, seed=4)
    kept_negatives = sum(r["is_negative"] for r in half)
    assert sum(not r["is_negative"] for r in half) == len(positives)
    assert 0.4 * len(negatives) < kept_negatives < 0.6 * len(negatives)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="negative_ratio must be in"):
            build_records(sentences, types, negative_ratio=bad)


@pytest.mark.parametrize("excerpt", ["politics_train_head", "wnut17_train_head", "ncbi_train_head"])
def test_records_on_real_sentences_round_trip_the_template(request, excerpt):
    """Real train sentences of CrossNER politics, WNUT-17 and NCBI-disease (the committed excerpts)."""
    sentences = read_dataset(request.getfixturevalue(excerpt))
    types = label_set(sentences)
    records = build_records(sentences, types)
    assert len(records) == len(sentences) * len(types)
    for i, record in enumerate(records):  # sentence-major order, types in the order given
        assert record["label"] == types[i % len(types)]
        _check_record(record, sentences[i // len(types)])
    assert sum(len(r["spans"]) for r in records) == sum(len(s.mentions) for s in sentences)


def test_user_descriptions_override_the_table():
    s = AnnotatedSentence.from_tokens(["Ada", "wrote"], [(0, 1, "PER")])
    (record,) = build_records([s], ["PER"], descriptions={"per": "a human being."})
    assert "the entity of person refers to a human being.\nInput: Ada wrote" in record["prompt"][0]["content"]


def test_records_to_dataset_keeps_every_column_and_value():
    s1 = AnnotatedSentence.from_tokens(["Ada", "met", "Bob"], [(0, 1, "PER"), (2, 3, "PER")])
    s2 = AnnotatedSentence.from_tokens(["Rain"], [])
    records = build_records([s2, s1], ["PER", "LOC"])  # the first record is a negative with empty span lists
    ds = records_to_dataset(records)
    assert len(ds) == len(records)
    assert set(ds.column_names) == set(records[0])
    assert [dict(row) for row in ds] == records
    assert ds.features["spans"].feature.feature.dtype == "int32"


# ----------------------------------------------------------------------------------------------------------------
# TRL: SFTTrainer accepts the records; the loss covers exactly the completion


@pytest.mark.parametrize("tokenizer_fixture", ["smollm2_tokenizer", "sentencepiece_tokenizer"])
def test_sft_trainer_prepares_records_with_loss_on_the_completion_only(
    request, tokenizer_fixture, tiny_model_factory, tmp_path
):
    from trl import SFTConfig, SFTTrainer

    tokenizer = request.getfixturevalue(tokenizer_fixture)
    s1 = AnnotatedSentence.from_tokens(
        ["United", "Russia", "won", "the", "2011", "Russian", "legislative", "election", "."],
        [(0, 2, "politicalparty"), (4, 8, "election")],
    )
    s2 = AnnotatedSentence.from_tokens(
        ["Merkel", "spoke", "in", "Berlin", "."], [(0, 1, "politician"), (3, 4, "location")]
    )
    records = build_records([s1, s2], ["politicalparty", "election", "politician", "location"])
    dataset = records_to_dataset(records)
    args = SFTConfig(
        output_dir=str(tmp_path),
        max_length=512,
        report_to=[],
        remove_unused_columns=False,
        per_device_train_batch_size=2,
        use_cpu=True,
    )
    trainer = SFTTrainer(
        model=tiny_model_factory("llama", tokenizer),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    prepared = trainer.train_dataset
    assert len(prepared) == len(records)  # nothing dropped
    for column in ("spans", "type_span", "sentence_offset", "label", "is_negative"):
        assert column in prepared.column_names  # extra columns survive for the CLLMFS collator
    for record, row in zip(records, prepared):
        assert row["spans"] == record["spans"]
        ids, labels = row["input_ids"], row["labels"]
        trained = [i for i, label in enumerate(labels) if label != -100]
        assert trained == list(range(trained[0], len(ids)))  # one contiguous block at the end
        assert all(labels[i] == ids[i] for i in trained)
        # The untrained part is the prompt exactly as it is tokenized at inference (with the generation prompt),
        # the trained part the rest of the chat-templated conversation.
        prompt_ids = tokenizer.apply_chat_template(
            record["prompt"], tokenize=True, add_generation_prompt=True, return_dict=True
        )["input_ids"]
        full_ids = tokenizer.apply_chat_template(
            record["prompt"] + record["completion"], tokenize=True, return_dict=True
        )["input_ids"]
        assert ids == full_ids
        assert ids[: trained[0]] == prompt_ids
        # Decoded, the trained part is the answer followed only by the end-of-turn markup (the end token is trained,
        # so generation learns to stop).
        answer = record["completion"][0]["content"]
        trained_text = tokenizer.decode(ids[trained[0] :])
        assert trained_text.startswith(answer), trained_text
        tail = trained_text[len(answer) :]
        assert tokenizer.eos_token in tail
        # (the local SentencePiece fixture has no newline piece: its template newline decodes as <unk>)
        assert tail.replace(tokenizer.eos_token, "").replace(tokenizer.unk_token or "\n", "").strip() == ""


# ----------------------------------------------------------------------------------------------------------------
# AnnotatedSentence <-> datasets


def test_annotated_sentences_round_trip_through_datasets(wnut17_train_head):
    sentences = read_conll(wnut17_train_head)
    sentences.append(AnnotatedSentence.from_text("  spaced   text ", [(2, 8, "thing")], source=None))
    assert any(not s.mentions for s in sentences) and any(len(s.mentions) > 1 for s in sentences)
    ds = sentences_to_dataset(sentences)
    assert set(ds.column_names) == {"text", "tokens", "token_offsets", "mentions", "source"}
    back = dataset_to_sentences(ds)
    assert back == sentences


# ----------------------------------------------------------------------------------------------------------------
# labels and descriptions


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("PER", "person"),
        ("LOC", "location"),
        ("ORG", "organisation"),
        ("MISC", "miscellaneous"),
        ("GPE", "geopolitical entity"),
        ("WORK_OF_ART", "work of art"),
        ("politicalparty", "political party"),
        ("astronomicalobject", "astronomical object"),
        ("creative-work", "creative work"),
        ("Disease", "disease"),
        ("person-actor", "actor"),
        ("location-GPE", "geopolitical entity"),
        ("person-other", "other person"),
        ("building-other", "other building"),
        ("event-sportsevent", "sports event"),
        ("person-artist/author", "artist or author"),
        ("organization-government/governmentagency", "government or government agency"),
        ("  scientist ", "scientist"),
        ("cell_line", "cell line"),
    ],
)
def test_type_name_cases(label, name):
    assert type_name(label) == name


def test_normalize_label_keeps_spelling_and_rejects_empty():
    assert normalize_label(" PER ") == "PER"
    assert normalize_label("person-actor") == "person-actor"
    with pytest.raises(ValueError, match="non-empty"):
        normalize_label("  ")


def _has_table_entry(label: str) -> bool:
    return label.strip().lower() in TYPE_DESCRIPTIONS or type_name(label).lower() in TYPE_DESCRIPTIONS


@pytest.mark.needs_shared_data("every label of every dataset folder in ../shared/data")
def test_every_label_in_the_shared_data_has_a_real_description(shared_data):
    for folder in DATASET_FOLDERS:
        labels = set()
        for path in find_splits(shared_data / folder).values():
            labels |= {m.label for s in read_dataset(path) for m in s.mentions}
        assert labels, folder
        for label in labels:
            assert _has_table_entry(label), f"{folder}: no description for {label!r}"
            assert describe_type(label) != type_name(label), f"{folder}: {label!r} falls back to its name"
        names = [type_name(label) for label in labels]
        assert len(set(names)) == len(names), f"{folder}: two labels share a type name: {sorted(names)}"


def test_all_fewnerd_fine_types_have_distinct_names_and_descriptions():
    assert len(FEWNERD_66) == len(set(FEWNERD_66)) == 66
    names = {type_name(label) for label in FEWNERD_66}
    assert len(names) == 66
    assert "other" not in names
    assert len({describe_type(label) for label in FEWNERD_66}) == 66
    for label in FEWNERD_66:
        assert label.lower() in TYPE_DESCRIPTIONS, label


@pytest.mark.parametrize(
    "label",
    # CoNLL, OntoNotes 18, Few-NERD coarse, WNUT-17, biomedical
    "PER LOC ORG MISC PERSON NORP FAC ORG GPE LOC PRODUCT EVENT WORK_OF_ART LAW LANGUAGE DATE TIME PERCENT MONEY "
    "QUANTITY ORDINAL CARDINAL person location organization building art product event other corporation group "
    "creative-work Disease Chemical Gene gene/protein protein species cell_line cell_type DNA RNA".split(),
)
def test_common_types_are_in_the_table(label):
    assert _has_table_entry(label)


def test_descriptions_are_one_short_clause_without_trailing_period():
    for key, text in TYPE_DESCRIPTIONS.items():
        assert key == key.lower(), key
        assert text and text == text.strip() and "\n" not in text, key
        assert not text.endswith("."), key
        assert text[0].islower() and len(text) <= 140, key
        assert ". " not in text, key


def test_describe_type_lookup_order_and_fallback():
    assert describe_type("PER") == describe_type("person") == TYPE_DESCRIPTIONS["per"]
    assert describe_type("politicalparty") == describe_type("political party")
    assert describe_type("PER", {"PER": "x"}) == "x"
    assert describe_type("PER", {"per": "y"}) == "y"
    assert describe_type("spaceship") == "spaceship"
    assert describe_type("space_ship") == "space ship"
