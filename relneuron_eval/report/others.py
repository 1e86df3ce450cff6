"""The stronger control of issue 19: other relations' neurons of the same size.

Random units show that *these* units matter; other relations' top-k neurons, deactivated
on r's own task (its full split, as the specificity test), show whether *r's own*
neurons matter more than any relation's. ``--other-controls N`` picks, for the i-th
relation, the next N relations of the report (wrapping around) that have at least k
neurons, so every relation serves as a control equally often. They enter the
seed-aware test as N draws of the control distribution (own - others).
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.evaluation.runner import Runner, Variant
from relneuron_eval.evaluation.statistics import (
    holm,
    normal_mde,
    paired_t,
    seed_aware_test,
    t_interval,
)
from relneuron_eval.report.setup import Setup

ALPHA = 0.05


def other_relations(setup: Setup, relation: str, k: int) -> list[str]:
    """The ``setup.other_controls`` relations whose neurons control ``relation`` at k."""
    names = setup.relations
    i = names.index(relation)
    ring = names[i + 1 :] + names[:i]
    return [r for r in ring if setup.group_size(r) >= k][: setup.other_controls]


def plan_others(setup: Setup, runner: Runner) -> None:
    """Each relation's own task (full specificity documents) under the others' neurons."""
    if not setup.other_controls:
        return
    for k in setup.all_top_ks():
        for r in setup.relations:
            task = setup.task(r)[0]
            for other in other_relations(setup, r, k):
                runner.request(setup.deact(other, k), [task], {task: setup.docs(task, own=True)})


def attach_others(setup: Setup, runner: Runner, inter: dict[str, Any]) -> None:
    """Add own vs other relations' neurons to every specificity cell and the summary."""
    if not setup.other_controls:
        return
    k = inter["top_k"]
    for r, cell in inter["per_relation"].items():
        others = other_relations(setup, r, k)
        if not others:
            continue
        task, metric = setup.task(r)
        docs = setup.docs(task, own=True)
        d = runner.get(setup.deact(r, k), task, docs).values(metric)
        rows = [runner.get(setup.deact(o, k), task, docs).values(metric) for o in others]
        test = seed_aware_test(d, rows)
        b = runner.get(Variant.base(), task, docs).values(metric)
        base = sum(b) / len(b)
        others_acc = [sum(row) / len(row) for row in rows]
        value = sum(others_acc) / len(others_acc)
        cell.update(
            {
                "other_relations": others,
                "others": value,
                "others_each": dict(zip(others, others_acc, strict=True)),
                "others_drop": base - value,
                "p_deact_vs_others": test.p,
                "test_vs_others": test.test,
                "mde_vs_others": normal_mde(test.se),
            }
        )
    inter["summary"]["others"] = summarize_others(list(inter["per_relation"].values()))


def summarize_others(cells: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Own drop minus other relations' drop over the eligible relations: mean, t
    interval, paired t p, and the Holm-adjusted count of relations significantly below."""
    ok = [c for c in cells if c["eligible"] and c.get("others") is not None]
    if not ok:
        return None
    diffs = [c["drop"] - c["others_drop"] for c in ok]
    ci = t_interval(diffs)
    adjusted = holm([c["p_deact_vs_others"] for c in ok])
    for c, p in zip(ok, adjusted, strict=True):
        c["p_deact_vs_others_holm"] = p

    return {
        "n": len(ok),
        "mean_own_drop": sum(c["drop"] for c in ok) / len(ok),
        "mean_others_drop": sum(c["others_drop"] for c in ok) / len(ok),
        "mean_difference": sum(diffs) / len(diffs),
        "ci95_t": list(ci) if ci else None,
        "p_paired_t": paired_t([c["others_drop"] for c in ok], [c["drop"] for c in ok])
        if len(ok) >= 2
        else None,
        "n_significant_holm": sum(
            1
            for c, p in zip(ok, adjusted, strict=True)
            if p is not None and p < ALPHA and c["deact"] < c["others"]
        ),
    }


# ====================================== further controls from other neuron sets
def control_set_variant(setup: Setup, name: str, relation: str, k: int) -> Variant:
    """Group ``relation`` of the control set ``name`` (e.g. activation-matched units from
    ``relneuron find random-matched``), its top-k deactivated."""
    path, digest, neuron_set = setup.control_sets[name]
    size = sum(1 for n in neuron_set.neurons if n.group == relation)
    top_k = None if k >= size else k
    return Variant.make(
        f"{name} {relation} k={top_k or 'all'}",
        path,
        digest,
        groups=relation,
        mode="deactivate",
        top_k=top_k,
    )


def plan_control_sets(setup: Setup, runner: Runner) -> None:
    for name in setup.control_sets:
        for k in setup.all_top_ks():
            for r in setup.relations:
                task = setup.task(r)[0]
                variant = control_set_variant(setup, name, r, k)
                runner.request(variant, [task], {task: setup.docs(task, own=True)})


def attach_control_sets(setup: Setup, runner: Runner, inter: dict[str, Any]) -> None:
    """Own vs each control set's units on every relation's own task (paired by document:
    exact McNemar on 0/1 outcomes), Holm over the eligible relations per set."""
    k = inter["top_k"]
    for name in setup.control_sets:
        cells = inter["per_relation"]
        for r, cell in cells.items():
            task, metric = setup.task(r)
            docs = setup.docs(task, own=True)
            d = runner.get(setup.deact(r, k), task, docs).values(metric)
            c = runner.get(control_set_variant(setup, name, r, k), task, docs).values(metric)
            test = seed_aware_test(d, [c])
            cell.setdefault("control_sets", {})[name] = {
                "accuracy": sum(c) / len(c),
                "drop": cell["base"] - sum(c) / len(c),
                "p_deact_vs_set": test.p,
                "test": test.test,
            }
        ok = [c for c in cells.values() if c["eligible"]]
        adjusted = holm([c["control_sets"][name]["p_deact_vs_set"] for c in ok])
        for c, p in zip(ok, adjusted, strict=True):
            c["control_sets"][name]["p_deact_vs_set_holm"] = p
        diffs = [c["drop"] - c["control_sets"][name]["drop"] for c in ok]
        ci = t_interval(diffs)
        inter["summary"].setdefault("control_sets", {})[name] = {
            "n": len(ok),
            "mean_difference": sum(diffs) / len(diffs) if diffs else None,
            "ci95_t": list(ci) if ci else None,
            "n_significant_holm": sum(
                1
                for c, p in zip(ok, adjusted, strict=True)
                if p is not None and p < ALPHA and c["deact"] < c["control_sets"][name]["accuracy"]
            ),
        }
