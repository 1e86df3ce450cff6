"""Check files (``*.relcheck.yaml``, schema ``relcheck: 1``): parsing and validation.

A check file declares a model, a neuron set, named interventions, tasks and
expectations about how each intervention changes the scores. Everything that can be
wrong with the file itself (unknown keys, wrong types, impossible thresholds, unknown
intervention names) is found here, before any model is loaded, and reported as one
``RelNeuronError`` naming the file and line. Pure Python: no torch, no lm-eval.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.variant import INTERVENTION_KEYS

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
MODES = ("deactivate", "enhance", "scale", "set")  # mirrors interventions.MODES (no torch here)
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
OTHERS = "others"
BASE = "base"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


# ============================================================ YAML with line numbers
class LineDict(dict):
    """A mapping that remembers the line of itself and of each key (1-based)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = 0
        self.lines: dict[Any, int] = {}


class LineList(list):
    """A sequence that remembers the line of itself and of each item (1-based)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.line = 0
        self.lines: list[int] = []


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps line numbers and rejects duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    out.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise _LocatedError(f"unsupported key {key!r}", line)
        if key in out:
            raise _LocatedError(f"duplicate key {key!r} (first on line {out.lines[key]})", line)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


class _LocatedError(Exception):
    def __init__(self, message: str, line: int | None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.line, self.hint = message, line, hint


def load_yaml(path: Path) -> Any:
    """Read a YAML file into LineDict/LineList; syntax errors become RelNeuronError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RelNeuronError("check file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RelNeuronError(f"cannot read check file: {exc}", path=path) from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except _LocatedError as exc:
        raise RelNeuronError(exc.message, path=path, line=exc.line, hint=exc.hint) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RelNeuronError(
            f"invalid YAML: {problem}", path=path, line=None if mark is None else mark.line + 1
        ) from None


# ================================================================== the spec
@dataclass
class InterventionSpec:
    """One named intervention: relneuron-hf model args on top of the base model."""

    name: str
    args: dict[str, Any]  # groups/mode/... already in model-arg form ("a|b", "0|1")
    neuron_set: str | None  # per-intervention set (absolute path or shipped name)
    line: int

    @property
    def is_random_control(self) -> bool:
        return self.args.get("control") == "random"

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.args.items()]
        return " ".join(parts) or "(all groups, deactivate)"


@dataclass
class Expectation:
    """One expectation = one pytest item."""

    kind: str
    intervention: str
    tasks: list[str] | None  # patterns; None = the check's tasks; ["others"] = the rest
    excludes: list[str]
    metric: str | None
    over: str  # "each" or "mean"
    relative: bool
    threshold: float
    than: str | None = None  # compare: the reference intervention or "base"
    direction: str | None = None  # compare: "worse" or "better"
    alpha: float | None = None
    id: str = ""
    line: int = 0

    @property
    def uses_others(self) -> bool:
        return self.tasks == [OTHERS]

    def interventions(self) -> list[str]:
        """Every intervention whose scores this expectation reads (besides the base)."""
        names = [self.intervention]
        if self.than and self.than != BASE:
            names.append(self.than)
        return names

    def describe(self) -> str:
        """One sentence, as in the failure message."""
        what = f"{self.metric or 'acc'}"
        where = (
            "the other tasks"
            if self.uses_others
            else ("the check's tasks" if self.tasks is None else ", ".join(self.tasks))
        )
        if self.excludes:
            where += f" except {', '.join(self.excludes)}"
        scale = "relative to the base" if self.relative else "absolute"
        agg = "on the mean over" if self.over == "mean" else "on each of"
        t = f"{self.threshold:g}"
        if self.kind == "drop":
            body = f"{self.intervention} lowers {what} by at least {t} ({scale})"
        elif self.kind == "within":
            body = f"{self.intervention} changes {what} by at most ±{t} ({scale})"
        elif self.kind in ("drop_below", "control_drop_below"):
            body = f"{self.intervention} lowers {what} by less than {t} ({scale})"
        elif self.kind == "raises":
            body = f"{self.intervention} raises {what}" + (
                f" by at least {t} ({scale})" if self.threshold > 0 else ""
            )
        else:
            word = "lower" if self.direction == "worse" else "higher"
            body = f"{self.intervention} scores {word} on {what} than {self.than}" + (
                f" by at least {t} ({scale})" if self.threshold > 0 else ""
            )
        if self.alpha is not None:
            body += f", with paired p < {self.alpha:g}"
        return f"{body}, {agg} {where}"


