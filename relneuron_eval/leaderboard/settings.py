"""The leaderboard's settings file: methods, budgets, relations and metric, fixed in advance.

A leaderboard is only fair when its budgets and relations were chosen before any
number was seen, so they live in a file that is committed before the run (the commit
order shows it) and copied verbatim, with its SHA-256, into ``leaderboard.json``.
Every mistake in it is one ``FILE:LINE`` error before the model loads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relneuron_eval.evaluation.metrics import METRICS, metric_task
from relneuron_eval.yaml_lines import (
    LineDict,
    LocatedError,
    as_int,
    as_mapping,
    as_string,
    as_strings,
    at_file,
    line_of,
    load_yaml,
    reject_unknown_keys,
)

# method name -> what it is; "find" methods run `relneuron find <name>` in-process
FIND_METHODS = ("relation-specific", "attribution-patching", "diffmean", "activation-magnitude")
DERIVED_METHODS = ("random-matched", "random")  # drawn from another method's set
TOP_KEYS = ("model", "metric", "budgets", "relations", "isolate_shifts", "discovery", "methods")
DISCOVERY_KEYS = (
    "relations",
    "fewshot",
    "demos",
    "max_facts",
    "seed",
    "sites",
    "batch_size",
    "min_positives",
)
METHOD_KEYS = ("name", "set", "of", "seed", "pool")


@dataclass(frozen=True)
class MethodSpec:
    """One leaderboard entry: found here, read from ``set``, or drawn from method ``of``."""

    name: str
    set: str | None = None  # a neuron-set file: score it as given (no discovery, no cost)
    of: str | None = None  # random / random-matched: the method whose top-k they match
    seed: int = 0
    pool: int = 5

    @property
    def kind(self) -> str:
        if self.set is not None:
            return "given"
        return "derived" if self.name in DERIVED_METHODS else "find"


@dataclass
class Settings:
    """The validated settings, their file's text and its SHA-256."""

    path: str
    text: str
    sha256: str
    model: str
    metric: str
    budgets: list[int]
    relations: list[str]
    isolate_shifts: list[int]
    discovery: dict[str, Any]
    methods: list[MethodSpec] = field(default_factory=list)

    def task(self, relation: str) -> str:
        return metric_task(self.metric, relation)[0]

    @property
    def metric_key(self) -> str:
        return METRICS[self.metric][1]

    def record(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "text": self.text}


DISCOVERY_DEFAULTS: dict[str, Any] = {
    "relations": "all",
    "fewshot": "task",
    "demos": "per-relation",
    "max_facts": None,
    "seed": 0,
    "sites": ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
    "batch_size": 16,
    "min_positives": 10,
}


def load_settings(path: str | Path) -> Settings:
    """Read and validate a settings file (every error names its line)."""
    path = Path(path)
    data = load_yaml(path, "leaderboard settings")
    text = path.read_text(encoding="utf-8")
    with at_file(path):
        return _settings(path, text, as_mapping(data, 1, "the settings"))


def _settings(path: Path, text: str, data: LineDict) -> Settings:
    reject_unknown_keys(data, TOP_KEYS, "the settings")
    for key in ("budgets", "relations", "methods"):
        if key not in data:
            raise LocatedError(f"missing key {key!r}", data.line or 1, f"add {key}: [...]")
    budgets = _int_list(data, "budgets", 1)
    if budgets != sorted(set(budgets)):
        raise LocatedError("budgets must be increasing and distinct", line_of(data, "budgets"))
    metric = as_string(data.get("metric", "acc_match"), line_of(data, "metric"), "metric")
    if metric not in METRICS:
        raise LocatedError(
            f"unknown metric {metric!r}", line_of(data, "metric"), f"one of {', '.join(METRICS)}"
        )
    relations = as_strings(data["relations"], line_of(data, "relations"), "relations")
    if len(set(relations)) < 2:
        raise LocatedError(
            "at least 2 relations (Isolate needs others)", line_of(data, "relations")
        )
    shifts = _int_list(data, "isolate_shifts", 1) if "isolate_shifts" in data else [1]
    bad = [s for s in shifts if s % len(set(relations)) == 0]
    if bad:
        raise LocatedError(
            f"isolate_shifts {bad} map a relation onto itself ({len(set(relations))} relations)",
            line_of(data, "isolate_shifts"),
        )
    settings = Settings(
        path=str(path),
        text=text,
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        model=as_string(data.get("model", "smollm2-135m"), line_of(data, "model"), "model"),
        metric=metric,
        budgets=budgets,
        relations=list(dict.fromkeys(relations)),
        isolate_shifts=shifts,
        discovery=_discovery(data),
        methods=_methods(data),
    )
    _known_relations(settings.relations, data)
    return settings


