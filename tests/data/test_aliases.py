"""Issue 19 (data): an accepted alias must name the object it is declared for.

Every ``aliases:`` spelling in the shipped relation spec is checked against every other
relation's accepted answers (objects, aliases, extra objects): it must not be an answer
of a relation of another answer type (food_from_country once accepted "sterling" and
"South Korean won" for countries: copied from country_currency), nor an answer of
another object of its own relation, unless it is a listed homonym with a reason.
"""

from __future__ import annotations

from collections import defaultdict

import yaml

from relneuron_eval.data.answers import normalize
from relneuron_eval.data.facts import load_relations
from relneuron_eval.data.relation_spec import shipped_spec

ANSWER_TYPE = {
    "city_in_country": "country",
    "city_on_continent": "continent",
    "company_ceo": "person",
    "company_hq": "city",
    "country_capital_city": "city",
    "country_currency": "currency",
    "country_language": "language",
    "country_largest_city": "city",
    "country_on_continent": "continent",
    "food_from_country": "country",
    "landmark_in_country": "country",
    "landmark_on_continent": "continent",
    "person_father": "person",
    "person_mother": "person",
    "person_native_language": "language",
    "person_occupation": "occupation",
    "person_plays_instrument": "instrument",
    "person_plays_position_in_sport": "position",
    "person_plays_pro_sport": "sport",
    "product_by_company": "company",
    "star_constellation": "constellation",
}
# (relation, alias, where else it is an answer): why both are right
HOMONYMS = {
    ("company_hq", "Toyota", "product_by_company"): "Toyota City is called Toyota",
    ("person_plays_pro_sport", "football", "football"): (
        "soccer outside North America, American football inside it; the prompt says neither"
    ),
}


def _declared() -> dict[str, dict[str, list[str]]]:
    spec = yaml.safe_load(shipped_spec().read_text(encoding="utf-8"))
    return {e["name"]: dict(e.get("aliases") or {}) for e in spec["relations"]}


def _answers() -> dict[str, dict[str, set[str]]]:
    """relation -> normalised accepted answer -> the objects of the facts accepting it."""
    out: dict[str, dict[str, set[str]]] = {}
    for name, rel in load_relations().items():
        table: dict[str, set[str]] = defaultdict(set)
        for fact in rel.facts:
            for answer in fact.answers:
                table[normalize(answer)].add(fact.object)
        out[name] = table
    return out


def test_every_relation_has_an_answer_type():
    assert set(load_relations()) <= set(ANSWER_TYPE), "add the new relation's answer type"


def _names(name: str, table: dict[str, list[str]]) -> dict[str, set[str]]:
    """Object -> its normalised names (itself and its declared aliases)."""
    objects = {f.object for f in load_relations([name])[name].facts}
    return {o: {normalize(o), *(normalize(a) for a in table.get(o, []))} for o in objects}


def test_an_alias_names_only_its_own_object():
    answers = _answers()
    wrong = []
    for name, table in _declared().items():
        names = _names(name, table)
        for obj, spellings in table.items():
            for alias in spellings:
                key = normalize(alias)
                for other, other_names in names.items():
                    mutual = normalize(obj) in other_names
                    if other != obj and key in other_names and not mutual:
                        if (name, alias, other) not in HOMONYMS:
                            wrong.append(f"{name}: {alias!r} of {obj!r} also names {other!r}")
                for rel2, table2 in answers.items():
                    same_type = ANSWER_TYPE[rel2] == ANSWER_TYPE[name]
                    if not same_type and key in table2 and (name, alias, rel2) not in HOMONYMS:
                        objs = sorted(table2[key])
                        wrong.append(f"{name}: {alias!r} of {obj!r} is a {rel2} answer ({objs})")
    assert not wrong, "\n".join(wrong)


def test_the_issue_cases_are_fixed():
    facts = {f.subject: f for f in load_relations(["food_from_country"])["food_from_country"].facts}
    assert "sterling" not in facts["Fish and Chips"].answers
    assert "South Korean won" not in facts["Kimchi"].answers
    sport = load_relations(["person_plays_pro_sport"])["person_plays_pro_sport"]
    soccer = next(f for f in sport.facts if f.object == "soccer")
    assert {"football", "association football"} <= set(soccer.answers)
