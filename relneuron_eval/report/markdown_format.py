"""Number formatting shared by the report's markdown modules (percent, points, p, tables)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def pts(x: float | None, digits: int = 1) -> str:
    """An accuracy difference in percentage points, signed (no "-0.0")."""
    if x is None:
        return "n/a"
    value = round(100 * x, digits) + 0.0
    return f"{value:+.{digits}f} pp"


def neg(x: float | None) -> float | None:
    return None if x is None else -x


def pval(p: float | None) -> str:
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def p_is(p: float | None) -> str:
    """``p=0.012`` or ``p<0.001``."""
    text = pval(p)
    return f"p{text}" if text.startswith("<") else f"p={text}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]


def ci(summary: dict[str, Any], fmt: Callable[[float | None], str] = pts) -> str:
    """``[lo, hi]`` of a summary's ``ci95`` (n/a without one)."""
    return interval(summary.get("ci95"), fmt)


def interval(bounds: Sequence[float] | None, fmt: Callable[[float | None], str] = pts) -> str:
    return "n/a" if not bounds else f"[{fmt(bounds[0])}, {fmt(bounds[1])}]"


def unsigned_pp(x: float | None, digits: int = 1) -> str:
    """A size in percentage points, unsigned (standard errors, detectable effects)."""
    return "n/a" if x is None else f"{100 * x:.{digits}f} pp"


def seed_range(values: Sequence[float]) -> str:
    """`` (60.0-65.0% over 3 seeds)`` for several control seeds, nothing for one."""
    if len(values) < 2:
        return ""
    return f" ({pct(min(values))}–{pct(max(values))} over {len(values)} seeds)"


def figure_name(kind: str, top_k: int | None = None) -> str:
    """``specificity.png`` for the primary top-k, ``specificity_k400.png`` for another."""
    return f"{kind}.png" if top_k is None else f"{kind}_k{top_k}.png"
