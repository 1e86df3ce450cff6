"""List-valued arguments as users type them: ``3|5|10-20``, ``mlp.act|mlp.up_proj``.

lm-eval's ``--model_args`` splits on commas, so lists inside a model arg use ``|``;
the ``relneuron`` command line also accepts commas. One parser for both keeps the
syntax identical everywhere.
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.errors import RelNeuronError


def _parts(value: Any) -> list[str]:
    return [p.strip() for p in str(value).replace(",", "|").split("|") if p.strip()]


def parse_layers(value: Any, name: str = "layers") -> list[int] | None:
    """``3|5|10-20`` (commas also accepted) -> ``[3, 5, 10, ..., 20]``; empty -> None."""
    if value is None or str(value).strip() == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    out: list[int] = []
    try:
        for part in _parts(value):
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                out.extend(range(int(lo), int(hi) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise RelNeuronError(
            f"{name} must be integers separated by '|' (ranges like 10-20 allowed), got {value!r}"
        ) from None
    return out


def parse_names(value: Any) -> list[str] | None:
    """``a|b`` or ``a,b`` -> ``["a", "b"]``; empty -> None."""
    if value is None or str(value).strip() == "":
        return None
    return _parts(value)
