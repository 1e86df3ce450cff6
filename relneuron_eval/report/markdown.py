"""Markdown of ``relneuron report``, rendered only from ``results.json``'s content.

Every number printed here is read from the results dictionary, so the markdown and
``results.json`` cannot disagree, and a report can be re-rendered without a model.
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.report.experiments import ALPHA
from relneuron_eval.report.markdown_format import ci, neg, pct, pts, pval, seed_range, table
from relneuron_eval.report.markdown_interference import headline_for, interference_section

# ================================================================== headline


def _first(limit: int | None) -> str:
    """'first 20' for a limit, 'all' for none (the whole test split)."""
    return f"first {limit}" if limit else "all"


def headline(results: dict[str, Any]) -> str | None:
    """The acceptance-bar sentence of the primary top-k (None without interference)."""
    inter = results.get("interference")
    if not inter:
        return None
    return headline_for(inter, results.get("meta", {}))


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
            f"{_first(meta['limit'])} test facts; own task in the specificity "
            f"test: {_first(meta.get('limit_own'))}",
        ],
        [
            "top-k (interference, versatility)",
            _top_ks(meta),
        ],
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
    return table(["setting", "value"], rows)


def _top_ks(meta: dict[str, Any]) -> str:
    ks = meta.get("top_ks") or [meta["top_k"]]
    if len(ks) == 1:
        return str(ks[0])
    more = ", ".join(map(str, ks[1:]))
    return f"{ks[0]} (headline, versatility); interference also at {more}"


def _interference(results: dict[str, Any]) -> list[str]:
    """One section per top-k: the primary (headline) first, then the others."""
    more = results.get("interference_more_k") or []
    out = interference_section(results["interference"], True, 1 + len(more))
    for inter in more:
        out += interference_section(inter, False, 1 + len(more))
    return out


def _cumulativity(results: dict[str, Any]) -> list[str]:
    cum = results["cumulativity"]
    out = [
        "## Cumulativity",
        "",
        f"Accuracy as the number of deactivated top-ranked neurons of r grows (ks "
        f"{', '.join(cum['ks'])}), for {', '.join(cum['relations'])}; 'others' is the mean "
        "over the other relations of this list. Dashed: size-matched random units (with "
        "several seeds their mean, the seeds' range in brackets). In the figure the band "
        "around the own curve is its 95% Wilson interval (one variant, n documents).",
        "",
        "![cumulativity](cumulativity.png)",
        "",
    ]
    for r, curve in cum["curves"].items():
        n = curve["points"][0].get("n_docs") if curve["points"] else None
        size = "" if n is None else f", n={n} documents"
        out += [
            f"**{r}** (base {pct(curve['base_own'])}, others {pct(curve['base_others'])}{size})",
            "",
        ]
        rows = [
            [
                "=".join(p["labels"]),
                str(p["n_neurons"]),
                pct(p["own"]) + _wilson(p.get("own_ci95")),
                pct(p["control_own"]) + seed_range(p.get("control_own_seeds") or []),
                pval(p["p_own_vs_base"]),
                pval(p["p_own_vs_control"]),
                pct(p["others"]),
                pct(p["control_others"]),
            ]
            for p in curve["points"]
        ]
        out += table(
            [
                "k",
                "neurons",
                "own [95% Wilson]",
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
    out += table(["k", "own", "own (random)", "others", "others (random)"], rows)
    return out


def _wilson(bounds: list[float] | None) -> str:
    return "" if not bounds else f" [{pct(bounds[0], 0)}, {pct(bounds[1], 0)}]"


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
        out += table(
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
    out += table(
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
    out += table(["relation", "en", "de", "es", "fr", "zh", "ja"], rows)
    s = cl["summary_foreign"]
    out += [
        f"Over all {s['n_eligible']} eligible non-English cells: mean change "
        f"{pts(neg(s['absolute']['mean_own']))} vs {pts(neg(s['absolute']['mean_control']))} for "
        f"random units (difference {pts(s['absolute']['mean_difference'])} "
        f"{ci(s['absolute'])}); {s['n_significant_drop']} cells drop significantly."
        if s["n_eligible"]
        else "No non-English cell reaches the base-accuracy threshold.",
        "",
    ]
    return out


MODES = (("deactivate", "suppressed"), ("enhance", "enhanced"))


def _reasoning(results: dict[str, Any]) -> list[str]:
    from relneuron_eval.report.markdown_reasoning import reasoning_section

    return reasoning_section(results)


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
        for inter in results.get("interference_more_k") or []:
            if inter.get("headline"):
                lines += [f"At top-{inter['top_k']}: {inter['headline']}", ""]
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
