"""``relneuron report``'s uncertainty: intervals, detectable effects, variance split,
several top-ks and several control seeds.

* pure parts by hand: the variance split (method of moments), the pooled interval
  against a direct computation over the concatenated documents, ``--top-k`` parsing;
* a stub report (hand-designed outcomes, see ``test_report.HandEval``) with
  ``--seeds 0,1,2 --top-k 40,10``: seed means and ranges, one section and figure per k;
* a tiny random Llama through the CLI with two seeds and two top-ks.
"""

from __future__ import annotations

import copy
import json
import math
from statistics import NormalDist

import pytest
from test_report import HandEval, R, _args, smol_set

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.statistics import min_detectable_drop
from relneuron_eval.report.analysis import (
    doc_moments,
    parse_top_ks,
    pooled_over_documents,
    variance_split,
    wilson,
)


# ================================================================ pure parts
def test_variance_split_by_hand():
    # relation means 0.2, 0.4, 0.6: observed variance 0.04; sampling variances
    # 0.16/10, 0.16/10, 0.25/20 -> mean 0.0148333; between = 0.04 - 0.0148333
    v = variance_split([(10, 0.2, 0.4), (10, 0.4, 0.4), (20, 0.6, 0.5)])
    within = (0.016 + 0.016 + 0.0125) / 3
    assert v["se_mean_total"] == pytest.approx(math.sqrt(0.04 / 3))
    assert v["se_mean_within"] == pytest.approx(math.sqrt(within / 3))
    assert v["sd_between_true"] == pytest.approx(math.sqrt(0.04 - within))
    assert v["within_share"] == pytest.approx(within / 0.04)
    assert v["se_mean_total"] ** 2 == pytest.approx(
        v["se_mean_within"] ** 2 + v["se_mean_between"] ** 2
    )
    # relations closer together than sampling noise: no between-relation spread left
    close = variance_split([(10, 0.50, 0.5), (10, 0.52, 0.5)])
    assert close["se_mean_between"] == 0.0 and close["within_share"] == 1.0
    assert variance_split([(10, 0.5, 0.5)]) is None


def test_pooled_interval_equals_a_direct_computation_over_documents():
    docs = [[1, 0, 1, 1, 0.5], [0, 0, 1], [1, 1, 1, 1, 0, 0, 0.25]]
    cells = [(len(d), *doc_moments(d)) for d in docs]
    pooled = pooled_over_documents(cells, [0.3, 0.2, 0.1], [0.0, 0.1, 0.0])
    flat = [x for d in docs for x in d]
    mean, sd = doc_moments(flat)
    half = NormalDist().inv_cdf(0.975) * sd / math.sqrt(len(flat))
    assert pooled["n_docs"] == 15 and pooled["mean_difference"] == pytest.approx(mean)
    assert pooled["ci95"] == [pytest.approx(mean - half), pytest.approx(mean + half)]
    assert pooled["mean_own_drop"] == pytest.approx((5 * 0.3 + 3 * 0.2 + 7 * 0.1) / 15)
    assert pooled_over_documents([(1, 0.5, 0.0)], [0.1], [0.0]) is None


def test_top_k_takes_one_integer_or_a_list():
    assert parse_top_ks("3000") == [3000] and parse_top_ks(3000) == [3000]
    assert parse_top_ks("3000, 400") == [3000, 400]  # order kept: the first is primary
    for bad in ("", "0", "400,x", "400,400"):
        with pytest.raises(RelNeuronError, match="--top-k"):
            parse_top_ks(bad)
    assert wilson([0.0, 1.0, 1.0]) is not None
    assert wilson([0.5, 1.0]) is None and wilson([]) is None  # seed means are not 0/1


# ====================================================== seeds and ks, by hand
class SeedEval(HandEval):
    """HandEval, but country_capital_city's random control with seed s also gets the
    documents d < s wrong: seeds 0, 1, 2 score 30, 29 and 28 of its 40 documents."""

    def __call__(self, variant, samples):
        out = super().__call__(variant, samples)
        spec = variant.spec
        if spec.control and spec.groups == "country_capital_city":
            for task, run in out.items():
                if task == "relfacts_country_capital_city":
                    for rec in run.docs:
                        if rec["doc_id"] < spec.seed:
                            rec["acc_prefix2"] = 0.0
        return out


