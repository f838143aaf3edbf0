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

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from .labels import type_name

__all__ = ["TYPE_DESCRIPTIONS", "describe_type", "read_descriptions"]

_PEOPLE = "names of people, including fictional characters"
_LOCATIONS = "names of locations such as countries, cities, regions, mountains and bodies of water"
_ORGANISATIONS = "names of organisations such as companies, institutions, agencies and teams"

# Keys are lower-case labels (as datasets spell them) or readable type names (labels.type_name); values are one
# short clause without a trailing period, read after "the entity of {type} refers to".
TYPE_DESCRIPTIONS: dict[str, str] = {
    # -- CoNLL-2003 / WikiGold ------------------------------------------------------------------------------
    "per": _PEOPLE,
    "person": _PEOPLE,
    "loc": _LOCATIONS,
    "location": _LOCATIONS,
    "org": _ORGANISATIONS,
    "organisation": _ORGANISATIONS,
    "organization": _ORGANISATIONS,
    "misc": "other named entities such as nationalities, events, works of art, products and languages",
    "miscellaneous": "other named entities such as nationalities, events, works of art, products and languages",
    # -- OntoNotes 5 (18 types; PERSON, ORG and LOC share the entries above) -------------------------------
    "norp": "nationalities, religious groups and political groups",
    "fac": "names of facilities such as buildings, airports, highways and bridges",
    "facility": "names of facilities such as buildings, airports, highways and bridges",
    "gpe": "geopolitical entities: countries, cities and states",
    "geopolitical entity": "geopolitical entities: countries, cities and states",
    "product": "names of products such as devices, vehicles, foods, software and other manufactured goods",
    "event": "names of events such as wars, battles, sports events, festivals and disasters",
    "work_of_art": "titles of books, songs, films, paintings and other works of art",
    "work of art": "titles of books, songs, films, paintings and other works of art",
    "law": "names of laws, treaties, constitutions and named legal documents",
    "language": "names of human languages",
    "date": "absolute or relative dates and periods",
    "time": "times shorter than a day",
    "percent": "percentages, including the percent sign or word",
    "money": "monetary values, including the unit",
    "quantity": "measurements such as weights, distances and volumes",
    "ordinal": "ordinal numbers such as first and second",
    "cardinal": "numbers that are not covered by another type",
    # -- Few-NERD coarse types -----------------------------------------------------------------------------
    "building": "names of buildings and facilities such as airports, hospitals, hotels, libraries and stadiums",
    "art": "titles of works of art such as films, music, paintings, books and broadcast programs",
    "other": "other named things such as awards, diseases, laws, languages, currencies and living things",
    # -- Few-NERD fine types (all 66, keyed by label) -----------------------------------------------------
    "art-broadcastprogram": "titles of television and radio programs and series",
    "art-film": "titles of films",
    "art-music": "titles of songs, albums and other musical works",
    "art-other": "titles of works of art that are not films, music, paintings, written works or broadcasts",
    "art-painting": "titles of paintings and other visual artworks",
    "art-writtenart": "titles of books, poems, plays, newspaper articles and other written works",
    "building-airport": "names of airports",
    "building-hospital": "names of hospitals and clinics",
    "building-hotel": "names of hotels and resorts",
    "building-library": "names of libraries",
    "building-other": "names of buildings and structures that are not airports, hospitals, hotels, libraries, "
    "restaurants, sports facilities or theaters",
    "building-restaurant": "names of restaurants, cafes and bars",
    "building-sportsfacility": "names of stadiums, arenas, race tracks and other sports venues",
    "building-theater": "names of theaters, opera houses and concert halls",
    "event-attack/battle/war/militaryconflict": "names of attacks, battles, wars and other military conflicts",
    "event-disaster": "names of natural and man-made disasters",
    "event-election": "names of elections and referendums",
    "event-other": "names of events that are not conflicts, disasters, elections, protests or sports events",
    "event-protest": "names of protests, uprisings and revolutions",
    "event-sportsevent": "names of sports competitions, tournaments, races and matches",
    "location-gpe": "geopolitical entities: countries, cities and states",
    "location-bodiesofwater": "names of oceans, seas, lakes, rivers and other bodies of water",
    "location-island": "names of islands and archipelagos",
    "location-mountain": "names of mountains, mountain ranges and volcanoes",
    "location-other": "names of locations that are not geopolitical entities, waters, islands, mountains, parks "
    "or roads",
    "location-park": "names of parks, gardens and nature reserves",
    "location-road/railway/highway/transit": "names of roads, streets, railways, highways and transit lines",
    "organization-company": "names of companies and businesses",
    "organization-education": "names of schools, universities and other educational institutions",
    "organization-government/governmentagency": "names of governments, ministries and government agencies",
    "organization-media/newspaper": "names of newspapers, magazines, broadcasters and other media organisations",
    "organization-other": "names of organisations that are not companies, schools, governments, media, parties, "
    "religious groups or sports bodies",
    "organization-politicalparty": "names of political parties",
    "organization-religion": "names of religions, churches and religious organisations",
    "organization-showorganization": "names of bands, orchestras, theatre companies and other performing groups",
    "organization-sportsleague": "names of sports leagues and associations",
    "organization-sportsteam": "names of sports teams and clubs",
    "other-astronomything": "names of stars, planets, galaxies and other astronomical objects",
    "other-award": "names of awards, prizes and honours",
    "other-biologything": "names of genes, proteins, cells, anatomical parts and other biological entities",
    "other-chemicalthing": "names of chemical elements, compounds and materials",
    "other-currency": "names of currencies",
    "other-disease": "names of diseases, disorders and syndromes",
    "other-educationaldegree": "names of academic degrees and qualifications",
    "other-god": "names of gods and deities",
    "other-language": "names of human languages",
    "other-law": "names of laws, treaties, acts and other legal documents",
    "other-livingthing": "names of species, breeds and other kinds of living things",
    "other-medical": "names of drugs, treatments, medical procedures and medical fields",
    "person-actor": "names of actors and actresses",
    "person-artist/author": "names of artists, writers, musicians and other creators",
    "person-athlete": "names of athletes and sports players",
    "person-director": "names of film, theatre and television directors",
    "person-other": "names of people who are not actors, artists, athletes, directors, politicians, scholars "
    "or soldiers",
    "person-politician": "names of politicians and government leaders",
    "person-scholar": "names of scientists, academics and other scholars",
    "person-soldier": "names of soldiers and military commanders",
    "product-airplane": "names and models of aircraft",
    "product-car": "names and models of cars and other road vehicles",
    "product-food": "names of foods, dishes and drinks",
    "product-game": "names of video games, board games and other games",
    "product-other": "names of products that are not aircraft, cars, foods, games, ships, software, trains or "
    "weapons",
    "product-ship": "names of ships, boats and submarines",
    "product-software": "names of software, applications and operating systems",
    "product-train": "names and models of trains and locomotives",
    "product-weapon": "names and models of weapons",
    # -- CrossNER (politics, science, music, literature, AI) ----------------------------------------------
    "politicalparty": "names of political parties",
    "political party": "names of political parties",
    "politician": "names of politicians and government leaders",
    "election": "names of elections and referendums, often with their year",
    "country": "names of countries and states",
    "scientist": "names of scientists and researchers",
    "researcher": "names of scientists and researchers",
    "award": "names of awards, prizes and honours",
    "astronomicalobject": "names of stars, planets, galaxies, comets and other astronomical objects",
    "astronomical object": "names of stars, planets, galaxies, comets and other astronomical objects",
    "academicjournal": "names of academic journals",
    "academic journal": "names of academic journals",
    "university": "names of universities and colleges",
    "chemicalcompound": "names of chemical compounds and molecules",
    "chemical compound": "names of chemical compounds and molecules",
    "chemicalelement": "names of chemical elements",
    "chemical element": "names of chemical elements",
    "protein": "names of proteins",
    "enzyme": "names of enzymes",
    "discipline": "names of scientific disciplines and fields of study",
    "theory": "names of scientific theories, laws and models",
    "musicalartist": "names of singers, musicians and composers",
    "musical artist": "names of singers, musicians and composers",
    "band": "names of bands and musical groups",
    "song": "titles of songs",
    "album": "titles of albums",
    "musicgenre": "names of music genres",
    "music genre": "names of music genres",
    "musicalinstrument": "names of musical instruments",
    "musical instrument": "names of musical instruments",
    "writer": "names of writers and authors",
    "book": "titles of books",
    "poem": "titles of poems",
    "magazine": "names of magazines",
    "literarygenre": "names of literary genres",
    "literary genre": "names of literary genres",
    "field": "names of research fields and areas of study",
    "task": "names of research tasks and problems",
    "algorithm": "names of algorithms and methods",
    "metrics": "names of evaluation metrics",
    "programlang": "names of programming languages",
    "programming language": "names of programming languages",
    "conference": "names of conferences and workshops",
    # -- WNUT-17 -------------------------------------------------------------------------------------------
    "corporation": "names of companies and businesses",
    "group": "names of groups such as bands, sports teams, communities and organisations other than companies",
    "creative-work": "titles of creative works such as songs, films, books, shows and video games",
    "creative work": "titles of creative works such as songs, films, books, shows and video games",
    # -- biomedical (NCBI-disease, BC5CDR, BC2GM, JNLPBA, LINNAEUS/S800) ------------------------------------
    "disease": "names of diseases, disorders and syndromes",
    "specificdisease": "names of specific diseases",
    "diseaseclass": "names of classes of diseases",
    "compositemention": "mentions naming several diseases at once",
    "modifier": "disease names used to modify another word",
    "chemical": "names of chemicals and drugs",
    "drug": "names of drugs and medications",
    "gene": "names of genes and the proteins they encode",
    "gene/protein": "names of genes and proteins",
    "gene protein": "names of genes and proteins",
    "gene_or_gene_product": "names of genes and gene products such as proteins",
    "gene or gene product": "names of genes and gene products such as proteins",
    "dna": "names of DNA sequences, genes and genomic regions",
    "rna": "names of RNA molecules",
    "cell_line": "names of cell lines",
    "cell line": "names of cell lines",
    "cell_type": "names of cell types",
    "cell type": "names of cell types",
    "species": "names of species and organisms",
    "organism": "names of species and organisms",
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


def read_descriptions(path: str | Path) -> dict[str, str]:
    """A user's ``{label: description}`` JSON file, validated (errors name the file and line and the fix)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg}). Fix: write one JSON object mapping label -> description."
        ) from exc
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ValueError(f"{path}: expected one JSON object mapping label (string) -> description (string).")
    empty = [k for k, v in data.items() if not v.strip()]
    if empty:
        raise ValueError(f"{path}: empty descriptions for {empty}; give each label a text or remove it.")
    return data


def check_described_labels(
    descriptions: Mapping[str, str], entity_types: Sequence[str], source: str | Path
) -> None:
    """Refuse descriptions of labels that are not trained or queried (a misspelled ``"politican"`` would
    otherwise be ignored, and the built-in description used).

    Example:
        >>> check_described_labels({"PER": "people"}, ["per", "LOC"], "d.json")  # labels match in any case
        >>> check_described_labels({"politican": "x"}, ["politician"], "d.json")
        Traceback (most recent call last):
        ...
        ValueError: d.json describes ['politican'], which is not an entity type of this job (the types: ['politician']): fix the spelling, or remove it.
    """
    known = {t.lower() for t in entity_types}
    unknown = [label for label in descriptions if label.lower() not in known]
    if unknown:
        raise ValueError(
            f"{source} describes {unknown}, which is not an entity type of this job (the types: "
            f"{list(entity_types)}): fix the spelling, or remove it."
        )
