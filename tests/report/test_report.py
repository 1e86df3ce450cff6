"""``relneuron report``: the machinery checked against hand computations.

* pure parts: k grids ("all", sizes below k), relative-drop matrix and improved cells,
  overlap of a hand-made neuron set, paired summaries, cache keys;
* the runner: one call per variant, resumption evaluates nothing, damaged cache files;
* the whole report with a stub evaluator whose per-document outcomes are designed by
  hand, so every headline number is known in advance;
* validation errors before any model is loaded;
* one end-to-end ``relneuron report`` on a tiny random Llama with the real relfacts
  tasks (``--limit 2``), run twice: the second run evaluates nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

import pytest

from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.results import TaskResult
from relneuron_eval.evaluation.runner import Runner, Variant, cache_key
from relneuron_eval.report.analysis import (
    ALL,
    canonical_top_k,
    drop_matrix,
    evenly_spaced,
    overlap,
    paired_summary,
    parse_ks,
    relative_drop,
    resolve_ks,
)

SMOL = {"num_layers": 30, "intermediate_size": 1536, "hidden_size": 576}
SITES3 = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def smol_set(path: Path, sizes: dict[str, int], seed: int = 0, shape=SMOL) -> Path:
    """A neuron set with the given number of random units per group (scores descending)."""
    rng = random.Random(seed)
    header = make_header(
        model={"id": "smollm2-135m", "architecture": "LlamaForCausalLM", **shape},
        method={"name": "test"},
    )
    neurons = []
    for group, count in sizes.items():
        seen: set = set()
        while len(seen) < count:
            site = rng.choice(SITES3)
            width = shape["hidden_size"] if site == "mlp.down_proj" else shape["intermediate_size"]
            unit = (site, rng.randrange(shape["num_layers"]), rng.randrange(width))
            if unit not in seen:
                seen.add(unit)
                neurons.append(Neuron(group, *unit, score=1.0 - len(seen) / (count + 1)))
    NeuronSet(header, neurons).save(path)
    return path


# ==================================================================== k grids
def test_parse_ks_sorts_dedupes_and_puts_all_last():
    assert parse_ks("100, 10,all,10") == [10, 100, ALL]
    assert parse_ks("ALL") == [ALL]
    for bad in ("0", "ten", "", "5,-1"):
        with pytest.raises(RelNeuronError):
            parse_ks(bad)


def test_k_grid_against_group_size():
    # group of 500: 3000 and "all" select the same 500 neurons -> one point, two labels
    points = resolve_ks([10, 100, 3000, ALL], 500)
    assert [(p.labels, p.top_k, p.n_neurons) for p in points] == [
        (("10",), 10, 10),
        (("100",), 100, 100),
        (("3000", "all"), None, 500),
    ]
    # k equal to the size is the whole group too
    assert [(p.labels, p.top_k) for p in resolve_ks([10, ALL], 10)] == [(("10", "all"), None)]
    assert canonical_top_k(3000, 3000) is None
    assert canonical_top_k(2999, 3000) == 2999
    assert canonical_top_k(ALL, 5) is None
    with pytest.raises(RelNeuronError):
        resolve_ks([10], 0)


# ============================================================ drops, overlap
def test_drop_matrix_by_hand():
    base = {"a": 0.5, "b": 0.8, "c": 0.0}
    value = {
        "a": {"a": 0.1, "b": 0.9, "c": 0.1},
        "b": {"a": 0.5, "b": 0.2, "c": 0.0},
    }
    m = drop_matrix(base, value, rows=["a", "b"], cols=["a", "b", "c"], min_base=0.2)
    assert m.relative["a"]["a"] == pytest.approx(0.8)  # (0.5 - 0.1) / 0.5
    assert m.relative["a"]["b"] == pytest.approx(-0.125)  # (0.8 - 0.9) / 0.8
    assert m.relative["b"]["b"] == pytest.approx(0.75)  # (0.8 - 0.2) / 0.8
    assert m.relative["a"]["c"] is None  # base 0: no relative drop
    assert m.absolute["b"]["a"] == 0.0
    assert m.improved == {
        "a": {"a": False, "b": True, "c": True},
        "b": {"a": False, "b": False, "c": False},
    }
    assert m.eligible == {"a": True, "b": True, "c": False}
    assert list(m.cells(diagonal=False)) == [("a", "b"), ("b", "a")]
    assert list(m.cells(diagonal=True)) == [("a", "a"), ("b", "b")]
    assert len(list(m.cells(eligible_only=False))) == 6
    assert relative_drop(None, 0.5) is None


def test_overlap_of_a_hand_made_neuron_set(tmp_path):
    from relneuron_eval.report.experiments import Setup, analyze_overlap

    header = make_header(
        model={"id": "m", "architecture": "LlamaForCausalLM", **SMOL}, method={"name": "t"}
    )
    u = [("mlp.up_proj", 0, i) for i in range(10)]
    neurons = [
        # a: units 0..3 (scores 4..1), plus unit 8 with the lowest score
        *(Neuron("a", *u[i], score=4.0 - i) for i in range(4)),
        Neuron("a", *u[8], score=0.5),
        # b: units 2, 3, 4 and 8
        *(Neuron("b", *u[i], score=3.0 - j) for j, i in enumerate((2, 3, 4))),
        Neuron("b", *u[8], score=2.5),
        Neuron("c", *u[9], score=1.0),
    ]
    ns = NeuronSet(header, neurons)
    units = {g: {n.unit for n in ns.neurons if n.group == g} for g in ("a", "b", "c")}
    ov = overlap(units, ["a", "b", "c"])
    # a = {0,1,2,3,8}, b = {2,3,4,8}: shared {2,3,8} = 3, union 6
    assert ov["counts"]["a"]["b"] == 3
    assert ov["jaccard"]["a"]["b"] == pytest.approx(3 / 6)
    assert ov["jaccard"]["a"]["c"] == 0.0 and ov["jaccard"]["c"]["c"] == 1.0
    assert ov["mean_offdiag_jaccard"] == pytest.approx((0.5 + 0 + 0) / 3)
    assert ov["distinct_units"] == 7 and ov["units_in_2plus_groups"] == 3
    # through the report with top-3 per relation: a = {0,1,2}, b = {2,8,3} -> shared {2}
    setup = Setup.__new__(Setup)
    setup.neuron_set, setup.relations, setup.top_k = ns, ["a", "b", "c"], 3
    top = analyze_overlap(setup)
    assert top["counts"]["a"]["b"] == 1
    assert top["jaccard"]["a"]["b"] == pytest.approx(1 / 5)
    assert top["sizes"] == {"a": 3, "b": 3, "c": 1}


def test_paired_summary_by_hand():
    # the tests themselves (McNemar, t, bootstrap) are checked in test_statistics.py
    s = paired_summary([0.5, 0.3, 0.4], [0.1, 0.1, 0.5])
    assert s["mean_difference"] == pytest.approx((0.4 + 0.2 - 0.1) / 3)
    assert (s["own_larger"], s["control_larger"], s["n"]) == (2, 1, 3)
    assert evenly_spaced(10, 4) == [0, 2, 5, 7]
    assert evenly_spaced(3, 5) == [0, 1, 2]


# ==================================================================== cache
def test_cache_key_depends_on_what_changes_numbers_only():
    model = {"model": "m", "dtype": "float32"}

    def deact(**extra):
        args = {"groups": "r", "mode": "deactivate", "top_k": 10, **extra}
        return Variant.make("x", "/a/set.jsonl", extra.pop("set_hash", "h1"), **args)

    v = deact()
    key = cache_key(model, v, "t")
    # the set's path and the label do not count, only the set's content hash
    assert key == cache_key(
        model,
        Variant.make("y", "/b/copy.jsonl", "h1", groups="r", mode="deactivate", top_k=10),
        "t",
    )
    different = [
        cache_key(model, v, "t2"),  # task
        cache_key({**model, "dtype": "bfloat16"}, v, "t"),  # model
        cache_key(
            model,
            Variant.make("x", "/a/set.jsonl", "h2", groups="r", mode="deactivate", top_k=10),
            "t",
        ),  # set content
        cache_key(model, deact(top_k=20), "t"),
        cache_key(model, deact(control="random", seed=0), "t"),
        cache_key(model, deact(control="random", seed=1), "t"),
        cache_key(model, deact(mode="enhance", factor=2.0), "t"),
        cache_key(model, Variant.base(), "t"),
        cache_key(model, v, "t", task_hash="the task's data changed"),
    ]
    assert key not in different and len(set(different)) == len(different)


class CountingEval:
    """A stub evaluator: doc d of any task is right iff it is even (base) or odd (variants)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, list[int]]]] = []

    def __call__(self, variant, samples):
        self.calls.append((variant.label, {t: list(d) for t, d in samples.items()}))
        return {
            t: TaskResult(
                t, [{"doc_id": d, "acc": float((d + (not variant.is_base)) % 2 == 0)} for d in docs]
            )
            for t, docs in samples.items()
        }


