"""The significance tests every command shares: one place for the paired-test rule.

``compare``, ``report`` and ``relcheck`` all ask the same question of two runs on the
same documents: is the difference larger than noise? :func:`paired_test` answers it
with one rule, kept here so the three can never disagree: 0/1 outcomes (``acc``-like
metrics) get the exact McNemar test, anything else a paired t-test. Without per-document
values, :func:`stderr_z` tests a difference against lm-eval's standard errors; the
report's intervals come from :func:`bootstrap_ci` and :func:`wilson_ci`, its minimum
detectable effects from :func:`min_detectable_drop`.

Pure Python (math and random, no torch or lm-eval) so every p-value can be checked by
hand; scipy, when installed (it comes with lm-eval), supplies Student's t tail.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from statistics import NormalDist
from typing import NamedTuple

MCNEMAR = "mcnemar"
PAIRED_T = "paired-t"
STDERR_Z = "stderr-z"  # the fallback without per-document values (compare's label)


class PairedTest(NamedTuple):
    """A paired test's two-sided p-value and which test made it (unpacks as ``p, test``)."""

    p: float
    test: str  # MCNEMAR or PAIRED_T


def is_binary(values: Sequence[float]) -> bool:
    """True when every value is 0 or 1 (an empty sequence counts as binary)."""
    return all(v in (0, 1) for v in values)


def paired_test(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Two-sided p-value of a paired difference: exact McNemar for 0/1 outcomes, else t.

    ``a`` and ``b`` are the same documents' values under two conditions; a different
    length is a programming error (``ValueError``), never a silent truncation.
    """
    if len(a) != len(b):
        raise ValueError("paired samples of different length")
    if is_binary(a) and is_binary(b):
        return PairedTest(mcnemar_exact(a, b), MCNEMAR)
    return PairedTest(paired_t(a, b), PAIRED_T)


def mcnemar_exact(base: Sequence[float], variant: Sequence[float]) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes.

    Only discordant pairs carry information: ``b`` = right before and wrong after, ``c`` =
    the reverse. Under no change each discordant pair is a fair coin, so
    ``p = min(1, 2 * P(Binomial(b + c, 1/2) <= min(b, c)))``.
    """
    b = sum(1 for x, y in zip(base, variant, strict=True) if x >= 0.5 > y)
    c = sum(1 for x, y in zip(base, variant, strict=True) if y >= 0.5 > x)
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _t_sf(t: float, df: int) -> float:
    """Upper tail of Student's t (scipy when there, else the normal approximation)."""
    try:
        from scipy.stats import t as student_t
    except ImportError:  # pragma: no cover - scipy comes with lm-eval's scikit-learn
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    return float(student_t.sf(t, df))


def paired_t(base: Sequence[float], variant: Sequence[float]) -> float:
    """Two-sided paired t-test p-value on per-document differences (1.0 below 2 pairs)."""
    diffs = [y - x for x, y in zip(base, variant, strict=True)]
    n = len(diffs)
    if n < 2:
        return 1.0
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    if var == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    t = mean / math.sqrt(var / n)
    return min(1.0, 2.0 * _t_sf(abs(t), n - 1))


def stderr_z(delta: float, se_base: float | None, se_variant: float | None) -> float | None:
    """Two-sided p-value of ``delta`` against independent standard errors (None if unknown)."""
    if se_base is None or se_variant is None:
        return None
    se = math.hypot(se_base, se_variant)
    if se == 0.0:
        return None
    return math.erfc(abs(delta) / se / math.sqrt(2.0))


def bootstrap_ci(
    values: Sequence[float], *, iters: int = 10000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean (seeded; None for fewer than 2 values)."""
    if len(values) < 2:
        return None
    rng = random.Random(f"relneuron-bootstrap:{seed}")
    n = len(values)
    means = sorted(sum(rng.choice(values) for _ in range(n)) / n for _ in range(iters))
    lo = means[math.floor((1 - level) / 2 * iters)]
    hi = means[min(iters - 1, math.ceil((1 + level) / 2 * iters) - 1)]
    return lo, hi


def _z(level: float) -> float:
    """Two-sided standard-normal quantile for a confidence ``level`` (1.96 for 0.95)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_ci(successes: float, n: int, *, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (None for n = 0).

    Unlike the normal (Wald) interval it stays inside [0, 1] and does not collapse to a
    point at 0 or n successes, which matters for accuracies near 0 % or 100 %.
    """
    if n <= 0:
        return None
    z = _z(level)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)  # exact ends, no 1e-17
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return lo, hi


def two_proportion_power(n: int, p1: float, p2: float, *, alpha: float = 0.05) -> float:
    """Power of the two-sided two-proportion z-test with ``n`` documents per arm
    (normal approximation, pooled variance under the null)."""
    if n <= 0 or p1 == p2:
        return alpha if n > 0 else 0.0
    pbar = (p1 + p2) / 2
    null_sd = math.sqrt(2 * pbar * (1 - pbar) / n)
    alt_sd = math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n)
    if alt_sd == 0.0:  # p1, p2 in {0, 1}: the observed difference is certain
        return 1.0 if abs(p1 - p2) > _z(1 - alpha) * null_sd else 0.0
    return NormalDist().cdf((abs(p1 - p2) - _z(1 - alpha) * null_sd) / alt_sd)


def min_detectable_drop(
    n: int, base: float, *, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """Smallest drop ``d`` of an accuracy ``base`` (to ``base - d``) that a two-sided
    two-proportion z-test on ``n`` documents per arm detects with ``power`` at ``alpha``.

    None when even a drop to 0 is not detectable (or ``n`` is 0). A paired test of the
    same documents (McNemar) is at least as sensitive when the two conditions' outcomes
    are positively correlated, so this is a conservative yardstick for a null result.
    """
    if n <= 0 or base <= 0.0 or two_proportion_power(n, base, 0.0, alpha=alpha) < power:
        return None
    lo, hi = 0.0, base  # power grows with the drop: bisect for the smallest one
    for _ in range(60):
        mid = (lo + hi) / 2
        if two_proportion_power(n, base, base - mid, alpha=alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi
