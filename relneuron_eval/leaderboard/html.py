"""``leaderboard.html``: one self-contained page (no network resource of any kind).

A sortable table with a row per method and budget plus each method's area row, the
intervals and the costs, the figure as a ``data:`` URI, and the exact command and
settings file. Sorting is a few lines of inline script: a click on a column header sorts
by the cells' ``data-v`` numbers (text columns by their text), a second click reverses.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from relneuron_eval.leaderboard.render import cost_cells, pct, ranking

SCRIPT = """
document.querySelectorAll('th[data-col]').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0];
    var col = Number(th.dataset.col), asc = th.dataset.dir !== 'asc';
    table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = asc ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y), r;
      if (isNaN(nx) || isNaN(ny)) { r = String(x).localeCompare(String(y)); }
      else { r = nx - ny; }
      return asc ? r : -r;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
th[data-col] { cursor: pointer; background: #f3f3f3; }
th[data-dir=asc]::after { content: " \\25B2"; } th[data-dir=desc]::after { content: " \\25BC"; }
tr.area td { font-weight: bold; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
"""

COLUMNS = (
    "method",
    "k",
    "Disentangle",
    "Cause",
    "Isolate",
    "cost (forward passes)",
    "seconds",
    "peak memory",
)


def _num(value: Any) -> str:
    return "" if value is None else repr(float(value))


def _score(cell: dict[str, Any]) -> str:
    ci = cell.get("ci")
    text = pct(cell.get("mean"))
    if ci:
        text += f" [{pct(ci[0])}, {pct(ci[1])}]"
    return f'<td data-v="{_num(cell.get("mean"))}">{html.escape(text)}</td>'


def _row(method: str, k: str, k_value: str, cells: dict[str, Any], cost: Any, css: str) -> str:
    fpe, sec, mem = cost_cells(cost)
    cost = cost or {}
    return (
        f'<tr class="{css}" data-method="{html.escape(method)}">'
        f'<td data-v="{html.escape(method)}">{html.escape(method)}</td>'
        f'<td data-v="{k_value}">{html.escape(k)}</td>'
        + "".join(_score(cells[s]) for s in ("disentangle", "cause", "isolate"))
        + f'<td data-v="{_num(cost.get("forward_equivalents"))}">{fpe}</td>'
        + f'<td data-v="{_num(cost.get("seconds"))}">{sec}</td>'
        + f'<td data-v="{_num(cost.get("peak_memory_mb"))}">{mem}</td></tr>'
    )


def render_html(results: dict[str, Any], figure: Path | None) -> str:
    """The page as one string."""
    s, meta, costs = results["scores"], results["meta"], results["costs"]
    rows = []
    for m in ranking(results):
        area = {k.removeprefix("area_"): v for k, v in s["per_method"][m].items()}
        rows.append(_row(m, "area", "1e9", area, costs.get(m), "area"))
        for row in (r for r in s["rows"] if r["method"] == m):
            rows.append(_row(m, str(row["k"]), str(row["k"]), row, costs.get(m), "budget"))
    head = "".join(f'<th data-col="{i}">{html.escape(c)}</th>' for i, c in enumerate(COLUMNS))
    img = ""
    if figure is not None and figure.is_file():
        data = base64.b64encode(figure.read_bytes()).decode()
        img = f'<p><img alt="Cause vs Isolate; Disentangle over k" src="data:image/png;base64,{data}" width="100%"></p>'
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in meta.get("notes", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Neuron-finding methods on {html.escape(meta["model"])}</title>
<style>{STYLE}</style></head><body>
<h1>Neuron-finding methods on {html.escape(meta["model"])}</h1>
<p>Cause = relative drop of a relation's accuracy ({html.escape(meta["metric"])}) under its own
top-k units; Isolate = 1 - relative drop of another relation under them; Disentangle = their
mean. Rows "area": area over log k. Values x100 with 95 % t intervals over
{len(s["relations"])} relations. Click a column header to sort.</p>
<table id="board"><thead><tr>{head}</tr></thead><tbody>
{"".join(rows)}
</tbody></table>
{img}
<h2>Command</h2><pre id="command">{html.escape(str(meta["command"]))}</pre>
<h2>Settings ({html.escape(meta["settings"]["path"])}, sha256 {meta["settings"]["sha256"][:12]})</h2>
<pre id="settings">{html.escape(meta["settings"]["text"])}</pre>
<h2>Notes</h2><ul>{notes}</ul>
<script>{SCRIPT}</script>
</body></html>
"""
