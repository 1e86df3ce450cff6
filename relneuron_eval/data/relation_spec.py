"""Relation specs (``relations.yaml``, shipped or a user's own): reading and validating them.

A spec names each relation's facts files, templates and cleaning rules (fixes,
aliases, dropped noise). Everything that can be wrong with it is found here and reported
as one ``RelNeuronError`` naming the file and line, before any task or model sees the
data; the result is a ``relation.Relation`` per entry. Pure Python: no torch, no lm_eval.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relneuron_eval.data.fact_files import FactRow, read_facts_file
from relneuron_eval.data.fact_splits import Subject, assign_splits, merge_subjects
from relneuron_eval.data.fact_text import clean_text, dedupe, subject_key, template_fields
from relneuron_eval.data.relation import SPLITS, Fact, Relation
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.yaml_lines import KEY, YamlDoc

MIN_FACTS = 10
RELATION_KEYS = {
    "name",
    "facts",
    "added_facts",
    "templates",
    "closed_set",
    "aliases",
    "extra_objects",
    "drop_objects",
    "drop_subjects",
    "fixes",
    "compose",
    "compose_prompt",
    "question",
    "time_sensitive",
    "num_fewshot",
    "target_delimiter",
    "description",
}
TEMPLATE_FIELDS = {"subject"}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def shipped_dir() -> Path:
    """``tasks/relfacts`` of the installed package (or of the source checkout)."""
    from relneuron_eval.resources import tasks_dir

    return tasks_dir() / "relfacts"


def shipped_spec() -> Path:
    return shipped_dir() / "relations.yaml"


def shipped_multilingual() -> Path:
    return shipped_dir() / "multilingual.yaml"


# ------------------------------------------------------------------ value checks
def str_list(doc: YamlDoc, value: Any, *key: Any, allow_empty: bool = False) -> list[str]:
    """A list of non-empty strings at ``key``, cleaned."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise doc.error(
            f"{'.'.join(map(str, key[-2:]))}: expected a list of non-empty strings", *key
        )
    if not value and not allow_empty:
        raise doc.error(f"{'.'.join(map(str, key[-2:]))}: empty list", *key)
    return [clean_text(v) for v in value]


def check_template(doc: YamlDoc, template: str, *key: Any, fields=TEMPLATE_FIELDS) -> None:
    """A template may only use ``{subject}`` and must use it."""
    try:
        names = template_fields(template)
    except ValueError as exc:
        raise doc.error(f"malformed template {template!r}: {exc}", *key) from None
    unknown = sorted(set(names) - set(fields))
    if unknown:
        raise doc.error(
            f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)} in "
            f"template {template!r}",
            *key,
            hint="templates may only use {subject}",
        )
    if "subject" not in names:
        raise doc.error(f"template {template!r} has no {{subject}} placeholder", *key)
    if template != template.rstrip():
        raise doc.error(
            f"template {template!r} ends with whitespace",
            *key,
            hint="end where the object starts; the delimiter is added by the task",
        )


@dataclass
class _Entry:
    """One relation's mapping in the spec; errors point at lines inside it."""

    doc: YamlDoc
    index: int
    data: Any  # a mapping once _check_entry has passed
    name: str = ""

    def error(self, message: str, *key: Any, hint: str | None = None) -> RelNeuronError:
        return self.doc.error(message, "relations", self.index, *key, hint=hint)

    def strings(self, value: Any, *key: Any, allow_empty: bool = False) -> list[str]:
        return str_list(self.doc, value, "relations", self.index, *key, allow_empty=allow_empty)

    def paths(self, field_name: str) -> list[str]:
        value = self.data[field_name]
        paths = [value] if isinstance(value, str) else value
        if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
            raise self.error(
                f"{self.name}: {field_name!r} must be a path or a list of paths", field_name
            )
        return paths


