"""``relneuron_eval.evaluation.statistics``: the shared significance tests, checked against scipy.

* exact McNemar against ``scipy.stats.binomtest`` on the discordant pairs;
* the paired t-test against ``scipy.stats.ttest_rel``; its edge cases (n < 2, zero variance);
* the z-test on standard errors against the normal tail;
* the dispatch rule (0/1 -> McNemar, else t) on ints, bools, floats, empty and mixed input;
* the seeded percentile bootstrap;
* the Wilson interval against scipy; the minimum detectable drop against the textbook
  sample size (Fleiss: 0.5 vs 0.4 needs 388 per arm) and a simulation of its power;
* the rule is defined once: no other module of the package carries a test of its own,
  and importing the module pulls in neither torch nor lm-eval.
"""

from __future__ import annotations

import ast
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats as sp

from relneuron_eval.evaluation.statistics import (
    MCNEMAR,
    PAIRED_T,
    PairedTest,
    bootstrap_ci,
    mcnemar_exact,
    min_detectable_drop,
    paired_t,
    paired_test,
    stderr_z,
    two_proportion_power,
    wilson_ci,
)
from relneuron_eval.relcheck import judge as relcheck_judge

PACKAGE = Path(__file__).resolve().parents[2] / "relneuron_eval"


def _binary_pairs(rng: random.Random, n: int) -> tuple[list[float], list[float]]:
    p, flip = rng.random(), rng.random()
    a = [float(rng.random() < p) for _ in range(n)]
    return a, [x if rng.random() > flip else 1.0 - x for x in a]


# ===================================================================== McNemar
def test_mcnemar_by_hand():
    # 5 documents right before and wrong after, none the other way: p = 2 * 0.5**5
    assert mcnemar_exact([1, 1, 1, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0, 1]) == 2 * 0.5**5
    # one discordant pair each way: the two-sided tail exceeds 1 and is clipped
    assert mcnemar_exact([1, 0], [0, 1]) == 1.0
    assert mcnemar_exact([1, 1, 0], [1, 1, 0]) == 1.0  # no discordant pair
    assert mcnemar_exact([], []) == 1.0


def test_mcnemar_matches_scipy_binomtest():
    rng = random.Random(0)
    for _ in range(200):
        a, b = _binary_pairs(rng, rng.choice([1, 2, 5, 20, 100, 300]))
        right_wrong = sum(1 for x, y in zip(a, b, strict=True) if x == 1 and y == 0)
        wrong_right = sum(1 for x, y in zip(a, b, strict=True) if x == 0 and y == 1)
        if right_wrong + wrong_right == 0:
            assert mcnemar_exact(a, b) == 1.0
            continue
        expected = sp.binomtest(right_wrong, right_wrong + wrong_right, 0.5).pvalue
        assert mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-300)


# ==================================================================== paired t
def test_paired_t_matches_scipy_ttest_rel():
    rng = random.Random(1)
    for _ in range(200):
        n = rng.choice([2, 3, 5, 30, 200])
        a = [rng.gauss(0, 1) for _ in range(n)]
        b = [x + rng.gauss(rng.choice([0.0, 0.2, 1.0]), 0.5) for x in a]
        expected = sp.ttest_rel(b, a).pvalue
        assert paired_t(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-300)
        assert paired_t(b, a) == pytest.approx(expected, rel=1e-9, abs=1e-300)  # two-sided


def test_paired_t_edge_cases():
    assert paired_t([], []) == 1.0
    assert paired_t([0.2], [0.9]) == 1.0  # one pair: no variance to test against
    assert paired_t([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]) == 1.0  # no difference at all
    assert paired_t([0.0, 0.25, 0.5], [0.5, 0.75, 1.0]) == 0.0  # constant shift: no noise
    with pytest.raises(ValueError):
        paired_t([0.1, 0.2], [0.1])


# ====================================================================== z-test
def test_stderr_z_matches_normal_tail():
    rng = random.Random(2)
    for _ in range(100):
        delta, se_a, se_b = rng.gauss(0, 0.1), rng.random() / 10, rng.random() / 10
        expected = 2 * sp.norm.sf(abs(delta) / math.hypot(se_a, se_b))
        assert stderr_z(delta, se_a, se_b) == pytest.approx(expected, rel=1e-9)
    assert stderr_z(0.1, None, 0.01) is None and stderr_z(0.1, 0.01, None) is None
    assert stderr_z(0.1, 0.0, 0.0) is None  # no noise estimate: no test, not p = 0
    assert stderr_z(0.0, 0.01, 0.02) == 1.0


# ==================================================================== dispatch
@pytest.mark.parametrize(
    ("a", "b", "test"),
    [
        ([1, 0, 1], [0, 0, 1], MCNEMAR),
        ([True, False], [False, False], MCNEMAR),
        ([1.0, 0.0], [0.0, 0.0], MCNEMAR),
        ([], [], MCNEMAR),
        ([1.0, 0.0, 1.0], [0.5, 0.0, 1.0], PAIRED_T),  # one non-0/1 value is enough
        ([0.5, 0.2, 0.1], [0.5, 0.2, 0.1], PAIRED_T),
    ],
)
def test_paired_test_dispatch(a, b, test):
    got = paired_test(a, b)
    assert isinstance(got, PairedTest) and got.test == test
    p, name = got  # unpacks like the (p, test) tuples callers used before
    assert name == test
    assert p == (mcnemar_exact(a, b) if test == MCNEMAR else paired_t(a, b))


def test_paired_test_refuses_different_lengths():
    with pytest.raises(ValueError, match="different length"):
        paired_test([1.0], [1.0, 0.0])