@pytest.fixture(scope="module")
def seeds_report(tmp_path_factory):
    from relneuron_eval.report.command import build_setup, run_report

    folder = tmp_path_factory.mktemp("seeds")
    sizes = dict.fromkeys(R, 40) | {"country_capital_city": 60, "company_hq": 50}
    rs = smol_set(folder / "rs.jsonl.gz", sizes)
    args = _args(
        folder / "out",
        *("--neuron-set", str(rs), "--relations", ",".join(R), "--seeds", "0,1,2"),
        *("--top-k", "40,10", "--limit-own", "40", "--limit", "20", "--ks", "10,all"),
        *("--experiments", "interference,cumulativity"),
        *("--matrix-relations", "country_capital_city,company_hq"),
        *("--cumulativity-relations", "country_capital_city,company_hq"),
    )
    setup, notes = build_setup(args, check_model=False)
    results, runner = run_report(setup, SeedEval(set()), notes=notes, progress=False)
    return {"results": results, "runner": runner, "setup": setup, "out": folder / "out"}


def test_three_seeds_average_and_spread(seeds_report):
    res = seeds_report["results"]
    ccc = res["interference"]["per_relation"]["country_capital_city"]
    assert ccc["control_seeds"] == [0.75, pytest.approx(29 / 40), 0.7]
    assert ccc["control"] == pytest.approx(0.725)  # per-document mean over the seeds
    assert ccc["control_ci95"] is None  # seed means are not 0/1: no Wilson interval
    lo, hi = ccc["control_change_ci95"]
    assert lo < -0.025 <= hi <= 0.0
    assert ccc["deact_ci95"] == [0.0, pytest.approx(0.0876, abs=1e-3)]  # Wilson, 0 of 40
    assert ccc["mde"] == pytest.approx(min_detectable_drop(40, 0.75))
    # own drop minus control drop per document = control - deactivated = the control
    hq = res["interference"]["per_relation"]["company_hq"]
    assert hq["difference_mean"] == pytest.approx(0.7)
    assert hq["difference_sd"] == pytest.approx(math.sqrt(40 * 0.7 * 0.3 / 39))
    s = res["interference"]["summary"]
    ok = [c for c in res["interference"]["per_relation"].values() if c["eligible"]]
    assert s["variance_split"] == variance_split(
        [(c["n_docs"], c["difference_mean"], c["difference_sd"]) for c in ok],
        [c["seed_var_of_mean"] for c in ok],
    )
    seeds = [0.75, 29 / 40, 0.7]  # country_capital_city's seed term: var over seeds / 3
    assert ccc["seed_var_of_mean"] == pytest.approx(sum((x - 0.725) ** 2 for x in seeds) / 2 / 3)
    assert s["variance_split"]["sd_seed"] > 0
    assert s["pooled"]["n_docs"] == 40 * len(ok)
    assert s["pooled"]["mean_difference"] == pytest.approx(s["absolute"]["mean_difference"])
    point = res["cumulativity"]["curves"]["country_capital_city"]["points"][0]
    assert point["control_own_seeds"] == [0.75, 0.7, 0.65]  # 20 documents: 15, 14, 13
    assert point["own_ci95"][0] == 0.0 and point["n_docs"] == 20
    md = (seeds_report["out"] / "report.md").read_text()
    assert "72.5% (70.0%–75.0% over 3 seeds)" in md
    assert "65.0%–75.0% over 3 seeds" in md  # the cumulativity table
    assert "pooled over documents (another estimand)" in md and "MDE" in md


