"""Leaderboard scores and settings by hand: Cause, Isolate, areas, tests, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.leaderboard.grid import deranged
from relneuron_eval.leaderboard.scores import area, comparisons, summarize
from relneuron_eval.leaderboard.settings import load_settings


def test_area_is_the_trapezoid_over_log_k_on_the_scores_scale():
    assert area(np.array([0.2, 0.2, 0.2]), [10, 100, 1000]) == pytest.approx(0.2)
    # 0 at k=10, 1 at k=100, 1 at k=1000: (0.5 * 1 + 1 * 1) / 2
    assert area(np.array([0.0, 1.0, 1.0]), [10, 100, 1000]) == pytest.approx(0.75)
    assert area(np.array([0.3]), [50]) == pytest.approx(0.3)


def _outcomes():
    """3 relations, 2 methods, 2 budgets; 4 documents each."""
    base = {"a": [1, 1, 1, 1], "b": [1, 1, 0, 0], "c": [1, 0, 0, 0]}
    cells = {}
    for m, drop in (("m1", 1), ("m2", 0)):
        for k in (10, 100):
            cells[(m, k, 0)] = {
                "a": [0, 0, 1, 1] if drop else [1, 1, 1, 1],
                "b": [0, 1, 0, 0] if drop else [1, 1, 0, 0],
                "c": [0, 0, 0, 0] if drop and k == 100 else [1, 0, 0, 0],
            }
            cells[(m, k, 1)] = {"a": [1, 1, 1, 0], "b": [1, 1, 0, 0], "c": [1, 0, 0, 0]}
    return {"base": base, "cells": cells}


def test_cause_isolate_disentangle_by_hand():
    out = summarize(_outcomes(), ["m1", "m2"], [10, 100], [1], ["a", "b", "c"], boot=200)
    rel = out["per_relation"]["m1"]
    # Cause of a under m1: base 1.0 -> 0.5, relative drop 0.5; of c at k=100: 1.0
    assert rel["a"]["cause"] == pytest.approx([0.5, 0.5])
    assert rel["b"]["cause"] == pytest.approx([0.5, 0.5])
    assert rel["c"]["cause"] == pytest.approx([0.0, 1.0])
    # shift 1: relation j's documents get j+1's units, so b's units hit a (1 -> 0.75),
    # c's hit b (no drop), a's hit c (no drop)
    assert rel["b"]["isolate"] == pytest.approx([0.75, 0.75])
    assert rel["c"]["isolate"] == pytest.approx([1.0, 1.0])
    assert rel["a"]["isolate"] == pytest.approx([1.0, 1.0])
    assert rel["c"]["disentangle"] == pytest.approx([0.5, 1.0])
    assert rel["c"]["area_disentangle"] == pytest.approx(0.75)
    # over relations: mean and the Student-t interval
    d = [rel[r]["area_disentangle"] for r in ("a", "b", "c")]
    cell = out["per_method"]["m1"]["area_disentangle"]
    half = stats.t.ppf(0.975, 2) * np.std(d, ddof=1) / math.sqrt(3)
    assert cell["mean"] == pytest.approx(np.mean(d))
    assert cell["ci"] == pytest.approx([np.mean(d) - half, np.mean(d) + half])


def test_paired_comparisons_are_paired_t_with_holm():
    values = np.array([[0.5, 0.6, 0.7, 0.9], [0.4, 0.6, 0.5, 0.6], [0.1, 0.2, 0.1, 0.3]])
    pairs = comparisons(values, ["x", "y", "z"])
    raw = [stats.ttest_rel(values[a], values[b]).pvalue for a, b in ((0, 1), (0, 2), (1, 2))]
    assert [p["p"] for p in pairs] == pytest.approx(raw)
    order = np.argsort(raw)
    holm = np.empty(3)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, raw[i] * (3 - rank)))
        holm[i] = running
    assert [p["p_holm"] for p in pairs] == pytest.approx(holm.tolist())
    assert pairs[0]["diff"] == pytest.approx(np.mean(values[0] - values[1]))


def test_derangement_moves_every_relations_units_to_the_next(llama):
    from conftest import random_set

    s = random_set(llama, groups=("a", "b", "c"), per_site=2)
    moved = deranged(s, ["a", "b", "c"], 1)
    units = {g: {n.unit for n in s.neurons if n.group == g} for g in "abc"}
    got = {g: {n.unit for n in moved.neurons if n.group == g} for g in "abc"}
    assert got == {"a": units["b"], "b": units["c"], "c": units["a"]}


BAD = [
    ("budgets: [10, 3]\nrelations: [a, b]\nmethods: [diffmean]\n", 1, "increasing"),
    ("budgets: [10]\nrelations: [a, b]\nmethods:\n  - diffmean\n  - bogus\n", 5, "unknown method"),
    ("budgets: [10]\nrelations: [a, b]\nmethods:\n  - name: random\n", 4, "needs `of:`"),
    (  # a derived method of a derived one never runs: the grid would wait for it forever
        "budgets: [10]\nrelations: [a, b]\nmethods:\n  - diffmean\n  - name: random\n"
        "    of: diffmean\n  - name: random-matched\n    of: random\n",
        7,
        "needs `of:`",
    ),
    ("budgets: [10]\nrelations: [a, b]\nmetric: f1\nmethods: [diffmean]\n", 3, "unknown metric"),
    ("budgets: [10]\nrelations: [a, b]\nisolate_shifts: [2]\nmethods: [diffmean]\n", 3, "onto"),
    ("budgets: [10]\nrelations: [a, b]\nmethods: [diffmean]\nbugdets: 1\n", 4, "unknown key"),
    (
        "budgets: [10]\nrelations:\n  - company_hq\n  - compnay_hq\nmethods: [diffmean]\n",
        4,
        "compnay",
    ),
]


@pytest.mark.parametrize(("text", "line", "words"), BAD)
def test_bad_settings_name_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(RelNeuronError) as err:
        load_settings(path)
    assert f"{path}:{line}:" in str(err.value) and words in str(err.value)


def test_the_shipped_settings_load():
    from conftest import REPO

    settings = load_settings(REPO / "docs/leaderboard/settings.yaml")
    assert settings.budgets == [10, 30, 100, 300, 1000, 3000]
    assert {m.name for m in settings.methods} >= {"relation-specific", "random", "diffmean"}


def test_relations_above_a_control_are_also_counted_after_holm():
    """Per relation a bootstrap interval says 'above random'; with several relations some
    of those are chance, so the board also counts them with Holm-adjusted bootstrap p."""
    rng = np.random.default_rng(1)
    rels = [f"r{i}" for i in range(6)]
    n = 40
    base = {r: [1] * n for r in rels}
    cells = {}
    for k in (10, 100):
        # m drops its own relation strongly on r0-r2 and barely on r3-r5; random never
        cells[("m", k, 0)] = {
            r: ([0] * 30 + [1] * 10 if i < 3 else (rng.random(n) < 0.9).astype(int).tolist())
            for i, r in enumerate(rels)
        }
        cells[("random", k, 0)] = {r: [1] * n for r in rels}
        for m in ("m", "random"):
            cells[(m, k, 1)] = {r: [1] * n for r in rels}
    out = summarize({"base": base, "cells": cells}, ["m", "random"], [10, 100], [1], rels)
    vs = out["vs_control"]["random"]["m"]
    assert vs["relations_above_holm"] <= vs["relations_above"]
    assert vs["relations_above_holm"] >= 3  # the three strong ones survive
    strong = [vs["p_holm"][r] for r in rels[:3]]
    assert all(p < 0.05 for p in strong)
    assert set(vs["p_holm"]) == set(rels) and vs["of"] == 6
