"""``relneuron compare --heatmap``: a figure a researcher reads right at a glance.

Rows are the tasks (with the number of documents ``n``; the variants' own tasks first,
in bold), the first column the base level, then one column per variant (its run name,
wrapped at ``__``); colour is the change ``variant − base``. The figure is at most 1600
px wide whatever the number of tasks: a long list grows downwards. The colour scale is
fixed and symmetric in the metric's own units, ``−1 … +1`` for metrics that are
fractions (accuracies), so a colour means the same change in every figure and a small
change never looks like a large one. Changes that are not significant are faded and
hatched; cells that were not compared are grey with ``×``.

matplotlib is imported only when a heatmap is drawn.
"""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relneuron_eval.atomic import atomic_write
from relneuron_eval.errors import RelNeuronError

if TYPE_CHECKING:
    from relneuron_eval.compare.command import Cell, Comparison, Row

NOT_COMPARED = "#dddddd"
FADE = 0.45  # how far a non-significant cell's colour is blended towards white
HATCH = "#a8a8a8"
LABEL_WIDTH = 34  # characters per line of a run's label (at most; narrower columns wrap more)
LABEL_LINES = 5


def write_heatmap(comparison: Comparison, path: str | Path) -> Path:
    """Write :func:`render_heatmap`'s PNG atomically."""
    png = render_heatmap(comparison)
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        handle.write(png)
    return path


def _metric_name(row: Row) -> str:
    name = row.metric + ("" if row.filter == "none" else f",{row.filter}")
    return name + (" (lower is better)" if row.higher_is_better is False else "")


def scale(comparison: Comparison) -> tuple[float, str]:
    """The colour scale's half-width and how to say it: ±1 for fractions, else a nice max."""
    values = [r.base for r in comparison.rows if r.base is not None]
    values += [c.score for r in comparison.rows for c in r.cells if c.score is not None]
    if all(0.0 <= v <= 1.0 for v in values):
        return 1.0, "fixed scale −1 … +1\n(fraction of documents)"
    deltas = [abs(c.delta) for r in comparison.rows for c in r.cells if c.delta is not None]
    top = max(deltas, default=0.0) or 1.0
    nice = 10 ** math.floor(math.log10(top))
    vmax = next(m * nice for m in (1, 2, 5, 10) if m * nice >= top)
    return vmax, f"scale ±{vmax:g} (metric units;\nlargest change shown)"


def run_label(index: int, name: str, base: str, width: int = LABEL_WIDTH) -> str:
    """``V1: name``, without the base model's prefix, wrapped at ``__``, cut at the right."""
    if name.startswith(f"{base}__"):
        name = name[len(base) + 2 :]
    else:
        prefix = base.split("__", 1)[0]
        name = name[len(prefix) + 2 :] if name.startswith(f"{prefix}__") else name
    text = f"V{index}: " + name.replace("__", " · ")
    lines = textwrap.wrap(text, width)  # long names break at their hyphens
    if len(lines) > LABEL_LINES:
        lines = lines[:LABEL_LINES]
        lines[-1] = lines[-1][: width - 1] + "…"
    return "\n".join(lines)


def _task_label(comparison: Comparison, row: Row, multi_metric: bool) -> str:
    """Task (``[group]``), the metric when several are shown, n, and whose own task it is."""
    parts = [f"[{row.task}]" if row.kind == "group" else row.task]
    if multi_metric:
        parts.append(_metric_name(row))
    if row.n is not None:
        parts.append(f"n={row.n}")
    if row.own:
        owners = ",".join(f"V{comparison.variants.index(v) + 1}" for v in row.own)
        parts.append(f"own {owners}")
    return " · ".join(parts)


def _draw_cell(
    ax: Any, i: int, j: int, cell: Cell, vmax: float, cmap: Any, flagged: bool = False
) -> None:
    """Row ``i``, column ``j``: full colour, bold and framed if significant; faded and
    hatched if not (``!``: a flagged acc_prefix2 cell, never significant)."""
    from matplotlib.patches import Rectangle

    corner = (j - 0.5, i - 0.5)
    if cell.delta is None:
        ax.add_patch(Rectangle(corner, 1, 1, facecolor=NOT_COMPARED, edgecolor="white"))
        ax.text(j, i, "×", ha="center", va="center", fontsize=9, color="#555555")
        return
    rgba = cmap(0.5 + 0.5 * max(-1.0, min(1.0, cell.delta / vmax)))
    text = f"{cell.delta:+.2f}"
    if cell.significant:
        ax.add_patch(Rectangle(corner, 1, 1, facecolor=rgba, edgecolor="white"))
        frame = Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, edgecolor="black", lw=1.2)
        ax.add_patch(frame)
        colour = "white" if abs(cell.delta) > 0.55 * vmax else "black"
        ax.text(j, i, text + "*", ha="center", va="center", fontsize=9, color=colour, weight="bold")
        return
    faded = tuple(FADE + (1.0 - FADE) * c for c in rgba[:3])
    ax.add_patch(Rectangle(corner, 1, 1, facecolor=faded, edgecolor="white"))
    ax.add_patch(Rectangle(corner, 1, 1, fill=False, hatch="//", edgecolor=HATCH, lw=0))
    box = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1.5}
    label = text + ("!" if flagged else "?" if cell.p_value is None else "")
    ax.text(j, i, label, ha="center", va="center", fontsize=8, color="#444444", bbox=box)


