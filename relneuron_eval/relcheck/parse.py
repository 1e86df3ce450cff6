"""Check files (``*.relcheck.yaml``, schema ``relcheck: 1``): parsing and validation.

A check file declares a model, a neuron set, named interventions, tasks and
expectations about how each intervention changes the scores. Everything that can be
wrong with the file itself (unknown keys, wrong types, impossible thresholds, unknown
intervention names) is found here, before any model is loaded, and reported as one
``RelNeuronError`` naming the file and line. Pure Python: no torch, no lm-eval.

The file is read by ``yaml_lines`` (the loader shared with relation specs); the parsed
result is the types of ``relcheck.types``, which the runner and the judge read.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from relneuron_eval.core.spec import INTERVENTION_KEYS, InterventionSpec, InvalidSetting
from relneuron_eval.relcheck.types import BASE, OTHERS, CheckSpec, Expectation, NamedIntervention
from relneuron_eval.yaml_lines import (
    LineDict,
    LocatedError,
    as_bool,
    as_int,
    as_mapping,
    as_number,
    as_string,
    as_strings,
    at_file,
    line_of,
    load_yaml,
    reject_unknown_keys,
    type_name,
)

SCHEMA_VERSION = 1
DEFAULT_MODEL = "smollm2-135m"
TOP_KEYS = (
    "relcheck",
    "description",
    "model",
    "model_args",
    "neuron_set",
    "include_path",
    "defaults",
    "tasks",
    "metric",
    "interventions",
    "expect",
)
DEFAULT_KEYS = ("batch_size", "limit", "device", "num_fewshot", "bootstrap_iters")
KINDS = ("drop", "within", "drop_below", "control_drop_below", "raises", "compare")
COMMON_KEYS = ("task", "tasks", "except", "metric", "over", "relative", "id")
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "drop": ("at_least", "alpha"),
    "within": ("tolerance",),
    "drop_below": ("below",),
    "control_drop_below": ("below",),
    "raises": ("at_least", "alpha"),
    "compare": ("than", "worse_by", "better_by", "alpha"),
}
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "drop": ("at_least",),
    "within": ("tolerance",),
    "drop_below": ("below",),
    "control_drop_below": ("below",),
    "raises": (),
    "compare": ("than",),
}
# Metrics whose values lie in [0, 1] (by name prefix): an absolute change beyond 1 cannot
# happen. Covers acc, acc_norm, acc_prefix2, acc_match, exact_match, f1, ...
BOUNDED_PREFIXES = ("acc", "exact_match", "em", "f1", "mcc")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# ================================================================== parsing
def check_limit(value: Any, line: int | None = None, what: str = "limit") -> int | float | None:
    """lm-eval's --limit: a document count, a fraction in (0, 1), or null for all."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LocatedError(f"{what} must be a number or null, got {type_name(value)}", line)
    if isinstance(value, int) and value >= 1:
        return value
    if isinstance(value, float) and 0.0 < value < 1.0:
        return value
    if isinstance(value, float) and value >= 1.0 and value.is_integer():
        return int(value)
    raise LocatedError(
        f"{what} must be a document count >= 1 or a fraction in (0, 1), got {value!r}", line
    )


def check_batch_size(value: Any, line: int | None = None) -> int | str:
    if isinstance(value, str) and (value == "auto" or value.startswith("auto:")):
        return value
    return as_int(value, line, "batch_size", 1)


def _resolve_path(base: Path, value: str) -> str:
    """Relative paths are relative to the check file; ``neuron_sets/...`` may be shipped."""
    from relneuron_eval.resources import resolve_shipped

    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        local = base / candidate
        if local.exists() or not str(value).startswith(("neuron_sets/", "tasks/")):
            return str(local.resolve()) if local.exists() else str(local)
    return str(resolve_shipped(candidate))


def _model_arg_form(key: str, value: Any, line: int | None) -> Any:
    """YAML lists in the "a|b" form of model args; every value is checked by the spec."""
    if key in ("groups", "sites"):
        return "|".join(as_strings(value, line, key))
    if key == "layers":
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                raise LocatedError("layers must be integers or ranges like '2-5'", line)
        return "|".join(str(item).strip() for item in items)
    return value


# Stands in for the check's top-level set while an intervention without its own is
# validated (settings like top_k need a set; which one is known at run time).
_CHECK_SET = "(the check's neuron_set)"


