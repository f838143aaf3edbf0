"""The public names of issues 2-5 are importable from the top-level package, and only they are listed."""

import subprocess
import sys

import cllmfs_hf


def test_every_public_name_resolves():
    for name in cllmfs_hf.__all__:
        assert getattr(cllmfs_hf, name) is not None, name
    from cllmfs_hf import (  # noqa: F401
        CLLMFSConfig,
        CLLMFSTrainer,
        NERExtractor,
        SpanConstrainedLogitsProcessor,
        load_base_model,
    )


def test_unknown_name_raises_attribute_error():
    try:
        cllmfs_hf.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_data_layer_import_does_not_pull_trl():
    code = "import sys, cllmfs_hf; cllmfs_hf.read_dataset; print('trl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