def test_relcheck_uses_the_shared_rule():
    rng = random.Random(3)
    for _ in range(50):
        pairs = _binary_pairs(rng, rng.choice([1, 10, 40]))
        if rng.random() < 0.5:
            pairs = (pairs[0], [y * 0.5 for y in pairs[1]])
        assert relcheck_judge._p_value(pairs) == paired_test(*pairs).p
    assert relcheck_judge._p_value(None) is None
    assert relcheck_judge._p_value(([], [])) is None


# =================================================================== bootstrap
def test_bootstrap_ci():
    assert bootstrap_ci([]) is None and bootstrap_ci([0.5]) is None
    assert bootstrap_ci([0.3, 0.3, 0.3]) == (pytest.approx(0.3), pytest.approx(0.3))
    values = [0.0, 1.0] * 10
    lo, hi = bootstrap_ci(values)
    assert lo < 0.5 < hi
    assert bootstrap_ci(values) == (lo, hi)  # seeded: the same interval every run
    lo90, hi90 = bootstrap_ci(values, level=0.90)
    assert lo <= lo90 < hi90 <= hi  # a lower level gives a narrower interval
    # the mean of 20 fair coins has sd 0.5 / sqrt(20); the 95% interval is about +-1.96 sd
    half = 1.96 * 0.5 / math.sqrt(20)
    assert lo == pytest.approx(0.5 - half, abs=0.05) and hi == pytest.approx(0.5 + half, abs=0.05)


def test_wilson_ci_matches_scipy():
    assert wilson_ci(0, 0) is None
    for k, n in [(0, 10), (3, 10), (10, 10), (45, 50), (1, 990), (500, 990)]:
        ci = sp.binomtest(k, n).proportion_ci(method="wilson")
        assert wilson_ci(k, n) == (pytest.approx(ci.low), pytest.approx(ci.high)), (k, n)
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0 and 0.25 < hi < 0.31  # not a point at 0 successes, unlike Wald
    lo90, hi90 = wilson_ci(3, 10, level=0.90)
    assert wilson_ci(3, 10)[0] < lo90 < hi90 < wilson_ci(3, 10)[1]


def test_min_detectable_drop_against_the_textbook_sample_size():
    # 0.5 -> 0.4 at alpha 0.05 two-sided, power 0.8: n = 387.3 per arm (Fleiss, no
    # continuity correction), so 388 documents detect a 10-point drop and 387 do not
    assert min_detectable_drop(388, 0.5) < 0.1 < min_detectable_drop(387, 0.5)
    assert two_proportion_power(388, 0.5, 0.4) == pytest.approx(0.8, abs=0.002)
    mdes = [min_detectable_drop(n, 0.7) for n in (20, 50, 200, 990)]
    assert mdes == sorted(mdes, reverse=True) and mdes[-1] < 0.07
    assert min_detectable_drop(0, 0.5) is None and min_detectable_drop(50, 0.0) is None
    assert min_detectable_drop(3, 0.2) is None  # even a drop to 0 is not detectable
    assert min_detectable_drop(50, 0.8, power=0.9) > min_detectable_drop(50, 0.8)


def test_power_of_a_certain_difference_still_needs_enough_documents():
    """p1 = 1 vs p2 = 0 has no spread under the alternative, but with one document per
    arm the test statistic (sqrt 2) is below 1.96: no power; with 3 it is above."""
    assert two_proportion_power(1, 1.0, 0.0) == 0.0
    assert two_proportion_power(3, 1.0, 0.0) == 1.0
    assert min_detectable_drop(1, 1.0) is None
    assert min_detectable_drop(3, 1.0) is not None


def test_min_detectable_drop_has_its_power_in_simulation():
    # two independent arms of n documents at base and base - mde, tested with the
    # pooled two-proportion z-test: rejected in about 80 % of 4000 draws
    rng = random.Random(5)
    n, base = 200, 0.6
    drop = min_detectable_drop(n, base)
    hits = 0
    for _ in range(4000):
        a = sum(rng.random() < base for _ in range(n))
        b = sum(rng.random() < base - drop for _ in range(n))
        pooled = (a + b) / (2 * n)
        se = math.sqrt(2 * pooled * (1 - pooled) / n)
        hits += se > 0 and abs(a - b) / n / se > 1.959964
    assert hits / 4000 == pytest.approx(0.8, abs=0.025)


# ============================================================ one definition
def test_the_tests_are_defined_only_here():
    names = {"mcnemar_exact", "paired_t", "paired_test", "paired_p", "stderr_z", "bootstrap_ci"}
    names |= {"_t_sf", "is_binary", "wilson_ci", "min_detectable_drop", "two_proportion_power"}
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "evaluation" / "statistics.py":
            continue
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in names:
                found.append(f"{path.name}:{node.lineno} {node.name}")
        for marker in ("math.comb", "scipy.stats", "ttest", "binom"):
            if marker in source:
                found.append(f"{path.name}: {marker}")
    assert found == []


def test_statistics_imports_neither_torch_nor_lm_eval():
    code = (
        "import sys, relneuron_eval.evaluation.statistics\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lm_eval')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_seed_aware_test_refuses_empty_and_non_finite_outcomes():
    from relneuron_eval.evaluation.statistics import seed_aware_test

    with pytest.raises(ValueError, match="no documents"):
        seed_aware_test([], [[], []])
    with pytest.raises(ValueError, match="non-finite"):
        seed_aware_test([1.0, float("nan")], [[1.0, 0.0], [0.0, 1.0]])
