"""Markdown of the interference experiment: the headline, the specificity table with
its intervals and detectable effects, the uncertainty split, and the r x r' matrix.

Rendered only from the results dictionary (see :mod:`relneuron_eval.report.markdown`).
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.report.experiments import ALPHA
from relneuron_eval.report.markdown_controls import (
    answers_table,
    control_set_lines,
    eligibility_rule,
    matrix_lines,
    others_lines,
    p_holm,
    test_name,
    tests_used,
)
from relneuron_eval.report.markdown_format import (
    ci,
    figure_name,
    interval,
    neg,
    p_is,
    pct,
    pts,
    seed_range,
    table,
    unsigned_pp,
)

MDE_RULE = (
    f"MDE (alpha {ALPHA}, power 0.8), for the test actually used: vs base, the smallest net "
    "drop the exact McNemar test detects on the relation's n documents when wrong answers "
    "turn right at the rate observed under the deactivation (exact power, summed over "
    "the discordant pairs); vs control, the smallest own-minus-control difference the "
    "seed-aware z detects with the observed standard error (document and seed "
    "variance). A drop that large would be found 4 times in 5, so a non-significant "
    "relation makes drops of about its MDE or more unlikely (smaller ones stay "
    "possible). n/a: not even a drop to 0 would be detectable."
)


# ================================================================== headline
def headline_for(inter: dict[str, Any], meta: dict[str, Any]) -> str:
    """The acceptance-bar sentence at one top-k: own drop vs size-matched random drop,
    with counts, followed by where the interval's width comes from."""
    s = inter["summary"]
    m = s["n_eligible"]
    if m == 0:
        return (
            f"No relation reaches the base accuracy threshold ({pct(meta.get('min_base'), 0)}), "
            "so no drop can be claimed."
        )
    a, r = s["absolute"], s["relative"]
    fam = s.get("family") or {}
    ctrl_test = test_name(next(iter(inter["per_relation"].values()))["test_vs_control"], True)
    t_ci = s.get("ci95_t")
    text = (
        f"Deactivating a relation's top-{inter['top_k']} neurons lowers its own "
        f"{inter['metric']} by {100 * a['mean_own']:.1f} points on average "
        f"({pct(r['mean_own'], 0)} relative) vs {100 * a['mean_control']:.1f} points "
        f"({pct(r['mean_control'], 0)}) for size-matched random units: difference "
        f"{pts(a['mean_difference'])}, 95% t CI {interval(t_ci) if t_ci else ci(a)} "
        f"(relations weigh equally), paired t over {m} relations {p_is(a['p_paired_t'])}. "
        f"{fam.get('n_p_deact_vs_base_holm', s['n_significant_drop'])} of {m} relations "
        f"drop significantly below base (exact McNemar, Holm over relations, p<{ALPHA}; "
        f"{s['n_significant_drop']} unadjusted), "
        f"{fam.get('n_p_deact_vs_control_holm', s['n_significant_vs_control'])} of {m} "
        f"significantly below their random control ({ctrl_test}, Holm; "
        f"{s['n_significant_vs_control']} unadjusted); the random controls drop "
        f"{fam.get('n_p_control_vs_base_holm', s['n_control_significant_drop'])} of {m} "
        "significantly (Holm)."
    )
    left = s["n_total"] - m
    if left:
        text += (
            f" ({left} relation(s) not eligible (base accuracy below "
            f"{pct(inter.get('min_base', meta.get('min_base')), 0)} or within "
            f"{pts(meta.get('min_margin', 0.1), 0)} of the majority class) are left out.)"
        )
    return " ".join(filter(None, [text, variance_sentence(s), pooled_sentence(s)]))


