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

import functools
import math
import random
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any, NamedTuple

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
    return _percentile_interval(means, level)


def _percentile_interval(means: Sequence[float], level: float) -> tuple[float, float]:
    """The percentile interval of sorted bootstrap means (the one rule of every bootstrap here)."""
    iters = len(means)
    lo = means[math.floor((1 - level) / 2 * iters)]
    hi = means[min(iters - 1, math.ceil((1 + level) / 2 * iters) - 1)]
    return float(lo), float(hi)


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


# ============================================== controls with several seeds
SEED_Z = "seed-z"  # own vs the control distribution, seed variance included


class SeedTest(NamedTuple):
    """Own vs random controls of several seeds: p, the test, and what went into it."""

    p: float
    test: str  # SEED_Z, or paired_test's with one seed
    se: float | None  # standard error of the difference (None with one seed)
    seed_sd: float | None  # SD of the control's accuracy over seeds (None with one seed)


def seed_aware_test(own: Sequence[float], controls: Sequence[Sequence[float]]) -> SeedTest:
    """Two-sided p of own vs the control *distribution*, not vs one control mean.

    ``controls`` holds one per-document row per seed. The seed-mean control ``c̄`` is a
    draw from a distribution whose spread over seeds is real: a paired test of ``c̄ -
    own`` over documents treats it as fixed and calls a seed that happened to answer a
    default (landmark_on_continent at k = 400: seeds at 35 / 35 / 69 %) a 9e-33 effect.
    Here ``z = mean(c̄ - own) / sqrt(var_doc(c̄ - own) / n + var(seed accuracies) / S)``
    with a normal tail. One seed has no seed variance: :func:`paired_test` (exact McNemar
    on 0/1 outcomes), as before.
    """
    if not controls:
        raise ValueError("no control rows")
    if len(own) == 0:
        raise ValueError("no documents")
    if not all(math.isfinite(x) for row in (own, *controls) for x in row):
        raise ValueError("non-finite outcome")
    if len(controls) == 1:
        p, test = paired_test(controls[0], own)
        return SeedTest(p, test, None, None)
    n = len(own)
    seeds = len(controls)
    cbar = [sum(col) / seeds for col in zip(*controls, strict=True)]
    diffs = [c - o for c, o in zip(cbar, own, strict=True)]
    accs = [sum(row) / n for row in controls]
    seed_var = _var(accs)
    doc_var = _var(diffs) if n > 1 else 0.0
    se = math.sqrt(doc_var / n + seed_var / seeds)
    mean = sum(diffs) / n
    if se == 0.0:
        p = 1.0 if mean == 0.0 else 0.0
    else:
        p = math.erfc(abs(mean) / se / math.sqrt(2.0))
    return SeedTest(min(1.0, p), SEED_Z, se, math.sqrt(seed_var))


def _var(values: Sequence[float]) -> float:
    """Sample variance (n - 1); 0 for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return 0.0
    m = sum(values) / n
    return sum((v - m) ** 2 for v in values) / (n - 1)


def normal_mde(se: float | None, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest difference a two-sided z-test with standard error ``se`` detects with
    ``power``: ``(z_(1-alpha/2) + z_power) * se`` (the seed-aware test's yardstick)."""
    if se is None:
        return None
    return (_z(1 - alpha) + NormalDist().inv_cdf(power)) * se


# ======================================================== multiple testing
def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (family-wise error), None kept in place.

    Sorted ascending, ``p_(i) * (m - i)`` made monotone; a count of ``adjusted < alpha``
    then controls the chance of any false claim in the family at ``alpha``.
    """
    known = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(known)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, p * (m - rank)))
        out[i] = running
    return out


# ================================================== intervals over relations
def t_interval(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of a mean (None below 2 values): over a handful of relations
    the percentile bootstrap is too narrow (it ignores that the SD is estimated)."""
    n = len(values)
    if n < 2:
        return None
    m = sum(values) / n
    sd = math.sqrt(_var(values))
    from scipy.stats import t as student_t

    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return m - half, m + half


