"""Relation facts, their cleaning and their splits: the one place that reads relation data.

Every consumer (the lm-eval tasks, neuron discovery, the report) goes through this
module, so the honesty rule holds in one place: a subject belongs to exactly one of
``discovery`` / ``fewshot`` / ``test``; discovery reads ``discovery``, tasks score ``test``.

The shipped relations are described by ``tasks/relfacts/relations.yaml`` (a user's spec
has the same format). Raw facts are cleaned at load time (double-escaped strings,
whitespace, repeated subjects merged, noise objects dropped), so the shipped copy of the
source data stays byte-identical to what was downloaded. Pure Python: no torch, no lm_eval.

Splits stay honest when data grows: a relation's ``facts:`` files (LRE, as when the
shipped neuron sets were discovered) are split by rank of a hash, exactly as before;
``added_facts:`` files (generated from GeoNames/CLDR by ``relneuron datagen``) only add
subjects and are split by a hash threshold that ignores every other fact, so no base fact
ever changes split (tests/test_facts.py compares against a snapshot taken before).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.fact_sources import NAME_COLUMNS, added_split, read_names, translate_facts

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
SPLITS = ("discovery", "fewshot", "test")

# Split sizes: base facts (`facts:`) are ordered by a hash of (relation, normalised
# subject); the first FEWSHOT_SHARE (at least MIN_FEWSHOT) go to `fewshot`, the next
# DISCOVERY_SHARE to `discovery`, the rest to `test`. Facts of `added_facts:` files get
# the same shares by a hash threshold (fact_sources.added_split), so base splits never move.
DISCOVERY_SHARE = 0.5
FEWSHOT_SHARE = 0.05
MIN_FEWSHOT = 4
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
_ESCAPE_RE = re.compile(r"\\u([0-9a-fA-F]{4})")


# ----------------------------------------------------------------------------- paths
def shipped_dir() -> Path:
    """``tasks/relfacts`` of the installed package (or of the source checkout)."""
    from relneuron_eval.resources import tasks_dir

    return tasks_dir() / "relfacts"


def shipped_spec() -> Path:
    return shipped_dir() / "relations.yaml"


def shipped_multilingual() -> Path:
    return shipped_dir() / "multilingual.yaml"


# ----------------------------------------------------------------------- text helpers
def clean_text(text: str) -> str:
    """Undo double escaping (a literal ``\\u00ed``), NFC-normalise, collapse whitespace."""
    text = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def subject_key(text: str) -> str:
    """Key that identifies a subject across spellings: case, accents and spacing ignored."""
    decomposed = unicodedata.normalize("NFKD", clean_text(text))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def _dedupe(items: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in items:
        if item and item not in seen:
            seen[item] = None
    return tuple(seen)


def _stable_hash(*parts: str) -> int:
    return int(hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16], 16)


def template_fields(template: str) -> list[str]:
    """Placeholder names used in a ``str.format`` template (raises ValueError if malformed)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def fill(template: str, subject: str) -> str:
    return template.replace("{subject}", subject)


# ------------------------------------------------------------------- YAML with lines
class _Located:
    """YAML data plus the source line of every node, addressed by its key path."""

    def __init__(self, path: Path) -> None:
        import yaml

        self.path = path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RelNeuronError(f"cannot read spec: {exc.strerror}", path=path) from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise RelNeuronError(
                f"not valid YAML: {getattr(exc, 'problem', exc)}",
                path=path,
                line=None if mark is None else mark.line + 1,
            ) from None
        self.lines: dict[tuple, int] = {}
        self.data = {} if node is None else self._convert(node, ())

    def _convert(self, node: Any, key: tuple) -> Any:
        import yaml

        self.lines[key] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out = {}
            for k_node, v_node in node.value:
                k = self._scalar(k_node)
                out[k] = self._convert(v_node, (*key, k))
                self.lines.setdefault((*key, k, "__key__"), k_node.start_mark.line + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._convert(v, (*key, i)) for i, v in enumerate(node.value)]
        return self._scalar(node)

    @staticmethod
    def _scalar(node: Any) -> Any:
        import yaml

        loader = yaml.SafeLoader("")
        try:
            return loader.construct_object(node, deep=True)
        finally:
            loader.dispose()

    def line(self, *key: Any) -> int | None:
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return self.lines.get(())

    def error(self, message: str, *key: Any, hint: str | None = None) -> RelNeuronError:
        return RelNeuronError(message, path=self.path, line=self.line(*key), hint=hint)


