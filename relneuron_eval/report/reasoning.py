"""The reasoning-recall experiment: a chain's bridge-fact knowledge neurons, and the
controls that say whether they are the bridge fact's own.

Conditions per chain (all ``per_doc=hop1_fact``): the bridge fact's own neurons; a
**swapped** control (the neurons of another bridge fact of the same relation with a
different object, count and layers matched: ``discovery.kn_controls.swapped_control``);
a **shared-pool** control (only the units >= 10 facts share); and size-matched random
units (``control=random``). Fact-specificity is own - swapped.

Measures, composed questions first: direct and CoT answers, the CoT's bridge recall,
hop 1 asked as a held-out question (``relfacts_2hop_hop1_heldout``: other final tokens
than the discovery templates) and hop 1 with the eval templates (near-paraphrases of
the discovery prompts: in-sample). Chains that share a bridge fact are one cluster:
hop-1 prompts are byte-identical within it, so hop 1 is deduplicated (one value per
bridge fact) and every interval and p-value of the composed measures resamples or
permutes whole bridge facts (``cluster_bootstrap_ci``, ``cluster_permutation_test``).
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.core.neuron_set import NeuronSet
from relneuron_eval.evaluation.runner import Runner, Variant
from relneuron_eval.evaluation.statistics import (
    cluster_means,
    cluster_permutation_test,
    paired_cluster_ci,
)
from relneuron_eval.evaluation.statistics import paired_test as paired_p
from relneuron_eval.report.analysis import mean
from relneuron_eval.report.setup import KN_MODES, Setup, task_rows

HELDOUT = "relfacts_2hop_hop1_heldout"
TASKS = ("relfacts_2hop", "relfacts_2hop_cot", HELDOUT, "relfacts_2hop_hop1")
# composed questions lead; hop 1 last (the eval-template hop 1 is in-sample)
MEASURES: dict[str, tuple[str, str, bool]] = {  # name: (task, metric, one value per bridge fact)
    "direct": ("relfacts_2hop", "acc_match", False),
    "cot": ("relfacts_2hop_cot", "acc_match", False),
    "bridge_recall": ("relfacts_2hop_cot", "bridge_recall", False),
    "hop1_heldout": (HELDOUT, "acc_match", True),
    "hop1": ("relfacts_2hop_hop1", "acc_match", True),
}
NAMED_CONTROLS = ("swapped", "shared-pool")
SHARED_AT = 10


# ================================================================ control sets
def control_sets(setup: Setup) -> dict[str, tuple[str, NeuronSet]]:
    """The swapped (first report seed) and shared-pool sets of the report's KN set, with
    the paths they are saved to (``control_sets/`` next to the random ones)."""
    from relneuron_eval.discovery import kn_controls as kc

    assert setup.kn_set is not None
    seed = setup.seeds[0]
    facts = list(kc.fact_units(setup.kn_set))
    folder = setup.out / "control_sets"
    swapped = kc.swapped_control(setup.kn_set, kc.fact_objects(facts), seed)
    pool = kc.shared_pool_control(setup.kn_set, SHARED_AT)
    return {
        "swapped": (str(folder / f"knowledge_neurons_swapped_s{seed}.jsonl.gz"), swapped),
        "shared-pool": (str(folder / f"knowledge_neurons_shared{SHARED_AT}.jsonl.gz"), pool),
    }


def named_variants(setup: Setup) -> dict[tuple[str, str], Variant]:
    """(control, mode) -> variant of the swapped and shared-pool controls (sets saved);
    a control with no neurons (no fact has a donor, no unit is shared) has none."""
    out = {}
    for name, (path, neuron_set) in control_sets(setup).items():
        if not len(neuron_set):
            continue
        digest = neuron_set.save_unless_same(path)
        for mode in KN_MODES:
            out[(name, mode)] = Variant.make(
                f"KN {name} {mode}", path, digest, groups="*", per_doc="hop1_fact", **KN_MODES[mode]
            )
    return out


# ================================================================ planning
def chain_docs(setup: Setup) -> list[int]:
    """The evaluated chains (the same document indices in every two-hop task)."""
    return setup.docs("relfacts_2hop")


def plan_reasoning(setup: Setup, runner: Runner) -> None:
    """Base, then own and swapped neurons (suppressed, then enhanced), the shared pool,
    and random units last: a run stopped early has the comparisons that matter most
    (the runner evaluates in request order)."""
    docs = {t: chain_docs(setup) for t in TASKS}
    runner.request(Variant.base(), [HELDOUT], docs)  # stage 1 has the other base runs
    named = named_variants(setup)
    for mode in KN_MODES:
        runner.request(setup.kn(mode), TASKS, docs)
        if ("swapped", mode) in named:
            runner.request(named[("swapped", mode)], TASKS, docs)
    for mode in KN_MODES:
        if ("shared-pool", mode) in named:
            runner.request(named[("shared-pool", mode)], TASKS, docs)
    for mode in KN_MODES:
        for s in setup.seeds:
            runner.request(setup.kn(mode, s), TASKS, docs)


# ================================================================ analysis
def kn_coverage(setup: Setup) -> dict[str, Any]:
    """How many of the evaluated chains have knowledge neurons for their bridge fact."""
    assert setup.kn_set is not None
    groups = set(setup.kn_set.groups())
    rows = task_rows("relfacts_2hop")["test"]
    docs = chain_docs(setup)
    with_kn = [i for i in docs if rows[i]["hop1_fact"] in groups]
    sizes = [
        sum(1 for n in setup.kn_set.neurons if n.group == rows[i]["hop1_fact"]) for i in with_kn
    ]
    covered = [r for r in rows if r["hop1_fact"] in groups]
    return {
        "chains_total": len(rows),
        "chains_total_with_neurons": len(covered),
        "bridge_facts_total": len({r["hop1_fact"] for r in rows}),
        "bridge_facts_with_neurons": len({r["hop1_fact"] for r in covered}),
        "sampled_from": setup.reasoning_chains,
        "n_chains": len(docs),
        "n_with_neurons": len(with_kn),
        "n_without_neurons": len(docs) - len(with_kn),
        "with_neurons": with_kn,
        "mean_neurons_per_chain": mean(sizes),
        "n_bridge_facts": len({rows[i]["hop1_fact"] for i in docs}),
    }


class Outcomes:
    """Per-document outcomes of one measure on a set of chains, deduplicated by bridge
    fact when the measure's prompts repeat within a bridge fact; ``None`` where a
    variant has not been evaluated yet (a partial run)."""

    def __init__(
        self,
        runner: Runner,
        ids: list[int],
        bridge: dict[int, str],
        task: str,
        metric: str,
        dedupe: bool,
        all_docs: list[int],
    ) -> None:
        self.runner, self.ids, self.bridge = runner, ids, bridge
        self.task, self.metric, self.dedupe, self.all_docs = task, metric, dedupe, all_docs

    def clusters(self, ids: list[int] | None = None) -> list[str]:
        ids = self.ids if ids is None else ids
        if self.dedupe:
            return list(dict.fromkeys(self.bridge[i] for i in ids))
        return [self.bridge[i] for i in ids]

    def of(self, variant: Variant, ids: list[int] | None = None) -> list[float] | None:
        from relneuron_eval.errors import RelNeuronError

        ids = self.ids if ids is None else ids
        try:
            by_doc = self.runner.get(variant, self.task, self.all_docs).by_doc(self.metric)
        except RelNeuronError:
            return None
        values = [by_doc[i] for i in ids]
        if not self.dedupe:
            return values
        return list(cluster_means(values, [self.bridge[i] for i in ids]).values())


def compare(
    base: list[float], after: list[float], clusters: list[str], clustered: bool
) -> dict[str, Any]:
    """after - base: mean change, its interval and p, by whole bridge facts when the
    documents are chains (``clustered``), else paired over the deduplicated values."""
    if not base:
        return {"delta": None, "ci": None, "p": None, "test": None}
    delta = mean(after) - mean(base)
    ci = paired_cluster_ci(base, after, clusters)
    if clustered:
        p, test = cluster_permutation_test(base, after, clusters), "cluster-permutation"
    else:
        p, test = paired_p(base, after)
    return {"delta": delta, "ci": None if ci is None else list(ci), "p": p, "test": test}


def _condition(
    out: Outcomes, base: list[float], variant: Variant, ids: list[int] | None = None
) -> dict[str, Any] | None:
    """Accuracy of one condition and its change from base (None: not evaluated yet)."""
    values = out.of(variant, ids)
    if values is None:
        return None
    clusters = out.clusters(ids)
    return {"acc": mean(values), **compare(base, values, clusters, not out.dedupe)}


def _maybe(out: Outcomes, base: list[float], variant: Variant | None) -> dict[str, Any] | None:
    """:func:`_condition`, or None for a control that has no neurons."""
    return None if variant is None else _condition(out, base, variant)


def _specificity(
    out: Outcomes, setup: Setup, mode: str, named: dict, donors: set[str], base_variant: Variant
) -> dict[str, Any] | None:
    """own - swapped on the chains whose bridge fact got a donor; and which share of
    the own change the swapped neurons reproduce."""
    ids = [i for i in out.ids if out.bridge[i] in donors]
    if ("swapped", mode) not in named or not ids:
        return None
    own = out.of(setup.kn(mode), ids)
    swapped = out.of(named[("swapped", mode)], ids)
    base = out.of(base_variant, ids)
    if own is None or swapped is None or base is None or not ids:
        return None
    result = compare(swapped, own, out.clusters(ids), not out.dedupe)
    own_change, swap_change = mean(own) - mean(base), mean(swapped) - mean(base)
    return {
        "n": len(own),
        "base": mean(base),
        "own": mean(own),
        "swapped": mean(swapped),
        "own_minus_swapped": result["delta"],
        "ci": result["ci"],
        "p": result["p"],
        "test": result["test"],
        "share_of_own_change_swapped": swap_change / own_change if own_change else None,
    }


def _legacy(out: Outcomes, setup: Setup, base: list[float], mode: str) -> dict[str, Any]:
    """The first analysis's numbers (own vs base and vs the seed-mean random control,
    paired tests over the deduplicated values), kept for comparison and the figure."""
    k = out.of(setup.kn(mode))
    rows = [out.of(setup.kn(mode, s)) for s in setup.seeds]
    if k is None or any(r is None for r in rows) or not base:
        return {"kn": None if k is None else mean(k), "control": None}
    c = [sum(col) / len(col) for col in zip(*rows, strict=True)]
    return {
        "kn": mean(k),
        "control": mean(c),
        "delta": mean(k) - mean(base),
        "control_delta": mean(c) - mean(base),
        "p_kn_vs_base": paired_p(base, k)[0],
        "p_kn_vs_control": paired_p(c, k)[0],
        "p_control_vs_base": paired_p(base, c)[0],
        "control_by_seed": [mean(r) for r in rows if r is not None],
    }


def analyze_reasoning(setup: Setup, runner: Runner) -> dict[str, Any]:
    """Every measure x scope x mode: own, swapped, shared-pool, random; specificity."""
    from relneuron_eval.discovery import kn_controls as kc

    coverage = kn_coverage(setup)
    rows = task_rows("relfacts_2hop")["test"]
    docs = chain_docs(setup)
    bridge = {i: rows[i]["hop1_fact"] for i in docs}
    named = named_variants(setup)
    swapped_set = control_sets(setup)["swapped"][1]
    donors = set(swapped_set.header["control"]["donors"])
    scopes = (("all", docs), ("with_neurons", list(coverage["with_neurons"])))
    measures: dict[str, Any] = {}
    for name, (task, metric, dedupe) in MEASURES.items():
        entry: dict[str, Any] = {"task": task, "metric": metric, "deduplicated": dedupe}
        for scope, ids in scopes:
            out = Outcomes(runner, ids, bridge, task, metric, dedupe, docs)
            base = out.of(Variant.base()) or []
            block: dict[str, Any] = {"n": len(base), "n_chains": len(ids), "base": mean(base)}
            for mode in KN_MODES:
                block[mode] = {
                    **_legacy(out, setup, base, mode),
                    "own": _condition(out, base, setup.kn(mode)),
                    "swapped": _maybe(out, base, named.get(("swapped", mode))),
                    "shared_pool": _maybe(out, base, named.get(("shared-pool", mode))),
                    "specificity": _specificity(out, setup, mode, named, donors, Variant.base()),
                }
            entry[scope] = block
        measures[name] = entry
    control = swapped_set.header["control"]
    return {
        "coverage": {k: v for k, v in coverage.items() if k != "with_neurons"},
        "measures": measures,
        "factor": KN_MODES["enhance"]["factor"],
        "kn_statistics": kc.set_statistics(setup.kn_set) if setup.kn_set else None,
        "controls": {
            "swapped": {k: v for k, v in control.items() if k != "donors"},
            "shared_pool": control_sets(setup)["shared-pool"][1].header["control"],
        },
    }
