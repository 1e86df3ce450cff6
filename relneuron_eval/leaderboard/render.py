"""``leaderboard.md``: the ranking, the per-budget table, the paired tests and the costs."""

from __future__ import annotations

from typing import Any

KN_NOTE = (
    "Integrated-gradients knowledge neurons are not on the board: the shipped set holds "
    "neurons per bridge fact of the two-hop chains, found on those facts (test-split facts "
    "of a few relations), so aggregating it by relation would score a method on its own "
    "facts; a per-relation set from the discovery split needs a full integrated-gradients "
    "run (`relneuron find knowledge-neurons --split discovery`), which enters with `--add`."
)


def pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.1f}"


def with_ci(cell: dict[str, Any]) -> str:
    """``+12.3 [+5.0, +19.6]`` in percentage points of the score (x100)."""
    if cell.get("mean") is None:
        return "–"
    ci = cell.get("ci")
    text = pct(cell["mean"])
    return text + (f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else "")


def cost_cells(cost: dict[str, Any] | None) -> tuple[str, str, str]:
    """(forward-pass equivalents, seconds, peak memory) as shown in tables."""
    if not cost:
        return "–", "–", "–"
    fpe = cost.get("forward_equivalents")
    floor = "≥ " if cost.get("prompts_done_before") else ""  # a resumed step: a lower bound
    return (
        "–" if fpe is None else f"{floor}{fpe:,.1f}",
        f"{cost.get('seconds', 0):,.0f}",
        _mb(cost.get("peak_memory_mb")),
    )


def _mb(value: float | None) -> str:
    """Memory as shown; None where it could not be read (no /proc)."""
    return "n/a" if value is None else f"{value:,.0f} MB"


def ranking(results: dict[str, Any]) -> list[str]:
    """Methods by their mean Disentangle area, best first."""
    per = results["scores"]["per_method"]
    return sorted(per, key=lambda m: -(per[m]["area_disentangle"]["mean"] or float("-inf")))


def render(results: dict[str, Any]) -> str:
    s, meta = results["scores"], results["meta"]
    lines = [
        f"# Neuron-finding methods on {meta['model']}: which units hold a relation?",
        "",
        f"Command: `{meta['command']}`  ",
        f"Settings: `{meta['settings']['path']}` (sha256 {meta['settings']['sha256'][:12]}), "
        f"metric `{meta['metric']}`, budgets k = {', '.join(map(str, s['budgets']))}, "
        f"{len(s['relations'])} relations, {sum(s['n_docs'].values()):,} test documents"
        + (f" (first {meta['limit']} per relation)" if meta.get("limit") else "")
        + ".",
        "",
        "Cause = relative drop of a relation's accuracy under its own top-k units; Isolate = 1 -"
        " relative drop of another relation under them; Disentangle = their mean (RAVEL). "
        "Areas over log k (MIB CPR-like), x100; 95 % t intervals over relations.",
        "",
        "## Ranking (area over budgets)",
        "",
        "| method | Disentangle | Cause | Isolate | cost (forward passes) | seconds | peak memory |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for m in ranking(results):
        cell = s["per_method"][m]
        fpe, sec, mem = cost_cells(results["costs"].get(m))
        lines.append(
            f"| {m} | {with_ci(cell['area_disentangle'])} | {with_ci(cell['area_cause'])} | "
            f"{with_ci(cell['area_isolate'])} | {fpe} | {sec} | {mem} |"
        )
    lines += [
        "",
        "## Per budget",
        "",
        "| method | k | Disentangle | Cause | Isolate |",
        "|---|---:|---|---|---|",
    ]
    for row in s["rows"]:
        lines.append(
            f"| {row['method']} | {row['k']} | {with_ci(row['disentangle'])} | "
            f"{with_ci(row['cause'])} | {with_ci(row['isolate'])} |"
        )
    lines += _comparisons(s) + _controls(s) + _costs(results) + _notes(results)
    return "\n".join(lines) + "\n"


def _comparisons(s: dict[str, Any]) -> list[str]:
    pairs = s["comparisons"]
    out = [
        "",
        f"## Paired comparisons (area of Disentangle; paired t over relations, Holm over {len(pairs)} pairs)",
        "",
    ]
    for p in pairs:
        ci = p["ci"]
        interval = f" [{pct(ci[0])}, {pct(ci[1])}]" if ci else ""
        p_holm = "–" if p["p_holm"] is None else f"{p['p_holm']:.3g}"
        out.append(f"- {p['a']} vs {p['b']}: {pct(p['diff'])}{interval}, Holm p = {p_holm}")
    return out


def _controls(s: dict[str, Any]) -> list[str]:
    vs = s["vs_control"]
    if not vs:
        return []
    controls = list(vs)
    out = [
        "",
        "## Relations where a method's Disentangle area lies above a random control's",
        "",
        "Paired bootstrap over each relation's documents: the 95 % interval of the area "
        "difference lies above 0 (uncorrected), and so does it with the bootstrap p "
        "Holm-adjusted over the relations (per method and control; the count that controls "
        "the chance of any false claim).",
        "",
        "| method | " + " | ".join(f"above {c} (uncorrected / Holm)" for c in controls) + " |",
        "|---|" + "---:|" * len(controls),
    ]
    for m in vs[controls[0]]:
        cells = [
            f"{vs[c][m]['relations_above']} / {vs[c][m].get('relations_above_holm', '–')} "
            f"of {vs[c][m]['of']}"
            for c in controls
        ]
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out


def _costs(results: dict[str, Any]) -> list[str]:
    out = [
        "",
        "## Cost of discovery",
        "",
        "Seconds of the method in the process that ran it, divided by one plain forward pass "
        "over the same discovery prompts in that process (a method that reads the shared "
        "token-mean store adds that pass's own ratio); memory: peak while it ran. "
        "≥: the step was resumed, its seconds cover only the prompts left.",
        "",
    ]
    for m, cost in results["costs"].items():
        if cost:
            shared = (
                f" (incl. the shared token-mean pass, {cost['shared_pass_seconds']:,.0f} s)"
                if "shared_pass_seconds" in cost
                else ""
            )
            resumed = (
                f"; resumed with {cost['prompts_done_before']:,} of {cost['prompts']:,} prompts "
                "done before, so a lower bound"
                if cost.get("prompts_done_before")
                else ""
            )
            out.append(
                f"- {m}: {cost['seconds']:,.1f} s{shared} = {cost['forward_equivalents']} "
                f"forward passes (plain forward {cost['plain_forward_seconds']:.1f} s, "
                f"{cost['prompts']:,} prompts, {cost['device']}); peak {cost['memory']} "
                f"{_mb(cost['peak_memory_mb'])} (+{_mb(cost['extra_memory_mb'])}){resumed}"
            )
        else:
            out.append(f"- {m}: not measured (a given set or drawn per budget)")
    return out


def _notes(results: dict[str, Any]) -> list[str]:
    notes = [*results["meta"].get("notes", []), KN_NOTE]
    return ["", "## Notes", "", *[f"- {n}" for n in notes]]