def _known_relations(relations: list[str], data: LineDict) -> None:
    from relneuron_eval.data.facts import RELATIONS

    unknown = [r for r in relations if r not in RELATIONS]
    if unknown:
        value = data["relations"]
        line = line_of(value, relations.index(unknown[0]), line_of(data, "relations"))
        raise LocatedError(f"unknown relation(s) {unknown}", line, f"known: {', '.join(RELATIONS)}")


def _int_list(data: LineDict, key: str, minimum: int) -> list[int]:
    value = data[key]
    line = line_of(data, key)
    if not isinstance(value, list) or not value:
        raise LocatedError(f"{key} must be a non-empty list of integers", line)
    return [as_int(v, line_of(value, i, line), key, minimum) for i, v in enumerate(value)]


def _discovery(data: LineDict) -> dict[str, Any]:
    out = dict(DISCOVERY_DEFAULTS)
    if "discovery" not in data:
        return out
    block = as_mapping(data["discovery"], line_of(data, "discovery"), "discovery")
    reject_unknown_keys(block, DISCOVERY_KEYS, "discovery")
    for key, value in block.items():
        line = line_of(block, key)
        if key == "seed":
            out[key] = as_int(value, line, key, 0)
        elif key in ("batch_size", "min_positives"):
            out[key] = as_int(value, line, key, 1)
        elif key == "max_facts":
            out[key] = None if value is None else as_int(value, line, key, 1)
        elif key == "fewshot":
            out[key] = value if value == "task" else as_int(value, line, key, 0)
        elif key == "sites":
            out[key] = as_strings(value, line, key)
        elif key == "relations":
            out[key] = ",".join(as_strings(value, line, key))
        else:
            out[key] = as_string(value, line, key)
    return out


def _methods(data: LineDict) -> list[MethodSpec]:
    items = data["methods"]
    line = line_of(data, "methods")
    if not isinstance(items, list) or not items:
        raise LocatedError("methods must be a non-empty list", line)
    out: list[MethodSpec] = []
    for i, item in enumerate(items):
        where = line_of(items, i, line)
        if isinstance(item, str):
            item = LineDict(name=item)
        block = as_mapping(item, where, "a method")
        reject_unknown_keys(block, METHOD_KEYS, "a method")
        spec = MethodSpec(
            name=as_string(block.get("name"), where, "method name"),
            set=as_string(block["set"], line_of(block, "set"), "set") if "set" in block else None,
            of=as_string(block["of"], line_of(block, "of"), "of") if "of" in block else None,
            seed=as_int(block.get("seed", 0), line_of(block, "seed", where), "seed", 0),
            pool=as_int(block.get("pool", 5), line_of(block, "pool", where), "pool", 1),
        )
        _check_method(spec, out, where)
        out.append(spec)
    return out


def _check_method(spec: MethodSpec, before: list[MethodSpec], line: int | None) -> None:
    known = (*FIND_METHODS, *DERIVED_METHODS)
    if any(m.name == spec.name for m in before):
        raise LocatedError(f"method {spec.name!r} is listed twice", line)
    if spec.set is None and spec.name not in known:
        raise LocatedError(
            f"unknown method {spec.name!r}",
            line,
            f"built-in: {', '.join(known)}; or give `set: FILE` for a set of your own",
        )
    if spec.kind == "derived":
        # only a found or given set can be matched: a derived one (random of random) never
        # becomes a discovery step, and the run would wait for it forever
        sources = {m.name for m in before if m.kind != "derived"}
        if spec.of is None or spec.of not in sources:
            raise LocatedError(
                f"{spec.name} needs `of:` naming a found or given method listed before it",
                line,
                "e.g. of: relation-specific",
            )
    elif spec.of is not None:
        raise LocatedError(f"`of:` only applies to {', '.join(DERIVED_METHODS)}", line)
