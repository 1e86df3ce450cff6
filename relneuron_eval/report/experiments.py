"""The papers' experiments as evaluation plans and analyses (``relneuron report``).

Each experiment asks the ``Runner`` for (variant, task, documents) evaluations in
``plan_*`` and turns the per-document outcomes into numbers in ``analyze_*``. Every
deactivation is paired with size-matched random controls (``control=random``: the same
number of units per layer and site, none of them in the selection), and every
comparison is paired by document. The configuration and task helpers are
:mod:`relneuron_eval.report.setup`.
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.evaluation.runner import Runner, Variant
from relneuron_eval.evaluation.statistics import (
    bootstrap_ci,
    is_binary,
    mcnemar_mde,
    min_detectable_drop,
    normal_mde,
    seed_aware_test,
)
from relneuron_eval.evaluation.statistics import paired_test as paired_p
from relneuron_eval.report.analysis import (
    DOC_BOOTSTRAP_ITERS,
    KPoint,
    doc_moments,
    drop_matrix,
    mean,
    overlap,
    paired_summary,
    pooled_over_documents,
    relative_drop,
    resolve_ks,
    variance_split,
    wilson,
)
from relneuron_eval.report.controls import (
    answers_block,
    eligibility,
    family,
    majority,
    over_relations,
)
from relneuron_eval.report.setup import LANGS, TWOHOP_TASKS, Setup, lang_task, task_rows

ALPHA = 0.05
CROSSLINGUAL_METRIC = "acc_match"  # acc_prefix2 checks little more than a character in zh/ja
TWOHOP_MEASURES: dict[str, tuple[str, str]] = {
    "direct": ("relfacts_2hop", "acc_match"),
    "cot": ("relfacts_2hop_cot", "acc_match"),
    "bridge_recall": ("relfacts_2hop_cot", "bridge_recall"),
    "hop1": ("relfacts_2hop_hop1", "acc_match"),
}


def _acc(
    runner: Runner, setup: Setup, variant: Variant, task: str, metric: str, own: bool = False
) -> float:
    return runner.get(variant, task, setup.docs(task, own)).accuracy(metric)


def _vals(
    runner: Runner, setup: Setup, variant: Variant, task: str, metric: str, own: bool = False
) -> list[float]:
    return runner.get(variant, task, setup.docs(task, own)).values(metric)


def _seed_mean(rows: list[list[float]]) -> list[float]:
    """Per-document mean over control seeds (0/1 values stay 0/1 with one seed)."""
    return [sum(col) / len(col) for col in zip(*rows, strict=True)]


# ==================================================================== base
def base_tasks(setup: Setup) -> list[str]:
    """Every task any chosen experiment reads, all evaluated once on the base model."""
    tasks = [setup.task(r)[0] for r in setup.relations]
    if "versatility" in setup.experiments:
        for r, langs in setup.langs.items():
            tasks.append(f"relfacts_{r}")
            tasks.extend(lang_task(lang, r) for lang in langs)
    if "reasoning" in setup.experiments:
        tasks.extend(TWOHOP_TASKS)
    return list(dict.fromkeys(tasks))


def plan_base(setup: Setup, runner: Runner) -> None:
    tasks = base_tasks(setup)
    runner.request(Variant.base(), tasks, {t: setup.docs(t) for t in tasks})
    if "interference" in setup.experiments:
        own = [setup.task(r)[0] for r in setup.relations]
        runner.request(Variant.base(), own, {t: setup.docs(t, own=True) for t in own})


def base_accuracy(setup: Setup, runner: Runner) -> dict[str, float]:
    out = {}
    for r in setup.relations:
        task, metric = setup.task(r)
        out[r] = _acc(runner, setup, Variant.base(), task, metric)
    return out


def pick(spec: list[str] | int, setup: Setup, base: dict[str, float]) -> list[str]:
    """An explicit list as given; N = the N relations with the highest base accuracy
    among those at or above ``min_base`` (ties by name)."""
    if isinstance(spec, list):
        return spec
    known = [r for r in setup.relations if base[r] >= setup.min_base]
    return sorted(known, key=lambda r: (-base[r], r))[:spec]


def _request(runner: Runner, setup: Setup, variant: Variant, tasks: list[str]) -> None:
    runner.request(variant, tasks, {t: setup.docs(t) for t in tasks})


# ============================================================== interference
def plan_interference(setup: Setup, runner: Runner, matrix: list[str]) -> None:
    """Own task of every relation (specificity) and the r x r' matrix over ``matrix``,
    for every top-k of the report."""
    for k in setup.all_top_ks():
        for r in setup.relations:
            own = setup.task(r)[0]
            tasks = [setup.task(c)[0] for c in matrix] if r in matrix else []
            for variant in [setup.deact(r, k)] + [setup.control(r, k, s) for s in setup.seeds]:
                runner.request(variant, [own], {own: setup.docs(own, own=True)})
                _request(runner, setup, variant, tasks)


def _own_vs_control(
    setup: Setup,
    runner: Runner,
    r: str,
    task: str,
    metric: str,
    deact: Variant,
    controls: list[Variant],
    own: bool = False,
) -> dict[str, Any]:
    """Base, deactivation and control on one task, with paired tests (by document);
    with ``own`` (the specificity test) also the intervals and the detectable effect."""
    b = _vals(runner, setup, Variant.base(), task, metric, own)
    d = _vals(runner, setup, deact, task, metric, own)
    cs = [_vals(runner, setup, c, task, metric, own) for c in controls]
    c = _seed_mean(cs)
    base, dv, cv = (sum(x) / len(x) for x in (b, d, c))
    extra = _uncertainty(b, d, cs, base) if own else {}
    if own:
        extra |= answers_block(runner, setup, task, metric, own, (Variant.base(), deact, controls))
    p_base, test = paired_p(b, d)
    seeded = seed_aware_test(d, cs)  # own vs the control distribution, seeds included
    p_ctrl, test_ctrl = seeded.p, seeded.test
    p_cb, _ = paired_p(b, c)
    rows = task_rows(task)["test"]
    majority_object, majority_rate = majority([rows[i] for i in setup.docs(task, own)])
    info = runner.get(deact, task, setup.docs(task, own)).info or {}
    cinfo = runner.get(controls[0], task, setup.docs(task, own)).info or {}
    return {
        "task": task,
        "metric": metric,
        "n_docs": len(b),
        "n_units": info.get("num_units"),
        "n_units_control": cinfo.get("num_units"),
        "base": base,
        "deact": dv,
        "control": cv,
        "control_seeds": [sum(x) / len(x) for x in cs],
        "control_seed_sd": seeded.seed_sd,
        "se_vs_control": seeded.se,
        "mde_vs_control": normal_mde(seeded.se),
        "majority_object": majority_object,
        "majority_rate": majority_rate,
        "drop": base - dv,
        "control_drop": base - cv,
        "relative_drop": relative_drop(base, dv),
        "control_relative_drop": relative_drop(base, cv),
        "p_deact_vs_base": p_base,
        "p_deact_vs_control": p_ctrl,
        "p_control_vs_base": p_cb,
        "test": test,
        "test_vs_control": test_ctrl,
        "eligible": eligibility(base, majority_rate, setup.min_base, setup.min_margin),
        "significant_drop": p_base < ALPHA and dv < base,
        "significant_vs_control": p_ctrl < ALPHA and dv < cv,
        "control_significant_drop": p_cb < ALPHA and cv < base,
        **extra,
    }


def _uncertainty(
    b: list[float], d: list[float], cs: list[list[float]], base: float
) -> dict[str, Any]:
    """Per-relation intervals (Wilson for 0/1 accuracies; percentile bootstrap over
    documents for the paired changes), the minimum detectable drops of the tests used,
    and the moments of the per-document difference (control - deactivated) and of the
    control over seeds that the summary pools."""
    n = len(b)
    c = _seed_mean(cs)
    gain = sum(1 for x, y in zip(b, d, strict=True) if y > x) / n if n else 0.0
    seed_accs = [sum(row) / len(row) for row in cs]
    seed_var = (
        sum((a - sum(seed_accs) / len(cs)) ** 2 for a in seed_accs) / (len(cs) - 1)
        if len(cs) > 1
        else 0.0
    )

    def change_ci(after: list[float]) -> list[float] | None:
        ci = bootstrap_ci([y - x for x, y in zip(b, after, strict=True)], iters=DOC_BOOTSTRAP_ITERS)
        return None if ci is None else list(ci)

    mean_diff, sd_diff = doc_moments([y - x for x, y in zip(d, c, strict=True)])
    return {
        "base_ci95": wilson(b),
        "deact_ci95": wilson(d),
        "control_ci95": wilson(c) if is_binary(c) else None,
        "change_ci95": change_ci(d),
        "control_change_ci95": change_ci(c),
        "mde": min_detectable_drop(n, base),
        "mde_mcnemar": mcnemar_mde(n, base, gain=gain) if is_binary(b + d) else None,
        "difference_mean": mean_diff,
        "difference_sd": sd_diff,
        "seed_var_of_mean": seed_var / len(cs),
    }


def summarize_cells(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Own vs control drops over the eligible cells: absolute and relative, paired."""
    ok = [c for c in cells if c["eligible"]]
    rel = [c for c in ok if c["relative_drop"] is not None]
    return {
        "n_eligible": len(ok),
        "n_total": len(cells),
        "absolute": paired_summary([c["drop"] for c in ok], [c["control_drop"] for c in ok]),
        "relative": paired_summary(
            [c["relative_drop"] for c in rel], [c["control_relative_drop"] for c in rel]
        ),
        "n_significant_drop": sum(1 for c in ok if c["significant_drop"]),
        "n_significant_vs_control": sum(1 for c in ok if c["significant_vs_control"]),
        "n_control_significant_drop": sum(1 for c in ok if c["control_significant_drop"]),
        "family": family(ok, ALPHA),
        **over_relations([c["drop"] - c["control_drop"] for c in ok]),
        **_spread(ok),
    }


