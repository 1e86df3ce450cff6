"""Markdown of the reasoning-recall experiment (``report.reasoning``), from results only.

Composed questions lead (direct, CoT, bridge recall), then hop 1 asked as a held-out
question, then hop 1 with the eval templates (in-sample: near-paraphrases of the
prompts the neurons were found on). Each condition's change from base carries its
interval and p-value by bridge fact; fact-specificity is own - swapped.
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.report.markdown_format import pct, pts, pval, table

MODES = (("deactivate", "suppressed (×0)"), ("enhance", "enhanced"))
SCOPES = (("with_neurons", "chains with knowledge neurons"), ("all", "all evaluated chains"))
ABOUT = {
    "direct": "`relfacts_2hop`: the composed question answered directly",
    "cot": "`relfacts_2hop_cot`: the final answer after a chain of thought",
    "bridge_recall": "`relfacts_2hop_cot`: the chain of thought states the bridge entity",
    "hop1_heldout": "`relfacts_2hop_hop1_heldout`: hop 1 asked as a question "
    "(other final tokens than the discovery templates; one value per bridge fact)",
    "hop1": "`relfacts_2hop_hop1`: hop 1 with the eval templates, near-paraphrases of the "
    "discovery prompts ending in the same tokens (in-sample; one value per bridge fact)",
}


def _change(entry: dict[str, Any] | None) -> str:
    """'30.6% (-20.5 pp [-25.1, -16.0], p<0.001)' or 'not run'."""
    if entry is None:
        return "not run"
    bounds = entry.get("ci")
    interval = f" [{pts(bounds[0])}, {pts(bounds[1])}]" if bounds else ""
    return f"{pct(entry['acc'])} ({pts(entry['delta'])}{interval}, p={pval(entry['p'])})"


def _specificity(entry: dict[str, Any] | None) -> tuple[str, str]:
    if entry is None:
        return "not run", "n/a"
    bounds = entry.get("ci")
    interval = f" [{pts(bounds[0])}, {pts(bounds[1])}]" if bounds else ""
    share = entry.get("share_of_own_change_swapped")
    return (
        f"{pts(entry['own_minus_swapped'])}{interval}, p={pval(entry['p'])} (n={entry['n']})",
        "n/a" if share is None else f"{100 * share:.0f}%",
    )


def _rows(rs: dict[str, Any], scope: str, mode: str) -> list[list[str]]:
    rows = []
    for name, m in rs["measures"].items():
        block = m[scope]
        e = block[mode]
        spec, share = _specificity(e.get("specificity"))
        random = e.get("control")
        rows.append(
            [
                name,
                str(block["n"]),
                pct(block["base"]),
                _change(e.get("own")),
                _change(e.get("swapped")),
                spec,
                share,
                _change(e.get("shared_pool")),
                "not run" if random is None else pct(random),
            ]
        )
    return rows


HEADER = [
    "measure",
    "n",
    "none",
    "own neurons",
    "swapped (another fact's)",
    "own - swapped",
    "share of own change swapped",
    "shared pool only",
    "random (seed mean)",
]


def _statistics(rs: dict[str, Any]) -> list[str]:
    stats = rs.get("kn_statistics")
    if not stats:
        return []
    top = stats["top_unit"] or {"unit": ["", "?", "?"], "facts": 0}
    return [
        f"The set: {stats['facts_with_neurons']} facts hold {stats['fact_neurons']} fact-neuron entries on "
        f"{stats['distinct_units']} distinct units; {stats['units_shared']} units are in >= "
        f"{stats['shared_at']} facts; the top unit (layer {top['unit'][1]} #{top['unit'][2]}) "
        f"is in {top['facts']} facts; {stats['facts_with_own_unit']} facts have a unit of "
        "their own.",
        "",
    ]


def _controls(rs: dict[str, Any]) -> list[str]:
    c = rs.get("controls") or {}
    sw, pool = c.get("swapped") or {}, c.get("shared_pool") or {}
    if not sw:
        return []
    return [
        f"Swapped control (seed {sw['seed']}): each bridge fact gets the neurons of another "
        f"fact of its relation with a different object; {sw['facts_same_count']} facts get "
        f"the same number of neurons, layer-histogram L1 distance {sw['layer_l1_total']} in "
        f"all, {sw['units_also_own']} of {sw['swapped_neurons']} swapped neurons are also "
        f"the fact's own (shared units); facts without a donor (chains left out of own - "
        f"swapped): {', '.join(sw['facts_without_donor']) or 'none'}. Shared-pool control: "
        f"each fact keeps only its units that >= {pool.get('min_facts')} facts name "
        f"({pool.get('pool_units')} units).",
        "",
    ]


def reasoning_section(results: dict[str, Any]) -> list[str]:
    """The section: coverage, set statistics, one table per scope and mode."""
    rs = results["reasoning"]
    cov = rs["coverage"]
    out = [
        "## Reasoning recall",
        "",
        f"Two-hop chains with the knowledge neurons of their bridge (first-hop) fact "
        f"suppressed (×0) or enhanced (×{rs['factor']:g}), per document "
        f"(`per_doc=hop1_fact`). Of all {cov['chains_total']} chains "
        f"({cov['bridge_facts_total']} bridge facts), {cov['chains_total_with_neurons']} "
        f"({cov['bridge_facts_with_neurons']} bridge facts) have knowledge neurons in the "
        f"set. Evaluated: {cov['n_chains']} chains ({cov['n_bridge_facts']} bridge facts), "
        f"{cov['n_with_neurons']} with knowledge neurons (mean "
        f"{cov['mean_neurons_per_chain'] or 0:.1f} per chain).",
        "",
        "Chains that share a bridge fact are one cluster: hop 1 is counted once per bridge "
        "fact (its prompts are byte-identical within one), and the intervals and p-values "
        "of the composed measures resample or sign-flip whole bridge facts (cluster "
        "bootstrap, 95 %; cluster permutation). Hop-1 rows use the exact McNemar test on "
        "the deduplicated facts. Fact-specificity is own - swapped on the chains whose "
        "bridge fact has a donor.",
        "",
        *_statistics(rs),
        *_controls(rs),
        "![reasoning](reasoning.png)",
        "",
    ]
    for scope, title in SCOPES:
        for mode, label in MODES:
            out += [f"**{title}, {label}**", ""]
            out += table(HEADER, _rows(rs, scope, mode))
    out += [f"- {name}: {ABOUT.get(name, m['task'])}" for name, m in rs["measures"].items()]
    out.append("")
    return out
