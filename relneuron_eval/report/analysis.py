"""Pure computations behind ``relneuron report``: k grids, drops, overlap, paired statistics.

Kept free of torch, lm-eval and matplotlib so every number in a report can be checked
by hand in the tests from made-up accuracies and neuron sets.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.statistics import bootstrap_ci, is_binary, paired_t, wilson_ci

ALL = "all"
KValue = int | str  # a positive int or "all"
# Resamples of the per-relation bootstrap over documents: 2,000 keep a full test split
# (~1,000 documents) at about a second per interval in pure Python; the across-relation
# bootstrap of the headline keeps statistics' default of 10,000.
DOC_BOOTSTRAP_ITERS = 2000


# =================================================================== k grids
def parse_ks(text: str) -> list[KValue]:
    """``"10,30,all"`` -> ``[10, 30, "all"]`` (sorted, duplicates dropped, "all" last)."""
    values: list[int] = []
    has_all = False
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        if part.lower() == ALL:
            has_all = True
            continue
        values.append(_positive(part, "--ks", "a positive integer or 'all'", "10,100,all"))
    out: list[KValue] = sorted(set(values))
    if has_all:
        out.append(ALL)
    if not out:
        raise RelNeuronError("--ks is empty", hint="e.g. 10,100,1000,all")
    return out


def parse_top_ks(text: str | int) -> list[int]:
    """``"3000"`` -> ``[3000]``; ``"3000,400"`` -> ``[3000, 400]`` (order kept: the first is
    the primary k of the headline and versatility)."""
    values: list[int] = []
    for part in (p.strip() for p in str(text).split(",") if p.strip()):
        value = _positive(part, "--top-k", "a positive integer", "3000, or 3000,400")
        if value in values:
            raise RelNeuronError(f"--top-k lists {value} twice")
        values.append(value)
    if not values:
        raise RelNeuronError("--top-k is empty", hint="e.g. 3000, or 3000,400")
    return values


def _positive(part: str, option: str, allowed: str, example: str) -> int:
    """One item of a comma-separated option that must be a positive integer."""
    try:
        number = int(part)
    except ValueError:
        number = 0
    if number < 1:
        raise RelNeuronError(f"{option}: {part!r} is not {allowed}", hint=f"e.g. {example}")
    return number


def canonical_top_k(k: KValue | None, size: int) -> int | None:
    """The ``top_k`` argument that selects what ``k`` means for a group of ``size`` neurons.

    ``None`` means the whole group; a ``k`` at or above the group's size is the whole
    group too, so equal selections get equal arguments (and share one cached run).
    """
    if k is None or k == ALL or int(k) >= size:
        return None
    return int(k)


@dataclass(frozen=True)
class KPoint:
    """One point of a cumulativity curve for one relation."""

    labels: tuple[str, ...]  # requested ks that select these neurons, e.g. ("3000", "all")
    top_k: int | None  # argument for the variant (None: the whole group)
    n_neurons: int  # neurons actually selected


def resolve_ks(ks: Sequence[KValue], size: int) -> list[KPoint]:
    """The distinct selections a k grid makes on a group of ``size`` neurons, smallest first."""
    if size < 1:
        raise RelNeuronError("cannot build a k grid for an empty group")
    points: dict[int | None, list[str]] = {}
    for k in ks:
        points.setdefault(canonical_top_k(k, size), []).append(str(k))
    out = [
        KPoint(tuple(labels), top_k, size if top_k is None else top_k)
        for top_k, labels in points.items()
    ]
    return sorted(out, key=lambda p: p.n_neurons)


# ============================================================== accuracy drops
def relative_drop(base: float | None, value: float | None) -> float | None:
    """``(acc_orig - acc_deact) / acc_orig``; None when the base is 0 (or either is missing)."""
    if base is None or value is None or base <= 0.0:
        return None
    return (base - value) / base


@dataclass
class DropMatrix:
    """Rows: whose neurons were deactivated; columns: which relation was measured."""

    rows: list[str]
    cols: list[str]
    base: dict[str, float]
    value: dict[str, dict[str, float]]  # row -> col -> accuracy under the intervention
    relative: dict[str, dict[str, float | None]]
    absolute: dict[str, dict[str, float]]  # base - value (positive = drop)
    improved: dict[str, dict[str, bool]]  # the intervention raised accuracy
    eligible: dict[str, bool]  # column's base accuracy >= min_base
    min_base: float

    def cells(
        self, *, diagonal: bool | None = None, eligible_only: bool = True
    ) -> Iterator[tuple[str, str]]:
        """(row, col) pairs: all, only the diagonal (True) or only off-diagonal (False)."""
        for r in self.rows:
            for c in self.cols:
                if diagonal is not None and (r == c) != diagonal:
                    continue
                if eligible_only and not self.eligible[c]:
                    continue
                yield r, c

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "cols": self.cols,
            "base": self.base,
            "value": self.value,
            "relative_drop": self.relative,
            "absolute_drop": self.absolute,
            "improved": self.improved,
            "eligible": self.eligible,
            "min_base": self.min_base,
        }


def drop_matrix(
    base: Mapping[str, float],
    value: Mapping[str, Mapping[str, float]],
    *,
    rows: Sequence[str],
    cols: Sequence[str],
    min_base: float,
) -> DropMatrix:
    """Relative and absolute drops and improved cells of an r x r' intervention matrix.

    A cell is "improved" when the accuracy under the intervention is strictly higher
    than the base. The relative drop is left out (None) where the base is 0; columns
    whose base is below ``min_base`` are computed but marked not eligible, because a
    relation the model barely knows cannot show a drop.
    """
    rel: dict[str, dict[str, float | None]] = {}
    absd: dict[str, dict[str, float]] = {}
    imp: dict[str, dict[str, bool]] = {}
    for r in rows:
        rel[r], absd[r], imp[r] = {}, {}, {}
        for c in cols:
            b, v = base[c], value[r][c]
            rel[r][c] = relative_drop(b, v)
            absd[r][c] = b - v
            imp[r][c] = v > b
    return DropMatrix(
        rows=list(rows),
        cols=list(cols),
        base={c: base[c] for c in cols},
        value={r: {c: value[r][c] for c in cols} for r in rows},
        relative=rel,
        absolute=absd,
        improved=imp,
        eligible={c: base[c] >= min_base for c in cols},
        min_base=min_base,
    )


# ==================================================================== overlap
def overlap(units: Mapping[str, set[Any]], names: Sequence[str]) -> dict[str, Any]:
    """Shared-unit counts and Jaccard index for every pair of neuron groups.

    ``units`` maps a group to its set of model units (site, layer, index); a unit named
    by two groups counts once in each. Jaccard = |A & B| / |A | B| (1 on the diagonal).
    """
    counts = {a: {b: len(units[a] & units[b]) for b in names} for a in names}
    jac: dict[str, dict[str, float]] = {}
    for a in names:
        jac[a] = {}
        for b in names:
            union = len(units[a] | units[b])
            jac[a][b] = counts[a][b] / union if union else 0.0
    off = [jac[a][b] for i, a in enumerate(names) for b in names[i + 1 :]]
    shared: dict[Any, int] = {}
    for a in names:
        for unit in units[a]:
            shared[unit] = shared.get(unit, 0) + 1
    return {
        "groups": list(names),
        "sizes": {a: len(units[a]) for a in names},
        "counts": counts,
        "jaccard": jac,
        "mean_offdiag_jaccard": _mean(off),
        "max_offdiag_jaccard": max(off) if off else None,
        "distinct_units": len(shared),
        "units_in_2plus_groups": sum(1 for n in shared.values() if n >= 2),
    }


# ================================================================= summaries
def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    return _mean([v for v in values if v is not None])


def paired_summary(own: Sequence[float], control: Sequence[float], *, seed: int = 0) -> dict:
    """Across units (relations): mean of own, of control, their difference with CI and p."""
    diffs = [a - b for a, b in zip(own, control, strict=True)]
    ci = bootstrap_ci(diffs, seed=seed)
    return {
        "n": len(diffs),
        "mean_own": _mean(list(own)),
        "mean_control": _mean(list(control)),
        "mean_difference": _mean(diffs),
        "ci95": list(ci) if ci else None,
        "p_paired_t": paired_t(list(control), list(own)) if len(diffs) >= 2 else None,
        "own_larger": sum(1 for d in diffs if d > 0),
        "control_larger": sum(1 for d in diffs if d < 0),
    }


# ================================================================ uncertainty
def wilson(values: Sequence[float]) -> list[float] | None:
    """95 % Wilson interval of an accuracy from its 0/1 per-document outcomes (None
    for non-binary values, e.g. a mean over control seeds, or no documents)."""
    if not values or not is_binary(values):
        return None
    ci = wilson_ci(sum(values), len(values))
    return None if ci is None else list(ci)


def doc_moments(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of per-document values."""
    n = len(values)
    if n == 0:
        return None, None
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return m, sd