@dataclass
class CheckSpec:
    """A parsed and validated check file (before command-line overrides)."""

    path: Path
    model: str
    model_args: dict[str, Any]
    neuron_set: str | dict[str, str] | None
    neuron_set_line: int | None
    include_path: list[Path]
    defaults: dict[str, Any]
    tasks: list[str]
    tasks_line: int
    interventions: dict[str, InterventionSpec]
    expectations: list[Expectation]
    description: str = ""
    lines: dict[str, int] = field(default_factory=dict)

    def error(self, message: str, line: int | None = None, hint: str | None = None):
        return RelNeuronError(message, path=self.path, line=line, hint=hint)

    def neuron_set_for(self, model: str) -> str | None:
        """The top-level neuron set to use with ``model`` (None if the mapping lacks it)."""
        if isinstance(self.neuron_set, dict):
            return self.neuron_set.get(model)
        return self.neuron_set


# ================================================================== parsing
def _line(container: Any, key: Any, default: int | None = None) -> int | None:
    if isinstance(container, LineDict):
        return container.lines.get(key, container.line)
    if isinstance(container, LineList) and isinstance(key, int) and key < len(container.lines):
        return container.lines[key]
    return getattr(container, "line", default)


def _unknown_keys(mapping: LineDict, allowed: tuple[str, ...], what: str) -> None:
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
            raise _LocatedError(f"unknown key {key!r} in {what}", _line(mapping, key), hint)


def _mapping(value: Any, line: int | None, what: str) -> LineDict:
    if not isinstance(value, LineDict):
        raise _LocatedError(f"{what} must be a mapping, got {_type(value)}", line)
    return value


