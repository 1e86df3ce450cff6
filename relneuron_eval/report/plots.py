"""Figures of ``relneuron report`` (matplotlib, Agg), drawn only from the results dictionary.

One PNG per experiment: specificity bars, the interference heatmaps (own neurons and
random control side by side, improved cells marked), cumulativity curves, the overlap
heatmap, cross-lingual heatmaps and reasoning-recall bars. Written atomically.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from relneuron_eval.atomic import atomic_write
from relneuron_eval.report.markdown_format import figure_name

OWN = "#c0392b"
CONTROL = "#7f8c8d"
OTHERS = "#2471a3"
GREY = "#dddddd"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> str:
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path.name


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


# ============================================================= specificity
def specificity(inter: dict[str, Any], path: Path) -> str:
    """Own vs random-control change per relation, each with its 95 % interval (bootstrap
    over the relation's documents) and n; with several seeds, each seed as a dot."""
    plt = _plt()
    cells = inter["per_relation"]
    names = sorted(cells, key=lambda r: (not cells[r]["eligible"], -(cells[r]["drop"])))
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * len(names) + 1.9))
    y = list(range(len(names)))
    h = 0.4
    own = [-100 * cells[r]["drop"] for r in names]
    ctrl = [-100 * cells[r]["control_drop"] for r in names]
    own_err = _errors(own, [cells[r].get("change_ci95") for r in names])
    ctrl_err = _errors(ctrl, [cells[r].get("control_change_ci95") for r in names])
    bars = {"error_kw": {"lw": 0.9, "capsize": 2}, "ecolor": "black"}
    seeds = [
        (i, 100 * (v - cells[r]["base"]))
        for i, r in enumerate(names)
        for v in cells[r].get("control_seeds") or []
        if len(cells[r]["control_seeds"]) > 1
    ]
    ax.barh(
        [i - h / 2 for i in y],
        own,
        h,
        xerr=own_err,
        color=OWN,
        **bars,
        label=f"top-{inter['top_k']} own neurons",
    )
    ax.barh(
        [i + h / 2 for i in y],
        ctrl,
        h,
        xerr=ctrl_err,
        color=CONTROL,
        **bars,
        label="size-matched random units" + (" (mean over seeds)" if seeds else ""),
    )
    if seeds:
        ax.plot(
            [x for _, x in seeds],
            [i + h / 2 for i, _ in seeds],
            "o",
            ms=3,
            mfc="white",
            mec="black",
            mew=0.7,
            ls="none",
            label="random units, single seeds",
        )
    right = [v + e for v, e in zip(own, own_err[1], strict=True)]
    values = own + ctrl + right + [v - e for v, e in zip(own, own_err[0], strict=True)]
    ax.set_xlim(min([*values, -5.0]) - 5, max([*values, 5.0]) + 30)
    for i, r in enumerate(names):
        c = cells[r]
        mark = "*" if c["significant_vs_control"] else ""
        note = f"{100 * c['base']:.0f}%→{100 * c['deact']:.0f}%{mark}"
        ax.text(max(0.0, own[i], right[i]) + 1, i - h / 2, note, va="center", fontsize=7)
        if not c["eligible"]:
            ax.axhspan(i - 0.5, i + 0.5, color=GREY, zorder=0)
    ax.set_yticks(y, [f"{_short(r, 30)} (n={cells[r]['n_docs']})" for r in names], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel(f"change in own accuracy ({inter['metric']}), percentage points")
    ax.set_title(
        f"Deactivating a relation's top-{inter['top_k']} neurons: own accuracy change\n"
        "(whiskers: 95% CI, bootstrap over documents; base→deactivated; * = below random "
        "control, p<0.05;\ngrey = base below threshold; n = documents)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save(fig, path)


def _errors(values: list[float], cis: list[Any]) -> list[list[float]]:
    """Asymmetric whisker lengths (points) for bars at ``values`` from 0-1 intervals."""
    lo = [0.0 if c is None else max(0.0, v - 100 * c[0]) for v, c in zip(values, cis, strict=True)]
    hi = [0.0 if c is None else max(0.0, 100 * c[1] - v) for v, c in zip(values, cis, strict=True)]
    return [lo, hi]


# ================================================================ heatmaps
def _heatmap(
    ax, matrix, rows, cols, *, improved=None, significant=None, hatch_cols=(), title="", vmax=1.0
):
    import numpy as np

    data = np.array(
        [[np.nan if matrix[r][c] is None else matrix[r][c] for c in cols] for r in rows],
        dtype=float,
    )
    im = ax.imshow(data, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_facecolor(GREY)
    ax.set_xticks(range(len(cols)), [_short(c) for c in cols], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(rows)), [_short(r) for r in rows], fontsize=7)
    small = len(rows) * len(cols) <= 150
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            value = data[i, j]
            up = improved is not None and improved[r][c]
            if c in hatch_cols:
                ax.add_patch(_rect(j, i, hatch="///"))
            if up:
                ax.add_patch(_rect(j, i, edge="black"))
            sig = significant is not None and significant[r][c] < 0.05
            if small and not math.isnan(value):
                text = f"{100 * value:.0f}" + ("▲" if up else "") + ("*" if sig else "")
                color = "white" if abs(value) > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=6.5, color=color)
            elif up:
                ax.text(j, i, "▲", ha="center", va="center", fontsize=6.5)
    ax.set_title(title, fontsize=9)
    return im


def _rect(x: int, y: int, *, hatch: str | None = None, edge: str | None = None):
    from matplotlib.patches import Rectangle

    return Rectangle(
        (x - 0.5, y - 0.5),
        1,
        1,
        fill=False,
        hatch=hatch,
        edgecolor=edge or "#999999",
        lw=1.4 if edge else 0.0,
    )


def interference(inter: dict[str, Any], path: Path) -> str:
    plt = _plt()
    m = inter["matrix"]
    names = m["own"]["rows"]
    hatch = [c for c in names if not m["own"]["eligible"][c]]
    size = max(5.0, 0.45 * len(names) + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), constrained_layout=True)
    for ax, key, p_key, title in (
        (axes[0], "own", "p_vs_base", f"r's top-{inter['top_k']} neurons deactivated"),
        (axes[1], "control", "p_control_vs_base", "size-matched random units"),
    ):
        im = _heatmap(
            ax,
            m[key]["relative_drop"],
            names,
            names,
            improved=m[key]["improved"],
            significant=m.get(p_key),
            hatch_cols=hatch,
            title=title,
        )
        ax.set_xlabel("measured relation r'", fontsize=8)
        ax.set_ylabel("deactivated relation r", fontsize=8)
    cbar = fig.colorbar(im, ax=axes, shrink=0.8)
    cbar.set_label(
        "relative drop (acc_orig - acc_deact) / acc_orig; ▲ = r' improved;\n"
        "* = change from base significant (p<0.05: exact McNemar; paired t for seed means)",
        fontsize=8,
    )
    cbar.ax.yaxis.set_major_formatter(_percent_formatter())
    return _save(fig, path)


