"""Cause, Isolate, Disentangle and their areas over budgets, with intervals and tests.

Definitions (per relation r, method m, budget k; acc = mean of the settings' metric over
the relation's test documents; relative drop = (base - acc) / base):

* Cause(r) = relative drop of r's accuracy when r's top-k units are deactivated.
* Isolate(r) = 1 - relative drop of the relation that received r's units in the
  deranged pass (mean over the settings' shifts; with shift s relation j gets relation
  j+s's units, so r = j+s's units hit relation j).
* Disentangle = (Cause + Isolate) / 2, as RAVEL.
* Area over k (MIB's CPR-like summary): the trapezoid area of a score over log10(k),
  divided by the log10 span of the budgets, so it is on the score's own scale.

Over relations: the mean with a Student-t 95 % interval (each relation weighs one, as
the relations are the units of the question). Between methods: paired over the same
relations, the mean difference with its t interval and the paired t-test, Holm-adjusted
over every pair of methods. Per relation, method vs a random control: a paired
percentile bootstrap over the relation's documents (the same resampled documents for
both methods and the base), uncorrected, for the count of relations whose interval
lies above the control's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from relneuron_eval.evaluation.statistics import holm, paired_t, t_interval

SCORES = ("cause", "isolate", "disentangle")
CONTROLS = ("random", "random-matched")


def area(values: np.ndarray, budgets: Sequence[int]) -> np.ndarray:
    """Trapezoid area over log10(k) along the last axis, normalised by the span (one
    budget: the value itself)."""
    y = np.asarray(values, dtype=float)
    if len(budgets) == 1:
        return y[..., 0]
    x = np.log10(np.asarray(budgets, dtype=float))
    return np.sum((y[..., 1:] + y[..., :-1]) / 2 * np.diff(x), axis=-1) / (x[-1] - x[0])


def _rel_drop(base: np.ndarray, acc: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, (base - acc) / np.where(base > 0, base, 1.0), np.nan)


def score_table(
    means: dict[Any, np.ndarray],
    methods: Sequence[str],
    budgets: Sequence[int],
    shifts: Sequence[int],
    n_rel: int,
) -> dict[str, np.ndarray]:
    """Scores ``[method, k, relation, ...]`` from mean accuracies (``...``: resamples).

    ``means["base"]`` is ``[relation, ...]``; ``means[(m, k, shift)]`` likewise.
    """
    base = means["base"]
    shape = (len(methods), len(budgets), *base.shape)
    cause, isolate = np.empty(shape), np.empty(shape)
    receiver = {s: [(j - s) % n_rel for j in range(n_rel)] for s in shifts}
    for a, m in enumerate(methods):
        for b, k in enumerate(budgets):
            cause[a, b] = _rel_drop(base, means[(m, k, 0)])
            drops = [_rel_drop(base[receiver[s]], means[(m, k, s)][receiver[s]]) for s in shifts]
            isolate[a, b] = 1.0 - np.mean(drops, axis=0)
    return {"cause": cause, "isolate": isolate, "disentangle": (cause + isolate) / 2}


def areas(table: dict[str, np.ndarray], budgets: Sequence[int]) -> dict[str, np.ndarray]:
    """Area over k of each score: ``[method, relation, ...]``."""
    return {name: area(np.moveaxis(values, 1, -1), budgets) for name, values in table.items()}


def _interval(values: np.ndarray) -> dict[str, Any]:
    vals = [float(v) for v in values if math.isfinite(float(v))]
    ci = t_interval(vals)
    return {
        "mean": sum(vals) / len(vals) if vals else None,
        "ci": None if ci is None else [ci[0], ci[1]],
        "n": len(vals),
    }


def summarize(
    outcomes: dict[str, Any],
    methods: list[str],
    budgets: list[int],
    shifts: list[int],
    relations: list[str],
    *,
    boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything the outputs show, as plain JSON-able data."""
    n = len(relations)
    means = {"base": np.array([np.mean(outcomes["base"][r]) for r in relations])}
    for key, per_rel in outcomes["cells"].items():
        means[key] = np.array([np.mean(per_rel[r]) for r in relations])
    table = score_table(means, methods, budgets, shifts, n)
    area_of = areas(table, budgets)
    rows = []
    for a, m in enumerate(methods):
        for b, k in enumerate(budgets):
            rows.append({"method": m, "k": k, **{s: _interval(table[s][a, b]) for s in SCORES}})
    per_method = {
        m: {f"area_{s}": _interval(area_of[s][a]) for s in SCORES} for a, m in enumerate(methods)
    }
    per_relation = {
        m: {
            r: {
                **{f"area_{s}": _num(area_of[s][a, i]) for s in SCORES},
                **{s: [_num(v) for v in table[s][a, :, i]] for s in SCORES},
            }
            for i, r in enumerate(relations)
        }
        for a, m in enumerate(methods)
    }
    return {
        "relations": relations,
        "budgets": budgets,
        "base": {r: _num(v) for r, v in zip(relations, means["base"], strict=True)},
        "n_docs": {r: len(outcomes["base"][r]) for r in relations},
        "rows": rows,
        "per_method": per_method,
        "per_relation": per_relation,
        "comparisons": comparisons(area_of["disentangle"], methods),
        "vs_control": vs_control(outcomes, methods, budgets, shifts, relations, boot, seed),
    }