# ----------------------------------------------------------------------- data types
@dataclass(frozen=True)
class Fact:
    relation: str
    fact_id: str
    subject: str
    object: str
    answers: tuple[str, ...]
    split: str
    line: int = field(default=0, compare=False)  # 1-based line of the first occurrence

    @property
    def aliases(self) -> tuple[str, ...]:
        """Accepted answers other than the primary object."""
        return tuple(a for a in self.answers if a != self.object)


@dataclass(frozen=True)
class Prompt:
    relation: str
    fact_id: str
    text: str
    object: str
    answers: tuple[str, ...]
    template_index: int


@dataclass
class Relation:
    """One relation: cleaned facts with splits, templates and task options."""

    name: str
    facts: list[Fact]
    templates: dict[str, list[str]]
    closed_set: bool = False
    objects: list[str] = field(default_factory=list)
    compose: str | None = None
    compose_prompt: str | None = None
    question: str | None = None
    num_fewshot: int = 3
    target_delimiter: str = " "
    time_sensitive: bool = False
    language: str = "en"
    source: str = ""

    def __post_init__(self) -> None:
        self._by_id = {f.fact_id: f for f in self.facts}

    def fact(self, fact_id: str) -> Fact:
        try:
            return self._by_id[fact_id]
        except KeyError:
            raise RelNeuronError(f"{self.name}: no fact {fact_id!r}") from None

    def facts_in(self, split: str) -> list[Fact]:
        if split not in SPLITS:
            raise RelNeuronError(f"unknown split {split!r}", hint=f"splits: {', '.join(SPLITS)}")
        return [f for f in self.facts if f.split == split]

    def eval_template_index(self, fact: Fact) -> int:
        """The one eval template a fact is asked with in the tasks (fixed by its id)."""
        return _stable_hash("template", fact.fact_id) % len(self.templates["eval"])

    def demo(self, fact: Fact, template: str) -> str:
        return fill(template, fact.subject) + self.target_delimiter + fact.object

    def prompts(
        self,
        split: str,
        *,
        template_key: str = "discovery",
        fewshot: int = 0,
        all_templates: bool = True,
        seed: int = 0,
    ) -> list[Prompt]:
        """Filled templates for the facts of ``split``.

        ``all_templates=True`` gives one prompt per (fact, template); otherwise each fact
        gets the one template picked by ``eval_template_index``. Few-shot demos (same
        template, newline-separated) come from the ``fewshot`` split only, so no prompt
        ever shows the answer of a discovery or test fact.
        """
        templates = self.templates.get(template_key) or []
        if not templates:
            raise RelNeuronError(
                f"{self.name}: no {template_key!r} templates",
                hint=f"template sets: {', '.join(k for k, v in self.templates.items() if v)}",
            )
        demos_pool = self.facts_in("fewshot")
        if fewshot > len(demos_pool):
            raise RelNeuronError(
                f"{self.name}: {fewshot} few-shot demos asked for, the fewshot split has "
                f"{len(demos_pool)}"
            )
        out = []
        for fact in self.facts_in(split):
            if all_templates:
                indices = range(len(templates))
            else:
                indices = [_stable_hash("template", fact.fact_id) % len(templates)]
            for index in indices:
                template = templates[index]
                text = fill(template, fact.subject)
                if fewshot:
                    rng = random.Random(f"{seed}:{fact.fact_id}:{template_key}:{index}")
                    demos = rng.sample([d for d in demos_pool if d is not fact], fewshot)
                    text = "\n".join([*(self.demo(d, template) for d in demos), text])
                out.append(Prompt(self.name, fact.fact_id, text, fact.object, fact.answers, index))
        return out


# --------------------------------------------------------------------- loading facts
@dataclass
class _Raw:
    path: Path
    line: int
    subject: str
    object: str
    split: str | None
    answers: tuple[str, ...]
    number: int = 0  # fact number: index of the line in the concatenated facts files
    first_file: bool = True
    added: bool = False  # from `added_facts:` (split by hash threshold, see fact_sources)


