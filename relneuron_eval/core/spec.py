"""One definition of an intervention's settings: :class:`InterventionSpec`.

``relneuron-hf`` model args, relcheck files, ``relneuron export`` options, the Python API
and reports all describe an intervention with the same ~15 settings. They are listed,
parsed, defaulted, validated, named and keyed here only, so a setting is spelled and
refused the same way at every entry point. Pure Python: no torch, no lm-eval.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from relneuron_eval.core.arglists import check_layers_syntax, parse_names
from relneuron_eval.errors import RelNeuronError, clip

MODES = ("deactivate", "enhance", "scale", "set")
POSITIONS = ("all", "last")
STRATEGIES = ("auto", "fold", "hook")
DEFAULT_FACTOR = 2.0  # enhance/scale without factor=
DEFAULT_VALUE = 0.0  # set without value=
DEFAULT_SEED = 0  # control=random without seed=
FLOAT32_MAX = 3.4028234663852886e38  # a larger factor or value is inf in the model


class InvalidSetting(RelNeuronError):
    """A refused setting; ``setting`` names it, so a check file can point at its line."""

    def __init__(
        self, setting: str, message: str, *, hint: str | None = None, where: str | None = None
    ) -> None:
        path, line = _location(where)
        self.setting = setting
        super().__init__(message, path=path, line=line, hint=hint)


def _location(where: str | None) -> tuple[str | None, int | None]:
    """``"FILE:LINE"`` -> (FILE, LINE); anything else names the source as is."""
    if not where:
        return None, None
    path, sep, line = where.rpartition(":")
    return (path, int(line)) if sep and line.isdigit() else (where, None)


# ================================================================ parsers
# Each takes (setting name, raw value) and returns the value in model-arg form: lists as
# "a|b" text, numbers as numbers. Raw values come as lm-eval parses --model_args (numbers
# already converted), as YAML scalars, as argparse strings, or as Python objects.
def _text(name: str, value: Any) -> str | None:
    if isinstance(value, (list, tuple)):
        raise InvalidSetting(name, f"{name} must be text, got {value!r}")
    text = str(value).strip()
    return text or None


def _names(name: str, value: Any) -> str | None:
    """``a|b`` / ``a+b`` text (``+`` needs no shell quoting) or a list -> ``"a|b"``."""
    if isinstance(value, (list, tuple)):
        return "|".join(str(v).strip() for v in value if str(v).strip()) or None
    text = _text(name, value)
    return None if text is None else "|".join(parse_names(text) or []) or None


def _layers(name: str, value: Any) -> str | None:
    """``3|10-20`` (commas too), an int or a list of ints -> ``"3|10-20"``; syntax only:
    the range is checked against the neuron set's layer count when it is loaded."""
    if isinstance(value, (list, tuple, range)):
        items = [v if isinstance(v, int) and not isinstance(v, bool) else repr(v) for v in value]
        value = "|".join(map(str, items))
    elif isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidSetting(name, f"{name} must be layer numbers, got {value!r}")
    try:
        return check_layers_syntax(str(value), name) or None
    except RelNeuronError as exc:
        raise InvalidSetting(name, exc.message, hint=exc.hint) from None


def _choice(options: tuple[str, ...], hint: str | None = None) -> Callable[[str, Any], str]:
    def parse(name: str, value: Any) -> str:
        if value not in options:
            raise InvalidSetting(
                name, f"unknown {name} {value!r}", hint=hint or f"use one of {list(options)}"
            )
        return value

    return parse


def _control(name: str, value: Any) -> str | None:
    if value in ("none", "None"):
        return None
    if value != "random":
        raise InvalidSetting(
            name,
            f"unknown control {value!r}",
            hint="use control=random (size-matched random units)",
        )
    return "random"


def _as_number(value: Any) -> Any:
    """A numeric string as its number (``"2.5"`` -> 2.5); anything else unchanged."""
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text) if text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            return value
    return value


