"""Built-in descriptions of common entity types, used in the instruction (METHOD.md section 1).

Lookup is by label (case-insensitive) then by readable type name; a user mapping overrides the table,
and an unknown type falls back to its readable name.

Example:
    >>> describe_type("PER")
    'names of people, including fictional characters'
    >>> describe_type("spaceship")
    'spaceship'
"""

from __future__ import annotations

from collections.abc import Mapping

from .labels import type_name

__all__ = ["TYPE_DESCRIPTIONS", "describe_type"]

TYPE_DESCRIPTIONS: dict[str, str] = {
    # CoNLL-2003 / WikiGold
    "per": "names of people, including fictional characters",
    "person": "names of people, including fictional characters",
    "loc": "names of locations such as countries, cities, regions, mountains and bodies of water",
    "location": "names of locations such as countries, cities, regions, mountains and bodies of water",
    "org": "names of organisations such as companies, institutions, agencies and teams",
    "organisation": "names of organisations such as companies, institutions, agencies and teams",
    "organization": "names of organisations such as companies, institutions, agencies and teams",
    "misc": "other named entities such as nationalities, events, works and products",
    "disease": "names of diseases, disorders and syndromes",
}


def describe_type(label: str, overrides: Mapping[str, str] | None = None) -> str:
    """The description used in the instruction for ``label``."""
    if overrides:
        if label in overrides:
            return overrides[label]
        lowered = {k.lower(): v for k, v in overrides.items()}
        if label.lower() in lowered:
            return lowered[label.lower()]
    name = type_name(label)
    for key in (label.strip().lower(), name.lower()):
        if key in TYPE_DESCRIPTIONS:
            return TYPE_DESCRIPTIONS[key]
    return name