def _spread(ok: list[dict[str, Any]]) -> dict[str, Any]:
    """Variance split and pooled interval, where the cells carry per-document moments."""
    if not ok or any("difference_sd" not in c for c in ok):
        return {}
    cells = [(c["n_docs"], c["difference_mean"], c["difference_sd"]) for c in ok]
    seeds = [c.get("seed_var_of_mean", 0.0) for c in ok]
    return {
        "variance_split": variance_split(cells, seeds),
        "pooled": pooled_over_documents(
            cells, [c["drop"] for c in ok], [c["control_drop"] for c in ok]
        ),
    }


def analyze_interference(
    setup: Setup, runner: Runner, matrix: list[str], top_k: int | None = None
) -> dict[str, Any]:
    """Specificity of every relation and the r x r' matrix, at ``top_k`` (default: the
    report's first top-k)."""
    k = setup.top_k if top_k is None else top_k
    per_relation = {}
    for r in setup.relations:
        task, metric = setup.task(r)
        per_relation[r] = _own_vs_control(
            setup,
            runner,
            r,
            task,
            metric,
            setup.deact(r, k),
            [setup.control(r, k, s) for s in setup.seeds],
            own=True,
        )
    out: dict[str, Any] = {
        "top_k": k,
        "metric": setup.task(setup.relations[0])[1],
        "per_relation": per_relation,
        "summary": summarize_cells(list(per_relation.values())),
        "matrix_relations": matrix,
    }
    if matrix:
        out["matrix"] = _matrix(setup, runner, matrix, k)
    return out