def test_runner_one_call_per_variant_resumes_and_reuses_longer_runs(tmp_path):
    ev = CountingEval()
    v = Variant.make("deact", "/s.jsonl", "h", groups="r", mode="deactivate")
    runner = Runner(tmp_path, {"model": "m"}, ev, progress=False)
    runner.request(Variant.base(), ["t1", "t2"], {"t1": [0, 1, 2], "t2": [0, 1]})
    runner.request(v, ["t1"], {"t1": [0, 1]})
    runner.request(v, ["t2"], {"t2": [0, 1]})
    runner.request(v, ["t1"], {"t1": [0, 1, 2]})  # merged with the first: docs 0, 1, 2
    runner.run()
    assert sorted(ev.calls) == [
        ("base", {"t1": [0, 1, 2], "t2": [0, 1]}),
        ("deact", {"t1": [0, 1, 2], "t2": [0, 1]}),
    ]
    assert (runner.calls, runner.evaluated, runner.reused) == (2, 4, 0)
    assert runner.get(Variant.base(), "t1", [0, 1, 2]).accuracy("acc") == pytest.approx(2 / 3)
    assert runner.get(v, "t1", [0, 1, 2]).values("acc") == [0.0, 1.0, 0.0]
    assert runner.get(v, "t1", [1, 2]).values("acc") == [1.0, 0.0]  # cut from the longer run

    # a new runner over the same folder evaluates nothing, also for fewer documents ...
    again = Runner(tmp_path, {"model": "m"}, ev, progress=False)
    again.request(Variant.base(), ["t1", "t2"], {"t1": [0, 1], "t2": [0, 1]})
    again.request(v, ["t1", "t2"], {"t1": [0], "t2": [0, 1]})
    again.run()
    assert (again.calls, again.evaluated, again.reused) == (0, 0, 4)
    assert again.get(v, "t1", [0]).values("acc") == [0.0]
    # ... but more documents: the whole union again, so demos keep their order
    again.request(v, ["t1"], {"t1": [0, 1, 2, 3]})
    again.run()
    assert ev.calls[-1] == ("deact", {"t1": [0, 1, 2, 3]})
    assert again.get(v, "t1", [3]).values("acc") == [1.0]
    with pytest.raises(RelNeuronError, match="no result"):
        again.get(v, "t1", [7])
    with pytest.raises(RelNeuronError, match="no result"):
        again.get(v, "t3", [0])

    # a damaged file is evaluated again
    broken = again.path(v, "t2")
    broken.write_text(broken.read_text()[:-20])
    third = Runner(tmp_path, {"model": "m"}, ev, progress=False)
    third.request(v, ["t2"], {"t2": [0, 1]})
    third.request(Variant.base(), ["t2"], {"t2": [0, 1]})
    third.run()
    assert (third.calls, third.evaluated, third.reused) == (1, 1, 1)
    assert ev.calls[-1] == ("deact", {"t2": [0, 1]})