DPI = 110
MAX_WIDTH_IN = 1600 / DPI  # the figure fits a screen, however many tasks and runs
ROW_IN = 0.3
CHAR_IN = 0.068  # one character of 8 pt text


def render_heatmap(comparison: Comparison) -> bytes:
    """Tasks (rows) by variants (columns), colour = change on a fixed scale; PNG bytes."""
    import matplotlib.pyplot as plt

    fig = heatmap_figure(comparison)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def _size(comparison: Comparison, labels: list[str]) -> tuple[float, float, int]:
    """Figure width and height (inches) and characters per line of a column label."""
    columns = len(comparison.variants) + 1  # the base column, then one per variant
    label_in = CHAR_IN * max(len(t) for t in labels) + 0.3
    free = MAX_WIDTH_IN - label_in - 1.6  # colour bar and margins
    column_in = max(0.55, min(2.0, free / columns))
    width = min(MAX_WIDTH_IN, label_in + 1.6 + column_in * columns)
    wrap = max(8, int(column_in / CHAR_IN))
    height = 1.9 + ROW_IN * len(comparison.rows) + 0.16 * LABEL_LINES
    return max(5.0, width), max(3.0, height), wrap


def heatmap_figure(comparison: Comparison) -> Any:
    """The heatmap as a matplotlib figure (constrained layout: nothing is cut off).

    Tasks are rows (a long list scrolls down, never off the side of the screen), the
    first column is the base level, then one column per variant; the variants' own
    tasks come first and are bold.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RelNeuronError(
            "--heatmap needs matplotlib", hint="pip install 'relneuron-eval[report]'"
        ) from None

    rows, variants = comparison.rows, comparison.variants
    vmax, _ = scale(comparison)
    cmap = matplotlib.colormaps["RdBu"]
    multi = len({_metric_name(r) for r in rows}) > 1
    labels = [_task_label(comparison, r, multi) for r in rows]
    width, height, wrap = _size(comparison, labels)
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained", dpi=DPI)
    for i, row in enumerate(rows):
        _draw_base(ax, i, row)
        for j, cell in enumerate(row.cells, start=1):
            _draw_cell(ax, i, j, cell, vmax, cmap, flagged=bool(row.flag))
    ax.set_xlim(-0.5, len(variants) + 0.5)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        if row.own:
            tick.set_fontweight("bold")
    runs = [
        run_label(i, name, comparison.base, wrap)
        + ("\n(random control)" if comparison.is_control(name) else "")
        for i, name in enumerate(variants, start=1)
    ]
    ax.xaxis.tick_top()
    ax.set_xticks(range(len(variants) + 1), ["base", *runs], fontsize=8)
    _label(fig, ax, comparison, cmap, width)
    return fig


def _draw_base(ax: Any, i: int, row: Row) -> None:
    """The base level: the number the changes start from, on a neutral ground."""
    from matplotlib.patches import Rectangle

    ax.add_patch(Rectangle((-0.5, i - 0.5), 1, 1, facecolor="#f2f2f2", edgecolor="white"))
    text = "—" if row.base is None else f"{row.base:.2f}"
    ax.text(0, i, text, ha="center", va="center", fontsize=8, color="#222222")


def _label(fig: Any, ax: Any, comparison: Comparison, cmap: Any, width: float) -> None:
    """Colour bar (metric, scale), title and legend."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    metrics = list(dict.fromkeys(_metric_name(r) for r in comparison.rows))
    what = " / ".join(metrics)
    vmax, scale_text = scale(comparison)
    bar = fig.colorbar(
        ScalarMappable(Normalize(-vmax, vmax), cmap), ax=ax, shrink=0.9, fraction=0.08
    )
    bar.set_label(f"Δ {what}\n(variant − base)\n{scale_text}", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    base = Path(comparison.base).name if "/" in comparison.base else comparison.base
    base = textwrap.shorten(base, 60, placeholder="…")
    title = textwrap.fill(f"Change in {what} vs. base {base}", int(width * 13))
    ax.set_title(title, fontsize=9, loc="left")
    caption = (
        f"framed, bold * = significant (p < {comparison.alpha}: paired test on sample logs, "
        "else z-test on stderr); faded, hatched = not significant; ? = no test; "
        "! = acc_prefix2 cannot tell the relation's objects apart (never significant); "
        "× = not compared; n = documents; bold task = the variant's own relation"
    )
    ax.set_xlabel(textwrap.fill(caption, int(width * 15)), fontsize=7, color="#444444")