def cluster_bootstrap_ci(
    clusters: Sequence[Sequence[float]], *, iters: int = 10000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile interval of the mean over all values when whole clusters are resampled
    (e.g. the off-diagonal cells of one row share its neurons): None below 2 clusters."""
    clusters = [list(c) for c in clusters if len(c)]
    if len(clusters) < 2:
        return None
    rng = random.Random(f"relneuron-cluster-bootstrap:{seed}")
    k = len(clusters)
    means = []
    for _ in range(iters):
        picked = [clusters[rng.randrange(k)] for _ in range(k)]
        means.append(sum(sum(c) for c in picked) / sum(len(c) for c in picked))
    means.sort()
    return _percentile_interval(means, level)


# ===================================================== exact McNemar power
def mcnemar_power(n: int, p_loss: float, p_gain: float, *, alpha: float = 0.05) -> float:
    """Exact power of the two-sided exact McNemar test on ``n`` paired documents when a
    document flips right -> wrong with probability ``p_loss`` and wrong -> right with
    ``p_gain`` (multinomial; summed over the number of discordant pairs)."""
    import numpy as np
    from scipy.stats import binom

    q = p_loss + p_gain
    if n <= 0 or q <= 0.0:
        return 0.0
    m, lo = _mcnemar_bounds(n, alpha)
    share = p_loss / q
    reject = np.where(lo >= 0, binom.cdf(lo, m, share) + binom.sf(m - lo - 1, m, share), 0.0)
    return float(min(1.0, np.sum(binom.pmf(m, n, q) * np.minimum(1.0, reject))))


@functools.lru_cache(maxsize=64)
def _mcnemar_bounds(n: int, alpha: float) -> tuple[Any, Any]:
    """Per number of discordant pairs m = 1..n, the largest b the exact McNemar test
    rejects at (b <= lo or b >= m - lo; -1: none)."""
    import numpy as np
    from scipy.stats import binom

    m = np.arange(1, n + 1)
    lo = binom.ppf(alpha / 2, m, 0.5)
    lo = lo - (2 * binom.cdf(lo, m, 0.5) > alpha)
    return m, lo


def mcnemar_mde(
    n: int, base: float, *, gain: float = 0.0, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """Smallest net drop ``p_loss - gain`` of an accuracy ``base`` that the exact McNemar
    test detects with ``power`` on ``n`` documents, when right answers turn wrong at rate
    ``p_loss`` and wrong ones right at ``gain`` (the test the report actually uses vs
    base; None when even losing every right answer is not detectable)."""
    gain = min(max(gain, 0.0), 1.0 - base)
    if n <= 0 or base <= 0.0 or mcnemar_power(n, base, gain, alpha=alpha) < power:
        return None
    lo, hi = 0.0, base
    for _ in range(20):  # to 1e-6 of the base: far below a reported 0.1 pp
        mid = (lo + hi) / 2
        if mcnemar_power(n, mid, gain, alpha=alpha) >= power:
            hi = mid
        else:
            lo = mid
    return max(0.0, hi - gain)


# ------------------------------------------------------- clustered documents
# Two-hop chains that share a bridge fact are not independent documents: their hop-1
# prompts are byte-identical and their composed questions lean on the same fact. The
# functions below treat such documents as clusters (e.g. keyed by the bridge fact id).


def cluster_means(values: Sequence[float], clusters: Sequence[str]) -> dict[str, float]:
    """Mean value per cluster, in order of first appearance (one value per bridge fact:
    how a task whose documents repeat within a cluster is deduplicated)."""
    if len(values) != len(clusters):
        raise ValueError("values and clusters of different length")
    sums: dict[str, list[float]] = {}
    for v, c in zip(values, clusters, strict=True):
        sums.setdefault(c, []).append(float(v))
    return {c: sum(vs) / len(vs) for c, vs in sums.items()}


def _cluster_sums(
    a: Sequence[float], b: Sequence[float], clusters: Sequence[str]
) -> list[list[float]]:
    """The paired differences b - a grouped by cluster (clusters in order of appearance)."""
    if not len(a) == len(b) == len(clusters):
        raise ValueError("paired samples and clusters of different length")
    groups: dict[str, list[float]] = {}
    for x, y, c in zip(a, b, clusters, strict=True):
        groups.setdefault(c, []).append(float(y) - float(x))
    return list(groups.values())


def paired_cluster_ci(
    a: Sequence[float],
    b: Sequence[float],
    clusters: Sequence[str],
    *,
    iters: int = 10000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Interval of the mean paired difference b - a, resampling whole clusters: the
    percentile interval of :func:`cluster_bootstrap_ci` for the differences grouped by
    cluster, drawn with numpy (a report asks for dozens of them; seeded, None below 2)."""
    import numpy as np

    groups = _cluster_sums(a, b, clusters)
    k = len(groups)
    if k < 2:
        return None
    sums = np.asarray([sum(g) for g in groups], dtype=np.float64)
    sizes = np.asarray([len(g) for g in groups], dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, k, size=(iters, k))
    return _percentile_interval(np.sort(sums[picks].sum(axis=1) / sizes[picks].sum(axis=1)), level)


def cluster_permutation_test(
    a: Sequence[float],
    b: Sequence[float],
    clusters: Sequence[str],
    *,
    iters: int = 10000,
    seed: int = 0,
) -> float:
    """Two-sided p-value of the paired difference b - a by sign-flipping whole clusters.

    Under no effect the two conditions are exchangeable within each cluster, so each
    cluster's summed difference is as likely to have either sign. Exact (every sign
    pattern) up to 2**12 patterns, else ``iters`` seeded draws (numpy) with the +1 correction.
    """
    sums = [sum(g) for g in _cluster_sums(a, b, clusters)]
    sums = [s for s in sums if s != 0.0]  # a zero sum is the same under either sign
    observed = abs(sum(sums))
    if not sums or observed == 0.0:
        return 1.0
    tol = 1e-9 * max(1.0, observed)
    k = len(sums)
    if k <= 12:
        hits = 0
        for mask in range(2**k):
            total = sum(-s if mask >> i & 1 else s for i, s in enumerate(sums))
            hits += abs(total) >= observed - tol
        return hits / 2**k
    import numpy as np

    signs = np.random.default_rng(seed).integers(0, 2, size=(iters, k)) * 2 - 1
    totals = np.abs(signs @ np.asarray(sums, dtype=np.float64))
    hits = int((totals >= observed - tol).sum())
    return (hits + 1) / (iters + 1)
