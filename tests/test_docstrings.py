"""Every runnable example in the package's docstrings gives what it says (examples marked ``+SKIP`` need a real
model or the network and are not run). A docstring example is documentation a user copies: a wrong one is a bug."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from types import ModuleType

import pytest

import cllmfs_hf


def _modules() -> list[str]:
    names = [cllmfs_hf.__name__]
    for info in pkgutil.walk_packages(cllmfs_hf.__path__, prefix=f"{cllmfs_hf.__name__}."):
        names.append(info.name)
    return sorted(names)


def _run_examples(module: ModuleType) -> doctest.TestResults:
    return doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = _run_examples(importlib.import_module(name))
    assert result.failed == 0, (
        f"{name}: {result.failed} of {result.attempted} docstring examples failed (see above)"
    )


def test_metric_script_examples_run(monkeypatch) -> None:
    """The `evaluate` metric script is loaded from its path, not imported as a package module."""
    from cllmfs_hf.evaluation import METRIC_PATH

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = sorted(METRIC_PATH.glob("*.py"))[0]
    spec = importlib.util.spec_from_file_location("cllmfs_ner_metric_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = _run_examples(module)
    assert result.attempted > 0 and result.failed == 0, (
        f"{script}: {result.failed} of {result.attempted} failed"
    )
