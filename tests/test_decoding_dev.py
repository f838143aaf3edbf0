"""benchmarks/decoding_dev.py: its variants are SpanConstraintConfig fields, checked before any model loads."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.decoding_dev import parse_variant  # noqa: E402


def test_variants_are_constraint_fields_with_typed_values():
    assert parse_variant("default") == {}
    assert parse_variant("ordered_spans=false") == {"ordered_spans": False}
    assert parse_variant("max_spans=3,max_spans_per_word=none") == {
        "max_spans": 3,
        "max_spans_per_word": None,
    }
    assert parse_variant("max_spans_per_word=0.25") == {"max_spans_per_word": 0.25}


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("ordered=false", "SpanConstraintConfig field"),  # not a field
        ("preamble_in_prompt=true", "SpanConstraintConfig field"),  # the extractor sets it
        ("ordered_spans", "NAME=VALUE"),
        ("max_spans=many", "not true/false/none or a number"),
        ("max_spans=0", "max_spans must be None or an integer >= 1"),  # the config's own check
    ],
)
def test_bad_variants_name_the_fix(text, named):
    with pytest.raises(ValueError, match=named):
        parse_variant(text)