def _parse_intervention(name: Any, raw: Any, line: int | None, base: Path) -> NamedIntervention:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name == BASE:
        raise LocatedError(
            f"bad intervention name {name!r}",
            line,
            "use letters, digits, '_', '-' or '.' (and not 'base')",
        )
    if raw is None:
        raw = LineDict()
        raw.line = line or 0
    settings = as_mapping(raw, line, f"intervention {name!r}")
    reject_unknown_keys(settings, INTERVENTION_KEYS, f"intervention {name!r}")
    args = {k: _model_arg_form(k, v, line_of(settings, k)) for k, v in settings.items()}
    own_set = None
    if "neuron_set" in settings:
        key_line = line_of(settings, "neuron_set")
        own_set = _resolve_path(base, as_string(settings["neuron_set"], key_line, "neuron_set"))
    try:
        spec = InterventionSpec.from_model_args({**args, "neuron_set": own_set or _CHECK_SET})
    except InvalidSetting as exc:
        raise LocatedError(exc.message, line_of(settings, exc.setting), exc.hint) from None
    return NamedIntervention(name, replace(spec, neuron_set=own_set), line or 0)


def _threshold(
    exp: LineDict, key: str, kind: str, metric: str | None, relative: bool, *, strict: bool
) -> float:
    """Read a threshold and reject values that no result could ever meet."""
    line = line_of(exp, key)
    value = as_number(exp[key], line, key)
    if strict and value <= 0:
        raise LocatedError(f"{kind}: {key} must be > 0, got {value:g}", line)
    if value < 0:
        raise LocatedError(f"{kind}: {key} cannot be negative, got {value:g}", line)
    bounded = (metric or "acc").split(",")[0].startswith(BOUNDED_PREFIXES)
    if kind in ("drop", "raises", "compare") and value > 1 and (relative or bounded):
        scale = "relative" if relative else f"absolute ({metric or 'acc'} lies in [0, 1])"
        raise LocatedError(
            f"{kind}: {key} {value:g} is impossible: a {scale} change cannot exceed 1", line
        )
    return value


def _expectation_kind(exp: LineDict, known: dict[str, NamedIntervention]) -> tuple[str, str]:
    """The expectation's kind and the (declared) intervention it is about."""
    kinds = [k for k in KINDS if k in exp]
    if len(kinds) != 1:
        found = f"found {kinds}" if kinds else "found none"
        raise LocatedError(
            f"an expectation needs exactly one kind key ({', '.join(KINDS)}); {found}", exp.line
        )
    kind = kinds[0]
    reject_unknown_keys(exp, (kind, *COMMON_KEYS, *KIND_KEYS[kind]), f"a {kind} expectation")
    for key in REQUIRED_KEYS[kind]:
        if key not in exp:
            raise LocatedError(f"{kind}: missing {key!r}", exp.line)
    intervention = as_string(exp[kind], line_of(exp, kind), kind)
    if intervention not in known:
        close = difflib.get_close_matches(intervention, list(known), n=1)
        raise LocatedError(
            f"{kind}: unknown intervention {intervention!r}",
            line_of(exp, kind),
            f"did you mean {close[0]!r}?" if close else f"declared: {', '.join(known) or 'none'}",
        )
    if kind == "control_drop_below" and not known[intervention].is_random_control:
        raise LocatedError(
            f"control_drop_below: intervention {intervention!r} is not a random control",
            line_of(exp, kind),
            "give it control: random (or use drop_below)",
        )
    return kind, intervention


def _expectation_tasks(exp: LineDict) -> tuple[list[str] | None, list[str]]:
    """The task patterns an expectation covers (None: the check's tasks) and its excludes."""
    if "task" in exp and "tasks" in exp:
        raise LocatedError("give either task or tasks, not both", line_of(exp, "tasks"))
    tasks = None
    for key in ("task", "tasks"):
        if key in exp:
            tasks = as_strings(exp[key], line_of(exp, key), key)
            if OTHERS in tasks and len(tasks) > 1:
                raise LocatedError("'others' cannot be mixed with task names", line_of(exp, key))
    excludes = (
        as_strings(exp["except"], line_of(exp, "except"), "except") if "except" in exp else []
    )
    return tasks, excludes


def _compare_target(
    exp: LineDict, intervention: str, known: dict[str, NamedIntervention]
) -> tuple[str, str, str]:
    """A compare expectation's reference, direction and the key holding its threshold."""
    than = as_string(exp["than"], line_of(exp, "than"), "than")
    if than != BASE and than not in known:
        raise LocatedError(
            f"compare: unknown intervention {than!r} in 'than'",
            line_of(exp, "than"),
            f"declared: {', '.join(known)} (or 'base')",
        )
    if than == intervention:
        raise LocatedError("compare: an intervention compared with itself", line_of(exp, "than"))
    given = [k for k in ("worse_by", "better_by") if k in exp]
    if len(given) != 1:
        raise LocatedError("compare: give exactly one of worse_by or better_by", exp.line)
    return than, "worse" if given[0] == "worse_by" else "better", given[0]