def _matrix(setup: Setup, runner: Runner, names: list[str], k: int) -> dict[str, Any]:
    base = {c: _acc(runner, setup, Variant.base(), *setup.task(c)) for c in names}
    own: dict[str, dict[str, float]] = {}
    ctrl: dict[str, dict[str, float]] = {}
    p: dict[str, dict[str, float]] = {}
    p_ctrl: dict[str, dict[str, float]] = {}
    for r in names:
        deact = setup.deact(r, k)
        own[r], ctrl[r], p[r], p_ctrl[r] = {}, {}, {}, {}
        for c in names:
            task, metric = setup.task(c)
            b = _vals(runner, setup, Variant.base(), task, metric)
            d = _vals(runner, setup, deact, task, metric)
            cs = [_vals(runner, setup, setup.control(r, k, s), task, metric) for s in setup.seeds]
            own[r][c] = sum(d) / len(d)
            ctrl[r][c] = sum(sum(x) / len(x) for x in cs) / len(cs)
            p[r][c] = paired_p(b, d)[0]
            p_ctrl[r][c] = paired_p(b, _seed_mean(cs))[0]
    m_own = drop_matrix(base, own, rows=names, cols=names, min_base=setup.min_base)
    m_ctrl = drop_matrix(base, ctrl, rows=names, cols=names, min_base=setup.min_base)

    def offdiag(m) -> dict[str, Any]:
        cells = list(m.cells(diagonal=False))
        return {
            "n_cells": len(cells),
            "mean_relative_drop": mean([m.relative[r][c] for r, c in cells]),
            "mean_absolute_drop": mean([m.absolute[r][c] for r, c in cells]),
            "n_improved": sum(1 for r, c in cells if m.improved[r][c]),
        }

    return {
        "own": m_own.to_dict(),
        "control": m_ctrl.to_dict(),
        "p_vs_base": p,
        "p_control_vs_base": p_ctrl,
        "offdiag_own": offdiag(m_own)
        | {
            "n_improved_significant": sum(
                1
                for r, c in m_own.cells(diagonal=False)
                if m_own.improved[r][c] and p[r][c] < ALPHA
            ),
            "n_dropped_significant": sum(
                1
                for r, c in m_own.cells(diagonal=False)
                if m_own.absolute[r][c] > 0 and p[r][c] < ALPHA
            ),
        },
        "offdiag_control": offdiag(m_ctrl),
        "diag_mean_relative_drop": mean(
            [m_own.relative[r][r] for r, _ in m_own.cells(diagonal=True)]
        ),
    }


