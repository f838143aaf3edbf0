"""The run report: metrics JSON, a markdown summary and plots (loss components over steps, per-type F1).

Example:
    >>> from cllmfs_hf.report import write_report
    >>> paths = write_report("outputs/demo", {"f1": 0.2, "precision": 0.3, "recall": 0.15, "per_type": {}},
    ...                      log_history=[])  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LOSS_KEYS", "write_report", "render_markdown", "plot_loss_components", "plot_per_type_f1"]

LOSS_KEYS = ("loss", "lm_loss", "contrastive_loss", "adversarial_loss")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def render_markdown(report: Mapping[str, Any]) -> str:
    """A readable summary of ``report`` (the dict written to report.json)."""
    lines = ["# CLLMFS run report", ""]
    if report.get("model"):
        lines.append(f"- base model: `{report['model']}`")
    if report.get("train_file"):
        lines.append(
            f"- support set: `{report['train_file']}` ({report.get('support_sentences', '?')} sentences, "
            f"{report.get('train_records', '?')} instruction records)"
        )
    if report.get("test_file"):
        lines.append(f"- test set: `{report['test_file']}` ({report.get('test_sentences', '?')} sentences)")
    if "train_seconds" in report:
        lines.append(
            f"- training time: {report['train_seconds']:.1f} s; evaluation time: "
            f"{report.get('eval_seconds', 0.0):.1f} s"
        )
    lines += ["", "| system | precision | recall | F1 |", "|---|---:|---:|---:|"]
    zs = report.get("zero_shot")
    if zs:
        lines.append(
            f"| zero-shot base model (constrained decoding) | {_pct(zs['precision'])} | "
            f"{_pct(zs['recall'])} | {_pct(zs['f1'])} |"
        )
    before = report.get("init_adapter_zero_shot")
    if before:
        lines.append(
            f"| `{report.get('init_adapter')}` as it was, before this training | {_pct(before['precision'])} | "
            f"{_pct(before['recall'])} | {_pct(before['f1'])} |"
        )
    # what trained it: a run with contrastive_weight=0 and no FGM is plain SFT, and says so
    objective = report.get("objective")
    lines.append(
        f"| this adapter{f' ({objective})' if objective else ''} | {_pct(report.get('precision'))} | "
        f"{_pct(report.get('recall'))} | {_pct(report.get('f1'))} |"
    )
    per_type = report.get("per_type") or {}
    if per_type:
        lines += [
            "",
            "## Per type (this adapter)",
            "",
            "| type | precision | recall | F1 | support |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, s in sorted(per_type.items()):
            lines.append(
                f"| {label} | {_pct(s['precision'])} | {_pct(s['recall'])} | {_pct(s['f1'])} | "
                f"{s.get('support', '')} |"
            )
    plots = report.get("plots") or {}
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({Path(p).name})" for name, p in plots.items()]
    lines.append("")
    return "\n".join(lines)


def plot_loss_components(log_history: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Training loss components over steps; None when the history has no loss entries."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {k: [(e["step"], e[k]) for e in log_history if k in e and "step" in e] for k in LOSS_KEYS}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=key)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss components")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_per_type_f1(
    per_type: Mapping[str, Mapping[str, float]],
    path: str | Path,
    baseline_per_type: Mapping[str, Mapping[str, float]] | None = None,
) -> Path | None:
    """Grouped bars of per-type F1 (the trained adapter, and the zero-shot baseline when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted(per_type)
    if not labels:
        return None
    width = 0.4 if baseline_per_type else 0.8
    xs = range(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(labels)), 4))
    ax.bar(
        [x - (width / 2 if baseline_per_type else 0) for x in xs],
        [100 * per_type[lb]["f1"] for lb in labels],
        width,
        label="this adapter",
    )
    if baseline_per_type:
        ax.bar(
            [x + width / 2 for x in xs],
            [100 * baseline_per_type.get(lb, {}).get("f1", 0.0) for lb in labels],
            width,
            label="zero-shot",
        )
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=30, ha="right")
    ax.set_ylabel("F1 (%)")
    ax.set_title("Per-type F1 on the test set")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_report(
    output_dir: str | Path, report: dict[str, Any], log_history: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Path]:
    """Write report.json, report.md, loss_components.png and per_type_f1.png into ``output_dir``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    loss_png = plot_loss_components(log_history, out / "loss_components.png")
    if loss_png:
        plots["loss_components"] = str(loss_png)
    f1_png = plot_per_type_f1(
        report.get("per_type") or {}, out / "per_type_f1.png", (report.get("zero_shot") or {}).get("per_type")
    )
    if f1_png:
        plots["per_type_f1"] = str(f1_png)
    report = {**report, "plots": plots}
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    return {**paths, **{k: Path(v) for k, v in plots.items()}}