def _finite(name: str, value: Any) -> float:
    """A finite float: NaN or infinity would silently turn every logit into NaN."""
    number = _as_number(value)
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise InvalidSetting(
            name, f"{name} must be a number, got {number!r}", hint=f"e.g. {name}=2.0"
        )
    try:
        result = float(number)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result):
        raise InvalidSetting(name, f"{name} must be a finite number, got {clip(number)}")
    if abs(result) > FLOAT32_MAX:
        raise InvalidSetting(
            name,
            f"{name}={clip(number)} is beyond the range of float32 weights and activations "
            f"({FLOAT32_MAX:.1e}): every edited unit, and then every log-likelihood, would be "
            "infinite or NaN",
            hint=f"use a moderate {name}, e.g. {name}=2.0",
        )
    return result


def _integer(minimum: int, rule: str, example: str) -> Callable[[str, Any], int]:
    """A reader of an integer setting of at least ``minimum`` (``rule`` says so in errors)."""

    def read(name: str, value: Any) -> int:
        number = _as_number(value)
        if isinstance(number, bool) or not isinstance(number, int) or number < minimum:
            raise InvalidSetting(name, f"{rule}, got {number!r}", hint=f"e.g. {example}")
        return number

    return read


_top_k = _integer(1, "top_k must be a positive integer", "top_k=3000")
_seed = _integer(0, "seed must be an integer >= 0", "control=random,seed=1")


def _fraction(name: str, value: Any) -> int | float:
    """In (0, 1]; an int 1 stays an int, so names keep the spelling (``frac1``)."""
    number = _as_number(value)
    if (
        isinstance(number, bool)
        or not isinstance(number, (int, float))
        or not 0.0 < float(number) <= 1.0
    ):
        raise InvalidSetting(
            name, f"fraction must be in (0, 1], got {number!r}", hint="e.g. fraction=0.1"
        )
    return number


@dataclass(frozen=True)
class Setting:
    """One field of :class:`InterventionSpec`: how it is read and what it means."""

    name: str
    parse: Callable[[str, Any], Any]
    help: str
    modifier: bool = True  # meaningless without a neuron set
    numbers: bool = True  # changes the scores (part of key()); strategy and name do not


# The table; InterventionSpec's fields are in the same order, with their defaults.
SETTINGS: tuple[Setting, ...] = (
    Setting("neuron_set", _text, "neuron-set file (.jsonl[.gz]) or shipped name", False),
    Setting("groups", _names, "'a+b' (or 'a|b', quoted) or '*' (all groups; default)", False),
    Setting("mode", _choice(MODES), "deactivate (default), enhance, scale or set", False),
    Setting("factor", _finite, f"for enhance/scale ({DEFAULT_FACTOR:g})"),
    Setting("value", _finite, f"for mode=set ({DEFAULT_VALUE:g})"),
    Setting("top_k", _top_k, "best K units per group"),
    Setting("fraction", _fraction, "best fraction per group"),
    Setting("layers", _layers, "e.g. 3+5+10-20 (or '3|5|10-20')"),
    Setting("sites", _names, "e.g. mlp.act+mlp.up_proj"),
    Setting(
        "positions", _choice(POSITIONS), "all (default) or last (the prompt's last token)", False
    ),
    Setting("control", _control, "random: a size-matched random control"),
    Setting("seed", _seed, f"seed of the random control ({DEFAULT_SEED})"),
    Setting("per_doc", _text, "document field naming each document's group"),
    Setting(
        "strategy",
        _choice(STRATEGIES, "use auto, fold or hook"),
        "auto, fold or hook",
        False,
        False,
    ),
    Setting("name", _text, "the variant's name in lm-eval's outputs", False, False),
)
SETTING = {s.name: s for s in SETTINGS}
SETTING_NAMES = tuple(SETTING)
# What a relcheck file may set for one of its interventions (it names them itself).
INTERVENTION_KEYS = tuple(n for n in SETTING_NAMES if n != "name")


def parse_setting(name: str, value: Any) -> Any:
    """One setting alone (e.g. ``strategy`` of ``apply_intervention``), checked as in a spec."""
    return SETTING[name].parse(name, value)


