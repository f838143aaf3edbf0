"""The package's offline ``evaluate`` metric module (``cllmfs_hf/metrics/cllmfs_ner``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["METRIC_PATH", "load_metric"]

#: Folder of the ``evaluate`` metric module shipped in the package; ``evaluate.load(str(METRIC_PATH))``
#: works offline.
METRIC_PATH: Path = Path(__file__).resolve().parents[1] / "metrics" / "cllmfs_ner"


def load_metric(**kwargs: Any):
    """The package's ``evaluate`` metric, loaded offline from :data:`METRIC_PATH`.

    ``config_name="spans"`` selects span-list inputs; the default reads BIO tag sequences. Other keyword
    arguments go to ``evaluate.load``.

    Example:
        >>> metric = load_metric()  # doctest: +SKIP
        >>> metric.compute(predictions=[["B-PER", "O"]], references=[["B-PER", "O"]])["overall_f1"]  # doctest: +SKIP
        1.0
    """
    import evaluate

    return evaluate.load(str(METRIC_PATH), **kwargs)
