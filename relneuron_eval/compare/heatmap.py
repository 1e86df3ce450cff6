"""``relneuron compare --heatmap``: a figure a researcher reads right at a glance.

Rows are the variants (their run names, wrapped at ``__``), columns the tasks (with the
number of documents ``n``), colour the change ``variant − base``. The colour scale is
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
LABEL_WIDTH = 34  # characters per line of a row label
LABEL_LINES = 3


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


def run_label(index: int, name: str, base: str) -> str:
    """``V1: name``, without the base model's prefix, wrapped at ``__``, cut at the right."""
    if name.startswith(f"{base}__"):
        name = name[len(base) + 2 :]
    else:
        prefix = base.split("__", 1)[0]
        name = name[len(prefix) + 2 :] if name.startswith(f"{prefix}__") else name
    text = f"V{index}: " + name.replace("__", " · ")
    lines = textwrap.wrap(text, LABEL_WIDTH, break_on_hyphens=False)
    if len(lines) > LABEL_LINES:
        lines = lines[:LABEL_LINES]
        lines[-1] = lines[-1][: LABEL_WIDTH - 1] + "…"
    return "\n".join(lines)


def _column_label(row: Row, multi_metric: bool, sep: str) -> str:
    """Task (``[group]``), the metric when several are shown, and the documents behind it."""
    parts = [f"[{row.task}]" if row.kind == "group" else row.task]
    if multi_metric:
        parts.append(_metric_name(row))
    if row.n is not None:
        parts.append(f"n={row.n}")
    return sep.join(parts)


def _draw_cell(ax: Any, i: int, j: int, cell: Cell, vmax: float, cmap: Any) -> None:
    """One cell: full colour, bold and framed if significant; faded and hatched if not."""
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
    label = text + ("?" if cell.p_value is None else "")
    ax.text(j, i, label, ha="center", va="center", fontsize=8, color="#444444", bbox=box)


DPI = 110


def render_heatmap(comparison: Comparison) -> bytes:
    """Variants (rows) by task (columns), colour = change on a fixed scale; PNG bytes."""
    import matplotlib.pyplot as plt

    fig = heatmap_figure(comparison)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def heatmap_figure(comparison: Comparison) -> Any:
    """The heatmap as a matplotlib figure (constrained layout: nothing is cut off)."""
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
    width = min(40.0, max(6.0, 0.9 * len(rows) + 5.0))
    columns, rotate = _columns(comparison, width)
    longest = max(len(c) for c in columns) if rotate else 0
    height = min(30.0, max(3.2, 0.6 * len(variants) + 2.6 + 0.05 * longest))
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained", dpi=DPI)
    for j, row in enumerate(rows):
        for i, cell in enumerate(row.cells):
            _draw_cell(ax, i, j, cell, vmax, cmap)
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylim(len(variants) - 0.5, -0.5)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks(range(len(rows)), columns, fontsize=8)
    if rotate:
        plt.setp(ax.get_xticklabels(), rotation=40, ha="right", rotation_mode="anchor")
    _label(fig, ax, comparison, cmap, width)
    return fig


def _columns(comparison: Comparison, width: float) -> tuple[list[str], bool]:
    """Column labels, and whether they must be rotated (then on one line) to fit a cell."""
    rows = comparison.rows
    multi = len({_metric_name(r) for r in rows}) > 1
    columns = [_column_label(r, multi, "\n") for r in rows]
    longest = max((len(line) for label in columns for line in label.splitlines()), default=0)
    if longest * 0.075 <= (width - 3.5) / max(1, len(rows)):  # inches: 8 pt text vs. a cell
        return columns, False
    return [label.replace("\n", " · ") for label in columns], True


def _label(fig: Any, ax: Any, comparison: Comparison, cmap: Any, width: float) -> None:
    """Run names, colour bar (metric, scale), title and legend."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    metrics = list(dict.fromkeys(_metric_name(r) for r in comparison.rows))
    labels = [
        run_label(i, name, comparison.base)
        + ("\n(random control)" if comparison.is_control(name) else "")
        for i, name in enumerate(comparison.variants, start=1)
    ]
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    what = " / ".join(metrics)
    vmax, scale_text = scale(comparison)
    bar = fig.colorbar(
        ScalarMappable(Normalize(-vmax, vmax), cmap), ax=ax, shrink=0.9, fraction=0.08
    )
    bar.set_label(f"Δ {what}\n(variant − base)\n{scale_text}", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    base = Path(comparison.base).name if "/" in comparison.base else comparison.base
    base = textwrap.shorten(base, 60, placeholder="…")
    ax.set_title(f"Change in {what} vs. base {base}", fontsize=9, loc="left")
    caption = (
        f"framed, bold * = significant (p < {comparison.alpha}: paired test on sample logs, "
        "else z-test on stderr); faded, hatched = not significant; ? = no test; "
        "× = not compared; n = documents"
    )
    ax.set_xlabel(textwrap.fill(caption, int(width * 15)), fontsize=7, color="#444444")
