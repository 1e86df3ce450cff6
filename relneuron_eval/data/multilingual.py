"""Multilingual probes (``multilingual.yaml``): the English facts asked in other languages.

Same fact ids and splits as English, so a neuron set found on English ``discovery``
facts can be scored on translated ``test`` facts without leaking. Names come from the
generated CLDR table and a hand-written table; facts whose subject or object has no name
in a language are left out of it (``fact_sources.translate_facts``). Every problem in the
file is one ``RelNeuronError`` naming the file and line. Pure Python.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relneuron_eval.data.fact_sources import NAME_COLUMNS, read_names, translate_facts
from relneuron_eval.data.fact_text import clean_text, subject_key
from relneuron_eval.data.relation import Relation
from relneuron_eval.data.relation_spec import (
    check_template,
    load_spec,
    shipped_multilingual,
    shipped_spec,
    str_list,
)
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.yaml_lines import YamlDoc

RELATION_OPTIONS = {"templates", "keep_subject", "answers", "num_fewshot"}


@dataclass(frozen=True)
class Language:
    """A probe language; ``cjk`` languages join prompt and answer without a space."""

    code: str
    name: str
    target_delimiter: str
    cjk: bool


def _mapping(doc: YamlDoc, value: Any, *key: Any) -> dict:
    """``value`` if it is a mapping (absent counts as empty), else a located error."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(f"{'.'.join(map(str, key))} must be a mapping", *key)
    return value


