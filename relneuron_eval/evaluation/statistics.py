"""The significance tests every command shares: one place for the paired-test rule.

``compare``, ``report`` and ``relcheck`` all ask the same question of two runs on the
same documents: is the difference larger than noise? :func:`paired_test` answers it
with one rule, kept here so the three can never disagree: 0/1 outcomes (``acc``-like
metrics) get the exact McNemar test, anything else a paired t-test. Without per-document
values, :func:`stderr_z` tests a difference against lm-eval's standard errors; the
report's intervals come from :func:`bootstrap_ci`.

Pure Python (math and random, no torch or lm-eval) so every p-value can be checked by
hand; scipy, when installed (it comes with lm-eval), supplies Student's t tail.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
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
