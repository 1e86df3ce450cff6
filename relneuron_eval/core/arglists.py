"""List-valued arguments as users type them: ``3|5|10-20``, ``a+b``, ``mlp.act|mlp.up_proj``.

lm-eval's ``--model_args`` splits on commas, so lists inside a model arg use ``|`` or
``+``: ``+`` needs no quoting in a shell (an unquoted ``groups=a|b`` is a pipe), and
names never contain it (relation names are ``[a-z0-9_]``, fact ids ``relation/N``).
The ``relneuron`` command line also accepts commas. One parser for all keeps the
syntax identical everywhere.
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.errors import RelNeuronError, clip

# Without a model to check against, ranges are still bounded before they are expanded,
# so that a typo like 0-1000000000 is an error instead of a billion-element list.
MAX_LAYERS = 10_000


SEPARATORS = ("|", "+", ",")


def _parts(value: Any) -> list[str]:
    text = str(value)
    for separator in SEPARATORS[1:]:
        text = text.replace(separator, "|")
    return [p.strip() for p in text.split("|") if p.strip()]


def _bounds(part: str, name: str, value: Any) -> tuple[int, int]:
    """``"10-20"`` -> (10, 20), ``"7"`` -> (7, 7); only syntax is checked here."""
    head, dash, tail = part[1:].partition("-")
    if dash and tail.startswith("-"):  # "3--5": int("-5") would read a negative layer
        low, high = part[0] + head, tail.lstrip("-")
        example = f"{low}-{high}" if low.isdigit() and high.isdigit() else "3-5"
        raise RelNeuronError(
            f"{name}={part} has a '-' too many: a range is LOW-HIGH with one '-' (layers "
            "count from 0, never negative)",
            hint=f"write {example}",
        )
    try:
        if dash:
            return int(part[0] + head), int(tail)
        return int(part), int(part)
    except ValueError:
        raise RelNeuronError(
            f"{name} must be integers separated by '|' or '+' (ranges like 10-20 allowed), "
            f"got {clip(value)}"
        ) from None


def _check_order(part: str, lo: int, hi: int, name: str) -> None:
    if lo > hi:
        raise RelNeuronError(
            f"{name}={part} is a reversed range", hint=f"write the lower layer first: {hi}-{lo}"
        )


def _check_range(part: str, lo: int, hi: int, name: str, num_layers: int | None) -> None:
    """Refuse reversed and out-of-range ranges before anything is expanded."""
    _check_order(part, lo, hi, name)
    top = MAX_LAYERS if num_layers is None else min(num_layers, MAX_LAYERS)
    if lo < 0 or hi >= top:
        where = (
            f"this model's layers 0-{num_layers - 1}"
            if num_layers is not None and num_layers <= MAX_LAYERS
            else f"0-{MAX_LAYERS - 1}, the layers any model could have"
        )
        raise RelNeuronError(
            f"{name}={part} is outside {where}",
            hint="layers count from 0; e.g. layers=0-3|10",
        )


def parse_layers(
    value: Any, name: str = "layers", num_layers: int | None = None
) -> list[int] | None:
    """``3|5|10-20`` (commas also accepted) -> ``[3, 5, 10, ..., 20]``; empty -> None.

    A list of integers is accepted as is. With ``num_layers`` (the model's layer count)
    every layer must lie in ``0 .. num_layers-1``; the error names that range.
    """
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise RelNeuronError(f"{name} must be layer numbers, got {value!r}")
    if isinstance(value, (list, tuple, range)):
        items = [
            str(v) if isinstance(v, int) and not isinstance(v, bool) else repr(v) for v in value
        ]
        if not items:
            return []
    else:
        items = _parts(value)
    out: list[int] = []
    for part in items:
        lo, hi = _bounds(part, name, value)
        _check_range(part, lo, hi, name, num_layers)
        out.extend(range(lo, hi + 1))
    return out


def check_layers_syntax(text: str, name: str = "layers") -> str:
    """``" 3 , 10-20 "`` -> ``"3|10-20"``: syntax and order checked, nothing expanded.

    For settings read before the model's layer count is known (see ``parse_layers``).
    """
    parts = _parts(text)
    for part in parts:
        lo, hi = _bounds(part, name, text)
        _check_order(part, lo, hi, name)
    return "|".join(parts)


def parse_names(value: Any) -> list[str] | None:
    """``a|b``, ``a+b`` or ``a,b`` (or a list) -> ``["a", "b"]``; empty -> None."""
    if isinstance(value, (list, tuple)):  # the Python API's own list
        names = [str(v).strip() for v in value if str(v).strip()]
        return names or None
    if value is None or str(value).strip() == "":
        return None
    return _parts(value)


def parse_named(spec: str, option: str, what: str = "PATH") -> tuple[str, str]:
    """``NAME=VALUE`` (``--control-set``, the scripts' ``--run``/``--report``) -> (name, value).

    One parser, so every option of that shape accepts and refuses the same spellings
    (the value may itself contain ``=``; both sides are stripped and must be non-empty).
    """
    name, sep, value = spec.partition("=")
    if not sep or not name.strip() or not value.strip():
        raise RelNeuronError(f"{option}: expected NAME={what}, got {spec!r}")
    return name.strip(), value.strip()