# kind -> (threshold key, must be > 0); compare and raises are read in _parse_expectation
_THRESHOLDS = {
    "drop": ("at_least", True),
    "within": ("tolerance", False),
    "drop_below": ("below", True),
    "control_drop_below": ("below", True),
}


def _parse_expectation(
    raw: Any, line: int | None, known: dict[str, NamedIntervention], default_metric: str | None
) -> Expectation:
    exp = as_mapping(raw, line, "an expectation")
    kind, intervention = _expectation_kind(exp, known)
    tasks, excludes = _expectation_tasks(exp)
    metric = (
        as_string(exp["metric"], line_of(exp, "metric"), "metric")
        if "metric" in exp
        else default_metric
    )
    over = exp.get("over", "each")
    if over not in ("each", "mean"):
        raise LocatedError(f"over must be 'each' or 'mean', got {over!r}", line_of(exp, "over"))
    relative = (
        as_bool(exp["relative"], line_of(exp, "relative"), "relative")
        if "relative" in exp
        else False
    )
    than = direction = alpha = None
    if kind == "compare":
        than, direction, key = _compare_target(exp, intervention, known)
        threshold = _threshold(exp, key, kind, metric, relative, strict=False)
    elif kind == "raises":
        threshold = (
            _threshold(exp, "at_least", kind, metric, relative, strict=False)
            if "at_least" in exp
            else 0.0
        )
    else:
        key, strict = _THRESHOLDS[kind]
        threshold = _threshold(exp, key, kind, metric, relative, strict=strict)
    if "alpha" in exp:
        alpha = as_number(exp["alpha"], line_of(exp, "alpha"), "alpha")
        if not 0.0 < alpha < 1.0:
            raise LocatedError(f"alpha must be in (0, 1), got {alpha:g}", line_of(exp, "alpha"))
    ident = as_string(exp["id"], line_of(exp, "id"), "id") if "id" in exp else ""
    if ident and not _NAME_RE.match(ident.replace("*", "").replace("[", "").replace("]", "")):
        raise LocatedError(f"id {ident!r} has characters pytest cannot select", line_of(exp, "id"))
    return Expectation(
        kind=kind,
        intervention=intervention,
        tasks=tasks,
        excludes=excludes,
        metric=metric,
        over=over,
        relative=relative,
        threshold=threshold,
        than=than,
        direction=direction,
        alpha=alpha,
        id=ident,
        line=exp.line,
    )


def _default_id(exp: Expectation) -> str:
    parts = [exp.kind, exp.intervention]
    if exp.than:
        parts.append(f"vs-{exp.than}")
    if exp.tasks and len(exp.tasks) == 1:
        parts.append(exp.tasks[0])
    return "-".join(parts)


def _parse_defaults(raw: Any, line: int | None) -> dict[str, Any]:
    defaults = as_mapping(raw, line, "defaults")
    reject_unknown_keys(defaults, DEFAULT_KEYS, "defaults")
    out: dict[str, Any] = {}
    for key, value in defaults.items():
        key_line = line_of(defaults, key)
        if key == "batch_size":
            out[key] = check_batch_size(value, key_line)
        elif key == "limit":
            out[key] = check_limit(value, key_line)
        elif key == "device":
            out[key] = as_string(value, key_line, key)
        elif key == "num_fewshot":
            out[key] = None if value is None else as_int(value, key_line, key, 0)
        else:
            out[key] = as_int(value, key_line, key, 0)
    return out


def _check_header(data: Any) -> None:
    """A mapping that starts with the schema version this code reads, and no unknown keys."""
    if not isinstance(data, LineDict):
        raise LocatedError(
            "a check file must be a YAML mapping",
            getattr(data, "line", 1),
            "start with: relcheck: 1",
        )
    if "relcheck" not in data:
        raise LocatedError("missing 'relcheck: 1' (the schema version)", 1)
    if data["relcheck"] != SCHEMA_VERSION or isinstance(data["relcheck"], bool):
        raise LocatedError(
            f"unsupported relcheck version {data['relcheck']!r}",
            line_of(data, "relcheck"),
            f"this relneuron-eval reads relcheck: {SCHEMA_VERSION}",
        )
    reject_unknown_keys(data, TOP_KEYS, "the check file")


def _parse_model_args(data: LineDict) -> dict[str, Any]:
    """Extra model args; the model and the intervention settings have their own keys."""
    model_args = dict(
        as_mapping(data.get("model_args") or LineDict(), line_of(data, "model_args"), "model_args")
    )
    for key in ("pretrained", *INTERVENTION_KEYS):
        if key in model_args:
            raise LocatedError(
                f"model_args may not set {key!r}",
                line_of(data["model_args"], key),
                "the model is 'model:'; intervention arguments go under 'interventions:'",
            )
    return model_args