# ======================================================= the report, by hand
R = [
    "country_capital_city",
    "landmark_in_country",
    "person_native_language",
    "company_hq",
    "person_father",
]
LANG_PREFIXES = ("de_", "es_", "fr_", "zh_", "ja_")


def _relation_of(task: str) -> str:
    rest = task[len("relfacts_") :]
    return rest[3:] if rest[:3] in LANG_PREFIXES else rest


class HandEval:
    """Per-document outcomes designed so that every report number is known by hand.

    base: doc d right iff d % 4 != 3 (person_father: only doc 0); deactivating r's
    neurons: r's own tasks (any language) all wrong, company_hq all right when
    landmark_in_country is deactivated, else as base; random controls as base, except
    company_hq's control, which also gets docs 0 and 1 wrong; knowledge neurons:
    suppressed -> chains with neurons wrong, enhanced -> right; their controls as base.
    """

    def __init__(self, kn_facts: set[str]) -> None:
        self.kn_facts = kn_facts
        self.calls = 0

    def __call__(self, variant, samples):
        from relneuron_eval.harness.task_data import rows_for

        self.calls += 1
        spec = variant.spec
        chains = rows_for("2hop")["test"]
        out = {}
        for task, docs in samples.items():
            rows = []
            for d in docs:
                if task.startswith("relfacts_2hop"):
                    ok = d % 4 != 3
                    if spec.per_doc and "control_sets" not in spec.neuron_set:
                        if chains[d]["hop1_fact"] in self.kn_facts:
                            ok = spec.mode == "enhance"
                else:
                    rel = _relation_of(task)
                    ok = d == 0 if rel == "person_father" else d % 4 != 3
                    group, control = spec.groups, spec.control
                    if group == rel and control is None:
                        ok = False
                    elif group == "landmark_in_country" and rel == "company_hq" and not control:
                        ok = True
                    elif group == rel == "company_hq" and control and d in (0, 1):
                        ok = False
                rows.append(
                    {
                        "doc_id": d,
                        "id": str(d),
                        **dict.fromkeys(
                            ("acc_prefix2", "acc_match", "bridge_recall", "acc"), float(ok)
                        ),
                    }
                )
            out[task] = TaskResult(task, rows, {"num_units": 7})
        return out