def variance_sentence(s: dict[str, Any]) -> str:
    """Where the across-relation CI's width comes from: document sampling vs relations."""
    v = s.get("variance_split")
    if not v:
        return ""
    total, within = unsigned_pp(v["se_mean_total"], 2), unsigned_pp(v["se_mean_within"], 2)
    typical = unsigned_pp(v["sd_within_sampling"])
    if v["se_mean_between"] == 0.0 and not v.get("se_mean_seed"):
        return (
            f"Its standard error over relations is {total}; document sampling within "
            f"relations alone would give {within} (typical SE {typical} per relation), so "
            "the relations differ no more than sampling noise makes them."
        )
    seeds = ""
    if v.get("se_mean_seed"):
        seeds = f"{unsigned_pp(v['se_mean_seed'], 2)} from the random control's seeds, "
    return (
        f"Its standard error over relations, {total}, combines (in quadrature) {within} "
        f"from document sampling within relations (typical SE {typical} per relation), "
        f"{seeds}and {unsigned_pp(v['se_mean_between'], 2)} from real differences between "
        "relations "
        f"(SD {unsigned_pp(v['sd_between_true'])}): {pct(v['within_share'], 0)} of the "
        "variance is sampling."
    )


def pooled_sentence(s: dict[str, Any]) -> str:
    """The pooled per-document interval, labelled as the different estimand it is."""
    p = s.get("pooled")
    if not p:
        return ""
    return (
        f"Pooled over all {p['n_docs']} documents instead (a different estimand: a random "
        f"test fact of these relations, relations weighted by their n; only document "
        f"sampling counts): own drop {unsigned_pp(p['mean_own_drop'])} vs "
        f"{unsigned_pp(p['mean_control_drop'])}, difference {pts(p['mean_difference'])}, "
        f"95% normal CI {ci(p)}."
    )


# =================================================================== sections
def interference_section(inter: dict[str, Any], primary: bool, n_ks: int) -> list[str]:
    """The specificity table and summary at one top-k (and its matrix, if any)."""
    k = None if primary else inter["top_k"]
    title = "## Interference and specificity"
    if n_ks > 1:
        title += f": top-{inter['top_k']} neurons" + (" (headline)" if primary else "")
    out = [title, ""]
    out += [
        f"Each relation's top-{inter['top_k']} neurons deactivated; accuracy ({inter['metric']}) "
        "on its own task, next to the same number of random units per layer and site "
        "(`control=random`; with several seeds, their per-document mean, the seeds' range "
        "and SD in brackets). Changes are in percentage points with a 95% percentile "
        "bootstrap interval over the relation's documents (paired, 2,000 resamples). "
        + tests_used(inter),
        "",
        eligibility_rule(inter),
        "",
        f"![specificity]({figure_name('specificity', k)})",
        "",
    ]
    out += _specificity_table(inter)
    out += [MDE_RULE, ""]
    out += answers_table(inter)
    s = inter["summary"]
    a, rel = s["absolute"], s["relative"]
    out += [
        f"Over the {s['n_eligible']} eligible relations: "
        f"mean change {pts(neg(a['mean_own']))} (own neurons) vs {pts(neg(a['mean_control']))} "
        f"(random units); the own drop is larger by {pts(a['mean_difference'])} "
        f"{interval(s['ci95_t']) if s.get('ci95_t') else ci(a)} (t interval), "
        f"{p_is(a['p_paired_t'])} "
        f"(paired t over relations); relative drop {pct(rel['mean_own'], 0)} vs "
        f"{pct(rel['mean_control'], 0)}. The own drop is larger for {a['own_larger']} "
        f"relations and smaller for {a['control_larger']}.",
        "",
    ]
    out += _uncertainty_table(s)
    out += others_lines(inter)
    out += control_set_lines(inter)
    if inter.get("matrix"):
        out += _interference_matrix(inter, k)
    return out


def _specificity_table(inter: dict[str, Any]) -> list[str]:
    rows = []
    for r, c in inter["per_relation"].items():
        flag = "" if c["eligible"] else " (not eligible)"
        sd = c.get("control_seed_sd")
        rows.append(
            [
                f"{r}{flag}",
                str(c["n_docs"]),
                str(c["n_units"]),
                pct(c["base"]),
                pct(c.get("majority_rate")),
                pct(c["deact"]),
                pct(c["control"])
                + seed_range(c.get("control_seeds") or [])
                + ("" if sd is None else f", SD {unsigned_pp(sd)}"),
                f"{pts(neg(c['drop']))} {interval(c.get('change_ci95'))}",
                f"{pts(neg(c['control_drop']))} {interval(c.get('control_change_ci95'))}",
                f"{unsigned_pp(c.get('mde_mcnemar', c.get('mde')))} / "
                f"{unsigned_pp(c.get('mde_vs_control'))}",
                pct(c["relative_drop"], 0),
                pct(c["control_relative_drop"], 0),
                p_holm(c, "p_deact_vs_base"),
                p_holm(c, "p_deact_vs_control"),
            ]
        )
    header = ["relation", "n (docs)", "units", "base", "majority class", "deactivated"]
    header += ["random control", "change [95% CI]", "control change [95% CI]"]
    header += ["MDE vs base / vs control", "rel. drop", "control rel. drop"]
    header += ["p vs base (Holm)", "p vs control (Holm)"]
    return table(header, rows)


