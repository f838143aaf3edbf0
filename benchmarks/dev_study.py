"""Dev-split study table: every variant's F1 against one reference run, with paired-bootstrap CIs and its terms.

Each variant is a ``benchmarks/fewshot.py --eval_split dev`` result (one JSON per setting, so the reference
system is trained once). Runs are paired by (dataset, K, seed): the same support set and the same dev
sentences, which this script checks (same sample indices, same support and record counts) before comparing.

    python benchmarks/dev_study.py --reference outputs/dev/baseline.json:sft \\
        --variant "defaults=outputs/dev/baseline.json:cllmfs_infonce" \\
        --variant "centred=outputs/dev/centred.json:cllmfs_infonce" --output benchmarks/results/dev-study.md

Columns: F1 per dataset (mean over seeds), the average, the average difference to the reference with its 95%
stratified paired-bootstrap CI (:func:`benchmarks.stats.paired_bootstrap_multi`), and the logged terms (first
-> last contrastive loss and anchor-positive minus anchor-negative cosine, averaged over runs), which say
whether the term moved at all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

import numpy as np  # noqa: E402

from benchmarks.stats import paired_bootstrap_multi  # noqa: E402

__all__ = ["load_runs", "study_rows", "render", "main"]


def _split_spec(spec: str) -> tuple[str, str, str]:
    """``[label=]path.json:system`` -> (label, path, system)."""
    label, _, rest = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path, sep, system = rest.rpartition(":")
    if not sep or not path or not system:
        raise ValueError(
            f"{spec!r}: expected [label=]path.json:system, e.g. centred=out/dev/centred.json:cllmfs_infonce."
        )
    return label or f"{Path(path).stem}:{system}", path, system


def load_runs(path: str, system: str) -> tuple[dict[tuple[str, int, int], dict[str, Any]], dict[str, Any]]:
    """The runs of ``system`` in a fewshot result, keyed by (dataset, K, seed), and the result's datasets block."""
    result = json.loads(Path(path).read_text(encoding="utf-8"))
    if result.get("config", {}).get("eval_split") != "dev":
        raise ValueError(
            f"{path}: not scored on the dev split (config.eval_split); settings are chosen on dev only."
        )
    runs = {(r["dataset"], r["k"], r["seed"]): r for r in result["runs"] if r["system"] == system}
    if not runs:
        systems = sorted({r["system"] for r in result["runs"]})
        raise ValueError(f"{path}: no run of system {system!r} (it has {systems}).")
    return runs, result["datasets"]


def _terms(runs: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name in ("contrastive_loss", "adversarial_loss", "lm_loss"):
        pairs = [r["loss_terms"][name] for r in runs if r.get("loss_terms", {}).get(name)]
        if pairs:
            out[f"{name}_first"] = float(np.mean([p[0] for p in pairs]))
            out[f"{name}_last"] = float(np.mean([p[-1] for p in pairs]))
    gaps = [
        (r["loss_terms"]["contrastive_pos_cos"], r["loss_terms"]["contrastive_neg_cos"])
        for r in runs
        if r.get("loss_terms", {}).get("contrastive_pos_cos") and r["loss_terms"].get("contrastive_neg_cos")
    ]
    if gaps:
        out["cos_gap_first"] = float(np.mean([p[0] - n[0] for p, n in gaps]))
        out["cos_gap_last"] = float(np.mean([p[-1] - n[-1] for p, n in gaps]))
    return out


def study_rows(reference: str, variants: list[str], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Compare every variant with the reference on their common (dataset, K, seed) keys."""
    ref_label, ref_path, ref_system = _split_spec(reference)
    ref_runs, ref_datasets = load_runs(ref_path, ref_system)
    datasets = sorted({d for d, _, _ in ref_runs})
    rows = []
    for spec in [reference, *variants]:
        label, path, system = _split_spec(spec)
        runs, info = load_runs(path, system)
        keys = sorted(set(runs) & set(ref_runs))
        if not keys:
            raise ValueError(f"{path}:{system} shares no (dataset, K, seed) with the reference {ref_path}.")
        for d in {k[0] for k in keys}:
            if info[d]["test_sample_indices"] != ref_datasets[d]["test_sample_indices"]:
                raise ValueError(f"{path}: dataset {d} was scored on other dev sentences than {ref_path}.")
        for key in keys:
            a, b = ref_runs[key], runs[key]
            if (a["support_sentences"], a["train_records"]) != (b["support_sentences"], b["train_records"]):
                raise ValueError(
                    f"{path}: {key} has another support set than the reference (sentences/records "
                    f"{b['support_sentences']}/{b['train_records']} vs {a['support_sentences']}/{a['train_records']})."
                )
        per_dataset = {
            d: float(np.mean([runs[k]["f1"] for k in keys if k[0] == d])) * 100
            for d in datasets
            if any(k[0] == d for k in keys)
        }
        pairs = []
        for d in per_dataset:
            dk = [k for k in keys if k[0] == d]
            pairs.append(
                (
                    [ref_runs[k]["per_sentence_counts"] for k in dk],
                    [runs[k]["per_sentence_counts"] for k in dk],
                )
            )
        boot = paired_bootstrap_multi(pairs, resamples=resamples, seed=seed)
        rows.append(
            {
                "label": label,
                "file": path,
                "system": system,
                "seeds": sorted({k[2] for k in keys}),
                "f1": per_dataset,
                "average_f1": float(np.mean(list(per_dataset.values()))),
                "delta_vs_reference": boot.to_dict(),
                "terms": _terms([runs[k] for k in keys]),
                "config_overrides": json.loads(Path(path).read_text(encoding="utf-8"))["config"].get(
                    "cllmfs_overrides", []
                ),
            }
        )
    return {"reference": ref_label, "datasets": datasets, "rows": rows}


def render(study: dict[str, Any]) -> str:
    """A markdown table of :func:`study_rows`."""
    ds = study["datasets"]
    head = [
        "variant",
        *ds,
        "average",
        f"minus {study['reference']} (95% CI)",
        "CL first->last",
        "cos gap first->last",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in study["rows"]:
        d = r["delta_vs_reference"]
        t = r["terms"]
        cl = (
            f"{t['contrastive_loss_first']:.2f} -> {t['contrastive_loss_last']:.2f}"
            if "contrastive_loss_first" in t
            else "-"
        )
        gap = f"{t['cos_gap_first']:+.3f} -> {t['cos_gap_last']:+.3f}" if "cos_gap_first" in t else "-"
        cells = [f"{r['f1'][x]:.1f}" if x in r["f1"] else "-" for x in ds]
        delta = f"{100 * d['delta']:+.1f} ({100 * d['low']:+.1f}, {100 * d['high']:+.1f})"
        lines.append("| " + " | ".join([r["label"], *cells, f"{r['average_f1']:.1f}", delta, cl, gap]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference", required=True, help="[label=]path.json:system every variant is compared to."
    )
    parser.add_argument(
        "--variant", action="append", default=[], help="[label=]path.json:system (repeatable)."
    )
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--output", help="Markdown file; a .json with the same stem goes beside it.")
    args = parser.parse_args(argv)
    study = study_rows(args.reference, args.variant, resamples=args.resamples)
    text = render(study)
    print(text)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        out.with_suffix(".json").write_text(json.dumps(study, indent=2), encoding="utf-8")
    return study


if __name__ == "__main__":
    main()