def _args(out: Path, *extra: str) -> argparse.Namespace:
    from relneuron_eval.report.command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--out", str(out), "--no-progress", *extra])


@pytest.fixture(scope="module")
def hand_report(tmp_path_factory):
    from relneuron_eval.harness.task_data import rows_for
    from relneuron_eval.report.command import build_setup, run_report

    folder = tmp_path_factory.mktemp("hand")
    sizes = {
        "country_capital_city": 60,
        "company_hq": 50,
        "landmark_in_country": 40,
        "person_native_language": 40,
        "person_father": 40,
    }
    rs = smol_set(folder / "rs.jsonl.gz", sizes)
    chains = rows_for("2hop")["test"]
    spread = evenly_spaced(len(chains), 8)  # the report's 8-chain sample (--reasoning-limit 8)
    kn_facts = {chains[spread[0]]["hop1_fact"], chains[spread[4]]["hop1_fact"]}
    smol_set(folder / "knowledge_neurons.jsonl.gz", dict.fromkeys(sorted(kn_facts), 3), seed=1)
    args = _args(
        folder / "out",
        "--neuron-set",
        str(rs),
        "--relations",
        ",".join(R),
        "--top-k",
        "40",
        "--limit-own",
        "40",
        "--ks",
        "10,50,all",
        "--limit",
        "20",
        "--reasoning-limit",
        "8",
        "--reasoning-chains",
        "all",
        "--matrix-relations",
        "country_capital_city,landmark_in_country,company_hq,person_father",
        "--cumulativity-relations",
        "country_capital_city,company_hq",
        "--langs",
        "de,zh",
    )
    setup, notes = build_setup(args, check_model=False)
    ev = HandEval(kn_facts)
    results, runner = run_report(setup, ev, notes=notes, progress=False)
    return {
        "results": results,
        "runner": runner,
        "setup": setup,
        "ev": ev,
        "args": args,
        "kn_facts": kn_facts,
        "out": folder / "out",
    }