def _languages(doc: YamlDoc) -> tuple[list[str], dict[str, Language]]:
    """The name-table columns and the languages (each must be a column)."""
    data = doc.data
    for required in ("columns", "languages", "relations", "names"):
        if not isinstance(data, dict) or required not in data:
            raise doc.error(f"missing top-level field {required!r}")
    columns = data["columns"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise doc.error("columns must be a list of language codes", "columns")
    languages: dict[str, Language] = {}
    for code, info in _mapping(doc, data["languages"], "languages").items():
        if code not in columns or not isinstance(info, dict) or "name" not in info:
            raise doc.error(f"language {code!r}: needs a name and a column", "languages", code)
        delim = info.get("target_delimiter", " ")
        languages[code] = Language(code, info["name"], delim, delim == "")
    return columns, languages


def _generated_names(doc: YamlDoc, value: Any, columns: list) -> tuple[dict, dict]:
    """The generated name table(s) named by ``generated_names:`` (paths beside the YAML)."""
    names: dict[str, dict[str, str]] = {}
    short: dict[str, dict[str, list[str]]] = {}
    if value is None:
        return names, short
    if columns != list(NAME_COLUMNS):
        raise doc.error(f"generated names need columns {list(NAME_COLUMNS)}", "columns")
    for i, rel_path in enumerate([value] if isinstance(value, str) else value):
        if not isinstance(rel_path, str) or not (doc.path.parent / rel_path).is_file():
            raise doc.error(f"generated_names: {rel_path!r} not found", "generated_names", i)
        table, forms = read_names(doc.path.parent / rel_path)
        names.update(table)
        for lang, by_name in forms.items():
            short.setdefault(lang, {}).update(by_name)
    return names, short


def _names(doc: YamlDoc, columns: list[str]) -> tuple[dict, dict]:
    """English name -> {language: name}, and the generated short forms per language."""
    names, short_names = _generated_names(doc, doc.data.get("generated_names"), columns)
    for english, row in _mapping(doc, doc.data["names"], "names").items():
        if not isinstance(row, list) or len(row) != len(columns):
            raise doc.error(
                f"names: {english!r} needs {len(columns)} entries ({', '.join(columns)}; ~ for none)",
                "names",
                english,
            )
        # a hand-written row wins over the generated table (Hong Kong: a city too)
        names[clean_text(str(english))] = {
            c: clean_text(v)
            for c, v in zip(columns, row, strict=True)
            if isinstance(v, str) and v.strip()
        }
    return names, short_names


def _aliases(
    doc: YamlDoc, columns: list[str], languages: dict[str, Language], short_names: dict
) -> dict[str, dict[str, list[str]]]:
    """Other accepted spellings per language and name: short forms, then ``aliases:``."""
    aliases: dict[str, dict[str, list[str]]] = {c: dict(short_names.get(c, {})) for c in columns}
    for code, table in _mapping(doc, doc.data.get("aliases") or {}, "aliases").items():
        if code not in languages:
            raise doc.error(f"aliases: unknown language {code!r}", "aliases", code)
        for k, v in _mapping(doc, table, "aliases", code).items():
            aliases[code][clean_text(k)] = [
                *aliases[code].get(clean_text(k), []),
                *str_list(doc, v, "aliases", code, k),
            ]
    return aliases


def _language_relation(
    doc: YamlDoc, lang: Language, base: Relation, opts: Any, names: dict, aliases: dict
) -> Relation:
    """English relation ``base`` asked in ``lang``, as ``relations.<lang>.<name>`` says."""
    code, rel_name = lang.code, base.name
    key = ("relations", code, rel_name)
    if not isinstance(opts, dict) or "templates" not in opts:
        raise doc.error(f"{code}.{rel_name}: needs templates", *key)
    unknown = sorted(set(opts) - RELATION_OPTIONS)
    if unknown:
        raise doc.error(f"{code}.{rel_name}: unknown field(s) {unknown}", *key)
    templates = str_list(doc, opts["templates"], *key, "templates")
    for i, t in enumerate(templates):
        check_template(doc, t, *key, "templates", i)
    overrides = {
        subject_key(str(s)): str_list(doc, v, *key, "answers", s)
        for s, v in _mapping(doc, opts.get("answers") or {}, *key, "answers").items()
    }
    keep_subject = opts.get("keep_subject", False)
    if keep_subject not in (True, False, "fallback"):
        raise doc.error(
            f"{code}.{rel_name}: keep_subject is true, false or fallback", *key, "keep_subject"
        )
    facts = translate_facts(base, code, keep_subject, names, aliases, overrides)
    num_fewshot = int(opts.get("num_fewshot", base.num_fewshot))
    n_demos = sum(f.split == "fewshot" for f in facts)
    if n_demos < num_fewshot:
        raise doc.error(
            f"{code}.{rel_name}: {n_demos} fewshot facts have names in {code}, "
            f"fewer than num_fewshot={num_fewshot}",
            *key,
            hint="set a lower num_fewshot or leave the relation out of this language",
        )
    return Relation(
        name=rel_name,
        facts=facts,
        templates={"discovery": [], "eval": templates},
        closed_set=base.closed_set,
        objects=sorted({f.object for f in facts}),
        num_fewshot=num_fewshot,
        target_delimiter=lang.target_delimiter,
        language=code,
        source=str(doc.path),
    )


def load_multilingual_file(path: Path, spec_path: Path) -> dict[str, Any]:
    """Languages and translated relations of a multilingual YAML over the spec's relations."""
    doc = YamlDoc(path, "spec")
    columns, languages = _languages(doc)
    names, short_names = _names(doc, columns)
    aliases = _aliases(doc, columns, languages, short_names)
    english = load_spec(spec_path)
    out: dict[str, dict[str, Relation]] = {}
    for code, rels in _mapping(doc, doc.data["relations"], "relations").items():
        if code not in languages:
            raise doc.error(f"relations: unknown language {code!r}", "relations", code)
        out[code] = {}
        for rel_name, opts in _mapping(doc, rels, "relations", code).items():
            if rel_name not in english:
                raise doc.error(
                    f"{code}: unknown relation {rel_name!r}", "relations", code, rel_name
                )
            base = english[rel_name]
            out[code][rel_name] = _language_relation(
                doc, languages[code], base, opts, names, aliases
            )
    return {"languages": languages, "relations": out}


@functools.lru_cache(maxsize=4)
def _load_multilingual_cached(path: str, mtime: int, spec: str, spec_mtime: int) -> dict[str, Any]:
    return load_multilingual_file(Path(path), Path(spec))


def _multilingual(path: str | Path | None = None) -> dict[str, Any]:
    p = Path(path or shipped_multilingual()).resolve()
    s = shipped_spec().resolve()
    return _load_multilingual_cached(str(p), p.stat().st_mtime_ns, str(s), s.stat().st_mtime_ns)


def languages() -> dict[str, Language]:
    """The languages of the shipped multilingual probes (code -> Language)."""
    return dict(_multilingual()["languages"])


def multilingual_relations(lang: str) -> dict[str, Relation]:
    """Relations asked in ``lang``: same fact ids and splits as English, translated names.

    Facts whose subject or object has no translation are left out of that language.
    """
    table = _multilingual()["relations"]
    if lang not in table:
        raise RelNeuronError(f"unknown language {lang!r}", hint=f"known: {', '.join(table)}")
    return dict(table[lang])


def load_language_relation(lang: str, name: str) -> Relation:
    rels = multilingual_relations(lang)
    if name not in rels:
        raise RelNeuronError(
            f"relation {name!r} is not asked in {lang!r}", hint=f"known: {', '.join(rels)}"
        )
    return rels[name]