def _given(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The settings in ``raw`` that were given: None and "" mean "not given"."""
    return {k: raw[k] for k in SETTING_NAMES if k in raw and raw[k] is not None and raw[k] != ""}


def _parse(given: dict[str, Any], where: str | None) -> dict[str, Any]:
    """Parse and check ``given`` in a fixed order: the first problem is the one reported."""
    out: dict[str, Any] = {}

    def read(name: str) -> Any:
        if name not in out and name in given:
            try:
                out[name] = SETTING[name].parse(name, given[name])
            except InvalidSetting as exc:
                raise InvalidSetting(name, exc.message, hint=exc.hint, where=where) from None
        return out.get(name)

    def refuse(name: str, message: str, hint: str) -> None:
        raise InvalidSetting(name, message, hint=hint, where=where)

    read("strategy")
    if "neuron_set" not in given:
        extra = [s.name for s in SETTINGS if s.modifier and s.name in given]
        if extra:
            refuse(
                extra[0],
                f"{', '.join(k + '=' for k in extra)} need(s) a neuron_set=",
                "add neuron_set=FILE, or drop them to run the plain model",
            )
    mode, _, control = read("mode") or "deactivate", read("positions"), read("control")
    if "factor" in given and mode not in ("enhance", "scale"):
        refuse(
            "factor",
            f"factor only applies to mode enhance or scale, not {mode}",
            "drop factor, or use mode=enhance / mode=scale",
        )
    if "value" in given and mode != "set":
        refuse(
            "value", f"value only applies to mode set, not {mode}", "drop value, or use mode=set"
        )
    if "seed" in given and control != "random":
        refuse(
            "seed",
            "seed only applies to control=random",
            "add control=random for a seeded random control, or drop seed",
        )
    if control and "per_doc" in given:
        refuse(
            "per_doc",
            "control=random with per_doc= is not supported",
            "draw a control set with `relneuron` and pass it as neuron_set=",
        )
    if "top_k" in given and "fraction" in given:
        refuse("fraction", "give either top_k or fraction, not both", "drop one of them")
    for name in given:
        read(name)
    return out


def _lenient(given: dict[str, Any]) -> dict[str, Any]:
    """Each setting parsed where it parses, else kept as given; nothing refused (names)."""
    out = {}
    for name, value in given.items():
        try:
            out[name] = SETTING[name].parse(name, value)
        except RelNeuronError:
            out[name] = value
    return out


# ================================================================ the spec
@dataclass(frozen=True)
class InterventionSpec:
    """An intervention's settings in model-arg form; ``neuron_set=None`` is the base model.

    Build it with :meth:`from_model_args` or :meth:`from_argparse` (both validate); a
    spec constructed directly is checked by :meth:`validate`.
    """

    neuron_set: str | None = None
    groups: str = "*"
    mode: str = "deactivate"
    factor: float | None = None
    value: float | None = None
    top_k: int | None = None
    fraction: float | None = None
    layers: str | None = None
    sites: str | None = None
    positions: str = "all"
    control: str | None = None
    seed: int | None = None
    per_doc: str | None = None
    strategy: str = "auto"
    name: str | None = None

    # ------------------------------------------------------------ building
    @classmethod
    def from_model_args(
        cls, args: Mapping[str, Any], where: str | None = None, *, strict: bool = True
    ) -> InterventionSpec:
        """The spec of ``relneuron-hf`` model args (values as lm-eval or YAML give them).

        Other keys (``pretrained``, ``dtype``, ...) are ignored. ``where`` ("FILE:LINE" or
        "--model_args") locates errors. ``strict=False`` refuses nothing: for naming runs
        whose arguments relneuron-hf itself validates.
        """
        given = _given(args)
        values = _parse(given, where) if strict else _lenient(given)
        return cls(**{k: v for k, v in values.items() if v is not None})  # None: the default

    @classmethod
    def from_argparse(cls, ns: argparse.Namespace) -> InterventionSpec:
        """The spec of a command line built with :func:`add_options`."""
        return cls.from_model_args({n: getattr(ns, n) for n in SETTING_NAMES if hasattr(ns, n)})

    def validate(self) -> None:
        """Refuse bad values and meaningless combinations (RelNeuronError with a hint)."""
        _parse(_given(self.settings()), None)

    # ------------------------------------------------------------ reading
    @property
    def is_base(self) -> bool:
        return self.neuron_set is None

    @property
    def effective_factor(self) -> float:
        return DEFAULT_FACTOR if self.factor is None else float(self.factor)

    @property
    def effective_value(self) -> float:
        return DEFAULT_VALUE if self.value is None else float(self.value)

    @property
    def effective_seed(self) -> int:
        return DEFAULT_SEED if self.seed is None else int(self.seed)

    def settings(self) -> dict[str, Any]:
        """Every field, in table order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to_model_args(self) -> dict[str, Any]:
        """The settings that differ from their defaults, as ``relneuron-hf`` model args."""
        defaults = InterventionSpec()
        return {
            k: v for k, v in self.settings().items() if v is not None and v != getattr(defaults, k)
        }

    def key(self, set_hash: str | None = None) -> dict[str, Any]:
        """What identifies the numbers: the set's content hash instead of its path, and
        every setting that changes scores, defaults spelled out (groups, mode, the
        factor/value/seed in effect), so equivalent spellings share one key.
        ``set_hash`` defaults to the SHA-256 of the set file's bytes."""
        if self.is_base:
            return {}
        out = {
            k: v
            for k, v in self.to_model_args().items()
            if k != "neuron_set" and SETTING[k].numbers
        }
        out.update(groups=self.groups, mode=self.mode)
        if self.mode in ("enhance", "scale"):
            out["factor"] = self.effective_factor
        if self.mode == "set":
            out["value"] = self.effective_value
        if self.control == "random":
            out["seed"] = self.effective_seed
        if self.fraction is not None:
            out["fraction"] = float(self.fraction)
        out["neuron_set_sha256"] = set_hash or _file_sha256(str(self.neuron_set))
        return out

    def label(self, base: str) -> str:
        """The variant's name: ``<base>__<set stem>-<hash>__<groups>__<mode>[...]``, or
        ``<base>__<name>``; the same settings and file contents always give the same name."""
        if self.name:
            return f"{base}__{_clean(str(self.name), 100)}"
        if not self.neuron_set:
            return base
        groups = "all" if self.groups in (None, "", "*") else str(self.groups).replace("|", "+")
        parts = [base, f"{_stem(self.neuron_set)}-{_short_hash(self.neuron_set)}"]
        parts += [_clean(groups, 48), self._mode_part()]
        if self.top_k is not None:
            parts.append(f"top{self.top_k}")
        if self.fraction is not None:
            parts.append(f"frac{self.fraction}")
        if self.layers is not None:
            parts.append(_clean(f"L{self.layers}".replace("|", "+"), 24))
        if self.sites is not None:
            parts.append(_clean(str(self.sites).replace("|", "+").replace("mlp.", ""), 40))
        if self.positions == "last":
            parts.append("last")
        if self.per_doc:
            parts.append(f"perdoc-{_clean(str(self.per_doc), 24)}")
        if self.control == "random":
            parts.append(f"random-s{self.effective_seed}")
        return "__".join(parts)

    def _mode_part(self) -> str:
        if self.mode in ("enhance", "scale"):
            return f"{self.mode}x{self.effective_factor:g}"
        if self.mode == "set":
            return f"set{float(self.value or 0.0):g}"
        return str(self.mode)


# ================================================================ helpers
def _clean(text: str, limit: int = 60) -> str:
    text = re.sub(r"[^A-Za-z0-9_.+=-]+", "-", text).strip("-")
    return text[:limit]


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _short_hash(path: str) -> str:
    """The first 8 hex digits of the file's SHA-256 ("missing" if unreadable)."""
    from relneuron_eval.resources import file_hash

    try:
        return file_hash(path)
    except OSError:
        return "missing"


def _file_sha256(path: str) -> str:
    from relneuron_eval.resources import file_hash

    try:
        return file_hash(path, length=64)
    except OSError as exc:
        raise RelNeuronError(
            f"cannot read the neuron set {path!r}: {exc.strerror or exc}",
            hint="check the path, or pass the set's hash",
        ) from None


def add_options(
    parser: argparse.ArgumentParser,
    *,
    exclude: tuple[str, ...] = ("strategy", "name"),
    required: tuple[str, ...] = (),
    help: Mapping[str, str] | None = None,
) -> None:
    """``--neuron-set``, ``--groups``, ... as text options; :meth:`InterventionSpec.
    from_argparse` parses them, so the command line refuses what model args refuse."""
    for setting in SETTINGS:
        if setting.name in exclude:
            continue
        text = (help or {}).get(setting.name, setting.help)
        parser.add_argument(
            "--" + setting.name.replace("_", "-"),
            dest=setting.name,
            default=None,
            required=setting.name in required,
            help=text,
        )