def test_specificity_numbers_by_hand(hand_report):
    inter = hand_report["results"]["interference"]
    ccc = inter["per_relation"]["country_capital_city"]  # --limit-own 40: 30 right
    assert (ccc["n_docs"], ccc["base"], ccc["deact"], ccc["control"]) == (40, 0.75, 0.0, 0.75)
    assert ccc["relative_drop"] == 1.0 and ccc["control_relative_drop"] == 0.0
    assert ccc["p_deact_vs_base"] == pytest.approx(2 * 0.5**30)
    # own tasks use --limit-own 40: company_hq 30 of 40 right, its control 28 of 40
    hq = inter["per_relation"]["company_hq"]
    assert (hq["n_docs"], hq["base"], hq["deact"], hq["control"]) == (40, 0.75, 0.0, 0.7)
    assert hq["control_relative_drop"] == pytest.approx(0.05 / 0.75)
    assert hq["p_deact_vs_control"] == pytest.approx(2 * 0.5**28)
    assert hq["p_control_vs_base"] == pytest.approx(0.5)  # 2 discordant: 2 * 0.25
    pf = inter["per_relation"]["person_father"]
    assert pf["base"] == 1 / 40 and not pf["eligible"]
    s = inter["summary"]
    assert (s["n_eligible"], s["n_total"]) == (4, 5)
    assert s["absolute"]["mean_own"] == pytest.approx(0.75)
    assert s["absolute"]["mean_control"] == pytest.approx(0.05 / 4)
    assert s["absolute"]["mean_difference"] == pytest.approx(0.75 - 0.0125)
    assert s["relative"]["mean_own"] == pytest.approx(1.0)
    assert (s["n_significant_drop"], s["n_significant_vs_control"]) == (4, 4)
    assert s["n_control_significant_drop"] == 0
    head = hand_report["results"]["headline"]
    assert "by 75.0 points" in head and "4 of 4 relations drop significantly" in head
    assert "1 relation(s) not eligible (base accuracy below 20%" in head


def test_interference_matrix_by_hand(hand_report):
    m = hand_report["results"]["interference"]["matrix"]
    own, ctrl = m["own"], m["control"]
    assert own["improved"]["landmark_in_country"]["company_hq"] is True
    assert own["relative_drop"]["landmark_in_country"]["company_hq"] == pytest.approx(-1 / 3)
    improved = [(r, c) for r in own["rows"] for c in own["cols"] if own["improved"][r][c]]
    assert improved == [("landmark_in_country", "company_hq")]
    assert own["eligible"]["person_father"] is False
    # control of company_hq lowers company_hq only
    assert ctrl["relative_drop"]["company_hq"]["company_hq"] == pytest.approx(0.1 / 0.75)
    assert ctrl["relative_drop"]["company_hq"]["country_capital_city"] == 0.0
    # 4 rows x 3 eligible columns, minus the 3 eligible diagonal cells
    assert m["offdiag_own"]["n_cells"] == 9 and m["offdiag_own"]["n_improved"] == 1
    assert m["offdiag_own"]["mean_relative_drop"] == pytest.approx((-1 / 3) / 9)
    # company_hq rises from 15 to 20 of 20: 5 discordant documents, p = 2 * 0.5**5 > 0.05
    assert m["p_vs_base"]["landmark_in_country"]["company_hq"] == pytest.approx(2 * 0.5**5)
    assert m["offdiag_own"]["n_improved_significant"] == 0
    assert m["diag_mean_relative_drop"] == pytest.approx(1.0)