# ============================================================== cumulativity
def cumulativity_points(setup: Setup, relation: str) -> list[KPoint]:
    return resolve_ks(setup.ks, setup.group_size(relation))


def plan_cumulativity(setup: Setup, runner: Runner, names: list[str]) -> None:
    tasks = [setup.task(c)[0] for c in names]
    for r in names:
        for point in cumulativity_points(setup, r):
            _request(runner, setup, setup.deact(r, point.top_k), tasks)
            for s in setup.seeds:
                _request(runner, setup, setup.control(r, point.top_k, s), tasks)


def analyze_cumulativity(setup: Setup, runner: Runner, names: list[str]) -> dict[str, Any]:
    base = {c: _acc(runner, setup, Variant.base(), *setup.task(c)) for c in names}
    curves: dict[str, Any] = {}
    for r in names:
        others = [c for c in names if c != r]
        points = []
        for point in cumulativity_points(setup, r):
            deact = setup.deact(r, point.top_k)
            controls = [setup.control(r, point.top_k, s) for s in setup.seeds]

            def acc(variants: list[Variant], c: str) -> float:
                return sum(_acc(runner, setup, v, *setup.task(c)) for v in variants) / len(variants)

            own_task, own_metric = setup.task(r)
            own_cell = _own_vs_control(setup, runner, r, own_task, own_metric, deact, controls)
            own_values = _vals(runner, setup, deact, own_task, own_metric)
            points.append(
                {
                    "labels": list(point.labels),
                    "top_k": point.top_k,
                    "n_neurons": point.n_neurons,
                    "own": acc([deact], r),
                    "own_ci95": wilson(own_values),
                    "n_docs": len(own_values),
                    "control_own": acc(controls, r),
                    "control_own_seeds": [acc([c], r) for c in controls],
                    "others": mean([acc([deact], c) for c in others]),
                    "control_others": mean([acc(controls, c) for c in others]),
                    "others_each": {c: acc([deact], c) for c in others},
                    "control_others_each": {c: acc(controls, c) for c in others},
                    "p_own_vs_base": own_cell["p_deact_vs_base"],
                    "p_own_vs_control": own_cell["p_deact_vs_control"],
                }
            )
        curves[r] = {
            "base_own": base[r],
            "base_others": mean([base[c] for c in others]),
            "others": others,
            "size": setup.group_size(r),
            "points": points,
        }
    return {
        "relations": names,
        "ks": [str(k) for k in setup.ks],
        "curves": curves,
        "mean_curve": _mean_curve(setup, curves),
    }


