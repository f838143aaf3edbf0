"""cllmfs_ner: entity-level micro precision, recall and F1 (exact start, end and type), offline.

An ``evaluate`` metric module shipped inside the ``cllmfs_hf`` package. Load it by path, no Hub needed:

    >>> import evaluate, cllmfs_hf.evaluation as ev
    >>> metric = evaluate.load(str(ev.METRIC_PATH))                          # BIO tag sequences
    >>> spans = evaluate.load(str(ev.METRIC_PATH), config_name="spans")      # span lists

All the scoring is done by ``cllmfs_hf.evaluation`` (this file only adapts the ``evaluate`` interface).
"""

import datasets
import evaluate

from cllmfs_hf.evaluation import ScoreAccumulator

_CITATION = """\
@inproceedings{zhang2024cllmfs,
  title={CLLMFS: A Contrastive Learning enhanced Large Language Model Framework for Few-Shot Named Entity Recognition},
  author={Zhang, Yafeng and Yu, Zilan and Huang, Yuang and Tang, Jing},
  booktitle={ECAI 2024},
  year={2024}
}
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  author={Hiroki Nakayama},
  year={2018},
  url={https://github.com/chakki-works/seqeval}
}
"""

_DESCRIPTION = """\
Entity-level micro precision, recall and F1 for named entity recognition. A predicted entity counts only when
its start, end and type equal those of a gold entity of the same sentence; true positives, false positives and
false negatives are summed over all sentences (and over all `add_batch` calls, e.g. all episodes) before
dividing. Per-type scores are reported too.

Two input formats, chosen with `config_name`:
- "default" (or "bio"): IOB2 tag sequences, read in seqeval's strict mode (`mode="strict", scheme=IOB2`): a
  stray `I-X` that does not continue an entity of type X is not an entity. The results equal seqeval's strict
  mode (the Hub's "seqeval" metric uses the lenient default mode, which counts a stray `I-X` as an entity).
- "spans": one list of spans per sentence, each span a dict {"start": int, "end": int, "label": str} with an
  exclusive end (character or token offsets; predictions and references must use the same ones).
A span predicted twice in one sentence counts once. With no gold and no predicted entity, all scores are 0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one entry per sentence. "default"/"bio": a list of tags ("O", "B-PER", "I-PER", ...);
        "spans": a list of {"start", "end", "label"} dicts.
    references: the gold entries, in the same format and order as the predictions.
Returns:
    A dict like seqeval's: for every type seen in references or predictions, `{type: {"precision", "recall",
    "f1", "number", "tp", "fp", "fn"}}` ("number" is the gold support); then "overall_precision",
    "overall_recall", "overall_f1", "overall_tp", "overall_fp", "overall_fn", and for BIO input
    "overall_accuracy" (token-level tag accuracy). Scores are fractions in [0, 1].
Examples:
    >>> import evaluate, cllmfs_hf.evaluation
    >>> metric = evaluate.load(str(cllmfs_hf.evaluation.METRIC_PATH))
    >>> metric.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["overall_f1"]
    1.0
    >>> spans = evaluate.load(str(cllmfs_hf.evaluation.METRIC_PATH), config_name="spans")
    >>> spans.compute(predictions=[[{"start": 0, "end": 3, "label": "PER"}]], references=[[]])["overall_precision"]
    0.0
"""

_BIO_CONFIGS = ("default", "bio")
_SPAN_CONFIGS = ("spans",)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CllmfsNer(evaluate.Metric):
    """Entity-level micro P/R/F1 (exact match) over BIO tag sequences or span lists."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name in _BIO_CONFIGS:
            sentence = datasets.List(datasets.Value("string"))
        elif self.config_name in _SPAN_CONFIGS:
            sentence = datasets.List(
                {
                    "start": datasets.Value("int64"),
                    "end": datasets.Value("int64"),
                    "label": datasets.Value("string"),
                }
            )
        else:
            raise ValueError(
                f"Unknown config_name {self.config_name!r} for the cllmfs_ner metric: use "
                f"{_BIO_CONFIGS + _SPAN_CONFIGS} (default: BIO tag sequences; 'spans': span dicts)."
            )
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": sentence, "references": sentence}),
            codebase_urls=["https://github.com/chakki-works/seqeval"],
            reference_urls=["https://arxiv.org/abs/2408.12834"],
        )

    def _compute(self, predictions, references):
        accumulator = ScoreAccumulator()
        if self.config_name in _SPAN_CONFIGS:
            accumulator.add_batch(list(references), list(predictions))
        else:
            accumulator.add_bio_batch(list(references), list(predictions))
        return accumulator.result().to_seqeval_dict()