def test_cumulativity_grid_by_hand(hand_report):
    cum = hand_report["results"]["cumulativity"]
    ccc = cum["curves"]["country_capital_city"]  # 60 neurons: 10, 50, all=60
    assert [(p["labels"], p["n_neurons"], p["top_k"]) for p in ccc["points"]] == [
        (["10"], 10, 10),
        (["50"], 50, 50),
        (["all"], 60, None),
    ]
    hq = cum["curves"]["company_hq"]  # 50 neurons: 50 and all are one point
    assert [(p["labels"], p["n_neurons"]) for p in hq["points"]] == [
        (["10"], 10),
        (["50", "all"], 50),
    ]
    assert all(p["own"] == 0.0 and p["control_own"] == 0.65 for p in hq["points"])
    assert all(p["others"] == 0.75 for p in hq["points"])  # other = country_capital_city
    mean_all = next(m for m in cum["mean_curve"] if m["label"] == "all")
    assert mean_all["own"] == pytest.approx(-0.75)
    assert mean_all["control_own"] == pytest.approx((0 + -0.1) / 2)


def test_crosslingual_and_reasoning_by_hand(hand_report):
    from relneuron_eval.harness.task_data import rows_for

    cl = hand_report["results"]["versatility"]["crosslingual"]
    assert set(cl["cells"]) == {
        "country_capital_city",
        "landmark_in_country",
        "person_native_language",
    }
    assert set(cl["cells"]["country_capital_city"]) == {"en", "de", "zh"}
    assert set(cl["cells"]["person_native_language"]) == {"en", "de", "zh"}
    assert set(cl["cells"]["landmark_in_country"]) == {"en", "zh"}  # no de task
    de = cl["cells"]["person_native_language"]["de"]
    n = de["n_docs"]
    assert de["base"] == pytest.approx(sum(1 for d in range(n) if d % 4 != 3) / n)
    assert de["deact"] == 0.0 and de["control"] == de["base"]
    assert cl["summary_foreign"]["n_total"] == 5  # de+zh, de+zh, zh

    rs = hand_report["results"]["reasoning"]
    chains = rows_for("2hop")["test"]
    docs = evenly_spaced(len(chains), 8)  # 8 chains spread over all of them
    with_kn = [d for d in docs if chains[d]["hop1_fact"] in hand_report["kn_facts"]]
    assert rs["coverage"]["n_chains"] == 8
    assert rs["coverage"]["n_with_neurons"] == len(with_kn) >= 2
    direct = rs["measures"]["direct"]
    assert direct["all"]["base"] == 0.75  # 91 and 227 are 3 mod 4
    assert direct["with_neurons"]["base"] == pytest.approx(
        sum(d % 4 != 3 for d in with_kn) / len(with_kn)
    )
    assert direct["with_neurons"]["deactivate"]["kn"] == 0.0
    assert direct["with_neurons"]["enhance"]["kn"] == 1.0
    assert direct["with_neurons"]["deactivate"]["control"] == direct["with_neurons"]["base"]
    assert direct["all"]["deactivate"]["kn"] == pytest.approx(
        (6 - sum(d % 4 != 3 for d in with_kn)) / 8
    )


def test_reasoning_sample_spreads_over_chains_with_neurons(hand_report):
    from relneuron_eval.harness.task_data import rows_for
    from relneuron_eval.report.experiments import kn_coverage

    setup = hand_report["setup"]
    chains = rows_for("2hop")["test"]
    covered = [i for i, c in enumerate(chains) if c["hop1_fact"] in hand_report["kn_facts"]]
    assert len(covered) >= 2
    try:
        setup.reasoning_chains = "with-neurons"
        assert setup.chain_pool() == covered
        docs = setup.docs("relfacts_2hop")
        assert docs == covered[:8] if len(covered) <= 8 else set(docs) <= set(covered)
        cov = kn_coverage(setup)
        assert cov["n_with_neurons"] == cov["n_chains"] == len(docs)
        assert cov["chains_total"] == len(chains) and cov["chains_total_with_neurons"] == len(
            covered
        )
        assert cov["bridge_facts_with_neurons"] == 2
    finally:
        setup.reasoning_chains = "all"


