"""Relation facts, their cleaning and their splits: the one entry point to relation data.

Every consumer (the lm-eval tasks, neuron discovery, the report) goes through this
module, so the honesty rule holds in one place: a subject belongs to exactly one of
``discovery`` / ``fewshot`` / ``test``; discovery reads ``discovery``, tasks score ``test``.

The shipped relations are described by ``tasks/relfacts/relations.yaml`` (a user's spec
has the same format). Raw facts are cleaned at load time (double-escaped strings,
whitespace, repeated subjects merged, noise objects dropped), so the shipped copy of the
source data stays byte-identical to what was downloaded. Pure Python: no torch, no lm_eval.

The work is done by one module per concept; this one re-exports their public names:
``relation`` (Relation, Fact, Prompt), ``relation_spec`` (reading a spec),
``fact_files`` (facts JSONL), ``fact_splits`` (merging subjects, assigning splits),
``fact_text`` (cleaning, subject keys), ``multilingual`` (translated relations) and
``fact_sources`` (added GeoNames/CLDR facts, whose splits never move a base fact).
"""

from __future__ import annotations

from collections.abc import Sequence

from relneuron_eval.data.fact_files import FactRow, read_facts_file
from relneuron_eval.data.fact_splits import DISCOVERY_SHARE, FEWSHOT_SHARE, MIN_FEWSHOT
from relneuron_eval.data.fact_text import clean_text, fill, subject_key, template_fields
from relneuron_eval.data.multilingual import (
    Language,
    languages,
    load_language_relation,
    load_multilingual_file,
    multilingual_relations,
)
from relneuron_eval.data.relation import SPLITS, Fact, Prompt, Relation
from relneuron_eval.data.relation_spec import (
    MIN_FACTS,
    RELATION_KEYS,
    TEMPLATE_FIELDS,
    check_template,
    load_spec,
    shipped_dir,
    shipped_multilingual,
    shipped_spec,
)
from relneuron_eval.errors import RelNeuronError

__all__ = [
    "DISCOVERY_SHARE",
    "FEWSHOT_SHARE",
    "MIN_FACTS",
    "MIN_FEWSHOT",
    "RELATIONS",
    "RELATION_KEYS",
    "SPLITS",
    "TEMPLATE_FIELDS",
    "Fact",
    "FactRow",
    "Language",
    "Prompt",
    "Relation",
    "check_template",
    "clean_text",
    "fact_by_id",
    "fill",
    "languages",
    "load_language_relation",
    "load_multilingual_file",
    "load_relation",
    "load_relations",
    "load_spec",
    "multilingual_relations",
    "read_facts_file",
    "shipped_dir",
    "shipped_multilingual",
    "shipped_spec",
    "split_report",
    "subject_key",
    "template_fields",
]

RELATIONS: tuple[str, ...] = (
    "city_in_country",
    "city_on_continent",
    "company_ceo",
    "company_hq",
    "country_capital_city",
    "country_currency",
    "country_language",
    "country_largest_city",
    "country_on_continent",
    "food_from_country",
    "landmark_in_country",
    "landmark_on_continent",
    "person_father",
    "person_mother",
    "person_native_language",
    "person_occupation",
    "person_plays_instrument",
    "person_plays_position_in_sport",
    "person_plays_pro_sport",
    "product_by_company",
    "star_constellation",
)


def load_relations(names: Sequence[str] | None = None) -> dict[str, Relation]:
    """The shipped relations (all, or the named ones in the given order)."""
    relations = load_spec(shipped_spec())
    if names is None:
        return dict(relations)
    return {n: load_relation(n) for n in names}


def load_relation(name: str) -> Relation:
    relations = load_spec(shipped_spec())
    if name not in relations:
        raise RelNeuronError(
            f"unknown relation {name!r}", hint=f"known relations: {', '.join(sorted(relations))}"
        )
    return relations[name]


def fact_by_id(fact_id: str) -> Fact:
    """A shipped fact by its id, e.g. ``landmark_in_country/123``."""
    relation, _, _ = fact_id.partition("/")
    return load_relation(relation).fact(fact_id)


def split_report(relations: dict[str, Relation] | None = None) -> dict[str, dict[str, int]]:
    """Number of facts per split and relation (for docs and the leak test)."""
    relations = relations if relations is not None else load_relations()
    return {
        name: {s: len(rel.facts_in(s)) for s in SPLITS} for name, rel in sorted(relations.items())
    }