def _type(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return {"LineDict": "a mapping", "LineList": "a list"}.get(
        type(value).__name__, f"{type(value).__name__} {value!r}"
    )


def _string(value: Any, line: int | None, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _LocatedError(f"{what} must be a non-empty string, got {_type(value)}", line)
    return value.strip()


def _strings(value: Any, line: int | None, what: str) -> list[str]:
    """A string or a non-empty list of strings."""
    if isinstance(value, str):
        return [_string(value, line, what)]
    if isinstance(value, list) and value:
        return [_string(v, _line(value, i, line), what) for i, v in enumerate(value)]
    raise _LocatedError(f"{what} must be a name or a non-empty list of names", line)


def _number(value: Any, line: int | None, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _LocatedError(f"{what} must be a number, got {_type(value)}", line)
    if value != value or value in (float("inf"), float("-inf")):
        raise _LocatedError(f"{what} must be finite, got {value!r}", line)
    return float(value)


def _int(value: Any, line: int | None, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _LocatedError(f"{what} must be an integer >= {minimum}, got {_type(value)}", line)
    return value


def _bool(value: Any, line: int | None, what: str) -> bool:
    if not isinstance(value, bool):
        raise _LocatedError(f"{what} must be true or false, got {_type(value)}", line)
    return value


def check_limit(value: Any, line: int | None = None, what: str = "limit") -> int | float | None:
    """lm-eval's --limit: a document count, a fraction in (0, 1), or null for all."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _LocatedError(f"{what} must be a number or null, got {_type(value)}", line)
    if isinstance(value, int) and value >= 1:
        return value
    if isinstance(value, float) and 0.0 < value < 1.0:
        return value
    if isinstance(value, float) and value >= 1.0 and value.is_integer():
        return int(value)
    raise _LocatedError(
        f"{what} must be a document count >= 1 or a fraction in (0, 1), got {value!r}", line
    )


def check_batch_size(value: Any, line: int | None = None) -> int | str:
    if isinstance(value, str) and (value == "auto" or value.startswith("auto:")):
        return value
    return _int(value, line, "batch_size", 1)


def _resolve_path(base: Path, value: str) -> str:
    """Relative paths are relative to the check file; ``neuron_sets/...`` may be shipped."""
    from relneuron_eval.resources import resolve_shipped

    candidate = Path(value).expanduser()
    if not candidate.is_absolute():
        local = base / candidate
        if local.exists() or not str(value).startswith(("neuron_sets/", "tasks/")):
            return str(local.resolve()) if local.exists() else str(local)
    return str(resolve_shipped(candidate))


def _model_arg_value(key: str, value: Any, line: int | None) -> Any:
    """Intervention values in the form relneuron-hf's model args take."""
    if key in ("groups", "sites"):
        return "|".join(_strings(value, line, key))
    if key == "layers":
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, (int, str)):
                raise _LocatedError("layers must be integers or ranges like '2-5'", line)
        return "|".join(str(item).strip() for item in items)
    if key == "mode":
        mode = _string(value, line, key)
        if mode not in MODES:
            raise _LocatedError(f"unknown mode {mode!r}", line, f"use one of {list(MODES)}")
        return mode
    if key == "control":
        if value in (None, "none"):
            return None
        if value != "random":
            raise _LocatedError(f"unknown control {value!r}", line, "use control: random")
        return "random"
    if key in ("factor", "value"):
        return _number(value, line, key)
    if key == "top_k":
        return _int(value, line, key, 1)
    if key == "seed":
        return _int(value, line, key, 0)
    if key == "fraction":
        number = _number(value, line, key)
        if not 0.0 < number <= 1.0:
            raise _LocatedError(f"fraction must be in (0, 1], got {value!r}", line)
        return number
    if key == "positions":
        if value not in ("all", "last"):
            raise _LocatedError(f"positions must be 'all' or 'last', got {value!r}", line)
        return value
    if key == "strategy":
        if value not in ("auto", "fold", "hook"):
            raise _LocatedError(f"strategy must be auto, fold or hook, got {value!r}", line)
        return value
    return _string(value, line, key)  # per_doc


def _parse_intervention(name: Any, raw: Any, line: int | None, base: Path) -> InterventionSpec:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name == BASE:
        raise _LocatedError(
            f"bad intervention name {name!r}",
            line,
            "use letters, digits, '_', '-' or '.' (and not 'base')",
        )
    if raw is None:
        raw = LineDict()
        raw.line = line or 0
    spec = _mapping(raw, line, f"intervention {name!r}")
    _unknown_keys(spec, INTERVENTION_KEYS, f"intervention {name!r}")
    args: dict[str, Any] = {}
    neuron_set = None
    for key in INTERVENTION_KEYS:
        if key not in spec:
            continue
        key_line = _line(spec, key)
        if key == "neuron_set":
            neuron_set = _resolve_path(base, _string(spec[key], key_line, key))
            continue
        converted = _model_arg_value(key, spec[key], key_line)
        if converted is not None:
            args[key] = converted
    mode = args.get("mode", "deactivate")
    if "factor" in args and mode not in ("enhance", "scale"):
        raise _LocatedError(f"factor only applies to mode enhance or scale, not {mode}", line)
    if "value" in args and mode != "set":
        raise _LocatedError(f"value only applies to mode set, not {mode}", line)
    if "top_k" in args and "fraction" in args:
        raise _LocatedError("give either top_k or fraction, not both", line)
    if args.get("control") and args.get("per_doc"):
        raise _LocatedError("control: random cannot be combined with per_doc", line)
    if "seed" in args and not args.get("control"):
        raise _LocatedError("seed only applies to control: random", _line(spec, "seed"))
    return InterventionSpec(name, args, neuron_set, line or 0)


def _threshold(
    exp: LineDict, key: str, kind: str, metric: str | None, relative: bool, *, strict: bool
) -> float:
    """Read a threshold and reject values that no result could ever meet."""
    line = _line(exp, key)
    value = _number(exp[key], line, key)
    if strict and value <= 0:
        raise _LocatedError(f"{kind}: {key} must be > 0, got {value:g}", line)
    if value < 0:
        raise _LocatedError(f"{kind}: {key} cannot be negative, got {value:g}", line)
    bounded = (metric or "acc").split(",")[0].startswith(BOUNDED_PREFIXES)
    if kind in ("drop", "raises", "compare") and value > 1 and (relative or bounded):
        scale = "relative" if relative else f"absolute ({metric or 'acc'} lies in [0, 1])"
        raise _LocatedError(
            f"{kind}: {key} {value:g} is impossible: a {scale} change cannot exceed 1", line
        )
    return value


def _parse_expectation(
    raw: Any, line: int | None, known: dict[str, InterventionSpec], default_metric: str | None
):
    exp = _mapping(raw, line, "an expectation")
    kinds = [k for k in KINDS if k in exp]
    if len(kinds) != 1:
        found = f"found {kinds}" if kinds else "found none"
        raise _LocatedError(
            f"an expectation needs exactly one kind key ({', '.join(KINDS)}); {found}", exp.line
        )
    kind = kinds[0]
    _unknown_keys(exp, (kind, *COMMON_KEYS, *KIND_KEYS[kind]), f"a {kind} expectation")
    for key in REQUIRED_KEYS[kind]:
        if key not in exp:
            raise _LocatedError(f"{kind}: missing {key!r}", exp.line)
    intervention = _string(exp[kind], _line(exp, kind), kind)
    if intervention not in known:
        close = difflib.get_close_matches(intervention, list(known), n=1)
        raise _LocatedError(
            f"{kind}: unknown intervention {intervention!r}",
            _line(exp, kind),
            f"did you mean {close[0]!r}?" if close else f"declared: {', '.join(known) or 'none'}",
        )
    if kind == "control_drop_below" and not known[intervention].is_random_control:
        raise _LocatedError(
            f"control_drop_below: intervention {intervention!r} is not a random control",
            _line(exp, kind),
            "give it control: random (or use drop_below)",
        )
    if "task" in exp and "tasks" in exp:
        raise _LocatedError("give either task or tasks, not both", _line(exp, "tasks"))
    tasks = None
    for key in ("task", "tasks"):
        if key in exp:
            tasks = _strings(exp[key], _line(exp, key), key)
            if OTHERS in tasks and len(tasks) > 1:
                raise _LocatedError("'others' cannot be mixed with task names", _line(exp, key))
    excludes = _strings(exp["except"], _line(exp, "except"), "except") if "except" in exp else []
    metric = (
        _string(exp["metric"], _line(exp, "metric"), "metric")
        if "metric" in exp
        else default_metric
    )
    over = exp.get("over", "each")
    if over not in ("each", "mean"):
        raise _LocatedError(f"over must be 'each' or 'mean', got {over!r}", _line(exp, "over"))
    relative = (
        _bool(exp["relative"], _line(exp, "relative"), "relative") if "relative" in exp else False
    )
    than = direction = alpha = None
    if kind == "compare":
        than = _string(exp["than"], _line(exp, "than"), "than")
        if than != BASE and than not in known:
            raise _LocatedError(
                f"compare: unknown intervention {than!r} in 'than'",
                _line(exp, "than"),
                f"declared: {', '.join(known)} (or 'base')",
            )
        if than == intervention:
            raise _LocatedError("compare: an intervention compared with itself", _line(exp, "than"))
        given = [k for k in ("worse_by", "better_by") if k in exp]
        if len(given) != 1:
            raise _LocatedError("compare: give exactly one of worse_by or better_by", exp.line)
        direction = "worse" if given[0] == "worse_by" else "better"
        threshold = _threshold(exp, given[0], kind, metric, relative, strict=False)
    elif kind == "drop":
        threshold = _threshold(exp, "at_least", kind, metric, relative, strict=True)
    elif kind == "raises":
        threshold = (
            _threshold(exp, "at_least", kind, metric, relative, strict=False)
            if "at_least" in exp
            else 0.0
        )
    elif kind == "within":
        threshold = _threshold(exp, "tolerance", kind, metric, relative, strict=False)
    else:
        threshold = _threshold(exp, "below", kind, metric, relative, strict=True)
    if "alpha" in exp:
        alpha = _number(exp["alpha"], _line(exp, "alpha"), "alpha")
        if not 0.0 < alpha < 1.0:
            raise _LocatedError(f"alpha must be in (0, 1), got {alpha:g}", _line(exp, "alpha"))
    ident = _string(exp["id"], _line(exp, "id"), "id") if "id" in exp else ""
    if ident and not _NAME_RE.match(ident.replace("*", "").replace("[", "").replace("]", "")):
        raise _LocatedError(f"id {ident!r} has characters pytest cannot select", _line(exp, "id"))
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
    defaults = _mapping(raw, line, "defaults")
    _unknown_keys(defaults, DEFAULT_KEYS, "defaults")
    out: dict[str, Any] = {}
    for key, value in defaults.items():
        key_line = _line(defaults, key)
        if key == "batch_size":
            out[key] = check_batch_size(value, key_line)
        elif key == "limit":
            out[key] = check_limit(value, key_line)
        elif key == "device":
            out[key] = _string(value, key_line, key)
        elif key == "num_fewshot":
            out[key] = None if value is None else _int(value, key_line, key, 0)
        else:
            out[key] = _int(value, key_line, key, 0)
    return out


def _parse(data: Any, path: Path) -> CheckSpec:
    if not isinstance(data, LineDict):
        raise _LocatedError(
            "a check file must be a YAML mapping",
            getattr(data, "line", 1),
            "start with: relcheck: 1",
        )
    if "relcheck" not in data:
        raise _LocatedError("missing 'relcheck: 1' (the schema version)", 1)
    if data["relcheck"] != SCHEMA_VERSION or isinstance(data["relcheck"], bool):
        raise _LocatedError(
            f"unsupported relcheck version {data['relcheck']!r}",
            _line(data, "relcheck"),
            f"this relneuron-eval reads relcheck: {SCHEMA_VERSION}",
        )
    _unknown_keys(data, TOP_KEYS, "the check file")
    base = path.resolve().parent  # relative paths in the file are relative to it
    model = _string(data.get("model", DEFAULT_MODEL), _line(data, "model"), "model")
    model_args = dict(
        _mapping(data.get("model_args") or LineDict(), _line(data, "model_args"), "model_args")
    )
    for key in ("pretrained", *INTERVENTION_KEYS):
        if key in model_args:
            raise _LocatedError(
                f"model_args may not set {key!r}",
                _line(data["model_args"], key),
                "the model is 'model:'; intervention arguments go under 'interventions:'",
            )
    raw_set = data.get("neuron_set")
    neuron_set: str | dict[str, str] | None = None
    if isinstance(raw_set, LineDict):
        neuron_set = {
            _string(k, _line(raw_set, k), "model name"): _resolve_path(
                base, _string(v, _line(raw_set, k), f"neuron_set for {k}")
            )
            for k, v in raw_set.items()
        }
    elif raw_set is not None:
        neuron_set = _resolve_path(base, _string(raw_set, _line(data, "neuron_set"), "neuron_set"))
    includes = []
    if "include_path" in data:
        for item in _strings(data["include_path"], _line(data, "include_path"), "include_path"):
            folder = Path(_resolve_path(base, item))
            if not folder.is_dir():
                raise _LocatedError(
                    f"include_path {item!r} is not a folder", _line(data, "include_path")
                )
            includes.append(folder)
    defaults = (
        _parse_defaults(data["defaults"], _line(data, "defaults")) if "defaults" in data else {}
    )
    if "tasks" not in data:
        raise _LocatedError("missing 'tasks' (task names, groups or globs)", data.line)
    tasks = _strings(data["tasks"], _line(data, "tasks"), "tasks")
    if OTHERS in tasks:
        raise _LocatedError(
            "'others' is only meaningful inside an expectation", _line(data, "tasks")
        )
    raw_ivs = _mapping(
        data.get("interventions"), _line(data, "interventions", data.line), "interventions"
    )
    if not raw_ivs:
        raise _LocatedError("interventions is empty", _line(data, "interventions"))
    interventions = {
        name: _parse_intervention(name, raw, _line(raw_ivs, name), base)
        for name, raw in raw_ivs.items()
    }
    for iv in interventions.values():
        if iv.neuron_set is None and neuron_set is None:
            raise _LocatedError(
                f"intervention {iv.name!r} has no neuron set", iv.line, "add neuron_set: at the top"
            )
    raw_expect = data.get("expect")
    if not isinstance(raw_expect, list) or not raw_expect:
        raise _LocatedError(
            "expect must be a non-empty list of expectations", _line(data, "expect", data.line)
        )
    metric = _string(data["metric"], _line(data, "metric"), "metric") if "metric" in data else None
    expectations = [
        _parse_expectation(raw, _line(raw_expect, i), interventions, metric)
        for i, raw in enumerate(raw_expect)
    ]
    seen: dict[str, int] = {}
    for exp in expectations:
        ident = exp.id or _default_id(exp)
        if ident in seen:
            if exp.id:
                raise _LocatedError(
                    f"duplicate id {ident!r} (first on line {seen[ident]})", exp.line
                )
            n = 2
            while f"{ident}#{n}" in seen:
                n += 1
            ident = f"{ident}#{n}"
        seen[ident] = exp.line
        exp.id = ident
    return CheckSpec(
        path=path,
        model=model,
        model_args=model_args,
        neuron_set=neuron_set,
        neuron_set_line=_line(data, "neuron_set") if "neuron_set" in data else None,
        include_path=includes,
        defaults=defaults,
        tasks=tasks,
        tasks_line=_line(data, "tasks") or 0,
        interventions=interventions,
        expectations=expectations,
        description=str(data.get("description") or ""),
        lines=dict(data.lines),
    )


def parse_check(path: str | Path) -> CheckSpec:
    """Parse and validate a check file; any problem raises one located RelNeuronError."""
    path = Path(path)
    data = load_yaml(path)
    try:
        return _parse(data, path)
    except _LocatedError as exc:
        raise RelNeuronError(exc.message, path=path, line=exc.line, hint=exc.hint) from None