def test_outputs_agree_and_second_run_evaluates_nothing(hand_report):
    from relneuron_eval.report.command import build_setup, run_report

    out = hand_report["out"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["interference"]["summary"] == json.loads(
        json.dumps(hand_report["results"]["interference"]["summary"])
    )
    md = (out / "report.md").read_text()
    assert saved["headline"] in md
    for name in saved["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(saved["figures"]) == {
        "specificity.png",
        "interference.png",
        "cumulativity.png",
        "overlap.png",
        "crosslingual.png",
        "reasoning.png",
    }
    first = hand_report["runner"]
    assert first.calls > 0 and first.reused == 0

    setup, notes = build_setup(hand_report["args"], check_model=False)
    ev = HandEval(hand_report["kn_facts"])
    again, runner = run_report(setup, ev, notes=notes, progress=False)
    assert ev.calls == 0 and runner.calls == 0
    assert runner.reused == first.evaluated
    assert again["interference"] == hand_report["results"]["interference"]


# ============================================================== validation
def _fail(args: list[str], capsys, monkeypatch) -> str:
    from relneuron_eval import cli
    from relneuron_eval.evaluation.runner import LoadedModel

    def no_load(self):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(LoadedModel, "_load", no_load)
    assert cli.main(["report", *args]) == 2
    return capsys.readouterr().err


def test_bad_input_fails_before_the_model_loads(tmp_path, capsys, monkeypatch):
    rs = smol_set(tmp_path / "rs.jsonl.gz", {"company_hq": 20, "country_capital_city": 20})
    base = ["--neuron-set", str(rs), "--out", str(tmp_path / "o"), "--experiments", "interference"]
    err = _fail([*base, "--relations", "company_hq,star_constellation"], capsys, monkeypatch)
    assert "not groups of the neuron set" in err and "country_capital_city" in err
    err = _fail(
        [*base, "--metric", "mc", "--relations", "country_capital_city"], capsys, monkeypatch
    )
    assert "no relfacts task" in err
    assert "--ks" in _fail([*base, "--ks", "10,zero"], capsys, monkeypatch)
    assert "auto:N" in _fail([*base, "--matrix-relations", "auto:x"], capsys, monkeypatch)
    err = _fail([*base[:-1], "reasoning"], capsys, monkeypatch)
    assert "knowledge-neuron set" in err and "--kn-set" in err
    other = smol_set(
        tmp_path / "other.jsonl.gz",
        {"company_hq": 5},
        shape={"num_layers": 2, "intermediate_size": 64, "hidden_size": 32},
    )
    err = _fail(
        ["--neuron-set", str(other), "--out", str(tmp_path / "o"), "--experiments", "versatility"],
        capsys,
        monkeypatch,
    )
    assert "another shape" in err
    # a group that fills a whole layer's down_proj cannot get a disjoint random control
    header = make_header(
        model={"id": "m", "architecture": "LlamaForCausalLM", **SMOL}, method={"name": "t"}
    )
    full = NeuronSet(header, [Neuron("company_hq", "mlp.down_proj", 0, i, 1.0) for i in range(576)])
    full.save(tmp_path / "full.jsonl")
    err = _fail(
        [
            "--neuron-set",
            str(tmp_path / "full.jsonl"),
            "--out",
            str(tmp_path / "o"),
            "--experiments",
            "interference",
        ],
        capsys,
        monkeypatch,
    )
    assert "cannot draw" in err and "company_hq" in err
    assert not (tmp_path / "o" / "report.md").exists()


# ====================================================== end to end, tiny model
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tools_helpers import TINY, tiny_model

    from relneuron_eval.harness.task_data import rows_for

    folder = tmp_path_factory.mktemp("tiny-report")
    model = tiny_model()
    shape = dict(TINY)
    rs = smol_set(
        folder / "rs.jsonl.gz", {"country_capital_city": 20, "company_hq": 20}, shape=shape
    )
    chains = rows_for("2hop")["test"]
    smol_set(
        folder / "kn.jsonl.gz",
        {chains[0]["hop1_fact"]: 6, chains[182]["hop1_fact"]: 6},
        seed=2,
        shape=shape,
    )
    return model, rs, folder / "kn.jsonl.gz", folder


@pytest.mark.slow  # ~28 CPU s: every reasoning control and the held-out hop 1 run for real
def test_end_to_end_on_a_tiny_llama(tiny, tmp_path, capsys):
    from relneuron_eval import cli

    model, rs, kn, _ = tiny
    out = tmp_path / "report"
    argv = [
        "report",
        "--model",
        str(model),
        "--neuron-set",
        str(rs),
        "--kn-set",
        str(kn),
        "--out",
        str(out),
        "--limit",
        "2",
        "--limit-own",
        "3",
        "--reasoning-limit",
        "2",
        "--ks",
        "5,all",
        "--top-k",
        "10",
        "--matrix-relations",
        "all",
        "--cumulativity-relations",
        "all",
        "--langs",
        "de",
        "--min-base",
        "0",
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.md").read_text().startswith("# Relation neurons on")
    ev = results["meta"]["evaluations"]
    assert ev["lm_eval_calls"] > 0 and ev["task_results_reused"] == 0
    for r, cell in results["interference"]["per_relation"].items():
        assert cell["n_docs"] == 3  # --limit-own
        assert cell["n_units"] == cell["n_units_control"] == 10, r  # size-matched control
    assert results["reasoning"]["coverage"]["n_with_neurons"] == 2
    # the interventions reached the model: some generations differ from the base run's
    runs = [json.loads(p.read_text()) for p in (out / "runs").glob("*.json")]
    gens: dict[tuple[str, str], dict[int, str]] = {}
    for run in runs:
        docs = {d["doc_id"]: d.get("generation") for d in run["result"]["docs"]}
        gens[(run["label"], run["result"]["task"])] = docs
    changed = [
        key for key, docs in gens.items() if key[0] != "base" and docs != gens[("base", key[1])]
    ]
    assert any(label.startswith("deact") for label, _ in changed)
    assert any(label.startswith("KN deactivate") for label, _ in changed)
    assert all(math.isfinite(v) for v in results["base"].values())

    capsys.readouterr()
    assert cli.main(argv) == 0  # everything cached: nothing is evaluated again
    again = json.loads((out / "results.json").read_text())["meta"]["evaluations"]
    assert again["lm_eval_calls"] == 0
    assert again["task_results_reused"] == ev["task_results_computed"]


def test_prefix2_check_in_results_and_markdown(hand_report):
    """Every relation gets its acc_prefix2 ambiguity; none of these is above the limit,
    so the markdown has no flag sentence (person_father: 115 of 991 facts, 11.6 %)."""
    check = hand_report["results"]["prefix2_check"]
    assert set(check["relations"]) == set(hand_report["setup"].relations)
    father = check["relations"]["person_father"]
    assert (father["ambiguous"], father["facts"], father["flagged"]) == (115, 991, False)
    assert "Flagged: acc_prefix2" not in (hand_report["out"] / "report.md").read_text()


@pytest.mark.parametrize("module_name", ["task_metrics", "answers", "fewshot"])
def test_cached_runs_are_invalidated_when_the_scoring_code_changes(
    module_name, tmp_path, monkeypatch
):
    """A stored run is reused only while the code that scores it is unchanged, including
    the answer rules that ``task_metrics`` imports from ``data/answers.py``."""
    import importlib

    from relneuron_eval.harness.task_data import task_fingerprint

    package = "relneuron_eval.data" if module_name == "answers" else "relneuron_eval.harness"
    module = importlib.import_module(f"{package}.{module_name}")
    task = "relfacts_country_language"
    task_fingerprint.cache_clear()
    before = task_fingerprint(task)
    edited = tmp_path / f"{module_name}.py"
    edited.write_bytes(Path(module.__file__).read_bytes() + b"\n# a changed rule\n")
    monkeypatch.setattr(module, "__file__", str(edited))
    task_fingerprint.cache_clear()
    try:
        assert task_fingerprint(task) != before
    finally:
        task_fingerprint.cache_clear()