def test_one_section_and_figure_per_top_k(seeds_report):
    res, setup, runner = (seeds_report[k] for k in ("results", "setup", "runner"))
    assert res["meta"]["top_ks"] == [40, 10] and res["interference"]["top_k"] == 40
    (k10,) = res["interference_more_k"]
    assert k10["top_k"] == 10 and set(k10["per_relation"]) == set(R)
    assert set(k10["matrix"]["own"]["rows"]) == {"country_capital_city", "company_hq"}
    # k=10 is its own evaluation (k=40 is the whole group of 40 for three relations)
    task, metric = setup.task("landmark_in_country")
    docs = setup.docs(task, own=True)
    assert runner.get(setup.deact("landmark_in_country", 10), task, docs).values(metric)
    assert setup.deact("landmark_in_country", 10) != setup.deact("landmark_in_country", 40)
    saved = json.loads((seeds_report["out"] / "results.json").read_text())
    assert saved["interference_more_k"][0]["headline"].startswith(
        "Deactivating a relation's top-10 neurons"
    )
    for name in ("specificity_k10.png", "interference_k10.png", "specificity.png"):
        assert name in saved["figures"]
        assert (seeds_report["out"] / name).read_bytes()[:4] == b"\x89PNG"
    md = (seeds_report["out"] / "report.md").read_text()
    assert "## Interference and specificity: top-40 neurons (headline)" in md
    assert "## Interference and specificity: top-10 neurons" in md
    assert "At top-10: Deactivating" in md and "![specificity](specificity_k10.png)" in md
    assert md.index("top-40 neurons (headline)") < md.index("top-10 neurons\n")


def test_one_top_k_renders_as_before(seeds_report):
    from relneuron_eval.report.markdown import render

    res = copy.deepcopy(seeds_report["results"])
    del res["interference_more_k"]
    res["meta"]["top_ks"] = [40]
    md = render(res)
    assert "## Interference and specificity\n" in md and "At top-" not in md
    assert "| top-k (interference, versatility) | 40 |" in md


# ====================================================== end to end, tiny model
def test_two_seeds_and_two_top_ks_on_a_tiny_llama(tmp_path):
    from tools_helpers import TINY, tiny_model

    from relneuron_eval import cli

    rs = smol_set(
        tmp_path / "rs.jsonl.gz", {"country_capital_city": 20, "company_hq": 20}, shape=dict(TINY)
    )
    out = tmp_path / "report"
    argv = ["report", "--model", str(tiny_model()), "--neuron-set", str(rs), "--out", str(out)]
    argv += ["--experiments", "interference", "--seeds", "0,1", "--top-k", "10,5"]
    argv += ["--limit", "2", "--limit-own", "3", "--matrix-relations", "all", "--min-base", "0"]
    argv += ["--device", "cpu", "--batch-size", "8", "--threads", "1", "--no-progress"]
    assert cli.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    for inter, k in ((res["interference"], 10), (res["interference_more_k"][0], 5)):
        assert inter["top_k"] == k
        for cell in inter["per_relation"].values():
            assert len(cell["control_seeds"]) == 2 and cell["n_units"] == k
            assert cell["control"] == pytest.approx(sum(cell["control_seeds"]) / 2)
            lo, hi = cell["change_ci95"]
            assert lo <= -cell["drop"] <= hi
    assert {"specificity.png", "specificity_k5.png", "interference_k5.png"} <= set(res["figures"])


def test_seed_whiskers_survive_a_mean_that_rounds_outside_the_range():
    """Three equal seeds of 0.35 average to 0.34999...: matplotlib rejects a negative
    whisker, which once crashed a full report after all its evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from relneuron_eval.report.plots import _own_bands

    seeds = [0.35, 0.35, 0.35]
    assert sum(seeds) / 3 < min(seeds)  # the rounding this test is about
    points = [{"control_own": sum(seeds) / 3, "control_own_seeds": seeds, "own_ci95": None}]
    fig, ax = plt.subplots()
    _own_bands(ax, [10], points)
    (bars,) = [c for c in ax.containers]
    lower, upper = bars.lines[2][0].get_segments()[0][:, 1]
    assert lower == pytest.approx(35.0) and upper == pytest.approx(35.0)
    plt.close(fig)
