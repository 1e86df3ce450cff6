"""The leaderboard's figure: Cause vs Isolate per method (areas, t intervals) and
Disentangle over budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _err(cell: dict[str, Any]) -> tuple[float, list[float]]:
    mean = cell.get("mean")
    ci = cell.get("ci")
    if mean is None:
        return float("nan"), [0.0, 0.0]
    if not ci:
        return 100 * mean, [0.0, 0.0]
    return 100 * mean, [100 * (mean - ci[0]), 100 * (ci[1] - mean)]


def make_figure(results: dict[str, Any], path: Path) -> Path:
    """Write the two-panel PNG (atomically) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relneuron_eval.atomic import atomic_write

    s = results["scores"]
    methods = list(s["per_method"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, m in enumerate(methods):
        color = colors[i % len(colors)]
        x, xerr = _err(s["per_method"][m]["area_isolate"])
        y, yerr = _err(s["per_method"][m]["area_cause"])
        left.errorbar(
            x,
            y,
            xerr=[[xerr[0]], [xerr[1]]],
            yerr=[[yerr[0]], [yerr[1]]],
            fmt="o",
            color=color,
            label=m,
            capsize=3,
        )
        rows = [r for r in s["rows"] if r["method"] == m]
        ks = [r["k"] for r in rows]
        means = [_err(r["disentangle"])[0] for r in rows]
        lo = [(r["disentangle"]["ci"] or [None])[0] for r in rows]
        hi = [(r["disentangle"]["ci"] or [None, None])[1] for r in rows]
        right.plot(ks, means, "o-", color=color, label=m)
        if all(v is not None for v in lo + hi):
            right.fill_between(
                ks, [100 * v for v in lo], [100 * v for v in hi], color=color, alpha=0.12
            )
    left.set_xlabel("Isolate (area over k, x100)")
    left.set_ylabel("Cause (area over k, x100)")
    left.set_title("Cause vs Isolate, 95 % t intervals over relations")
    left.legend(fontsize=8)
    right.set_xscale("log")
    right.set_xlabel("budget k (units per relation)")
    right.set_ylabel("Disentangle (x100)")
    right.set_title("Disentangle over k")
    fig.tight_layout()
    with atomic_write(path, "wb", encoding=None) as handle:
        fig.savefig(handle, format="png", dpi=110)
    plt.close(fig)
    return path
