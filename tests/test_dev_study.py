"""benchmarks/dev_study.py: variants against a reference on the dev split, paired by (dataset, K, seed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import dev_study  # noqa: E402


def _result(path: Path, runs: dict, split: str = "dev", indices=(0, 1, 2), overrides=()) -> str:
    body = {
        "config": {"eval_split": split, "cllmfs_overrides": list(overrides)},
        "datasets": {"d1": {"test_sample_indices": list(indices)}},
        "runs": [
            {
                "dataset": "d1",
                "k": 5,
                "seed": seed,
                "system": system,
                "f1": f1,
                "per_sentence_counts": counts,
                "support_sentences": 3,
                "train_records": 9,
                "loss_terms": {
                    "contrastive_loss": [3.0, 2.0],
                    "contrastive_pos_cos": [0.7, 0.8],
                    "contrastive_neg_cos": [0.7, 0.6],
                }
                if system != "sft"
                else {},
            }
            for (system, seed), (f1, counts) in runs.items()
        ],
    }
    path.write_text(json.dumps(body), encoding="utf-8")
    return str(path)


def test_variant_against_reference_and_refusals(tmp_path: Path) -> None:
    # sentence counts (tp, fp, fn): the reference finds nothing, the variant finds every gold mention
    miss = [[0, 0, 1], [0, 0, 1], [0, 0, 2]]
    hit = [[1, 0, 0], [1, 0, 0], [2, 0, 0]]
    base = _result(tmp_path / "base.json", {("sft", 0): (0.0, miss), ("sft", 1): (0.0, miss)})
    var = _result(
        tmp_path / "var.json",
        {("cllmfs_infonce", 0): (1.0, hit), ("cllmfs_infonce", 1): (1.0, hit)},
        overrides=["contrastive_centering=prompt_mean"],
    )
    study = dev_study.study_rows(f"sft={base}:sft", [f"centred={var}:cllmfs_infonce"], resamples=50)
    ref, row = study["rows"]
    assert ref["delta_vs_reference"]["delta"] == 0.0 and row["f1"] == {"d1": 100.0}
    assert row["delta_vs_reference"]["delta"] == pytest.approx(1.0)
    assert row["delta_vs_reference"]["low"] == pytest.approx(1.0)  # every resample: +100 points
    assert row["terms"]["contrastive_loss_first"] == 3.0 and row["terms"]["cos_gap_last"] == pytest.approx(
        0.2
    )
    assert row["config_overrides"] == ["contrastive_centering=prompt_mean"]
    table = dev_study.render(study)
    assert "| centred | 100.0 | 100.0 | +100.0 (+100.0, +100.0) | 3.00 -> 2.00 | +0.000 -> +0.200 |" in table

    test_split = _result(tmp_path / "test.json", {("sft", 0): (0.0, miss)}, split="test")
    with pytest.raises(ValueError, match="not scored on the dev split"):
        dev_study.study_rows(f"{test_split}:sft", [])
    other = _result(tmp_path / "other.json", {("cllmfs_infonce", 0): (1.0, hit)}, indices=(0, 1, 3))
    with pytest.raises(ValueError, match="other dev sentences"):
        dev_study.study_rows(f"{base}:sft", [f"{other}:cllmfs_infonce"])
    with pytest.raises(ValueError, match=r"no run of system 'cllmfs_full' \(it has \['cllmfs_infonce'\]\)"):
        dev_study.study_rows(f"{base}:sft", [f"{var}:cllmfs_full"])
    with pytest.raises(ValueError, match="expected \\[label=\\]path.json:system"):
        dev_study.study_rows(base, [])