def _percent_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{100 * v:.0f}%")


def overlap_figure(results: dict[str, Any], path: Path) -> str:
    import numpy as np

    plt = _plt()
    ov = results["versatility"]["overlap"]
    names = ov["groups"]
    data = np.array([[ov["jaccard"][a][b] for b in names] for a in names], dtype=float)
    np.fill_diagonal(data, np.nan)
    off = data[~np.isnan(data)]
    vmax = float(off.max()) if off.size and off.max() > 0 else 1.0
    size = max(5.0, 0.42 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size), constrained_layout=True)
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=vmax)
    ax.set_facecolor("white")
    ax.set_xticks(
        range(len(names)), [_short(n) for n in names], rotation=60, ha="right", fontsize=7
    )
    ax.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=7)
    if len(names) <= 20:
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                if i != j:
                    count = ov["counts"][a][b]
                    color = "black" if data[i, j] > 0.6 * vmax else "white"
                    ax.text(j, i, str(count), ha="center", va="center", fontsize=6, color=color)
    cbar = fig.colorbar(im, ax=ax, shrink=0.8)
    cbar.set_label("Jaccard index of unit sets (numbers: shared units)", fontsize=8)
    ax.set_title(f"Overlap of the relations' top-{ov['top_k']} neurons", fontsize=9)
    return _save(fig, path)


