"""Markdown of issue 19's controls: which test made each p, Holm over the family, what
the deactivated model answers instead, own vs other relations' neurons, and the matrix's
measured interval. Rendered only from the results dictionary.
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.evaluation.statistics import MCNEMAR, PAIRED_T, SEED_Z
from relneuron_eval.report.markdown_format import interval, pct, pts, pval, table

SHORT_NAMES = {MCNEMAR: "exact McNemar", PAIRED_T: "paired t", SEED_Z: "seed-aware z"}
TEST_NAMES = {
    MCNEMAR: "exact McNemar (paired by document)",
    PAIRED_T: "paired t over documents",
    SEED_Z: "seed-aware z (own vs the seeds' mean; variance = document variance / n + "
    "seed variance / seeds)",
}


def test_name(test: str | None, short: bool = False) -> str:
    return (SHORT_NAMES if short else TEST_NAMES).get(str(test), str(test))


def tests_used(inter: dict[str, Any]) -> str:
    """The sentence naming the test behind each p column (as actually run)."""
    cells = list(inter["per_relation"].values())
    base = sorted({c["test"] for c in cells})
    ctrl = sorted({c["test_vs_control"] for c in cells})
    text = (
        f"p vs base: {'; '.join(test_name(t) for t in base)}. p vs control: "
        f"{'; '.join(test_name(t) for t in ctrl)}. Each p is followed by its Holm-adjusted "
        "value over the eligible relations (family-wise, per column); counts of "
        "significant relations use the adjusted values. Rows not eligible are exploratory."
    )
    if any(c.get("others") is not None for c in cells):
        text += " p vs others: the seed-aware z with the other relations' neurons as the draws."
    return text


def p_holm(cell: dict[str, Any], key: str) -> str:
    """``0.012 (0.036)``: raw p and, for eligible rows, the Holm-adjusted one."""
    adjusted = cell.get(key + "_holm")
    raw = pval(cell.get(key))
    return raw if adjusted is None else f"{raw} ({pval(adjusted)})"


def eligibility_rule(inter: dict[str, Any]) -> str:
    rule = inter.get("eligibility") or {}
    if not rule:
        return ""
    return (
        f"Eligible for drop claims: base accuracy at least {pct(rule['min_base'], 0)} and "
        f"at least {pts(rule['min_margin'], 0)} above always answering the most frequent "
        "object (the majority-class column), on the same documents; relations weigh "
        f"equally, and those under {rule['min_docs']} documents are flagged "
        f"({', '.join(rule['below_min_docs']) or 'none'})."
    )


def answers_table(inter: dict[str, Any]) -> list[str]:
    """Per relation: type-valid rate and most frequent answer, base -> deactivated."""
    rows = []
    for r, c in inter["per_relation"].items():
        b, d = c.get("answers_base"), c.get("answers_deact")
        if b is None or d is None:
            continue
        rows.append(
            [
                r + ("" if c["eligible"] else " (not eligible)"),
                f"{pct(c.get('majority_rate'))} ({c.get('majority_object')})",
                f"{pct(b['type_valid'])} → {pct(d['type_valid'])} "
                f"({pct(c.get('control_type_valid'))})",
                f"{b['top_object']} {pct(b['top_share'], 0)} → "
                f"{d['top_object']} {pct(d['top_share'], 0)}",
                c.get("verdict") or "n/a",
            ]
        )
    if not rows:
        return []
    out = [
        "What the deactivated model answers instead (from the stored generations; with a "
        "multiple-choice metric, the object it scores highest): "
        "type-valid = the answer names some object of the relation; verdict: 'format "
        "broke' when the type-valid rate falls by 10 points or more, 'switched default' "
        "when one object's share of the answers rises by 10 points or more (both can "
        "hold), else 'forgot'; a drop under 10 points: 'small drop'. Closed-set "
        "relations only (their objects are the multiple-choice lists); an open set's "
        "objects are nearly one per fact.",
        "",
    ]
    header = ["relation", "majority class", "type-valid: base → deact. (control)"]
    header += ["most frequent answer: base → deact.", "verdict"]
    return out + table(header, rows)


def others_lines(inter: dict[str, Any]) -> list[str]:
    """Own vs other relations' neurons of the same size: the second headline."""
    s = inter["summary"].get("others")
    if not s:
        return []
    cells = inter["per_relation"]
    rows = [
        [
            r,
            ", ".join(c["other_relations"]),
            pct(c["deact"]),
            pct(c["others"]),
            pts(c["drop"] - c["others_drop"]),
            p_holm(c, "p_deact_vs_others"),
        ]
        for r, c in cells.items()
        if c.get("others") is not None
    ]
    text = (
        f"Against other relations' top-{inter['top_k']} neurons (the same number of units, "
        f"deactivated on r's own task): own drop {pts(s['mean_own_drop'])} vs "
        f"{pts(s['mean_others_drop'])}, difference {pts(s['mean_difference'])}, 95% t CI "
        f"{interval(s['ci95_t'])}, paired t over {s['n']} relations p={pval(s['p_paired_t'])}; "
        f"{s['n_significant_holm']} of {s['n']} relations significantly below the others "
        "(Holm)."
    )
    header = ["relation", "other relations", "own", "others", "own - others drop", "p (Holm)"]
    return ["### Own vs other relations' neurons", "", text, "", *table(header, rows)]


def matrix_lines(matrix: dict[str, Any]) -> list[str]:
    """The measured off-diagonal interval and the Holm-adjusted counts of the matrix."""
    d = matrix.get("offdiag_difference")
    if not d:
        return []
    return [
        f"Off-diagonal own minus random-control drop over {d['n_cells']} eligible cells: "
        f"{pts(d['mean_own_minus_control_drop'])}, 95% cluster-bootstrap interval "
        f"{interval(d['ci95_cluster_bootstrap'])} (rows resampled: a row's cells share its "
        f"neurons). Holm over the off-diagonal cells: {d['n_dropped_significant_holm']} "
        f"significant drops, {d['n_improved_significant_holm']} significant improvements.",
        "",
    ]


def control_set_lines(inter: dict[str, Any]) -> list[str]:
    """Own vs each ``--control-set`` (e.g. activation-matched units), per relation."""
    sets = inter["summary"].get("control_sets") or {}
    out: list[str] = []
    for name, s in sets.items():
        rows = [
            [
                r,
                pct(c["deact"]),
                pct(c["control_sets"][name]["accuracy"]),
                pts(c["drop"] - c["control_sets"][name]["drop"]),
                f"{pval(c['control_sets'][name]['p_deact_vs_set'])}"
                + (
                    f" ({pval(c['control_sets'][name]['p_deact_vs_set_holm'])})"
                    if c["control_sets"][name].get("p_deact_vs_set_holm") is not None
                    else ""
                ),
            ]
            for r, c in inter["per_relation"].items()
        ]
        out += [
            f"### Own vs the control set `{name}`",
            "",
            f"Own minus `{name}` drop over {s['n']} eligible relations: "
            f"{pts(s['mean_difference'])}, 95% t CI {interval(s['ci95_t'])}; "
            f"{s['n_significant_holm']} relations significantly below it (exact McNemar, Holm).",
            "",
            *table(["relation", "own", name, "own - set drop", "p (Holm)"], rows),
        ]
    return out