def _mean_curve(setup: Setup, curves: dict[str, Any]) -> list[dict[str, Any]]:
    """Per requested k: mean change from base (accuracy points) over the relations."""
    out = []
    for k in setup.ks:
        label = str(k)
        rows = []
        for curve in curves.values():
            point = next(p for p in curve["points"] if label in p["labels"])
            rows.append((curve, point))
        entry: dict[str, Any] = {"label": label}
        for key, base_key in (
            ("own", "base_own"),
            ("control_own", "base_own"),
            ("others", "base_others"),
            ("control_others", "base_others"),
        ):
            entry[key] = mean(
                [
                    p[key] - c[base_key] if p[key] is not None and c[base_key] is not None else None
                    for c, p in rows
                ]
            )
        out.append(entry)
    return out


# =============================================================== versatility
def plan_versatility(setup: Setup, runner: Runner) -> None:
    for r, langs in setup.langs.items():
        tasks = [f"relfacts_{r}"] + [lang_task(lang, r) for lang in langs]
        _request(runner, setup, setup.deact(r, setup.top_k), tasks)
        for s in setup.seeds:
            _request(runner, setup, setup.control(r, setup.top_k, s), tasks)


def analyze_overlap(setup: Setup) -> dict[str, Any]:
    chosen = setup.neuron_set.select(setup.relations, top_k=setup.top_k)
    units: dict[str, set] = {r: set() for r in setup.relations}
    for n in chosen.neurons:
        units[n.group].add(n.unit)
    result = overlap(units, setup.relations)
    result["top_k"] = setup.top_k
    return result


def analyze_crosslingual(setup: Setup, runner: Runner) -> dict[str, Any]:
    metric = CROSSLINGUAL_METRIC
    cells: dict[str, dict[str, Any]] = {}
    for r, langs in setup.langs.items():
        deact = setup.deact(r, setup.top_k)
        controls = [setup.control(r, setup.top_k, s) for s in setup.seeds]
        cells[r] = {}
        for lang in ["en", *langs]:
            task = f"relfacts_{r}" if lang == "en" else lang_task(lang, r)
            cells[r][lang] = _own_vs_control(setup, runner, r, task, metric, deact, controls)
    per_lang = {}
    for lang in ["en", *LANGS]:
        entries = [cells[r][lang] for r in cells if lang in cells[r]]
        if entries:
            per_lang[lang] = summarize_cells(entries)
    foreign = [cells[r][lang] for r in cells for lang in cells[r] if lang != "en"]
    return {
        "metric": metric,
        "top_k": setup.top_k,
        "cells": cells,
        "per_language": per_lang,
        "summary_foreign": summarize_cells(foreign),
    }


# ================================================================= reasoning
# The reasoning experiment (own, swapped, shared-pool and random knowledge neurons; chains
# clustered by bridge fact) lives in report/reasoning.py; re-exported for its callers.
from relneuron_eval.report.reasoning import (  # noqa: E402, F401
    analyze_reasoning,
    kn_coverage,
    plan_reasoning,
)