def crosslingual(results: dict[str, Any], path: Path) -> str:
    plt = _plt()
    cl = results["versatility"]["crosslingual"]
    rows = list(cl["cells"])
    cols = ["en", "de", "es", "fr", "zh", "ja"]
    cols = [c for c in cols if any(c in cl["cells"][r] for r in rows)]
    own = {r: {c: _cell(cl, r, c, "relative_drop") for c in cols} for r in rows}
    ctrl = {r: {c: _cell(cl, r, c, "control_relative_drop") for c in cols} for r in rows}
    imp = {r: {c: _improved(cl, r, c, "deact") for c in cols} for r in rows}
    imp_c = {r: {c: _improved(cl, r, c, "control") for c in cols} for r in rows}
    height = max(3.5, 0.42 * len(rows) + 2)
    fig, axes = plt.subplots(1, 2, figsize=(11, height), constrained_layout=True)
    im = _heatmap(axes[0], own, rows, cols, improved=imp, title="English-found neurons deactivated")
    _heatmap(axes[1], ctrl, rows, cols, improved=imp_c, title="size-matched random units")
    for ax in axes:
        ax.set_xlabel("language of the task", fontsize=8)
    cbar = fig.colorbar(im, ax=axes, shrink=0.8)
    cbar.set_label(
        f"relative drop of {cl['metric']} (grey: no task, or base below threshold)", fontsize=8
    )
    cbar.ax.yaxis.set_major_formatter(_percent_formatter())
    return _save(fig, path)


def _cell(cl: dict, r: str, lang: str, key: str) -> float | None:
    c = cl["cells"][r].get(lang)
    return None if c is None or not c["eligible"] else c[key]


def _improved(cl: dict, r: str, lang: str, key: str) -> bool:
    c = cl["cells"][r].get(lang)
    return c is not None and c[key] > c["base"]


