"""Entity type names, normalised in exactly one place.

A *label* is the type as the dataset spells it after the BIO prefix is removed (``politicalparty``,
``PER``, ``person-actor``); labels are what mentions carry and what evaluation compares, so scores stay
comparable with the literature. A *type name* is the readable form used in prompts (``political party``,
``person``, ``actor``): :func:`type_name` is the only function that derives it.

Example:
    >>> type_name("politicalparty"), type_name("PER"), type_name("person-actor")
    ('political party', 'person', 'actor')
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["check_entity_types", "normalize_label", "type_name", "TYPE_NAME_OVERRIDES"]

# Abbreviations and run-together names whose readable form cannot be derived mechanically.
TYPE_NAME_OVERRIDES: dict[str, str] = {
    "per": "person",
    "pers": "person",
    "loc": "location",
    "org": "organisation",
    "misc": "miscellaneous",
    "gpe": "geopolitical entity",
    "norp": "nationality, religious or political group",
    "fac": "facility",
    "politicalparty": "political party",
    "astronomicalobject": "astronomical object",
    "chemicalcompound": "chemical compound",
    "chemicalelement": "chemical element",
    "academicjournal": "academic journal",
    "musicalartist": "musical artist",
    "musicalinstrument": "musical instrument",
    "musicgenre": "music genre",
    "literarygenre": "literary genre",
    "programlang": "programming language",
    "creative-work": "creative work",
    "work_of_art": "work of art",
    "other-biologything": "biological thing",
    "art-broadcastprogram": "broadcast program",
    "art-writtenart": "written art",
    "building-sportsfacility": "sports facility",
    "organization-sportsteam": "sports team",
    "organization-sportsleague": "sports league",
    "organization-politicalparty": "political party",
    "organization-showorganization": "show organisation",
    "person-politician": "politician",
    "location-gpe": "geopolitical entity",
    "location-bodiesofwater": "body of water",
    "other-chemicalthing": "chemical",
    "event-attack/battle/war/militaryconflict": "attack, battle, war or military conflict",
    "product-software": "software",
    # Few-NERD fine types whose fine part alone is ambiguous ("other" under eight coarse types) or run together.
    "art-other": "other work of art",
    "art-music": "musical work",
    "building-other": "other building",
    "event-other": "other event",
    "location-other": "other location",
    "organization-other": "other organisation",
    "person-other": "other person",
    "product-other": "other product",
    "event-sportsevent": "sports event",
    "location-road/railway/highway/transit": "road, railway, highway or transit",
    "organization-education": "educational institution",
    "organization-government/governmentagency": "government or government agency",
    "organization-media/newspaper": "media or newspaper",
    "other-astronomything": "astronomical object",
    "other-educationaldegree": "educational degree",
    "other-livingthing": "living thing",
    "other-medical": "medical term",
    "person-artist/author": "artist or author",
}


def normalize_label(raw: str) -> str:
    """The canonical label for a raw tag suffix: surrounding whitespace removed, nothing else changed.

    Labels keep the dataset's own spelling (case included) so that scores match other tools.
    """
    label = raw.strip()
    if not label:
        raise ValueError("An entity type label must be a non-empty string.")
    return label


def type_name(label: str) -> str:
    """The readable type name used in instructions for ``label``."""
    key = label.strip().lower()
    if key in TYPE_NAME_OVERRIDES:
        return TYPE_NAME_OVERRIDES[key]
    # Few-NERD coarse-fine labels: the fine part is the readable type ("person-actor" -> "actor").
    if "-" in key and key.split("-", 1)[0] in {
        "person",
        "location",
        "organization",
        "building",
        "art",
        "product",
        "event",
        "other",
    }:
        key = key.split("-", 1)[1]
    key = re.sub(r"[_\-/]+", " ", key)
    return re.sub(r"\s+", " ", key).strip()


def check_entity_types(types: Any, name: str = "entity_types") -> list[str]:
    """``types`` as a list of non-empty label strings without repeats (first occurrence kept); ``name`` is
    the argument named in the errors.

    Example:
        >>> check_entity_types(["PER", "LOC", "PER"])
        ['PER', 'LOC']
        >>> check_entity_types("PER")
        Traceback (most recent call last):
        ...
        TypeError: entity_types must be a list of labels, got the string 'PER': pass ['PER'].
    """
    if isinstance(types, str):
        raise TypeError(f"{name} must be a list of labels, got the string {types!r}: pass [{types!r}].")
    try:
        types = list(types)
    except TypeError:
        raise TypeError(f"{name} must be a list of labels, got {type(types).__name__}.") from None
    if not types:
        raise ValueError(f"{name} is empty: pass at least one entity type, e.g. ['person', 'location'].")
    out: list[str] = []
    for i, t in enumerate(types):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str label, got {type(t).__name__} {t!r}.")
        if not t.strip():
            raise ValueError(f"{name}[{i}] is an empty label: remove it or give the type's name.")
        if t not in out:
            out.append(t)
    return out
