"""Markdown of ``relneuron report``, rendered only from ``results.json``'s content.

Every number printed here is read from the results dictionary, so the markdown and
``results.json`` cannot disagree, and a report can be re-rendered without a model.
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.report.experiments import ALPHA


# ================================================================ formatting
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


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]


def _ci(summary: dict[str, Any], fmt=pts) -> str:
    ci = summary.get("ci95")
    return "n/a" if not ci else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


# ================================================================== headline
def headline(results: dict[str, Any]) -> str | None:
    """The acceptance-bar sentence: own drop vs size-matched random drop, with counts."""
    inter = results.get("interference")
    if not inter:
        return None
    s = inter["summary"]
    meta = results.get("meta", {})
    m = s["n_eligible"]
    if m == 0:
        return (
            f"No relation reaches the base accuracy threshold ({pct(meta.get('min_base'), 0)}), "
            "so no drop can be claimed."
        )
    a, r = s["absolute"], s["relative"]
    text = (
        f"Deactivating a relation's top-{inter['top_k']} neurons lowers its own "
        f"{inter['metric']} by {100 * a['mean_own']:.1f} points on average "
        f"({pct(r['mean_own'], 0)} relative) vs {100 * a['mean_control']:.1f} points "
        f"({pct(r['mean_control'], 0)}) for size-matched random units: difference "
        f"{pts(a['mean_difference'])}, 95% bootstrap CI {_ci(a)}, paired t over {m} "
        f"relations {p_is(a['p_paired_t'])}. {s['n_significant_drop']} of {m} relations "
        f"drop significantly below base (exact McNemar, p<{ALPHA}), "
        f"{s['n_significant_vs_control']} of {m} significantly below their random control; "
        f"the random controls drop {s['n_control_significant_drop']} of {m} significantly."
    )
    left = s["n_total"] - m
    if left:
        text += (
            f" ({left} relation(s) with base accuracy below "
            f"{pct(inter.get('min_base', meta.get('min_base')), 0)} are left out.)"
        )
    return text


# =================================================================== sections
def _settings(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    ns = meta["neuron_set"]
    rows = [
        ["model", f"`{meta['model']}`"],
        ["relation-specific neuron set", f"`{ns['path']}` (sha256 {ns['sha256'][:12]})"],
        ["method", f"`{ns['method'].get('name', '?')}`"],
        ["relations", f"{len(meta['relations'])}: {', '.join(meta['relations'])}"],
        ["metric", f"`{meta['metric']}`"],
        [
            "documents per relation task",
            f"first {meta['limit'] or 'all'} test facts; own task in the specificity "
            f"test: first {meta.get('limit_own') or 'all'}",
        ],
        ["top-k (interference, versatility)", str(meta["top_k"])],
        ["random-control seeds", ", ".join(map(str, meta["seeds"]))],
        ["base-accuracy threshold for drop claims", pct(meta["min_base"], 0)],
    ]
    if meta.get("kn_set"):
        kn = meta["kn_set"]
        rows.append(
            [
                "knowledge-neuron set",
                f"`{kn['path']}` ({kn['groups']} groups, {kn['neurons']} neurons)",
            ]
        )
        pool = (
            "chains whose bridge fact has knowledge neurons"
            if meta.get("reasoning_chains") == "with-neurons"
            else "all chains"
        )
        rows.append(
            ["two-hop chains", f"{meta['reasoning_limit'] or 'all'}, evenly spread over {pool}"]
        )
    settings = meta.get("settings") or {}
    if settings:
        rows.append([" / ".join(settings), " / ".join(str(v) for v in settings.values())])
    ev = meta["evaluations"]
    rows.append(
        [
            "evaluations",
            f"{ev['task_results_computed']} task results computed in {ev['lm_eval_calls']} "
            f"lm-eval calls, {ev['task_results_reused']} reused from `runs/`",
        ]
    )
    rows.append(
        [
            "time",
            f"{meta['wall_seconds']:.0f} s wall for this invocation; "
            f"{meta['compute_seconds']:.0f} s of evaluation in all (incl. reused runs)",
        ]
    )
    return _table(["setting", "value"], rows)


def _interference(results: dict[str, Any]) -> list[str]:
    inter = results["interference"]
    out = ["## Interference and specificity", ""]
    out += [
        f"Each relation's top-{inter['top_k']} neurons deactivated; accuracy ({inter['metric']}) "
        "on its own task, next to the same number of random units per layer and site "
        "(`control=random`). p-values: exact McNemar, paired by document.",
        "",
        "![specificity](specificity.png)",
        "",
    ]
    rows = []
    for r, c in inter["per_relation"].items():
        flag = "" if c["eligible"] else " (below threshold)"
        rows.append(
            [
                f"{r}{flag}",
                str(c["n_docs"]),
                str(c["n_units"]),
                pct(c["base"]),
                pct(c["deact"]),
                pct(c["control"]),
                pct(c["relative_drop"], 0),
                pct(c["control_relative_drop"], 0),
                pval(c["p_deact_vs_base"]),
                pval(c["p_deact_vs_control"]),
            ]
        )
    out += _table(
        [
            "relation",
            "docs",
            "units",
            "base",
            "deactivated",
            "random control",
            "rel. drop",
            "control rel. drop",
            "p vs base",
            "p vs control",
        ],
        rows,
    )
    s = inter["summary"]
    a, rel = s["absolute"], s["relative"]
    out += [
        f"Over the {s['n_eligible']} relations with base accuracy at or above the threshold: "
        f"mean change {pts(neg(a['mean_own']))} (own neurons) vs {pts(neg(a['mean_control']))} (random "
        f"units); the own drop is larger by {pts(a['mean_difference'])} {_ci(a)}, "
        f"{p_is(a['p_paired_t'])} "
        f"(paired t over relations); relative drop {pct(rel['mean_own'], 0)} vs "
        f"{pct(rel['mean_control'], 0)}. The own drop is larger for {a['own_larger']} "
        f"relations and smaller for {a['control_larger']}.",
        "",
    ]
    if inter.get("matrix"):
        out += _interference_matrix(inter)
    return out


def _interference_matrix(inter: dict[str, Any]) -> list[str]:
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
        "columns below the threshold are hatched. Right: the random controls.",
        "",
        "![interference](interference.png)",
        "",
    ]
    out += _table(
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
    out += [
        f"Diagonal (own relation) mean relative drop in the matrix: "
        f"{pct(matrix['diag_mean_relative_drop'])}.",
        "",
    ]
    return out


def _cumulativity(results: dict[str, Any]) -> list[str]:
    cum = results["cumulativity"]
    out = [
        "## Cumulativity",
        "",
        f"Accuracy as the number of deactivated top-ranked neurons of r grows (ks "
        f"{', '.join(cum['ks'])}), for {', '.join(cum['relations'])}; 'others' is the mean "
        "over the other relations of this list. Dashed: size-matched random units.",
        "",
        "![cumulativity](cumulativity.png)",
        "",
    ]
    for r, curve in cum["curves"].items():
        out += [f"**{r}** (base {pct(curve['base_own'])}, others {pct(curve['base_others'])})", ""]
        rows = [
            [
                "=".join(p["labels"]),
                str(p["n_neurons"]),
                pct(p["own"]),
                pct(p["control_own"]),
                pval(p["p_own_vs_base"]),
                pval(p["p_own_vs_control"]),
                pct(p["others"]),
                pct(p["control_others"]),
            ]
            for p in curve["points"]
        ]
        out += _table(
            [
                "k",
                "neurons",
                "own",
                "own (random)",
                "p vs base",
                "p vs random",
                "others",
                "others (random)",
            ],
            rows,
        )
    rows = [
        [
            m["label"],
            pts(m["own"]),
            pts(m["control_own"]),
            pts(m["others"]),
            pts(m["control_others"]),
        ]
        for m in cum["mean_curve"]
    ]
    out += ["Mean change from base over the relations:", ""]
    out += _table(["k", "own", "own (random)", "others", "others (random)"], rows)
    return out


def _versatility(results: dict[str, Any]) -> list[str]:
    ver = results["versatility"]
    ov = ver["overlap"]
    out = ["## Versatility", "", "### Overlap of the relations' neuron sets", ""]
    pairs = sorted(
        (
            (ov["jaccard"][a][b], a, b)
            for i, a in enumerate(ov["groups"])
            for b in ov["groups"][i + 1 :]
        ),
        reverse=True,
    )[:5]
    out += [
        f"Top-{ov['top_k']} units per relation: {ov['distinct_units']} distinct units, "
        f"{ov['units_in_2plus_groups']} of them in two or more relations; mean pairwise "
        f"Jaccard {ov['mean_offdiag_jaccard']:.3f}"
        + (f", largest {ov['max_offdiag_jaccard']:.3f}." if pairs else "."),
        "",
        "![overlap](overlap.png)",
        "",
    ]
    if pairs:
        out += _table(
            ["pair", "shared units", "Jaccard"],
            [[f"{a} / {b}", str(ov["counts"][a][b]), f"{j:.3f}"] for j, a, b in pairs],
        )
    if ver.get("crosslingual"):
        out += _crosslingual(ver["crosslingual"])
    return out


def _crosslingual(cl: dict[str, Any]) -> list[str]:
    """Cross-lingual transfer: per-language summary, per-relation cells, overall line."""
    out = [
        "### Cross-lingual transfer",
        "",
        f"Neurons found on English prompts deactivated (top-{cl['top_k']}); accuracy "
        f"(`{cl['metric']}`) on the same relation asked in other languages, vs base "
        "and the random control.",
        "",
        "![crosslingual](crosslingual.png)",
        "",
    ]
    rows = []
    for lang, s in cl["per_language"].items():
        a = s["absolute"]
        rows.append(
            [
                lang,
                f"{s['n_eligible']} / {s['n_total']}",
                pts(neg(a["mean_own"])),
                pts(neg(a["mean_control"])),
                pct(s["relative"]["mean_own"], 0),
                pct(s["relative"]["mean_control"], 0),
                f"{s['n_significant_drop']}",
                f"{s['n_significant_vs_control']}",
            ]
        )
    out += _table(
        [
            "language",
            "relations (eligible / all)",
            "mean change",
            "random control",
            "rel. drop",
            "control rel. drop",
            f"sig. drops (p<{ALPHA})",
            "sig. vs control",
        ],
        rows,
    )
    rows = []
    for r, langs in cl["cells"].items():
        row = [r]
        for lang in ["en", "de", "es", "fr", "zh", "ja"]:
            c = langs.get(lang)
            row.append(
                "-"
                if c is None
                else f"{pct(c['base'], 0)} → {pct(c['deact'], 0)} ({pct(c['control'], 0)})"
            )
        rows.append(row)
    out += ["Per relation: base → deactivated (random control):", ""]
    out += _table(["relation", "en", "de", "es", "fr", "zh", "ja"], rows)
    s = cl["summary_foreign"]
    out += [
        f"Over all {s['n_eligible']} eligible non-English cells: mean change "
        f"{pts(neg(s['absolute']['mean_own']))} vs {pts(neg(s['absolute']['mean_control']))} for "
        f"random units (difference {pts(s['absolute']['mean_difference'])} "
        f"{_ci(s['absolute'])}); {s['n_significant_drop']} cells drop significantly."
        if s["n_eligible"]
        else "No non-English cell reaches the base-accuracy threshold.",
        "",
    ]
    return out


MODES = (("deactivate", "suppressed"), ("enhance", "enhanced"))


def _reasoning(results: dict[str, Any]) -> list[str]:
    rs = results["reasoning"]
    cov = rs["coverage"]
    out = [
        "## Reasoning recall",
        "",
        f"Two-hop chains with the knowledge neurons of their bridge (first-hop) fact "
        f"suppressed (×0), enhanced (×{rs['factor']:g}) or left alone, per document "
        f"(`per_doc=hop1_fact`); controls: the same number of random units per chain, "
        f"layer and site. Of all {cov['chains_total']} chains "
        f"({cov['bridge_facts_total']} bridge facts), {cov['chains_total_with_neurons']} "
        f"({cov['bridge_facts_with_neurons']} bridge facts) have knowledge neurons in the "
        f"set; the others would run unmodified. Evaluated: {cov['n_chains']} chains "
        f"({cov['n_bridge_facts']} bridge facts), {cov['n_with_neurons']} with knowledge "
        f"neurons (mean {cov['mean_neurons_per_chain'] or 0:.1f} per chain), "
        f"{cov['n_without_neurons']} without.",
        "",
        "![reasoning](reasoning.png)",
        "",
    ]
    for scope, title in (("with_neurons", "chains with knowledge neurons"), ("all", "all chains")):
        rows = []
        for name, m in rs["measures"].items():
            block = m[scope]
            row = [name, str(block["n"]), pct(block["base"])]
            for mode, _ in MODES:
                e = block[mode]
                row += [
                    f"{pct(e['kn'])} ({p_is(e['p_kn_vs_base'])})",
                    f"{pct(e['control'])}",
                    pval(e["p_kn_vs_control"]),
                ]
            rows.append(row)
        out += [f"**{title}**", ""]
        out += _table(
            [
                "measure",
                "chains",
                "none",
                "suppressed",
                "random",
                "p vs random",
                "enhanced",
                "random",
                "p vs random",
            ],
            rows,
        )
    out += [
        "direct: `relfacts_2hop` (acc_match); cot: `relfacts_2hop_cot` final answer; "
        "bridge_recall: the CoT states the bridge entity; hop1: `relfacts_2hop_hop1`.",
        "",
    ]
    return out


def _prefix2_flags(results: dict[str, Any]) -> list[str]:
    """One sentence naming the relations whose acc_prefix2 cannot tell wrong answers apart."""
    check = results.get("prefix2_check") or {}
    flagged = {r: c for r, c in (check.get("relations") or {}).items() if c["flagged"]}
    if not flagged:
        return []
    names = ", ".join(f"{r} ({pct(c['share'], 0)} of its facts)" for r, c in flagged.items())
    metric = results["meta"]["metric"]
    tail = (
        "their acc_prefix2 numbers count wrong answers as right; read acc_match for them."
        if metric == "acc_prefix2"
        else f"this report scores {metric}, which is not affected."
    )
    return [
        f"Flagged: acc_prefix2 cannot tell wrong answers from right ones for {names} (more "
        f"than {pct(check['limit'], 0)} of the facts have first 2 tokens shared with another "
        f"object or made of digits/punctuation only, `{check['tokenizer']}` tokenizer); " + tail,
        "",
    ]


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [f"# Relation neurons on {meta['model']}: do the papers' properties hold?", ""]
    lines += [f"Generated by `relneuron report` ({meta['created']}).", ""]
    if meta.get("command"):
        lines += ["```bash", meta["command"], "```", ""]
    lines += _settings(results)
    head = results.get("headline")
    if head:
        lines += ["## Headline", "", head, ""]
    base = results.get("base") or {}
    if base:
        lines += [
            "Base accuracy per relation ("
            + meta["metric"]
            + "): "
            + ", ".join(f"{r} {pct(v, 0)}" for r, v in base.items())
            + ".",
            "",
        ]
    lines += _prefix2_flags(results)
    if "interference" in results:
        lines += _interference(results)
    if "cumulativity" in results:
        lines += _cumulativity(results)
    if "versatility" in results:
        lines += _versatility(results)
    if "reasoning" in results:
        lines += _reasoning(results)
    lines += ["## Notes", ""]
    lines += [
        f"- Relations whose base accuracy is below {pct(meta['min_base'], 0)} are reported "
        "but left out of every drop claim: a relation the model barely knows cannot show a "
        "drop, and a relative drop from a near-zero base is noise.",
        "- Relation-specific neurons are found on the `discovery` split only; every task "
        "scores `test` facts (other subjects) with other templates. Knowledge neurons are "
        "fact-level by design: they are found on the bridge facts themselves (`test` "
        "split, `discovery` templates), as in the reasoning-recall protocol.",
        "- Every number above is in `results.json`; per-document outcomes of every "
        "evaluation are in `runs/`.",
    ]
    lines += [f"- {note}" for note in meta.get("notes", [])]
    return "\n".join(lines).rstrip() + "\n"
