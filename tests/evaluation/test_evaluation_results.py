"""``evaluation.results``: one evaluation read live and from lm-eval's files is one result.

The slow test runs the real ``lm_eval`` CLI (``--output_path --log_samples``) on the tiny
Llama with an intervention, then the same evaluation in-process through
``evaluation.runner``, and requires equal aggregates, per-document records and
accessor values from both. The fast tests feed hand-written lm-eval sample records.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.results import (
    TaskResult,
    doc_record,
    from_evaluate,
    from_files,
    read_samples,
)


def _raw(doc_id: int, acc: float, resp, *, filt: str = "none", metrics: bool = True) -> dict:
    """An lm-eval sample record as ``simple_evaluate`` returns it."""
    rec = {
        "doc_id": doc_id,
        "doc": {"fact_id": f"f{doc_id}", "hop1_fact": f"h{doc_id}", "q": "?"},
        "target": "x",
        "arguments": [["q", "x"]],
        "resps": [[resp]],
        "filtered_resps": [resp],
        "filter": filt,
        "doc_hash": f"hash{doc_id}",
        "prompt_hash": "p",
        "target_hash": "t",
        "acc": acc,
    }
    if metrics:
        rec["metrics"] = ["acc"]
    return rec


# ====================================================================== fast
def test_live_and_logged_record_shapes_parse_alike(tmp_path):
    """Live loglikelihood responses are tuples, logged ones lists of strings; logs of older
    lm-eval versions have no "metrics" list. The parsed records must not differ."""
    live = [_raw(0, 1.0, (-0.5, True)), _raw(1, 0.0, "Paris\n"), _raw(1, 1.0, "P", filt="strict")]
    log = tmp_path / "samples_t_2026-01-01T00-00-00.jsonl"
    with log.open("w") as handle:
        for rec in live:
            logged = {
                **rec,
                "filtered_resps": [
                    list(map(str, r)) if isinstance(r, tuple) else r for r in rec["filtered_resps"]
                ],
            }
            logged.pop("metrics")
            handle.write(json.dumps(logged) + "\n")
    parsed = [doc_record(r) for r in live]
    assert read_samples(log) == parsed
    assert parsed[0] == {
        "doc_id": 0,
        "id": "f0",
        "hop1_fact": "h0",
        "acc": 1.0,
        "doc_hash": "hash0",
    }
    assert parsed[1]["generation"] == "Paris\n" and parsed[2]["filter"] == "strict"

    result = TaskResult("t", parsed)
    assert result.values("acc") == [1.0, 0.0]  # filter none only
    assert result.values("acc", "strict") == [1.0]
    assert result.by_doc("acc") == {0: 1.0, 1: 0.0} and result.accuracy("acc") == 0.5
    cached = result.to_dict()
    assert [set(d) for d in cached["docs"]] == [
        {"doc_id", "id", "hop1_fact", "acc"},
        {"doc_id", "id", "hop1_fact", "acc", "generation"},
    ]  # the report cache's format: filter none, no hashes
    assert TaskResult.from_dict(json.loads(json.dumps(cached))).values("acc") == [1.0, 0.0]
    with pytest.raises(RelNeuronError, match="no metric 'f1'"):
        result.values("f1")


def test_pairing_and_aggregate_checks_refuse_what_does_not_match():
    a = TaskResult("t", [doc_record(_raw(d, float(d % 2), "x")) for d in range(4)])
    b = TaskResult("t", [doc_record(_raw(d, 1.0, "y")) for d in range(4)])
    assert a.paired(b, "acc", "none") == ([0.0, 1.0, 0.0, 1.0], [1.0] * 4)
    assert "cover different documents" in a.paired(b.subset({0, 1}), "acc", "none")
    other = TaskResult("t", [{**d, "doc_hash": "z"} for d in b.records()])
    assert a.paired(other, "acc", "none") == "document 0 differs between the sample logs"
    assert a.paired(b, "f1", "none") == "no per-sample numbers for f1"
    a.metrics = {("acc", "none"): 0.5}
    a.check_means()
    a.metrics = {("acc", "none"): 0.75}
    with pytest.raises(RelNeuronError, match="differs from the per-document mean"):
        a.check_means()


def test_from_evaluate_keeps_groups_and_relneuron_info():
    out = {
        "results": {"g": {"acc,none": 0.5}, "t": {"acc,none": 0.5, "acc_stderr,none": 0.5}},
        "group_subtasks": {"g": ["t"]},
        "config": {"model": "relneuron-hf", "relneuron": {"variant": "v"}},
        "samples": {"t": [_raw(0, 1.0, "a"), _raw(1, 0.0, "b")]},
    }
    _, tasks = from_evaluate(out, "<v>")
    assert tasks["g"].is_group and tasks["g"].subtasks == ["t"] and tasks["g"].docs is None
    assert tasks["t"].stderrs == {("acc", "none"): 0.5} and tasks["t"].info == {"variant": "v"}
    assert tasks["t"].values("acc") == [1.0, 0.0]


def _mc(doc_id: int, lls: list[float], gold: int) -> dict:
    """A multiple-choice sample record as lm-eval logs it (log-likelihoods as strings)."""
    return {
        **_raw(doc_id, 0.0, None),
        "doc": {"fact_id": f"f{doc_id}", "gold": [gold]},
        "filtered_resps": [[str(x), "False"] for x in lls],
    }


def test_calibration_cancels_a_switched_default_but_not_a_forgotten_fact(tmp_path):
    """A default answer (one object gains the same on every document) leaves
    ``acc_calibrated`` as it was while raw argmax accuracy falls to the default's share;
    losing the subject-object association (each document's scores shuffled) lowers it."""
    import random

    rng = random.Random(0)
    n_docs, n_obj = 60, 6
    golds = [d % n_obj for d in range(n_docs)]
    base = [[rng.gauss(0, 1) + (3.0 if c == g else 0.0) for c in range(n_obj)] for g in golds]
    default = [[x + (20.0 if c == 0 else 0.0) for c, x in enumerate(row)] for row in base]
    forgot = [rng.sample(row, n_obj) for row in base]

    def result(rows: list[list[float]], name: str) -> TaskResult:
        log = tmp_path / f"samples_{name}_2026-01-01T00-00-00.jsonl"
        log.write_text("".join(json.dumps(_mc(d, r, golds[d])) + "\n" for d, r in enumerate(rows)))
        return TaskResult("t", samples=str(log))

    def raw_acc(rows: list[list[float]]) -> float:
        return (
            sum(max(range(n_obj), key=r.__getitem__) == g for r, g in zip(rows, golds, strict=True))
            / n_docs
        )

    b, s, f = result(base, "base"), result(default, "default"), result(forgot, "forgot")
    assert raw_acc(default) == pytest.approx(golds.count(0) / n_docs)
    assert raw_acc(default) < raw_acc(base)
    assert s.values("acc_calibrated") == b.values("acc_calibrated")
    assert b.accuracy("acc_calibrated") > 0.8 and f.accuracy("acc_calibrated") < 0.5
    # the run caches keep the log-likelihoods, and the value comes back from them
    cached = TaskResult.from_dict(json.loads(json.dumps(b.to_dict())))
    assert cached.values("acc_calibrated") == b.values("acc_calibrated")
    assert cached.records()[0]["choice_ll"] == pytest.approx(base[0])


def test_a_subset_is_calibrated_on_its_own_documents_and_bad_gold_is_refused(tmp_path):
    """A run asked for fewer documents (the report's matrix cells) is centred over those
    documents only, as a run of just those documents would be; the parent keeps its values."""
    rows = [[0.0, -1.0, -2.0], [-3.0, 0.0, -0.5], [-2.0, -1.0, 0.0], [-0.1, -0.2, -9.0]]
    golds = [0, 1, 2, 1]
    full = TaskResult("t", [doc_record(_mc(d, r, golds[d])) for d, r in enumerate(rows)])
    from relneuron_eval.evaluation.prior_robust import add_calibrated

    add_calibrated(full.docs)
    before = full.values("acc_calibrated")
    part = full.subset({0, 3})
    alone = TaskResult("t", [doc_record(_mc(d, rows[d], golds[d])) for d in (0, 3)])
    add_calibrated(alone.docs)
    assert part.values("acc_calibrated") == alone.values("acc_calibrated")
    assert part.values("acc_calibrated") != full.subset({0, 1, 2, 3}).values("acc_calibrated")[::3]
    assert full.values("acc_calibrated") == before
    with pytest.raises(RelNeuronError, match="needs at least 2 documents"):
        full.subset({0}).values("acc_calibrated")
    with pytest.raises(RelNeuronError, match="relfacts MC task"):
        TaskResult("t", [doc_record(_raw(0, 1.0, "x"))]).values("acc_calibrated")
    with pytest.raises(RelNeuronError, match=r"document 1: gold index \[7\] outside its 3"):
        add_calibrated([doc_record(_mc(0, rows[0], 0)), doc_record(_mc(1, rows[1], 7))])


# ====================================================================== slow
@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same evaluation (tiny Llama, group a ablated, 3 docs of toy_group and of
    relfacts_2hop) from the lm_eval CLI's files and from the runner in this process."""
    import tools_helpers as th

    from relneuron_eval.evaluation.runner import LoadedModel, evaluate
    from relneuron_eval.harness.task_index import task_manager, with_metadata

    root = tmp_path_factory.mktemp("live-vs-files")
    model = th.tiny_model()
    nset = th.make_neuron_set(root / "set.jsonl", {"a": 40})
    args = {"pretrained": str(model), "neuron_set": str(nset), "groups": "a"}
    tasks = ["toy_group", "relfacts_2hop", "relfacts_mc_country_on_continent"]
    results_file = th.run_lm_eval(
        "relneuron-hf",
        ",".join(f"{k}={v}" for k, v in args.items()),
        root / "out",
        tasks=",".join(tasks),
        limit=3,
    )
    loaded = LoadedModel.from_model_args({"pretrained": str(model)}, device="cpu", batch_size=8)
    manager = task_manager(tasks, include=[str(th.toy_tasks())])
    live = evaluate(
        loaded, args, tasks, label="v", task_manager=with_metadata(manager, args), limit=3
    )
    return live, from_files(results_file), loaded


@pytest.mark.slow
def test_live_and_files_give_equal_results(both):
    live, (identity, files), _ = both
    assert (
        sorted(live)
        == sorted(files)
        == [
            "relfacts_2hop",
            "relfacts_mc_country_on_continent",
            "toy_a",
            "toy_b",
            "toy_group",
        ]
    )
    assert identity["relneuron"]["groups"] == ["a"]
    assert live["toy_a"].info == files["toy_a"].info == identity["relneuron"]
    for name, a in live.items():
        b = files[name]
        assert (a.is_group, a.subtasks, a.n_docs, a.version) == (
            b.is_group,
            b.subtasks,
            b.n_docs,
            b.version,
        ), name
        assert a.metrics.keys() == b.metrics.keys() and a.metrics, name
        for key, value in a.metrics.items():
            assert value == pytest.approx(b.metrics[key], abs=1e-12), (name, key)
            se_a, se_b = a.stderrs[key], b.stderrs[key]
            assert (se_a is None) == (se_b is None), (name, key)
            assert se_a is None or math.isclose(se_a, se_b, abs_tol=1e-12), (name, key)
        if a.is_group:
            continue
        assert b.docs is None and b.samples  # read from the log on first use
        assert a.records(None) == b.records(None) and len(a.records()) == 3, name
        for metric, filt in a.metrics:
            assert a.values(metric, filt) == b.values(metric, filt)
            assert a.paired(b, metric, filt) == (a.values(metric, filt),) * 2
            assert TaskResult.from_dict(a.to_dict()).by_doc(metric) == b.by_doc(metric)
        a.check_means()
        b.check_means()
    hop = live["relfacts_2hop"].records()
    assert all(r["hop1_fact"] and r["id"] and "generation" in r for r in hop)


@pytest.mark.slow
def test_calibrated_accuracy_of_a_real_mc_run_is_read_alike_live_and_from_the_log(both):
    """lm-eval's multiple-choice records carry every object's log-likelihood (tuples live,
    strings in the log): both give the same ``acc_calibrated``, recomputed here with numpy
    from the logged numbers, and the raw argmax agrees with lm-eval's own ``acc``."""
    import numpy as np

    live, (_, files), _ = both
    a, b = live["relfacts_mc_country_on_continent"], files["relfacts_mc_country_on_continent"]
    assert a.values("acc_calibrated") == b.values("acc_calibrated")
    rows = b.records()
    lls = np.array([r["choice_ll"] for r in rows])
    assert lls.shape == (3, len(rows[0]["choice_ll"])) and lls.shape[1] > 2
    raw = [float(np.argmax(x) in r["gold"]) for x, r in zip(lls, rows, strict=True)]
    assert raw == b.values("acc")
    centred = lls - lls.mean(axis=0)
    expected = [float(np.argmax(x) in r["gold"]) for x, r in zip(centred, rows, strict=True)]
    assert b.values("acc_calibrated") == expected


@pytest.mark.slow
def test_the_runner_restores_the_weights_and_refuses_unknown_models(both, tmp_path):
    from relneuron_eval.evaluation.runner import LoadedModel, evaluate

    _, _, loaded = both
    loaded.check_restored("the slow test")  # the ablation left the weights as loaded
    missing = LoadedModel.from_model_args(
        {"pretrained": str(tmp_path / "no-model")}, device="cpu", batch_size=1
    )
    with pytest.raises(RelNeuronError, match="evaluation of base failed") as info:
        evaluate(missing, {}, ["toy_a"], label="base", task_manager=None, hint="model ?")
    assert str(tmp_path / "no-model") in str(info.value) and info.value.hint == "model ?"
    assert not Path(tmp_path / "no-model").exists()