def variance_split(
    cells: Sequence[tuple[int, float, float]], seed_vars: Sequence[float] | None = None
) -> dict[str, Any] | None:
    """Split the across-relation spread of per-relation differences into document
    sampling (within), the random control's seed noise (seeds) and real differences
    between relations (between).

    ``cells`` holds, per relation, (n documents, mean, sd) of its per-document
    difference. The observed variance S² of the relation means is, by the method of
    moments, the mean sampling variance v = mean(sd² / n) plus the between-relation
    variance tau² = max(0, S² - v - s), where ``seed_vars`` holds, per relation, the
    variance of its seed-mean control over seeds (seed variance / S; s is their mean):
    without it seed noise would be counted as "between relations". Standard errors of
    the mean over m relations follow: sqrt(S²/m) in all (what the bootstrap over
    relations measures), sqrt(v/m) from sampling, sqrt(s/m) from seeds, sqrt(tau²/m)
    from between-relation spread.
    """
    m = len(cells)
    if m < 2:
        return None
    means = [mu for _, mu, _ in cells]
    centre = sum(means) / m
    spread = sum((mu - centre) ** 2 for mu in means) / (m - 1)
    within = sum(sd * sd / n for n, _, sd in cells) / m
    seeds = sum(seed_vars) / m if seed_vars else 0.0
    between = max(0.0, spread - within - seeds)
    return {
        "n_relations": m,
        "sd_between_relations_observed": math.sqrt(spread),
        "sd_within_sampling": math.sqrt(within),
        "sd_between_true": math.sqrt(between),
        "within_share": 1.0 if spread == 0 else min(1.0, within / spread),
        "sd_seed": math.sqrt(seeds),
        "seed_share": 0.0 if spread == 0 else min(1.0, seeds / spread),
        "se_mean_total": math.sqrt(spread / m),
        "se_mean_within": math.sqrt(within / m),
        "se_mean_seed": math.sqrt(seeds / m),
        "se_mean_between": math.sqrt(between / m),
    }


