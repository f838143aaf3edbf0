"""Entity-level evaluation: hand-checked cases, agreement with seqeval (strict IOB2) on real files, properties."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
from seqeval.scheme import IOB2

from cllmfs_hf.data.types import AnnotatedSentence, Mention
from cllmfs_hf.evaluation import (
    NERScores,
    ScoreAccumulator,
    TypeScores,
    bio_to_spans,
    evaluate_sentences,
    score_bio,
    score_spans,
)

# ----------------------------------------------------------------------------------------------------------------
# hand-checked cases


def test_counts_and_scores_by_hand():
    gold = [[(0, 2, "PER"), (5, 7, "LOC")], [(0, 1, "ORG")], []]
    pred = [[Mention(0, 2, "PER"), (5, 8, "LOC")], [(0, 1, "PER")], [(3, 4, "ORG")]]
    s = score_spans(gold, pred)
    assert (s.tp, s.fp, s.fn) == (1, 3, 2)
    assert s.precision == pytest.approx(1 / 4)
    assert s.recall == pytest.approx(1 / 3)
    assert s.f1 == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))
    assert s.support == 3 and s.predicted == 4 and s.num_sentences == 3
    assert set(s.per_type) == {"PER", "LOC", "ORG"}
    assert s.per_type["PER"] == TypeScores.from_counts(1, 1, 0)
    assert s.per_type["LOC"].to_dict() == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 1,
        "tp": 0,
        "fp": 1,
        "fn": 1,
    }
    assert s.per_type["ORG"].support == 1 and s.per_type["ORG"].fp == 1
    assert s.token_accuracy is None  # spans have no tokens


def test_exact_match_needs_start_end_and_type():
    gold = [[(10, 20, "PER")]]
    for wrong in [(10, 19, "PER"), (11, 20, "PER"), (10, 20, "LOC"), (9, 21, "PER")]:
        s = score_spans(gold, [[wrong]])
        assert (s.tp, s.fp, s.fn) == (0, 1, 1), wrong


def test_counts_are_summed_then_divided_not_averaged():
    # Sentence 1: 1/1 correct; sentence 2: 0/3 correct. Per-sentence averaging would give P = 0.5.
    gold = [[(0, 1, "A")], [(0, 1, "A"), (2, 3, "A"), (4, 5, "A")]]
    pred = [[(0, 1, "A")], [(0, 2, "A"), (2, 4, "A"), (4, 6, "A")]]
    s = score_spans(gold, pred)
    assert s.precision == pytest.approx(1 / 4) and s.recall == pytest.approx(1 / 4)


def test_duplicate_predictions_count_once_and_are_reported():
    s = score_spans([[(0, 3, "PER")]], [[(0, 3, "PER"), Mention(0, 3, "PER"), (4, 5, "LOC"), (4, 5, "LOC")]])
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    assert s.duplicate_predictions == 2 and s.duplicate_references == 0
    assert "2 duplicate predictions counted once" in str(s)
    s = score_spans([[(0, 3, "PER"), (0, 3, "PER")]], [[]])
    assert (s.tp, s.fp, s.fn, s.duplicate_references) == (0, 0, 1, 1)


def test_empty_gold_and_pred_give_zero_without_division_errors():
    for s in (score_spans([], []), score_spans([[], []], [[], []]), score_bio([["O", "O"]], [["O", "O"]])):
        assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
        assert s.per_type == {}
    assert score_bio([["O", "O"]], [["O", "O"]]).token_accuracy == 1.0
    only_pred = score_spans([[]], [[(0, 1, "X")]])
    assert (only_pred.precision, only_pred.recall, only_pred.f1, only_pred.per_type["X"].support) == (
        0,
        0,
        0,
        0,
    )
    only_gold = score_spans([[(0, 1, "X")]], [[]])
    assert (only_gold.precision, only_gold.recall, only_gold.f1) == (0, 0, 0)


def test_bio_strict_iob2_rules():
    assert bio_to_spans([]) == []
    assert bio_to_spans(["O", "O"]) == []
    assert bio_to_spans(["I-PER", "I-PER"]) == []  # stray I- at the start is not an entity
    assert bio_to_spans(["B-PER", "I-LOC", "I-LOC"]) == [(0, 1, "PER")]  # type change: I-LOC is stray
    assert bio_to_spans(["B-PER", "B-PER", "I-PER"]) == [(0, 1, "PER"), (1, 3, "PER")]
    assert bio_to_spans(["B-PER", "O", "I-PER"]) == [(0, 1, "PER")]
    assert bio_to_spans(["B-creative-work", "I-creative-work"]) == [(0, 2, "creative-work")]
    assert bio_to_spans(["O", "B-X", "I-X"]) == [(1, 3, "X")]  # entity running to the end
    s = score_bio([["B-PER", "I-PER", "O", "B-LOC"]], [["I-PER", "I-PER", "O", "B-LOC"]])
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    assert s.token_accuracy == pytest.approx(3 / 4)


@pytest.mark.parametrize("bad", ["X-PER", "B-", "PER", "b-PER", "", "B_PER", None])
def test_bad_tags_raise_with_position(bad):
    with pytest.raises(ValueError, match=r"sentence 0: gold tag #1"):
        score_bio([["O", bad]], [["O", "O"]])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2 gold sentences but 1 predicted"):
        score_spans([[], []], [[]])
    with pytest.raises(
        ValueError, match="sentence 1: the gold tags have 2 tokens but the predicted tags have 3"
    ):
        score_bio([["O"], ["O", "O"]], [["O"], ["O", "O", "O"]])
    with pytest.raises(ValueError, match=r"sentence 0: prediction span #1 .*start < end"):
        score_spans([[]], [[(0, 1, "A"), (3, 3, "A")]])
    with pytest.raises(ValueError, match=r"sentence 0: gold span #0 .*non-empty string"):
        score_spans([[(0, 1, "")]], [[]])
    with pytest.raises(ValueError, match="start and end must be integers"):
        score_spans([[(0.0, 1, "A")]], [[]])
    with pytest.raises(ValueError, match="lacks the key 'label'"):
        score_spans([[{"start": 0, "end": 1}]], [[]])
    with pytest.raises(ValueError, match="score_bio"):
        score_spans([["B-PER", "O"]], [["B-PER", "O"]])
    with pytest.raises(ValueError, match="not a string"):
        ScoreAccumulator().add_bio("B-PER", "B-PER")
    with pytest.raises(TypeError, match="ScoreAccumulator"):
        ScoreAccumulator().merge(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-negative int"):
        TypeScores.from_counts(-1, 0, 0)


def test_batches_are_all_or_nothing_and_generators_are_read_once():
    acc = ScoreAccumulator()
    acc.add([(0, 1, "A")], [(0, 1, "A")])
    before = acc.result()
    with pytest.raises(ValueError, match="sentence 2: gold tag #0"):
        acc.add_bio_batch([["B-A"], ["Z"]], [["B-A"], ["O"]])
    with pytest.raises(ValueError, match="sentence 2: prediction span #0"):
        acc.add_batch([[(0, 1, "A")], []], [[(0, 1, "A")], [(2, 1, "A")]])
    assert acc.result() == before
    s = AnnotatedSentence.from_tokens(["Ada", "met", "Bob"], [(0, 1, "PER"), (2, 3, "PER")])
    scores = evaluate_sentences([s], [(m for m in s.mentions)])
    assert (scores.tp, scores.fp, scores.fn) == (2, 0, 0)
    with pytest.raises(ValueError, match="ends after the sentence text"):
        evaluate_sentences([s, s], [[], [(0, 99, "PER")]], accumulator=acc)
    assert acc.result() == before


def test_span_dicts_and_numpy_ints_are_accepted():
    import numpy as np

    s = score_spans([[{"start": 0, "end": 2, "label": "A"}]], [[(np.int64(0), np.int32(2), "A")]])
    assert s.f1 == 1.0


def test_accumulator_merge_equals_one_pass_and_token_accuracy_only_for_bio():
    a, b, whole = ScoreAccumulator(), ScoreAccumulator(), ScoreAccumulator()
    a.add_bio(["B-A", "I-A", "O"], ["B-A", "I-A", "O"])
    b.add_bio(["B-B", "O"], ["B-A", "O"])
    whole.add_bio_batch([["B-A", "I-A", "O"], ["B-B", "O"]], [["B-A", "I-A", "O"], ["B-A", "O"]])
    assert a.merge(b).result() == whole.result()
    assert whole.result().token_accuracy == pytest.approx(4 / 5)
    mixed = ScoreAccumulator().merge(whole)
    mixed.add([(0, 1, "A")], [(0, 1, "A")])
    assert mixed.result().token_accuracy is None and mixed.result().num_sentences == 3


def test_evaluate_sentences_on_character_offsets_and_accumulates_episodes():
    s1 = AnnotatedSentence.from_tokens(
        ["Ada", "met", "Bob", "in", "Paris"], [(0, 1, "PER"), (2, 3, "PER"), (4, 5, "LOC")]
    )
    s2 = AnnotatedSentence.from_text("Nothing here.", [])
    pred = [[Mention(0, 3, "PER"), Mention(8, 11, "LOC"), Mention(15, 20, "LOC")], []]
    scores = evaluate_sentences([s1, s2], pred)
    assert (scores.tp, scores.fp, scores.fn) == (2, 1, 1)
    acc = ScoreAccumulator()
    evaluate_sentences([s1], [pred[0]], accumulator=acc)
    total = evaluate_sentences([s2], [[(0, 7, "MISC")]], accumulator=acc)
    assert (total.tp, total.fp, total.fn, total.num_sentences) == (2, 2, 1, 2)
    with pytest.raises(ValueError, match="ends after the sentence text"):
        evaluate_sentences([s2], [[(0, 99, "X")]])
    with pytest.raises(ValueError, match="2 gold sentences but 1 prediction lists"):
        evaluate_sentences([s1, s2], [[]])


def test_to_dict_table_and_seqeval_layout():
    s = score_bio([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "I-PER", "O", "B-ORG"]])
    d = s.to_dict()
    assert d["tp"] == 1 and d["fp"] == 1 and d["fn"] == 1 and d["support"] == 2
    assert set(d["per_type"]) == {"LOC", "ORG", "PER"}
    sd = s.to_seqeval_dict()
    assert sd["PER"]["number"] == 1 and sd["overall_f1"] == pytest.approx(0.5)
    assert sd["overall_accuracy"] == pytest.approx(3 / 4)
    text = str(s)
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["type", "precision", "recall", "f1", "support"]
    assert any(line.startswith("PER") and "100.00" in line for line in lines)
    assert any(line.startswith("micro avg") and "50.00" in line for line in lines)
    assert isinstance(s, NERScores)


# ----------------------------------------------------------------------------------------------------------------
# agreement with seqeval (mode="strict", scheme=IOB2) on real files


def _read_bio_file(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Tokens and gold IOB2 tags of a real BIO file, through the package reader."""
    from cllmfs_hf.data.readers import read_conll

    sentences = read_conll(path)
    tokens, tags = [s.tokens for s in sentences], [s.to_bio() for s in sentences]
    # Cross-check: the reader's tags are the file's own tag column, sentence by sentence.
    blocks = [b for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    assert [[line.split("\t")[-1] for line in b.strip("\n").split("\n")] for b in blocks] == tags
    return tokens, tags


def _perturb(tags: list[str], labels: list[str], rng: random.Random) -> list[str]:
    """Deterministic noisy predictions: drop entities, shift boundaries, change types, add stray I- and extra B-."""
    out = list(tags)
    n = len(out)
    for start, end, label in bio_to_spans(tags):
        action = rng.random()
        if action < 0.45:
            continue  # keep
        for i in range(start, end):
            out[i] = "O"
        if action < 0.6:
            continue  # drop
        if action < 0.75:  # shift one boundary
            start = max(0, min(n - 1, start + rng.choice([-1, 1])))
            end = max(start + 1, min(n, end + rng.choice([-1, 0, 1])))
        elif action < 0.9:  # change the type
            label = rng.choice([x for x in labels if x != label] or [label])
        else:  # an I- tag without its B- (strict: not an entity)
            out[start] = f"I-{label}"
            for i in range(start + 1, end):
                out[i] = f"I-{label}"
            continue
        out[start] = f"B-{label}"
        for i in range(start + 1, end):
            out[i] = f"I-{label}"
    if n and rng.random() < 0.3:  # a stray I- somewhere
        out[rng.randrange(n)] = f"I-{rng.choice(labels)}"
    if n and rng.random() < 0.2:  # a spurious entity
        i = rng.randrange(n)
        out[i] = f"B-{rng.choice(labels)}"
    return out


def _assert_agrees_with_seqeval(gold: list[list[str]], pred: list[list[str]]) -> NERScores:
    ours = score_bio(gold, pred)
    kw = {"mode": "strict", "scheme": IOB2, "zero_division": 0}
    assert ours.precision == pytest.approx(precision_score(gold, pred, **kw), abs=1e-9)
    assert ours.recall == pytest.approx(recall_score(gold, pred, **kw), abs=1e-9)
    assert ours.f1 == pytest.approx(f1_score(gold, pred, **kw), abs=1e-9)
    report = classification_report(gold, pred, output_dict=True, **kw)
    types = {k for k in report if not k.endswith(" avg")}
    assert types == set(ours.per_type)
    for label in types:
        theirs, mine = report[label], ours.per_type[label]
        assert mine.precision == pytest.approx(theirs["precision"], abs=1e-9), label
        assert mine.recall == pytest.approx(theirs["recall"], abs=1e-9), label
        assert mine.f1 == pytest.approx(theirs["f1-score"], abs=1e-9), label
        assert mine.support == theirs["support"], label
    assert ours.support == report["micro avg"]["support"]
    return ours


REAL_FILES = [
    "crossner/politics/test.txt",
    "crossner/science/test.txt",
    "wnut17/emerging.dev.conll",
    "bio/NCBI-disease-IOB/test.tsv",
]
# The committed excerpts (tests/fixtures/data/SOURCE.md): the same check on a few real sentences, without ../shared.
EXCERPT_FILES = ["crossner_politics_test_head.txt", "ncbi_disease_train_head.tsv"]


@pytest.mark.parametrize("name", EXCERPT_FILES)
def test_agrees_with_seqeval_strict_on_real_excerpts(fixture_data, name):
    _check_agreement_on_file(fixture_data / name, seed=name)


@pytest.mark.needs_shared_data(
    "whole real BIO files (CrossNER politics and science test, WNUT-17 dev, NCBI-disease test): "
    "thousands of mentions and every tag pattern they hold"
)
@pytest.mark.parametrize("relative", REAL_FILES)
def test_agrees_with_seqeval_strict_on_real_files(shared_data, relative):
    _check_agreement_on_file(shared_data / relative, seed=relative)


def _check_agreement_on_file(path: Path, seed: str) -> None:
    """Noisy predictions seeded by ``seed`` agree with seqeval (strict IOB2) on the file's gold tags."""
    tokens, gold = _read_bio_file(path)
    labels = sorted({span[2] for tags in gold for span in bio_to_spans(tags)})
    rng = random.Random(seed)
    pred = [_perturb(tags, labels, rng) for tags in gold]
    assert pred != gold
    ours = _assert_agrees_with_seqeval(gold, pred)
    assert 0.2 < ours.f1 < 0.9  # the perturbations really change the score
    # Identity: everything right.
    perfect = _assert_agrees_with_seqeval(gold, gold)
    assert perfect.precision == perfect.recall == perfect.f1 == 1.0
    # The same predictions as character spans on AnnotatedSentence objects give the same numbers.
    sentences = [AnnotatedSentence.from_tokens(t, bio_to_spans(g)) for t, g in zip(tokens, gold)]
    pred_mentions = [
        [Mention(s.token_offsets[a][0], s.token_offsets[b - 1][1], label) for a, b, label in bio_to_spans(p)]
        for s, p in zip(sentences, pred)
    ]
    by_chars = evaluate_sentences(sentences, pred_mentions)
    assert (by_chars.tp, by_chars.fp, by_chars.fn) == (ours.tp, ours.fp, ours.fn)
    assert by_chars.per_type == ours.per_type


def test_seqeval_default_mode_differs_on_stray_i_and_we_follow_strict():
    gold, pred = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    assert f1_score(gold, pred) == 1.0  # seqeval's lenient default counts the stray I- span
    assert score_bio(gold, pred).f1 == 0.0 == f1_score(gold, pred, mode="strict", scheme=IOB2)


# ----------------------------------------------------------------------------------------------------------------
# properties

TAGS = ["O", "O", "O", "B-A", "I-A", "B-B", "I-B", "B-C-D", "I-C-D"]
sentence_tags = st.lists(st.sampled_from(TAGS), min_size=0, max_size=10)


@st.composite
def gold_pred_pairs(draw):
    n = draw(st.integers(min_value=0, max_value=6))
    gold, pred = [], []
    for _ in range(n):
        g = draw(sentence_tags)
        p = draw(st.lists(st.sampled_from(TAGS), min_size=len(g), max_size=len(g)))
        gold.append(g)
        pred.append(p)
    return gold, pred


@settings(max_examples=150, deadline=None)
@given(gold_pred_pairs())
def test_property_span_and_bio_inputs_agree(pair):
    gold, pred = pair
    by_tags = score_bio(gold, pred)
    by_spans = score_spans([bio_to_spans(g) for g in gold], [bio_to_spans(p) for p in pred])
    assert (by_tags.tp, by_tags.fp, by_tags.fn) == (by_spans.tp, by_spans.fp, by_spans.fn)
    assert by_tags.per_type == by_spans.per_type
    assert (by_tags.precision, by_tags.recall, by_tags.f1) == (
        by_spans.precision,
        by_spans.recall,
        by_spans.f1,
    )


@settings(max_examples=150, deadline=None)
@given(gold_pred_pairs())
def test_property_matches_seqeval_strict(pair):
    gold, pred = pair
    ours = score_bio(gold, pred)
    if not any(bio_to_spans(g) or bio_to_spans(p) for g, p in zip(gold, pred)):
        assert ours.f1 == 0.0  # seqeval's report cannot be built without any entity
        return
    _assert_agrees_with_seqeval(gold, pred)


@settings(max_examples=100, deadline=None)
@given(gold_pred_pairs(), st.randoms(use_true_random=False))
def test_property_permutation_invariance(pair, rnd):
    gold, pred = pair
    order = list(range(len(gold)))
    rnd.shuffle(order)
    a = score_bio(gold, pred)
    b = score_bio([gold[i] for i in order], [pred[i] for i in order])
    assert (a.tp, a.fp, a.fn, a.per_type) == (b.tp, b.fp, b.fn, b.per_type)
    # Shuffling the spans inside each sentence changes nothing either.
    spans = [bio_to_spans(p) for p in pred]
    shuffled = [rnd.sample(s, len(s)) for s in spans]
    assert score_spans([bio_to_spans(g) for g in gold], spans) == score_spans(
        [bio_to_spans(g) for g in gold], shuffled
    )


@settings(max_examples=100, deadline=None)
@given(gold_pred_pairs())
def test_property_identity_scores_one(pair):
    gold, _ = pair
    s = score_bio(gold, gold)
    if any(bio_to_spans(g) for g in gold):
        assert s.precision == s.recall == s.f1 == 1.0
        assert all(t.f1 == 1.0 for t in s.per_type.values())
    else:
        assert s.precision == s.recall == s.f1 == 0.0


@settings(max_examples=100, deadline=None)
@given(gold_pred_pairs(), st.integers(min_value=0, max_value=6))
def test_property_split_and_merge_equals_one_pass(pair, cut):
    gold, pred = pair
    cut = min(cut, len(gold))
    first, second = ScoreAccumulator(), ScoreAccumulator()
    first.add_bio_batch(gold[:cut], pred[:cut])
    second.add_bio_batch(gold[cut:], pred[cut:])
    assert first.merge(second).result() == score_bio(gold, pred)