# ------------------------------------------------------------- one relation
def _check_entry(entry: _Entry) -> str:
    """The relation's name, once its fields are known and the required ones are there."""
    data = entry.data
    if not isinstance(data, dict):
        raise entry.error("each relation must be a mapping")
    unknown = sorted(set(data) - RELATION_KEYS)
    if unknown:
        raise entry.error(
            f"unknown field(s) {unknown}",
            unknown[0],
            KEY,
            hint=f"allowed: {', '.join(sorted(RELATION_KEYS))}",
        )
    for required in ("name", "facts", "templates"):
        if required not in data or data[required] in (None, "", [], {}):
            raise entry.error(f"relation #{entry.index + 1}: missing field {required!r}")
    name = data["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise entry.error(f"invalid relation name {name!r}", "name", hint="use lower_snake_case")
    return name


def _templates(entry: _Entry) -> dict[str, list[str]]:
    """Discovery and eval templates (disjoint), and the 2-hop prompt options."""
    name, templates_in = entry.name, entry.data["templates"]
    if not isinstance(templates_in, dict) or "eval" not in templates_in:
        raise entry.error(
            f"{name}: templates need an 'eval' list (and usually a 'discovery' list)", "templates"
        )
    templates: dict[str, list[str]] = {}
    for tkey in ("discovery", "eval"):
        templates[tkey] = []
        if tkey in templates_in:
            templates[tkey] = entry.strings(templates_in[tkey], "templates", tkey)
            for i, t in enumerate(templates[tkey]):
                check_template(entry.doc, t, "relations", entry.index, "templates", tkey, i)
    extra_keys = sorted(set(templates_in) - {"discovery", "eval"})
    if extra_keys:
        raise entry.error(f"{name}: unknown template set(s) {extra_keys}", "templates")
    shared = set(templates["discovery"]) & set(templates["eval"])
    if shared:
        raise entry.error(
            f"{name}: template(s) {sorted(shared)} are both discovery and eval templates",
            "templates",
            hint="the scored templates must differ from the ones neuron discovery sees",
        )
    for opt in ("compose", "compose_prompt", "question"):
        if opt in entry.data:
            if not isinstance(entry.data[opt], str):
                raise entry.error(f"{name}: {opt} must be a string", opt)
            check_template(entry.doc, entry.data[opt], "relations", entry.index, opt)
    return templates


def _read_rows(entry: _Entry) -> tuple[list[FactRow], Path]:
    """Rows of the ``facts:`` then ``added_facts:`` files, numbered across all of them."""
    paths = entry.paths("facts")
    added_paths = entry.paths("added_facts") if "added_facts" in entry.data else []
    rows: list[FactRow] = []
    offset = 0
    for i, value in enumerate([*paths, *added_paths]):
        field_name = "facts" if i < len(paths) else "added_facts"
        facts_path = (entry.doc.path.parent / value).resolve()
        if not facts_path.is_file():
            raise entry.error(f"{entry.name}: facts file {value!r} not found", field_name)
        file_rows, n_lines = read_facts_file(facts_path, entry.name)
        for r in file_rows:
            r.number = offset + r.line - 1
            r.first_file = i == 0
            r.added = i >= len(paths)
        rows += file_rows
        offset += n_lines
    return rows, (entry.doc.path.parent / paths[0]).resolve()


def _apply_fixes(entry: _Entry, rows: list[FactRow]) -> None:
    """``fixes:`` correct rows of the first facts file by line number (source errors)."""
    name, fixes = entry.name, entry.data.get("fixes") or {}
    if not isinstance(fixes, dict):
        raise entry.error(f"{name}: fixes must map a line number to {{subject, object}}", "fixes")
    by_line = {r.line: r for r in rows if r.first_file}
    for line_no, fix in fixes.items():
        if not isinstance(line_no, int) or line_no not in by_line:
            raise entry.error(f"{name}: fixes: no fact on line {line_no!r}", "fixes", line_no)
        if not isinstance(fix, dict) or set(fix) - {"subject", "object"}:
            raise entry.error(f"{name}: a fix is {{subject: ..., object: ...}}", "fixes", line_no)
        for k, v in fix.items():
            if not isinstance(v, str) or not clean_text(v):
                raise entry.error(f"{name}: fix {k} must be a non-empty string", "fixes", line_no)
            setattr(by_line[line_no], k, clean_text(v))


def _drop_noise(entry: _Entry, rows: list[FactRow]) -> list[FactRow]:
    """Rows left after ``drop_objects:`` and ``drop_subjects:`` (noise in the source)."""
    drop_objects = set(
        entry.strings(entry.data.get("drop_objects", []), "drop_objects", allow_empty=True)
    )
    drop_subjects = {
        subject_key(s)
        for s in entry.strings(
            entry.data.get("drop_subjects", []), "drop_subjects", allow_empty=True
        )
    }
    known_objects = {r.object for r in rows}
    for obj in sorted(drop_objects - known_objects):
        raise entry.error(
            f"{entry.name}: drop_objects: {obj!r} is not an object of this relation",
            "drop_objects",
        )
    return [
        r
        for r in rows
        if r.object not in drop_objects and subject_key(r.subject) not in drop_subjects
    ]


def _aliases(entry: _Entry, rows: list[FactRow]) -> dict[str, list[str]]:
    """Other accepted spellings per object (``aliases:``); objects must exist."""
    name, aliases_in = entry.name, entry.data.get("aliases") or {}
    if not isinstance(aliases_in, dict):
        raise entry.error(f"{name}: aliases must map an object to a list of spellings", "aliases")
    known_objects = {r.object for r in rows}
    aliases: dict[str, list[str]] = {}
    for obj, values in aliases_in.items():
        obj_clean = clean_text(str(obj))
        if obj_clean not in known_objects:
            raise entry.error(
                f"{name}: aliases: {obj!r} is not an object of this relation", "aliases", obj
            )
        aliases[obj_clean] = entry.strings(values, "aliases", obj)
    return aliases


def _extra_objects(entry: _Entry, rows: list[FactRow]) -> dict[str, list[str]]:
    """Further accepted objects per subject key (``extra_objects:``); subjects must exist."""
    name, extra_in = entry.name, entry.data.get("extra_objects") or {}
    if not isinstance(extra_in, dict):
        raise entry.error(f"{name}: extra_objects must map a subject to a list", "extra_objects")
    known_subjects = {subject_key(r.subject) for r in rows}
    extra: dict[str, list[str]] = {}
    for subj, values in extra_in.items():
        if subject_key(str(subj)) not in known_subjects:
            raise entry.error(
                f"{name}: extra_objects: {subj!r} is not a subject of this relation",
                "extra_objects",
                subj,
            )
        extra[subject_key(str(subj))] = entry.strings(values, "extra_objects", subj)
    return extra


def _num_fewshot(entry: _Entry, defaults: dict, subjects: list[Subject]) -> int:
    """The relation's demo count; the splits must leave test facts and enough demos."""
    name = entry.name
    num_fewshot = entry.data.get("num_fewshot", defaults.get("num_fewshot", 3))
    if not isinstance(num_fewshot, int) or num_fewshot < 0:
        raise entry.error(f"{name}: num_fewshot must be a non-negative integer", "num_fewshot")
    counts = {s: sum(1 for m in subjects if m.split == s) for s in SPLITS}
    if counts["test"] == 0 or counts["fewshot"] < num_fewshot:
        raise entry.error(
            f"{name}: splits {counts} leave no test facts or fewer fewshot facts than "
            f"num_fewshot={num_fewshot}",
            "facts",
        )
    return num_fewshot


def _make_facts(
    name: str, subjects: list[Subject], aliases: dict[str, list[str]], extra: dict[str, list[str]]
) -> list[Fact]:
    """Facts in file order; answers: each object and its aliases, then the extra ones."""
    facts: list[Fact] = []
    for m in sorted(subjects, key=lambda m: m.number):
        answers = []
        for obj in m.objects:
            answers += [obj, *aliases.get(obj, [])]
        answers += m.answers + extra.get(m.key, [])
        facts.append(
            Fact(
                relation=name,
                fact_id=f"{name}/{m.number}",
                subject=m.subject,
                object=m.objects[0],
                answers=dedupe(answers),
                split=m.split,
                line=m.line,
                added=m.added,
            )
        )
    return facts


def build_relation(doc: YamlDoc, index: int, data: Any, defaults: dict) -> Relation:
    """The relation of entry ``index`` of the spec, validated, cleaned and split."""
    entry = _Entry(doc, index, data)
    entry.name = name = _check_entry(entry)
    templates = _templates(entry)
    rows, facts_path = _read_rows(entry)
    _apply_fixes(entry, rows)
    kept = _drop_noise(entry, rows)
    aliases = _aliases(entry, rows)
    extra = _extra_objects(entry, rows)
    subjects = merge_subjects(kept)
    if len(subjects) < MIN_FACTS:
        raise entry.error(
            f"{name}: {len(subjects)} distinct subjects, at least {MIN_FACTS} needed", "facts"
        )
    assign_splits(name, subjects)
    num_fewshot = _num_fewshot(entry, defaults, subjects)
    closed = data.get("closed_set", False)
    if not isinstance(closed, bool):
        raise entry.error(f"{name}: closed_set must be true or false", "closed_set")
    delimiter = data.get("target_delimiter", defaults.get("target_delimiter", " "))
    if not isinstance(delimiter, str):
        raise entry.error(f"{name}: target_delimiter must be a string", "target_delimiter")
    return Relation(
        name=name,
        facts=_make_facts(name, subjects, aliases, extra),
        templates=templates,
        closed_set=closed,
        objects=sorted({o for m in subjects for o in m.objects}),
        compose=data.get("compose"),
        compose_prompt=data.get("compose_prompt"),
        question=data.get("question"),
        num_fewshot=num_fewshot,
        target_delimiter=delimiter,
        time_sensitive=bool(data.get("time_sensitive", False)),
        source=str(facts_path),
    )


# ------------------------------------------------------------------ the spec
def _load_spec_uncached(path: Path) -> dict[str, Relation]:
    doc = YamlDoc(path, "spec")
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("relations"), list):
        raise doc.error("a relation spec needs a top-level 'relations:' list")
    unknown = sorted(set(data) - {"version", "defaults", "relations"})
    if unknown:
        raise doc.error(f"unknown top-level field(s) {unknown}", unknown[0], KEY)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - {"num_fewshot", "target_delimiter"}:
        raise doc.error("defaults may set num_fewshot and target_delimiter only", "defaults")
    out: dict[str, Relation] = {}
    for index, entry in enumerate(data["relations"]):
        relation = build_relation(doc, index, entry, defaults)
        if relation.name in out:
            raise doc.error(
                f"duplicate relation name {relation.name!r}", "relations", index, "name"
            )
        out[relation.name] = relation
    if not out:
        raise doc.error("the spec lists no relations", "relations")
    return out


@functools.lru_cache(maxsize=16)
def _load_spec_cached(path: str, mtime_ns: int) -> dict[str, Relation]:
    return _load_spec_uncached(Path(path))


def load_spec(path: str | Path) -> dict[str, Relation]:
    """Relations of a spec YAML (the shipped ``relations.yaml`` or a user's own).

    Every problem (missing fields, empty subjects/objects, unknown placeholders, leaking
    splits, duplicate names) raises one ``RelNeuronError`` naming the file and line.
    Cached by path and modification time: tasks, discovery and the report all ask.
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise RelNeuronError("relation spec not found", path=path)
    return _load_spec_cached(str(p), p.stat().st_mtime_ns)
