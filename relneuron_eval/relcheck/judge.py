"""Decide one expectation from scores, and say why in a message a person can act on.

Input is plain numbers per row (task or group): the base score, the reference score
(the base, or another intervention for ``compare``), the intervention's score, the
metric's direction and, when sample logs exist, the paired per-document values. The
verdict and a small table come back; nothing here loads a model or reads files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from relneuron_eval.evaluation.statistics import paired_test
from relneuron_eval.relcheck.parse import Expectation


@dataclass
class RowInput:
    """One task (or group) of an expectation, as measured."""

    task: str
    metric: str  # "acc,none"
    base: float
    reference: float  # what the change is measured against (base, or `than`)
    score: float
    higher_is_better: bool = True
    pairs: tuple[list[float], list[float]] | None = None  # reference, intervention per doc


@dataclass
class RowResult:
    task: str
    metric: str
    base: float
    reference: float
    score: float
    change: float  # score - reference, in the metric's own direction
    measure: float | None  # the number compared with the threshold
    p_value: float | None
    ok: bool | None  # None for rows shown only for information (over: mean)


@dataclass
class Outcome:
    passed: bool
    summary: str
    rows: list[RowResult]
    message: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "summary": self.summary,
            "rows": [asdict(r) for r in self.rows],
            **self.numbers,
        }


def _worsening(row: RowInput) -> float:
    """How much worse the intervention is than the reference (positive = worse)."""
    delta = row.score - row.reference
    return -delta if row.higher_is_better else delta


def _p_value(pairs: tuple[list[float], list[float]] | None) -> float | None:
    """The paired test's p-value; None without per-document values."""
    if pairs is None or not pairs[0]:
        return None
    return paired_test(*pairs).p


def _measure(exp: Expectation, row: RowInput) -> float | None:
    """The quantity the threshold applies to; None when it is undefined (relative to 0)."""
    worse = _worsening(row)
    if exp.kind == "within":
        value = abs(row.score - row.reference)
    elif exp.kind == "raises" or (exp.kind == "compare" and exp.direction == "better"):
        value = -worse
    else:  # drop, drop_below, control_drop_below, compare worse
        value = worse
    if not exp.relative:
        return value
    if row.reference == 0.0:
        return 0.0 if value == 0.0 else None
    return value / abs(row.reference)


def _ok(exp: Expectation, measure: float | None, p_value: float | None) -> bool:
    if measure is None:
        return False
    t = exp.threshold
    if exp.kind == "within":
        ok = measure <= t + 1e-12
    elif exp.kind in ("drop_below", "control_drop_below"):
        ok = measure < t
    elif exp.kind == "drop":
        ok = measure >= t - 1e-12
    else:  # raises / compare: a real improvement (or gap), at least the threshold
        ok = measure > 0 and measure >= t - 1e-12
    if ok and exp.alpha is not None:
        ok = p_value is not None and p_value < exp.alpha
    return ok


def _needed(exp: Expectation) -> str:
    t = f"{exp.threshold:.4g}"
    if exp.kind == "within":
        return f"<= {t}"
    if exp.kind in ("drop_below", "control_drop_below"):
        return f"< {t}"
    if exp.kind in ("raises", "compare") and exp.threshold == 0:
        return "> 0"
    return f">= {t}"


def _measure_name(exp: Expectation) -> str:
    name = {
        "drop": "drop",
        "drop_below": "drop",
        "control_drop_below": "drop",
        "within": "|change|",
        "raises": "gain",
        "compare": "gap",
    }[exp.kind]
    return f"rel. {name}" if exp.relative else name