def pooled_over_documents(
    cells: Sequence[tuple[int, float, float]], drops: Sequence[float], control: Sequence[float]
) -> dict[str, Any] | None:
    """Mean over all documents pooled (relations weighted by their n) with a 95 %
    normal interval over documents: the effect on a random test fact of these relations,
    a different estimand from the mean over relations; only document sampling counts.

    ``cells`` as in :func:`variance_split`; ``drops``/``control`` are the relations'
    own and control drops in the same order.
    """
    total = sum(n for n, _, _ in cells)
    if total < 2:
        return None
    centre = sum(n * mu for n, mu, _ in cells) / total
    squares = sum((n - 1) * sd * sd + n * (mu - centre) ** 2 for n, mu, sd in cells)
    half = NormalDist().inv_cdf(0.975) * math.sqrt(squares / (total - 1) / total)
    weights = [n / total for n, _, _ in cells]
    return {
        "n_docs": total,
        "n_relations": len(cells),
        "mean_own_drop": sum(w * d for w, d in zip(weights, drops, strict=True)),
        "mean_control_drop": sum(w * d for w, d in zip(weights, control, strict=True)),
        "mean_difference": centre,
        "ci95": [centre - half, centre + half],
    }


def evenly_spaced(n: int, count: int | None) -> list[int]:
    """``count`` document indices spread over ``0..n-1`` (all of them when count >= n)."""
    if count is None or count >= n:
        return list(range(n))
    return sorted({(i * n) // count for i in range(count)})


def first(n: int, count: int | None) -> list[int]:
    """The first ``count`` document indices (lm-eval's ``--limit``)."""
    return list(range(n if count is None else min(n, count)))