def _read_jsonl(path: Path, relation: str) -> tuple[list[_Raw], int]:
    """Rows of a facts file and its number of lines; malformed lines raise with file:line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise RelNeuronError(f"relation {relation!r}: facts file not found", path=path) from None
    except UnicodeDecodeError as exc:
        raise RelNeuronError(f"not UTF-8 text ({exc.reason})", path=path) from None
    rows = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RelNeuronError(f"not valid JSON: {exc.msg}", path=path, line=number) from None
        if not isinstance(row, dict):
            raise RelNeuronError("expected a JSON object per line", path=path, line=number)
        values = {}
        for key in ("subject", "object"):
            if key not in row:
                raise RelNeuronError(
                    f"missing field {key!r}",
                    path=path,
                    line=number,
                    hint='each line needs {"subject": ..., "object": ...}',
                )
            value = row[key]
            if not isinstance(value, str) or not clean_text(value):
                raise RelNeuronError(f"empty or non-string {key!r}", path=path, line=number)
            values[key] = clean_text(value)
        split = row.get("split")
        if split is not None and split not in SPLITS:
            raise RelNeuronError(
                f"unknown split {split!r}", path=path, line=number, hint=f"use one of {SPLITS}"
            )
        answers = row.get("answers", [])
        if not isinstance(answers, list) or not all(
            isinstance(a, str) and clean_text(a) for a in answers
        ):
            raise RelNeuronError(
                "'answers' must be a list of non-empty strings", path=path, line=number
            )
        rows.append(
            _Raw(
                path,
                number,
                values["subject"],
                values["object"],
                split,
                tuple(map(clean_text, answers)),
            )
        )
    return rows, len(lines)


def _str_list(doc: _Located, value: Any, *key: Any, allow_empty: bool = False) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise doc.error(
            f"{'.'.join(map(str, key[-2:]))}: expected a list of non-empty strings", *key
        )
    if not value and not allow_empty:
        raise doc.error(f"{'.'.join(map(str, key[-2:]))}: empty list", *key)
    return [clean_text(v) for v in value]


def check_template(doc: _Located, template: str, *key: Any, fields=TEMPLATE_FIELDS) -> None:
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


def _paths(doc: _Located, entry: dict, field_name: str, name: str, key: tuple) -> list[str]:
    value = entry[field_name]
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise doc.error(
            f"{name}: {field_name!r} must be a path or a list of paths", *key, field_name
        )
    return paths


def _assign_splits(relation: str, merged: list[dict]) -> None:
    """Splits by hash: rank within the base facts, a threshold for added ones.

    Base facts (``facts:``) are ordered by a hash of (relation, subject key) and cut by
    rank, as when the shipped neuron sets were discovered. Facts of ``added_facts:``
    files that are not base subjects get ``fact_sources.added_split`` (a threshold on
    their own hash), so adding facts never moves a base fact or an earlier added one.
    """
    explicit = [m for m in merged if m["split"] is not None]
    if explicit and len(explicit) != len(merged):
        missing = next(m for m in merged if m["split"] is None)
        raise RelNeuronError(
            "some facts name a split and others do not",
            path=missing["path"],
            line=missing["line"],
            hint="give every fact a 'split' or none (then splits are assigned by hash)",
        )
    if explicit:
        return
    for m in merged:
        if m["added"]:
            m["split"] = added_split(relation, m["key"])
    base = [m for m in merged if not m["added"]]
    order = sorted(base, key=lambda m: (_stable_hash(relation, m["key"]), m["key"]))
    n = len(order)
    n_few = max(MIN_FEWSHOT, round(FEWSHOT_SHARE * n))
    n_disc = round(DISCOVERY_SHARE * n)
    for rank, m in enumerate(order):
        m["split"] = "fewshot" if rank < n_few else "discovery" if rank < n_few + n_disc else "test"


def _build_relation(doc: _Located, index: int, entry: Any, defaults: dict) -> Relation:
    key = ("relations", index)
    if not isinstance(entry, dict):
        raise doc.error("each relation must be a mapping", *key)
    unknown = sorted(set(entry) - RELATION_KEYS)
    if unknown:
        raise doc.error(
            f"unknown field(s) {unknown}",
            *key,
            unknown[0],
            "__key__",
            hint=f"allowed: {', '.join(sorted(RELATION_KEYS))}",
        )
    for required in ("name", "facts", "templates"):
        if required not in entry or entry[required] in (None, "", [], {}):
            raise doc.error(f"relation #{index + 1}: missing field {required!r}", *key)
    name = entry["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise doc.error(
            f"invalid relation name {name!r}", *key, "name", hint="use lower_snake_case"
        )
    templates_in = entry["templates"]
    if not isinstance(templates_in, dict) or "eval" not in templates_in:
        raise doc.error(
            f"{name}: templates need an 'eval' list (and usually a 'discovery' list)",
            *key,
            "templates",
        )
    templates: dict[str, list[str]] = {}
    for tkey in ("discovery", "eval"):
        if tkey in templates_in:
            templates[tkey] = _str_list(doc, templates_in[tkey], *key, "templates", tkey)
            for i, t in enumerate(templates[tkey]):
                check_template(doc, t, *key, "templates", tkey, i)
        else:
            templates[tkey] = []
    extra_keys = sorted(set(templates_in) - {"discovery", "eval"})
    if extra_keys:
        raise doc.error(f"{name}: unknown template set(s) {extra_keys}", *key, "templates")
    shared = set(templates["discovery"]) & set(templates["eval"])
    if shared:
        raise doc.error(
            f"{name}: template(s) {sorted(shared)} are both discovery and eval templates",
            *key,
            "templates",
            hint="the scored templates must differ from the ones neuron discovery sees",
        )
    for opt in ("compose", "compose_prompt", "question"):
        if opt in entry:
            if not isinstance(entry[opt], str):
                raise doc.error(f"{name}: {opt} must be a string", *key, opt)
            check_template(doc, entry[opt], *key, opt)
    paths = _paths(doc, entry, "facts", name, key)
    added_paths = _paths(doc, entry, "added_facts", name, key) if "added_facts" in entry else []
    raw: list[_Raw] = []
    offset = 0
    for i, value in enumerate([*paths, *added_paths]):
        field_name = "facts" if i < len(paths) else "added_facts"
        facts_path = (doc.path.parent / value).resolve()
        if not facts_path.is_file():
            raise doc.error(f"{name}: facts file {value!r} not found", *key, field_name)
        rows, n_lines = _read_jsonl(facts_path, name)
        for r in rows:
            r.number = offset + r.line - 1
            r.first_file = i == 0
            r.added = i >= len(paths)
        raw += rows
        offset += n_lines
    facts_path = (doc.path.parent / paths[0]).resolve()

    fixes = entry.get("fixes") or {}
    if not isinstance(fixes, dict):
        raise doc.error(
            f"{name}: fixes must map a line number to {{subject, object}}", *key, "fixes"
        )
    by_line = {r.line: r for r in raw if r.first_file}
    for line_no, fix in fixes.items():
        if not isinstance(line_no, int) or line_no not in by_line:
            raise doc.error(f"{name}: fixes: no fact on line {line_no!r}", *key, "fixes", line_no)
        if not isinstance(fix, dict) or set(fix) - {"subject", "object"}:
            raise doc.error(
                f"{name}: a fix is {{subject: ..., object: ...}}", *key, "fixes", line_no
            )
        for k, v in fix.items():
            if not isinstance(v, str) or not clean_text(v):
                raise doc.error(
                    f"{name}: fix {k} must be a non-empty string", *key, "fixes", line_no
                )
            setattr(by_line[line_no], k, clean_text(v))

    drop_objects = set(
        _str_list(doc, entry.get("drop_objects", []), *key, "drop_objects", allow_empty=True)
    )
    drop_subjects = {
        subject_key(s)
        for s in _str_list(
            doc, entry.get("drop_subjects", []), *key, "drop_subjects", allow_empty=True
        )
    }
    known_objects = {r.object for r in raw}
    for obj in sorted(drop_objects - known_objects):
        raise doc.error(
            f"{name}: drop_objects: {obj!r} is not an object of this relation", *key, "drop_objects"
        )
    kept = [
        r
        for r in raw
        if r.object not in drop_objects and subject_key(r.subject) not in drop_subjects
    ]

    aliases_in = entry.get("aliases") or {}
    if not isinstance(aliases_in, dict):
        raise doc.error(
            f"{name}: aliases must map an object to a list of spellings", *key, "aliases"
        )
    aliases: dict[str, list[str]] = {}
    for obj, values in aliases_in.items():
        obj_clean = clean_text(str(obj))
        if obj_clean not in known_objects:
            raise doc.error(
                f"{name}: aliases: {obj!r} is not an object of this relation", *key, "aliases", obj
            )
        aliases[obj_clean] = _str_list(doc, values, *key, "aliases", obj)
    extra_in = entry.get("extra_objects") or {}
    if not isinstance(extra_in, dict):
        raise doc.error(
            f"{name}: extra_objects must map a subject to a list", *key, "extra_objects"
        )
    known_subjects = {subject_key(r.subject) for r in raw}
    extra: dict[str, list[str]] = {}
    for subj, values in extra_in.items():
        if subject_key(str(subj)) not in known_subjects:
            raise doc.error(
                f"{name}: extra_objects: {subj!r} is not a subject of this relation",
                *key,
                "extra_objects",
                subj,
            )
        extra[subject_key(str(subj))] = _str_list(doc, values, *key, "extra_objects", subj)

    # Merge repeated subjects (same key): first occurrence gives id and primary object.
    merged: dict[str, dict] = {}
    for r in kept:
        k = subject_key(r.subject)
        m = merged.get(k)
        if m is None:
            merged[k] = {
                "key": k,
                "number": r.number,
                "path": r.path,
                "line": r.line,
                "subject": r.subject,
                "objects": [r.object],
                "answers": list(r.answers),
                "split": r.split,
                "split_line": r.line,
                "added": r.added,
            }
            continue
        if r.split != m["split"]:
            raise RelNeuronError(
                f"subject {r.subject!r} is in split {r.split!r} here and in {m['split']!r} on "
                f"line {m['split_line']}: that would leak it between splits",
                path=r.path,
                line=r.line,
                hint="a subject must belong to one split",
            )
        m["objects"].append(r.object)
        m["answers"].extend(r.answers)
    facts_list = list(merged.values())
    if len(facts_list) < MIN_FACTS:
        raise doc.error(
            f"{name}: {len(facts_list)} distinct subjects, at least {MIN_FACTS} needed",
            *key,
            "facts",
        )
    _assign_splits(name, facts_list)

    num_fewshot = entry.get("num_fewshot", defaults.get("num_fewshot", 3))
    if not isinstance(num_fewshot, int) or num_fewshot < 0:
        raise doc.error(f"{name}: num_fewshot must be a non-negative integer", *key, "num_fewshot")
    counts = {s: sum(1 for m in facts_list if m["split"] == s) for s in SPLITS}
    if counts["test"] == 0 or counts["fewshot"] < num_fewshot:
        raise doc.error(
            f"{name}: splits {counts} leave no test facts or fewer fewshot facts than "
            f"num_fewshot={num_fewshot}",
            *key,
            "facts",
        )

    facts: list[Fact] = []
    for m in sorted(facts_list, key=lambda m: m["number"]):
        answers = []
        for obj in m["objects"]:
            answers += [obj, *aliases.get(obj, [])]
        answers += m["answers"] + extra.get(m["key"], [])
        facts.append(
            Fact(
                relation=name,
                fact_id=f"{name}/{m['number']}",
                subject=m["subject"],
                object=m["objects"][0],
                answers=_dedupe(answers),
                split=m["split"],
                line=m["line"],
            )
        )
    objects = sorted({o for m in facts_list for o in m["objects"]})
    closed = entry.get("closed_set", False)
    if not isinstance(closed, bool):
        raise doc.error(f"{name}: closed_set must be true or false", *key, "closed_set")
    delimiter = entry.get("target_delimiter", defaults.get("target_delimiter", " "))
    if not isinstance(delimiter, str):
        raise doc.error(f"{name}: target_delimiter must be a string", *key, "target_delimiter")
    return Relation(
        name=name,
        facts=facts,
        templates=templates,
        closed_set=closed,
        objects=objects,
        compose=entry.get("compose"),
        compose_prompt=entry.get("compose_prompt"),
        question=entry.get("question"),
        num_fewshot=num_fewshot,
        target_delimiter=delimiter,
        time_sensitive=bool(entry.get("time_sensitive", False)),
        source=str(facts_path),
    )


def _load_spec_uncached(path: Path) -> dict[str, Relation]:
    doc = _Located(path)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("relations"), list):
        raise doc.error("a relation spec needs a top-level 'relations:' list")
    unknown = sorted(set(data) - {"version", "defaults", "relations"})
    if unknown:
        raise doc.error(f"unknown top-level field(s) {unknown}", unknown[0], "__key__")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict) or set(defaults) - {"num_fewshot", "target_delimiter"}:
        raise doc.error("defaults may set num_fewshot and target_delimiter only", "defaults")
    out: dict[str, Relation] = {}
    for index, entry in enumerate(data["relations"]):
        relation = _build_relation(doc, index, entry, defaults)
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
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise RelNeuronError("relation spec not found", path=path)
    return _load_spec_cached(str(p), p.stat().st_mtime_ns)


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


# ---------------------------------------------------------------------- multilingual
@dataclass(frozen=True)
class Language:
    code: str
    name: str
    target_delimiter: str
    cjk: bool


def _load_multilingual_uncached(path: Path, spec_path: Path) -> dict[str, Any]:
    doc = _Located(path)
    data = doc.data
    for required in ("columns", "languages", "relations", "names"):
        if not isinstance(data, dict) or required not in data:
            raise doc.error(f"missing top-level field {required!r}")
    columns = data["columns"]
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise doc.error("columns must be a list of language codes", "columns")
    languages: dict[str, Language] = {}
    for code, info in data["languages"].items():
        if code not in columns or not isinstance(info, dict) or "name" not in info:
            raise doc.error(f"language {code!r}: needs a name and a column", "languages", code)
        delim = info.get("target_delimiter", " ")
        languages[code] = Language(code, info["name"], delim, delim == "")
    names, short_names = _generated_names(doc, data.get("generated_names"), columns)
    for english, row in data["names"].items():
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
    aliases: dict[str, dict[str, list[str]]] = {c: dict(short_names.get(c, {})) for c in columns}
    for code, table in (data.get("aliases") or {}).items():
        if code not in languages:
            raise doc.error(f"aliases: unknown language {code!r}", "aliases", code)
        for k, v in table.items():
            aliases[code][clean_text(k)] = [
                *aliases[code].get(clean_text(k), []),
                *_str_list(doc, v, "aliases", code, k),
            ]
    english = load_spec(spec_path)
    out: dict[str, dict[str, Relation]] = {}
    for code, rels in data["relations"].items():
        if code not in languages:
            raise doc.error(f"relations: unknown language {code!r}", "relations", code)
        lang = languages[code]
        out[code] = {}
        for rel_name, opts in rels.items():
            if rel_name not in english:
                raise doc.error(
                    f"{code}: unknown relation {rel_name!r}", "relations", code, rel_name
                )
            if not isinstance(opts, dict) or "templates" not in opts:
                raise doc.error(f"{code}.{rel_name}: needs templates", "relations", code, rel_name)
            unknown = sorted(set(opts) - {"templates", "keep_subject", "answers", "num_fewshot"})
            if unknown:
                raise doc.error(
                    f"{code}.{rel_name}: unknown field(s) {unknown}", "relations", code, rel_name
                )
            templates = _str_list(doc, opts["templates"], "relations", code, rel_name, "templates")
            for i, t in enumerate(templates):
                check_template(doc, t, "relations", code, rel_name, "templates", i)
            overrides = {
                subject_key(str(s)): _str_list(doc, v, "relations", code, rel_name, "answers", s)
                for s, v in (opts.get("answers") or {}).items()
            }
            base = english[rel_name]
            keep_subject = opts.get("keep_subject", False)
            if keep_subject not in (True, False, "fallback"):
                raise doc.error(
                    f"{code}.{rel_name}: keep_subject is true, false or fallback",
                    "relations",
                    code,
                    rel_name,
                    "keep_subject",
                )
            facts = translate_facts(base, code, keep_subject, names, aliases, overrides)
            num_fewshot = int(opts.get("num_fewshot", base.num_fewshot))
            n_demos = sum(f.split == "fewshot" for f in facts)
            if n_demos < num_fewshot:
                raise doc.error(
                    f"{code}.{rel_name}: {n_demos} fewshot facts have names in {code}, "
                    f"fewer than num_fewshot={num_fewshot}",
                    "relations",
                    code,
                    rel_name,
                    hint="set a lower num_fewshot or leave the relation out of this language",
                )
            objects = sorted({f.object for f in facts})
            out[code][rel_name] = Relation(
                name=rel_name,
                facts=facts,
                templates={"discovery": [], "eval": templates},
                closed_set=base.closed_set,
                objects=objects,
                num_fewshot=num_fewshot,
                target_delimiter=lang.target_delimiter,
                language=code,
                source=str(path),
            )
    return {"languages": languages, "relations": out}


def _generated_names(doc: _Located, value: Any, columns: list) -> tuple[dict, dict]:
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


@functools.lru_cache(maxsize=4)
def _load_multilingual_cached(path: str, mtime: int, spec: str, spec_mtime: int) -> dict[str, Any]:
    return _load_multilingual_uncached(Path(path), Path(spec))


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


def split_report(relations: dict[str, Relation] | None = None) -> dict[str, dict[str, int]]:
    """Number of facts per split and relation (for docs and the leak test)."""
    relations = relations if relations is not None else load_relations()
    return {
        name: {s: len(rel.facts_in(s)) for s in SPLITS} for name, rel in sorted(relations.items())
    }