def _mean_row(rows: list[RowInput]) -> RowInput:
    """Unweighted mean over the rows; per-document values pooled for the paired test."""
    n = len(rows)
    pairs = None
    if all(r.pairs for r in rows):
        pairs = (
            [x for r in rows for x in r.pairs[0]],  # type: ignore[index]
            [y for r in rows for y in r.pairs[1]],  # type: ignore[index]
        )
    return RowInput(
        task=f"mean of {n}",
        metric=rows[0].metric,
        base=sum(r.base for r in rows) / n,
        reference=sum(r.reference for r in rows) / n,
        score=sum(r.score for r in rows) / n,
        higher_is_better=rows[0].higher_is_better,
        pairs=pairs,
    )


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    value = round(value, 10) + 0.0  # no "-0.0000"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def render_table(exp: Expectation, rows: list[RowResult], *, ref_label: str) -> str:
    """The small table that failure messages and the JSON artifact show."""
    show_ref = exp.kind == "compare" and exp.than != "base"
    header = ["task", "metric", "base"]
    if show_ref:
        header.append(ref_label)
    header += [exp.intervention, "change", _measure_name(exp), "needed"]
    with_p = any(r.p_value is not None for r in rows) or exp.alpha is not None
    if with_p:
        header.append("p")
    header.append("result")
    body = []
    for r in rows:
        line = [r.task, r.metric.replace(",none", ""), _fmt(r.base)]
        if show_ref:
            line.append(_fmt(r.reference))
        line += [_fmt(r.score), _fmt(r.change, signed=True), _fmt(r.measure), _needed(exp)]
        if with_p:
            line.append("n/a" if r.p_value is None else f"{r.p_value:.3g}")
        line.append({True: "ok", False: "FAIL", None: "·"}[r.ok])
        body.append(line)
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    out = []
    for line in [header, *body]:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  " + "  ".join(cells).rstrip())
    return "\n".join(out)


def judge(
    exp: Expectation,
    rows: list[RowInput],
    *,
    ref_label: str = "base",
    context: list[str] | None = None,
) -> Outcome:
    """Apply ``exp`` to measured rows; the message explains the verdict with numbers."""
    if not rows:
        summary = "no task to check (the task list is empty after 'except'/'others')"
        return Outcome(False, summary, [], f"{exp.id}: {summary}")
    results: list[RowResult] = []
    verdict_rows: list[RowInput] = list(rows)
    informative = exp.over == "mean" and len(rows) > 1
    if informative:
        verdict_rows = [_mean_row(rows)]
    for row in rows if not informative else [*rows, verdict_rows[0]]:
        measure = _measure(exp, row)
        p_value = _p_value(row.pairs)
        is_verdict = not informative or row is verdict_rows[0]
        results.append(
            RowResult(
                task=row.task,
                metric=row.metric,
                base=row.base,
                reference=row.reference,
                score=row.score,
                change=row.score - row.reference,
                measure=measure,
                p_value=p_value,
                ok=_ok(exp, measure, p_value) if is_verdict else None,
            )
        )
    judged = [r for r in results if r.ok is not None]
    failed = [r for r in judged if not r.ok]
    passed = not failed
    if passed:
        summary = f"passed on {len(judged)} row(s)"
    else:
        worst = failed[0]
        reason = (
            "undefined (reference score is 0)" if worst.measure is None else f"{worst.measure:.4f}"
        )
        summary = (
            f"FAILED on {len(failed)} of {len(judged)}: {', '.join(r.task for r in failed[:8])}"
            + (" ..." if len(failed) > 8 else "")
            + f"; e.g. {worst.task}: {_measure_name(exp)} {reason}, needed {_needed(exp)}"
        )
        if exp.alpha is not None and worst.measure is not None and _ok_without_alpha(exp, worst):
            summary += f" (the change is there but p = {worst.p_value} is not < {exp.alpha:g})"
    lines = [
        f"{exp.id}: {'passed' if passed else 'FAILED'}",
        f"expected: {exp.describe()}",
        f"got:      {summary}",
        *(context or []),
        "",
        render_table(exp, results, ref_label=ref_label),
    ]
    numbers = {"threshold": exp.threshold, "needed": _needed(exp), "measure": _measure_name(exp)}
    return Outcome(passed, summary, results, "\n".join(lines), numbers)


def _ok_without_alpha(exp: Expectation, row: RowResult) -> bool:
    import dataclasses

    return _ok(dataclasses.replace(exp, alpha=None), row.measure, None)