def _uncertainty_table(s: dict[str, Any]) -> list[str]:
    """The headline's interval next to where its width comes from, and the pooled one."""
    v, p = s.get("variance_split"), s.get("pooled")
    if not v and not p:
        return []
    a = s["absolute"]
    rows = [
        [
            "mean over relations (the headline; relations weigh equally)",
            str(a["n"]) + " relations",
            pts(a["mean_difference"]),
            f"{interval(s['ci95_t'])} (t over relations)"
            if s.get("ci95_t")
            else f"{ci(a)} (bootstrap over relations)",
        ]
    ]
    if p:
        rows.append(
            [
                "pooled over documents (another estimand)",
                f"{p['n_docs']} documents",
                pts(p["mean_difference"]),
                f"{ci(p)} (normal, over documents)",
            ]
        )
    out = ["Own drop minus control drop, two estimands:", ""]
    out += table(["estimand", "over", "difference", "95% interval"], rows)
    if v:
        out += table(
            ["standard error of the mean over relations", "pp"],
            [
                ["in all (spread of the relations' differences)", _pp2(v["se_mean_total"])],
                ["from within-relation document sampling", _pp2(v["se_mean_within"])],
                ["from the random control's seeds", _pp2(v.get("se_mean_seed"))],
                ["from between-relation differences", _pp2(v["se_mean_between"])],
                ["share of the variance that is sampling", pct(v["within_share"], 0)],
            ],
        )
        out += [
            "The split is a method-of-moments estimate: the observed variance of the "
            "relations' differences minus their mean sampling variance (each relation's "
            "per-document variance / n) and their mean seed variance (the variance of the "
            "control's accuracy over seeds / seeds) is the between-relation variance "
            "(floored at 0).",
            "",
        ]
    return out


def _pp2(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _interference_matrix(inter: dict[str, Any], k: int | None) -> list[str]:
    """The r x r' section: off-diagonal drops of own neurons vs random controls."""
    matrix = inter["matrix"]
    own, ctrl = matrix["offdiag_own"], matrix["offdiag_control"]
    names = inter["matrix_relations"]
    out = [
        "### The r x r' matrix",
        "",
        f"Relative drop (acc_orig - acc_deact) / acc_orig of relation r' (column) when r's "
        f"neurons (row) are deactivated, for {len(names)} relations "
        f"({', '.join(names)}); cells where r' improved are marked with a triangle, "
        f"cells whose change from base is significant (exact McNemar, p<{ALPHA}, "
        "unadjusted: exploratory) with a *, "
        "columns below the threshold are hatched. Right: the random controls.",
        "",
        f"![interference]({figure_name('interference', k)})",
        "",
    ]
    out += table(
        ["off-diagonal cells", "own neurons", "random control"],
        [
            ["cells (eligible columns)", str(own["n_cells"]), str(ctrl["n_cells"])],
            [
                "mean relative drop",
                pct(own["mean_relative_drop"]),
                pct(ctrl["mean_relative_drop"]),
            ],
            [
                "mean change (points)",
                pts(neg(own["mean_absolute_drop"])),
                pts(neg(ctrl["mean_absolute_drop"])),
            ],
            ["cells that improved", str(own["n_improved"]), str(ctrl["n_improved"])],
            [
                f"significant drops / improvements (p<{ALPHA})",
                f"{own['n_dropped_significant']} / {own['n_improved_significant']}",
                "-",
            ],
        ],
    )
    out += matrix_lines(matrix)
    out += [
        f"Diagonal (own relation) mean relative drop in the matrix: "
        f"{pct(matrix['diag_mean_relative_drop'])}.",
        "",
    ]
    return out
