"""The ``evaluate`` metric module shipped in the package: loads offline by path, agrees with evaluation.py."""

from __future__ import annotations

import random

import pytest
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from cllmfs_hf.data.readers import read_conll
from cllmfs_hf.evaluation import METRIC_PATH, bio_to_spans, load_metric, score_bio, score_spans


def _span_dicts(tags: list[str]) -> list[dict]:
    return [{"start": a, "end": b, "label": label} for a, b, label in bio_to_spans(tags)]


@pytest.fixture(scope="module")
def politics_test(politics_test_head):
    """Gold tags of CrossNER politics test (its first 25 sentences, the committed excerpt) and deterministic noisy
    predictions (shifted/retyped/dropped)."""
    gold = [s.to_bio() for s in read_conll(politics_test_head)]
    labels = sorted({span[2] for tags in gold for span in bio_to_spans(tags)})
    rng = random.Random(7)
    pred = []
    for tags in gold:
        out = list(tags)
        for start, end, label in bio_to_spans(tags):
            r = rng.random()
            if r < 0.2:
                out[start:end] = ["O"] * (end - start)
            elif r < 0.35:
                out[start] = "B-" + rng.choice(labels)
                out[start + 1 : end] = ["I-" + out[start][2:]] * (end - start - 1)
            elif r < 0.45:
                out[start] = "I-" + label  # stray I-: not an entity in strict IOB2
        pred.append(out)
    return gold, pred


def test_metric_ships_inside_the_package():
    assert METRIC_PATH.is_dir()
    assert (METRIC_PATH / "cllmfs_ner.py").is_file()
    assert METRIC_PATH.parent.parent.name == "cllmfs_hf"


def test_bio_metric_loads_offline_and_matches_evaluation_and_seqeval(politics_test):
    import evaluate

    gold, pred = politics_test
    metric = evaluate.load(str(METRIC_PATH))
    result = metric.compute(predictions=pred, references=gold)
    ours = score_bio(gold, pred)
    assert result == ours.to_seqeval_dict()
    assert 0.3 < result["overall_f1"] < 0.95
    report = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    assert result["overall_precision"] == pytest.approx(report["micro avg"]["precision"], abs=1e-9)
    assert result["overall_recall"] == pytest.approx(report["micro avg"]["recall"], abs=1e-9)
    assert result["overall_f1"] == pytest.approx(report["micro avg"]["f1-score"], abs=1e-9)
    for label in ours.per_type:
        assert result[label]["f1"] == pytest.approx(report[label]["f1-score"], abs=1e-9)
        assert result[label]["number"] == report[label]["support"]
    tokens = sum(len(t) for t in gold)
    same = sum(g == p for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
    assert result["overall_accuracy"] == pytest.approx(same / tokens)


def test_add_batch_sums_counts_like_one_call(politics_test):
    gold, pred = politics_test
    metric = load_metric()
    starts = range(0, len(gold), 10)
    assert len(starts) == 3  # the 25 sentences in batches of 10, 10 and 5
    for start in starts:
        metric.add_batch(predictions=pred[start : start + 10], references=gold[start : start + 10])
    assert metric.compute() == score_bio(gold, pred).to_seqeval_dict()


def test_span_config_matches_bio_config(politics_test):
    gold, pred = politics_test
    spans = load_metric(config_name="spans")
    result = spans.compute(
        predictions=[_span_dicts(p) for p in pred], references=[_span_dicts(g) for g in gold]
    )
    expected = score_spans([bio_to_spans(g) for g in gold], [bio_to_spans(p) for p in pred]).to_seqeval_dict()
    assert result == expected
    bio = score_bio(gold, pred).to_seqeval_dict()
    bio.pop("overall_accuracy")
    assert result == bio


def test_span_config_edge_cases():
    spans = load_metric(config_name="spans")
    empty = spans.compute(predictions=[[], []], references=[[], []])
    assert (empty["overall_precision"], empty["overall_recall"], empty["overall_f1"]) == (0.0, 0.0, 0.0)
    dup = {"start": 0, "end": 3, "label": "PER"}
    result = spans.compute(predictions=[[dup, dup]], references=[[dup]])
    assert result["overall_precision"] == 1.0 and result["PER"]["number"] == 1


def test_metric_errors_are_clear():
    with pytest.raises(ValueError, match="Unknown config_name 'conll'.*'spans'"):
        load_metric(config_name="conll")
    metric = load_metric()
    with pytest.raises(
        ValueError, match="sentence 0: the gold tags have 2 tokens but the predicted tags have 1"
    ):
        metric.compute(predictions=[["B-PER"]], references=[["B-PER", "O"]])
    with pytest.raises(ValueError, match="gold tag #0 is 'PER'"):
        metric.compute(predictions=[["O"]], references=[["PER"]])
    spans = load_metric(config_name="spans")
    with pytest.raises(ValueError, match=r"start < end"):
        spans.compute(predictions=[[{"start": 4, "end": 2, "label": "X"}]], references=[[]])