# ============================================================= cumulativity
def cumulativity(results: dict[str, Any], path: Path) -> str:
    plt = _plt()
    cum = results["cumulativity"]
    names = cum["relations"]
    n = len(names) + 1
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False, constrained_layout=True
    )
    flat = [ax for row in axes for ax in row]
    for ax, r in zip(flat, names, strict=False):
        curve = cum["curves"][r]
        xs = [p["n_neurons"] for p in curve["points"]]
        ax.plot(xs, [100 * p["own"] for p in curve["points"]], "o-", color=OWN, label=f"{r}")
        _own_bands(ax, xs, curve["points"])
        ax.axhline(100 * curve["base_own"], color=OWN, lw=0.8, ls=":")
        if curve["others"]:
            ax.plot(
                xs,
                [100 * p["others"] for p in curve["points"]],
                "s-",
                color=OTHERS,
                label="other relations",
            )
            ax.plot(
                xs,
                [100 * p["control_others"] for p in curve["points"]],
                "s--",
                color=OTHERS,
                alpha=0.45,
                label="others, random",
            )
            ax.axhline(100 * curve["base_others"], color=OTHERS, lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_ylim(-3, 103)
        ax.set_title(f"{r} (all = {curve['size']})", fontsize=9)
        ax.set_xlabel(f"top-k neurons of {_short(r)} deactivated", fontsize=8)
        ax.set_ylabel("accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6.5, loc="best")
    ax = flat[len(names)]
    labels = [m["label"] for m in cum["mean_curve"]]
    xs = list(range(len(labels)))
    for key, color, style, label in (
        ("own", OWN, "o-", "own relation"),
        ("control_own", OWN, "o--", "own, random units"),
        ("others", OTHERS, "s-", "other relations"),
        ("control_others", OTHERS, "s--", "others, random units"),
    ):
        ys = [None if m[key] is None else 100 * m[key] for m in cum["mean_curve"]]
        if any(y is not None for y in ys):
            ax.plot(
                xs,
                [math.nan if y is None else y for y in ys],
                style,
                color=color,
                alpha=0.45 if "control" in key else 1.0,
                label=label,
            )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(xs, labels, fontsize=7)
    ax.set_title("mean over relations: change from base", fontsize=9)
    ax.set_xlabel("k", fontsize=8)
    ax.set_ylabel("accuracy change (points)", fontsize=8)
    ax.legend(fontsize=6.5)
    for extra in flat[n:]:
        extra.axis("off")
    fig.suptitle(
        "Cumulativity (dotted: base accuracy; band: 95% Wilson interval of the own accuracy)",
        fontsize=10,
    )
    return _save(fig, path)


def _own_bands(ax: Any, xs: list[int], points: list[dict[str, Any]]) -> None:
    """The own curve's 95 % Wilson band and the random curve, whiskers = seed range."""
    cis = [p.get("own_ci95") for p in points]
    if all(ci is not None for ci in cis):
        ax.fill_between(
            xs,
            [100 * ci[0] for ci in cis],
            [100 * ci[1] for ci in cis],
            color=OWN,
            alpha=0.12,
            lw=0,
            label="own: 95% Wilson interval",
        )
    ys = [100 * p["control_own"] for p in points]
    seeds = [p.get("control_own_seeds") or [] for p in points]
    if all(len(s) > 1 for s in seeds):
        # the mean of equal seeds can round a hair outside their range: whiskers >= 0
        err = [
            [max(0.0, y - 100 * min(s)) for y, s in zip(ys, seeds, strict=True)],
            [max(0.0, 100 * max(s) - y) for y, s in zip(ys, seeds, strict=True)],
        ]
        label = f"random, same sizes (mean, range of {len(seeds[0])} seeds)"
        ax.errorbar(xs, ys, yerr=err, fmt="o--", color=OWN, alpha=0.45, capsize=2, label=label)
    else:
        ax.plot(xs, ys, "o--", color=OWN, alpha=0.45, label="random, same sizes")


# ================================================================ reasoning
def reasoning(results: dict[str, Any], path: Path) -> str:
    """Per measure: none, own / swapped-fact / random neurons suppressed and enhanced."""
    plt = _plt()
    rs = results["reasoning"]
    measures = list(rs["measures"])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), constrained_layout=True, sharey=True)

    def acc(block: dict[str, Any], mode: str, key: str) -> float | None:
        entry = block[mode].get(key)
        return entry.get("acc") if isinstance(entry, dict) else entry

    series = (
        ("none", None, "#34495e"),
        ("suppressed", ("deactivate", "kn"), OWN),
        ("suppressed, swapped fact", ("deactivate", "swapped"), "#e67e22"),
        ("suppressed, random", ("deactivate", "control"), "#e6b0aa"),
        ("enhanced ×2", ("enhance", "kn"), "#1e8449"),
        ("enhanced, swapped fact", ("enhance", "swapped"), "#f4d03f"),
        ("enhanced, random", ("enhance", "control"), "#a9dfbf"),
    )
    width = 0.12
    for ax, scope, title in (
        (axes[0], "with_neurons", "chains with knowledge neurons"),
        (axes[1], "all", "all chains"),
    ):
        for i, (label, key, color) in enumerate(series):
            ys = []
            for name in measures:
                block = rs["measures"][name][scope]
                value = block["base"] if key is None else acc(block, *key)
                ys.append(0.0 if value is None else 100 * value)
            xs = [j + (i - 3) * width for j in range(len(measures))]
            ax.bar(xs, ys, width, color=color, label=label)
        n = rs["measures"][measures[0]][scope]["n"]
        ax.set_title(f"{title} (n={n})", fontsize=9)
        ax.set_xticks(range(len(measures)), measures, fontsize=8)
        ax.set_ylabel("accuracy / recall (%)", fontsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, bbox_to_anchor=(0.5, -0.14))
    fig.suptitle("Two-hop reasoning with the bridge fact's knowledge neurons", fontsize=10)
    return _save(fig, path)


# ================================================================= all
def make_figures(results: dict[str, Any], out: Path) -> list[str]:
    """Draw every figure the results support; return the file names."""
    out = Path(out)
    names = []
    if "interference" in results:
        more = results.get("interference_more_k") or []
        for inter, k in [(results["interference"], None)] + [(i, i["top_k"]) for i in more]:
            names.append(specificity(inter, out / figure_name("specificity", k)))
            if inter.get("matrix"):
                names.append(interference(inter, out / figure_name("interference", k)))
    if "cumulativity" in results:
        names.append(cumulativity(results, out / "cumulativity.png"))
    if "versatility" in results:
        names.append(overlap_figure(results, out / "overlap.png"))
        if results["versatility"].get("crosslingual"):
            names.append(crosslingual(results, out / "crosslingual.png"))
    if "reasoning" in results:
        names.append(reasoning(results, out / "reasoning.png"))
    return names