def _parse_neuron_set(data: LineDict, base: Path) -> str | dict[str, str] | None:
    """The top-level neuron set: one path, or a path per model name."""
    raw_set = data.get("neuron_set")
    if isinstance(raw_set, LineDict):
        return {
            as_string(k, line_of(raw_set, k), "model name"): _resolve_path(
                base, as_string(v, line_of(raw_set, k), f"neuron_set for {k}")
            )
            for k, v in raw_set.items()
        }
    if raw_set is not None:
        return _resolve_path(base, as_string(raw_set, line_of(data, "neuron_set"), "neuron_set"))
    return None


def _parse_include_path(data: LineDict, base: Path) -> list[Path]:
    includes = []
    if "include_path" in data:
        for item in as_strings(data["include_path"], line_of(data, "include_path"), "include_path"):
            folder = Path(_resolve_path(base, item))
            if not folder.is_dir():
                raise LocatedError(
                    f"include_path {item!r} is not a folder", line_of(data, "include_path")
                )
            includes.append(folder)
    return includes


def _parse_tasks(data: LineDict) -> list[str]:
    if "tasks" not in data:
        raise LocatedError("missing 'tasks' (task names, groups or globs)", data.line)
    tasks = as_strings(data["tasks"], line_of(data, "tasks"), "tasks")
    if OTHERS in tasks:
        raise LocatedError(
            "'others' is only meaningful inside an expectation", line_of(data, "tasks")
        )
    return tasks


def _parse_interventions(
    data: LineDict, base: Path, neuron_set: str | dict[str, str] | None
) -> dict[str, NamedIntervention]:
    raw_ivs = as_mapping(
        data.get("interventions"), line_of(data, "interventions", data.line), "interventions"
    )
    if not raw_ivs:
        raise LocatedError("interventions is empty", line_of(data, "interventions"))
    interventions = {
        name: _parse_intervention(name, raw, line_of(raw_ivs, name), base)
        for name, raw in raw_ivs.items()
    }
    for iv in interventions.values():
        if iv.neuron_set is None and neuron_set is None:
            raise LocatedError(
                f"intervention {iv.name!r} has no neuron set", iv.line, "add neuron_set: at the top"
            )
    return interventions


def _parse_expectations(
    data: LineDict, interventions: dict[str, NamedIntervention]
) -> list[Expectation]:
    """The expectations, each with a unique id (generated ids get #2, #3, ... on repeats)."""
    raw_expect = data.get("expect")
    if not isinstance(raw_expect, list) or not raw_expect:
        raise LocatedError(
            "expect must be a non-empty list of expectations", line_of(data, "expect", data.line)
        )
    metric = (
        as_string(data["metric"], line_of(data, "metric"), "metric") if "metric" in data else None
    )
    expectations = [
        _parse_expectation(raw, line_of(raw_expect, i), interventions, metric)
        for i, raw in enumerate(raw_expect)
    ]
    seen: dict[str, int] = {}
    for exp in expectations:
        ident = exp.id or _default_id(exp)
        if ident in seen:
            if exp.id:
                raise LocatedError(
                    f"duplicate id {ident!r} (first on line {seen[ident]})", exp.line
                )
            n = 2
            while f"{ident}#{n}" in seen:
                n += 1
            ident = f"{ident}#{n}"
        seen[ident] = exp.line
        exp.id = ident
    return expectations


def _parse(data: Any, path: Path) -> CheckSpec:
    _check_header(data)
    base = path.resolve().parent  # relative paths in the file are relative to it
    model = as_string(data.get("model", DEFAULT_MODEL), line_of(data, "model"), "model")
    model_args = _parse_model_args(data)
    neuron_set = _parse_neuron_set(data, base)
    includes = _parse_include_path(data, base)
    defaults = (
        _parse_defaults(data["defaults"], line_of(data, "defaults")) if "defaults" in data else {}
    )
    tasks = _parse_tasks(data)
    interventions = _parse_interventions(data, base, neuron_set)
    return CheckSpec(
        path=path,
        model=model,
        model_args=model_args,
        neuron_set=neuron_set,
        neuron_set_line=line_of(data, "neuron_set") if "neuron_set" in data else None,
        include_path=includes,
        defaults=defaults,
        tasks=tasks,
        tasks_line=line_of(data, "tasks") or 0,
        interventions=interventions,
        expectations=_parse_expectations(data, interventions),
        description=str(data.get("description") or ""),
        lines=dict(data.lines),
    )


def parse_check(path: str | Path) -> CheckSpec:
    """Parse and validate a check file; any problem raises one located RelNeuronError."""
    path = Path(path)
    data = load_yaml(path, "check file")
    with at_file(path):
        return _parse(data, path)