def _num(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def comparisons(values: np.ndarray, methods: list[str]) -> list[dict[str, Any]]:
    """Every pair of methods on the same relations: difference, t interval, Holm p."""
    pairs = []
    for a in range(len(methods)):
        for b in range(a + 1, len(methods)):
            ok = np.isfinite(values[a]) & np.isfinite(values[b])
            x, y = values[a][ok].tolist(), values[b][ok].tolist()
            diff = [u - v for u, v in zip(x, y, strict=True)]
            ci = t_interval(diff)
            pairs.append(
                {
                    "a": methods[a],
                    "b": methods[b],
                    "diff": sum(diff) / len(diff) if diff else None,
                    "ci": None if ci is None else list(ci),
                    "p": paired_t(y, x) if len(diff) >= 2 else None,
                    "n": len(diff),
                    "test": "paired t over relations (area of Disentangle)",
                }
            )
    for pair, p_holm in zip(pairs, holm([p["p"] for p in pairs]), strict=True):
        pair["p_holm"] = p_holm
    return pairs


def vs_control(
    outcomes: dict[str, Any],
    methods: list[str],
    budgets: list[int],
    shifts: list[int],
    relations: list[str],
    boot: int,
    seed: int,
) -> dict[str, Any]:
    """Per relation: is a method's Disentangle area above a random control's?

    A paired bootstrap over each relation's documents (Cause) and the receiving
    relation's documents (Isolate): one resample of every relation's documents is used
    for the base and every pass alike.
    """
    controls = [c for c in CONTROLS if c in methods]
    if not controls:
        return {}
    rng = np.random.default_rng(seed)
    n = len(relations)
    idx = [
        rng.integers(0, len(outcomes["base"][r]), size=(boot, len(outcomes["base"][r])))
        for r in relations
    ]

    def resampled(per_rel: dict[str, list[float]]) -> np.ndarray:
        return np.stack(
            [np.asarray(per_rel[r], float)[idx[i]].mean(1) for i, r in enumerate(relations)]
        )

    means = {"base": resampled(outcomes["base"])}
    for key, per_rel in outcomes["cells"].items():
        means[key] = resampled(per_rel)
    table = score_table(means, methods, budgets, shifts, n)
    area_d = areas(table, budgets)["disentangle"]  # [method, relation, boot]
    out: dict[str, Any] = {}
    for control in controls:
        c = methods.index(control)
        out[control] = {}
        for a, m in enumerate(methods):
            if m in CONTROLS:
                continue
            cells, pvals = {}, []
            for i, r in enumerate(relations):
                d = area_d[a, i] - area_d[c, i]
                d = d[np.isfinite(d)]
                lo, hi = np.percentile(d, [2.5, 97.5]).tolist() if len(d) else (None, None)
                cells[r] = [lo, hi]
                pvals.append(_bootstrap_p(d))
            adjusted = holm(pvals)
            above = [r for r in relations if cells[r][0] is not None and cells[r][0] > 0]
            out[control][m] = {
                "relations_above": len(above),
                "relations_above_holm": sum(
                    1
                    for r, q in zip(relations, adjusted, strict=True)
                    if r in above and q is not None and q < ALPHA
                ),
                "of": n,
                "intervals": cells,
                "p_holm": dict(zip(relations, adjusted, strict=True)),
            }
    return out


ALPHA = 0.05


def _bootstrap_p(d: np.ndarray) -> float | None:
    """Two-sided bootstrap p of a difference: twice the smaller tail share at 0, with the
    (count + 1) / (resamples + 1) correction so it is never 0."""
    if len(d) == 0:
        return None
    tail = min(int(np.sum(d <= 0)), int(np.sum(d >= 0)))
    return min(1.0, 2 * (tail + 1) / (len(d) + 1))
