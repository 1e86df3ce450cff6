"""The reasoning experiment's controls and statistics: the swapped and shared-pool
knowledge-neuron controls, hop 1 deduplicated by bridge fact, and intervals and p-values
by whole bridge facts, on a stub evaluator whose every number is known by hand."""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header
from relneuron_eval.evaluation.results import TaskResult
from relneuron_eval.evaluation.statistics import (
    cluster_means,
    cluster_permutation_test,
    paired_cluster_ci,
)

SMOL = {"num_layers": 30, "intermediate_size": 1536, "hidden_size": 576}


# ============================================================ statistics
def test_cluster_permutation_by_hand():
    # cluster sums of b - a: x -> +2 (two documents), y -> +1: sign patterns give
    # totals 3, 1, -1, -3; |total| >= 3 in 2 of 4
    a, b, c = [0, 0, 0], [1, 1, 1], ["x", "x", "y"]
    assert cluster_permutation_test(a, b, c) == 0.5
    # the same six documents as one cluster carry no evidence; as six, p = 2 / 64
    assert cluster_permutation_test([0] * 6, [1] * 6, ["x"] * 6) == 1.0
    assert cluster_permutation_test([0] * 6, [1] * 6, list("abcdef")) == 2 / 64
    assert cluster_permutation_test([0, 1], [0, 1], ["x", "y"]) == 1.0
    # many clusters (random sign flips): a clear effect and none
    n = 40
    assert cluster_permutation_test([0] * n, [1] * n, [str(i) for i in range(n)]) < 0.001
    flat = [i % 2 for i in range(n)]
    assert cluster_permutation_test(flat, flat[::-1], [str(i // 2) for i in range(n)]) > 0.5
    with pytest.raises(ValueError):
        cluster_permutation_test([0], [1, 1], ["x"])


def test_cluster_interval_is_wider_when_documents_repeat():
    # 10 bridge facts, each asked by 4 chains with the same outcome change
    diffs = [1.0 if f < 6 else 0.0 for f in range(10) for _ in range(4)]
    facts = [str(f) for f in range(10) for _ in range(4)]
    base = [0.0] * len(diffs)
    clustered = paired_cluster_ci(base, diffs, facts)
    naive = paired_cluster_ci(base, diffs, [str(i) for i in range(len(diffs))])
    assert clustered is not None and naive is not None
    assert clustered[0] <= 0.6 <= clustered[1] and naive[0] <= 0.6 <= naive[1]
    assert clustered[1] - clustered[0] > 1.5 * (naive[1] - naive[0])
    assert paired_cluster_ci([0, 0], [1, 1], ["x", "x"]) is None
    assert paired_cluster_ci(base, diffs, facts) == clustered  # seeded
    assert cluster_means([1, 0, 1, 1], ["x", "x", "y", "y"]) == {"x": 0.5, "y": 1.0}


# ===================================================== the experiment, by hand
def _bridge_facts() -> tuple[list[str], dict[str, str]]:
    """Four landmark_in_country bridge facts of two objects (so each has a donor)."""
    from relneuron_eval.data.facts import fact_by_id
    from relneuron_eval.harness.task_data import rows_for

    by_object: dict[str, list[str]] = defaultdict(list)
    for row in rows_for("2hop")["test"]:
        fact = row["hop1_fact"]
        if fact.startswith("landmark_in_country/") and fact not in by_object[row["bridge"]]:
            by_object[row["bridge"]].append(fact)
    objects = [o for o, fs in sorted(by_object.items()) if len(fs) >= 2][:2]
    picked = [f for o in objects for f in by_object[o][:2]]
    return picked, {f: fact_by_id(f).object for f in picked}


def _kn_set(path: Path, facts: list[str]) -> Path:
    """Each fact: one shared unit (layer 0 #7) and two of its own in layers 20 and 29."""
    header = make_header(
        model={"id": "smollm2-135m", "architecture": "LlamaForCausalLM", **SMOL},
        method={"name": "knowledge-neurons"},
        knowledge_neurons={"facts": len(facts), "relations": []},
    )
    neurons = []
    for i, fact in enumerate(facts):
        neurons += [
            Neuron(fact, "mlp.act", 0, 7, 1.0),
            Neuron(fact, "mlp.act", 20, 100 + i, 0.5),
            Neuron(fact, "mlp.act", 29, 200 + i, 0.5),
        ]
    NeuronSet(header, neurons).save(path)
    return path


class StubEval:
    """Base: chain d right iff d % 4 != 3. Own neurons suppressed: every measure wrong on
    chains with neurons. Swapped suppressed: hop 1 (both templates) wrong too, composed
    answers as base (another fact's neurons break the in-sample prompt only). Enhanced,
    shared-pool and random: as base."""

    def __init__(self, facts: set[str]) -> None:
        self.facts = facts
        self.labels: list[str] = []

    def __call__(self, variant, samples):
        from relneuron_eval.harness.task_data import rows_for

        self.labels.append(variant.label)
        chains = rows_for("2hop")["test"]
        spec = variant.spec
        out = {}
        for task, docs in samples.items():
            rows = []
            for d in docs:
                ok = d % 4 != 3
                hit = spec.per_doc and chains[d]["hop1_fact"] in self.facts
                if hit and spec.mode == "deactivate":
                    if "control_sets" not in spec.neuron_set:
                        ok = False
                    elif "swapped" in spec.neuron_set and "hop1" in task:
                        ok = False
                rows.append(
                    {
                        "doc_id": d,
                        "id": str(d),
                        **dict.fromkeys(("acc_prefix2", "acc_match", "bridge_recall"), float(ok)),
                    }
                )
            out[task] = TaskResult(task, rows, {"num_units": 3})
        return out


@pytest.fixture(scope="module")
def reasoning_report(tmp_path_factory):
    from relneuron_eval.report.command import add_arguments, build_setup, run_report

    folder = tmp_path_factory.mktemp("reasoning")
    facts, objects = _bridge_facts()
    rs = folder / "rs.jsonl"
    header = make_header(
        model={"id": "smollm2-135m", "architecture": "LlamaForCausalLM", **SMOL},
        method={"name": "test"},
    )
    rel_neurons = [
        Neuron(r, "mlp.up_proj", 5, i, 1.0)
        for r in ("country_capital_city", "company_hq")
        for i in range(3)
    ]
    NeuronSet(header, rel_neurons).save(rs)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--out", str(folder / "out"), "--no-progress", "--neuron-set", str(rs),
            "--kn-set", str(_kn_set(folder / "kn.jsonl", facts)),
            "--relations", "country_capital_city,company_hq", "--experiments", "reasoning",
            "--reasoning-chains", "with-neurons", "--seeds", "0,1", "--metric", "acc_match",
        ]
    )  # fmt: skip
    setup, notes = build_setup(args, check_model=False)
    ev = StubEval(set(facts))
    results, runner = run_report(setup, ev, notes=notes, progress=False)
    # a second run evaluates nothing and reuses each result once (no request twice)
    again = StubEval(set(facts))
    _, second = run_report(setup, again, notes=notes, progress=False)
    assert again.labels == [] and second.reused == runner.evaluated
    return {"results": results, "setup": setup, "ev": ev, "facts": facts, "objects": objects}


def test_swapped_specificity_and_dedup_by_hand(reasoning_report):
    from relneuron_eval.harness.task_data import rows_for

    rs = reasoning_report["results"]["reasoning"]
    setup = reasoning_report["setup"]
    chains = rows_for("2hop")["test"]
    docs = setup.docs("relfacts_2hop")
    facts = reasoning_report["facts"]
    assert {chains[d]["hop1_fact"] for d in docs} == set(facts) and len(docs) > len(facts)
    right = [d for d in docs if d % 4 != 3]
    base = len(right) / len(docs)

    # composed: own suppression breaks every chain; the swapped control none
    direct = rs["measures"]["direct"]["with_neurons"]["deactivate"]
    assert rs["measures"]["direct"]["with_neurons"]["n"] == len(docs)
    assert direct["own"]["acc"] == 0.0 and direct["own"]["delta"] == pytest.approx(-base)
    assert direct["swapped"]["acc"] == pytest.approx(base)
    spec = direct["specificity"]
    assert spec["own_minus_swapped"] == pytest.approx(-base) and spec["n"] == len(docs)
    assert spec["share_of_own_change_swapped"] == 0.0
    assert spec["ci"][0] <= -base <= spec["ci"][1] and spec["test"] == "cluster-permutation"
    assert direct["control"] == pytest.approx(base)
    assert direct["shared_pool"] is None  # no unit is in >= 10 of 4 facts: no such control

    # hop 1: one value per bridge fact (the mean of its chains); swapped = own there
    for name in ("hop1", "hop1_heldout"):
        block = rs["measures"][name]["with_neurons"]
        assert block["n"] == len(facts) and rs["measures"][name]["deduplicated"]
        per_fact = defaultdict(list)
        for d in docs:
            per_fact[chains[d]["hop1_fact"]].append(float(d % 4 != 3))
        assert block["base"] == pytest.approx(sum(sum(v) / len(v) for v in per_fact.values()) / 4)
        hop = block["deactivate"]["specificity"]
        assert hop["own_minus_swapped"] == 0.0 and hop["share_of_own_change_swapped"] == 1.0
    assert list(rs["measures"])[:2] == ["direct", "cot"]  # composed questions lead


def test_controls_are_other_facts_and_run_before_random(reasoning_report):
    rs = reasoning_report["results"]["reasoning"]
    objects = reasoning_report["objects"]
    sw = rs["controls"]["swapped"]
    assert sw["kind"] == "swapped" and sw["facts_without_donor"] == []
    assert sw["facts_same_count"] == 4 and sw["layer_l1_total"] == 0
    from relneuron_eval.core.neuron_set import load
    from relneuron_eval.discovery.kn_controls import fact_units

    path = Path(reasoning_report["setup"].out) / "control_sets"
    swapped = load(next(path.glob("knowledge_neurons_swapped_s0.jsonl*")))
    for fact, donor in swapped.header["control"]["donors"].items():
        assert objects[donor] != objects[fact]
    assert all(len(ns) == 3 for ns in fact_units(swapped).values())
    assert rs["controls"]["shared_pool"]["pool_units"] == 0  # (0, 7) is in 4 < 10 facts
    assert rs["kn_statistics"]["top_unit"] == {"unit": ["mlp.act", 0, 7], "facts": 4}
    # evaluation order: base, own, the named controls, then random units
    labels = reasoning_report["ev"].labels
    first_random = min(i for i, label in enumerate(labels) if "control" in label and "s=" in label)
    assert max(i for i, label in enumerate(labels) if "swapped" in label) < first_random
    assert Counter("swapped" in label for label in labels)[True] == 2


def test_markdown_leads_with_composed_questions_and_names_the_controls(reasoning_report):
    from relneuron_eval.report.markdown import render

    text = render(reasoning_report["results"])
    section = text[text.index("## Reasoning recall") :]
    assert "own - swapped" in section and "shared pool only" in section
    assert section.index("| direct |") < section.index("| hop1 |")
    assert "relfacts_2hop_hop1_heldout" in section and "in-sample" in section
