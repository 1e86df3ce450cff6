"""The report's evaluations in two stages, and ``--plan-only``: what a run would cost.

Stage 1 evaluates the base model on every task; stage 2 (each experiment's variants)
needs its results first, because ``auto:N`` matrix and cumulativity relations are the
N with the highest base accuracy. ``run_report`` and the plan share
:func:`plan_experiments`, so the plan counts exactly what a run evaluates. When the base
results are not cached yet, an ``auto:N`` experiment is counted as if the first N
relations by name were chosen, and the plan says so: an estimate, not a guess hidden as
a count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from relneuron_eval.evaluation.runner import Runner
from relneuron_eval.harness.task_data import task_fingerprint
from relneuron_eval.report.controls import ranked_base
from relneuron_eval.report.experiments import (
    base_accuracy,
    pick,
    plan_base,
    plan_cumulativity,
    plan_interference,
    plan_reasoning,
    plan_versatility,
)
from relneuron_eval.report.others import plan_control_sets, plan_others
from relneuron_eval.report.setup import Setup


def plan_experiments(
    setup: Setup, runner: Runner, base: dict[str, float], only: str | None = None
) -> tuple[list[str], list[str]]:
    """Stage 2: request the experiments' evaluations (all, or ``only`` one); returns the
    matrix and cumulativity relations chosen with the base accuracies."""
    chosen = setup.experiments if only is None else [only]
    ranked = ranked_base(setup, base)  # one eligibility rule, majority class included
    matrix = pick(setup.matrix, setup, ranked) if "interference" in setup.experiments else []
    cumul = pick(setup.cumulativity, setup, ranked) if "cumulativity" in setup.experiments else []
    if "interference" in chosen:
        plan_interference(setup, runner, matrix)
        plan_others(setup, runner)
        plan_control_sets(setup, runner)
    if "versatility" in chosen:
        plan_versatility(setup, runner)
    if "cumulativity" in chosen:
        plan_cumulativity(setup, runner, cumul)
    if "reasoning" in chosen:
        plan_reasoning(setup, runner)
    return matrix, cumul


@dataclass
class Count:
    """What one stage (or experiment) requests and what of it must be evaluated."""

    name: str
    variants: set[str] = field(default_factory=set)  # claim keys of the variants requested
    results: set[str] = field(default_factory=set)  # cache keys of the task results requested
    computed: set[str] = field(default_factory=set)  # ... of those evaluated
    calls: int = 0  # lm-eval calls
    n_computed: int = 0  # task results evaluated (one twice if a later stage adds documents)
    documents: int = 0  # documents evaluated
    estimated: str | None = None  # why the numbers are an estimate

    @property
    def cached(self) -> int:
        return len(self.results - self.computed)

    def row(self) -> list[str]:
        name = self.name + (" (estimated)" if self.estimated else "")
        numbers = (len(self.variants), len(self.results), self.cached, self.calls)
        return [name, *map(str, numbers), str(self.n_computed), str(self.documents)]


def _count(
    name: str, runner: Runner, assume: dict[str, set[int]] | None = None
) -> tuple[Count, dict[str, set[int]]]:
    """Count ``runner``'s requests; also return what the stage leaves stored."""
    count = Count(name)
    for variant, task, _ in runner.requests():
        count.variants.add(runner.claim_key(variant))
        count.results.add(runner.key(variant, task))
    stored: dict[str, set[int]] = {}
    for variant, tasks in runner.pending(assume):
        count.calls += 1
        for task, docs in tasks.items():
            key = runner.key(variant, task)
            count.computed.add(key)
            count.n_computed += 1
            count.documents += len(docs)
            stored[key] = set(docs)
    return count, stored


def _no_evaluation(variant: Any, samples: dict[str, list[int]]) -> Any:
    raise AssertionError("the plan evaluates nothing")


def plan_report(setup: Setup, fingerprint: Any = task_fingerprint) -> list[Count]:
    """Rows: stage 1, each experiment of stage 2, stage 2 together, the total."""

    def runner() -> Runner:
        folder = setup.out / "runs"
        return Runner(
            folder, setup.model_key, _no_evaluation, progress=False, fingerprint=fingerprint
        )

    first = runner()
    plan_base(setup, first)
    stage1, stored = _count("stage 1: base model, every task", first)
    if stage1.calls == 0:
        base, unknown = base_accuracy(setup, first), None
    else:  # the order of auto:N relations is not known before stage 1
        base, unknown = dict.fromkeys(setup.relations, 1.0), "base accuracies not cached yet"
    rows = [stage1]
    for experiment in setup.experiments:
        one = runner()
        plan_experiments(setup, one, base, only=experiment)
        count, _ = _count(f"stage 2: {experiment}", one, stored)
        spec = {"interference": setup.matrix, "cumulativity": setup.cumulativity}.get(experiment)
        if unknown and isinstance(spec, int):
            count.estimated = (
                f"auto:{spec} relations: {unknown}; counted as the first {spec} by name"
            )
        rows.append(count)
    both = runner()
    plan_experiments(setup, both, base)
    stage2, _ = _count("stage 2 together", both, stored)
    stage2.estimated = next((r.estimated for r in rows if r.estimated), None)
    total = Count("total", stage1.variants | stage2.variants, stage1.results | stage2.results)
    total.computed = stage1.computed | stage2.computed
    total.calls = stage1.calls + stage2.calls
    total.n_computed = stage1.n_computed + stage2.n_computed
    total.documents = stage1.documents + stage2.documents
    total.estimated = stage2.estimated
    return [*rows, stage2, total]


HEADER = ["", "variants", "task results", "cached", "lm-eval calls", "to compute", "documents"]


def render_plan(setup: Setup, rows: list[Count]) -> str:
    """The plan as a table, with what the estimates assume."""
    table = [HEADER, *(r.row() for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = [
        f"plan of `relneuron report` into {setup.out} (model {setup.model}, "
        f"{len(setup.relations)} relations, experiments: {', '.join(setup.experiments)})",
    ]
    for line in table:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    notes = sorted({r.estimated for r in rows if r.estimated})
    lines += [f"estimated: {note} (the run picks them by base accuracy)" for note in notes]
    lines.append(
        "stage 2 starts when stage 1's results are in; evaluations that several experiments "
        "share are counted in each experiment's row and once in 'stage 2 together'."
    )
    return "\n".join(lines)
