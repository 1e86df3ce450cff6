"""``relneuron compare``: base model vs. intervention variants, from lm-eval's own files.

Reads the ``results_<date>.json`` files lm-eval writes with ``--output_path`` (and the
``samples_<task>_<date>.jsonl`` files next to them when ``--log_samples`` was given),
finds the base run and the ``relneuron-hf`` variants by their recorded model and model
args, and puts them side by side per task and group: base score, each variant's score,
the difference and whether the difference is larger than noise.

Noise: when both runs logged per-sample results for the same documents, a paired test
is used (exact McNemar for 0/1 metrics such as ``acc``, a paired t-test otherwise);
without sample logs, a two-sided z-test on lm-eval's reported standard errors.

Comparisons that would be meaningless are never made silently: a task missing from a
run, a different task version, n-shot, ``--limit`` / number of documents, or different
documents (lm-eval's task hashes) is reported and the cell is left uncompared. When no
variant shares a single task with the base there is nothing to compare: that is an
error (exit 2), as it almost always means a wrong folder; a variant that alone shares
none is a warning on stderr. A paired test that cannot be made although sample logs
exist (a truncated or damaged log, one run logged and the other not) falls back to the
z-test with a warning on stderr, in every output format.

Each task shows one metric by default (``acc_match``, else ``acc``, ...; ``--metric`` to
choose, ``--metric all`` for every one), the tasks of the relations a variant targets
(its ``config.relneuron`` groups) come first and are marked, and an ``acc_prefix2`` row
of a relation that metric cannot tell apart (taskgen's warning) is never marked
significant (:mod:`relneuron_eval.compare.annotate`).

Pure Python (no torch); matplotlib is imported only for ``--heatmap``
(:mod:`relneuron_eval.compare.heatmap`), a tokenizer only for ``acc_prefix2`` rows.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from relneuron_eval.atomic import atomic_write
from relneuron_eval.compare.annotate import Prefix2Flags, own_variants, wanted_metrics
from relneuron_eval.compare.heatmap import render_heatmap, write_heatmap  # noqa: F401
from relneuron_eval.compare.read import (  # noqa: F401  (re-exported: the public API)
    Run,
    TaskResult,
    _model_identity,
    choose_base,
    find_result_files,
    load_runs,
    parse_results,
    parse_results_file,
    read_samples,
)
from relneuron_eval.compare.read import number as _number
from relneuron_eval.compare.render import (  # noqa: F401
    RENDERERS,
    render_csv,
    render_json,
    render_markdown,
    render_table,
)
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.statistics import (
    MCNEMAR,
    PAIRED_T,
    STDERR_Z,
    PairedTest,
    paired_test,
    stderr_z,
)

HELP = (
    "compare lm-eval results of a base model and relneuron-hf variants (table/md/csv/json/heatmap)"
)

FORMATS = ("table", "markdown", "csv", "json")
SORTS = ("change", "name", "base")


# =========================================================================== data


@dataclass
class Cell:
    """One variant's number for one row, and how it compares with the base."""

    variant: str
    score: float | None
    stderr: float | None
    delta: float | None
    p_value: float | None
    test: str | None  # "mcnemar", "paired-t", "stderr-z" or None
    significant: bool | None
    status: str  # "ok", "missing", "mismatch", "no-base"
    note: str = ""


@dataclass
class Row:
    task: str
    kind: str  # "group" or "task"
    metric: str
    filter: str
    higher_is_better: bool | None
    base: float | None
    base_stderr: float | None
    cells: list[Cell]
    n: int | None = None  # documents behind the base's number
    own: list[str] = field(default_factory=list)  # variants whose groups name this task
    flag: str = ""  # why the metric cannot be read as a test here (then nothing significant)

    def max_abs_delta(self) -> float:
        deltas = [abs(c.delta) for c in self.cells if c.delta is not None]
        return max(deltas) if deltas else -1.0


@dataclass
class Comparison:
    base: str
    variants: list[str]
    rows: list[Row]
    problems: list[str]
    alpha: float
    files: dict[str, list[str]]
    descriptions: dict[str, Any]
    warnings: list[str] = field(default_factory=list)  # printed on stderr in every format

    def is_control(self, label: str) -> bool:
        """A random control is a reference for the variants, never a candidate."""
        return (self.descriptions.get(label) or {}).get("control") == "random"

    def leaderboard(self) -> list[dict[str, Any]]:
        """Per run: mean change, significant drops/rises; variants first, then controls."""
        board = []
        for index, name in enumerate(self.variants):
            cells = [r.cells[index] for r in self.rows if r.cells[index].delta is not None]
            deltas = [c.delta for c in cells if c.delta is not None]
            board.append(
                {
                    "variant": name,
                    "compared": len(cells),
                    "mean_delta": sum(deltas) / len(deltas) if deltas else None,
                    "significant_down": sum(
                        1 for c in cells if c.significant and (c.delta or 0) < 0
                    ),
                    "significant_up": sum(1 for c in cells if c.significant and (c.delta or 0) > 0),
                    "control": self.is_control(name),
                }
            )
        board.sort(key=lambda e: (e["control"], e["mean_delta"] is None, -(e["mean_delta"] or 0.0)))
        return board

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "variants": self.variants,
            "alpha": self.alpha,
            "rows": [asdict(r) for r in self.rows],
            "leaderboard": self.leaderboard(),
            "problems": self.problems,
            "warnings": self.warnings,
            "files": self.files,
            "descriptions": self.descriptions,
        }


# ===================================================================== samples


def _paired_values(
    base: TaskResult, variant: TaskResult, metric: str, filt: str
) -> tuple[list[float], list[float]] | str:
    """Matched per-document values, or the reason why there are none."""
    if not base.samples and not variant.samples:
        return NO_SAMPLES  # the documented fallback: nothing to warn about
    if not base.samples or not variant.samples:
        which = "base" if not base.samples else "variant"
        return f"no sample log for the {which} run of {base.name}"
    return base.paired(variant, metric, filt)


def _paired_test(
    base_run: Run, variant_run: Run, row_task: TaskResult, metric: str, filt: str
) -> PairedTest | str:
    """The paired test on all (sub)tasks' documents pooled, or why it cannot be made."""
    names = row_task.subtasks if row_task.is_group else [row_task.name]
    xs: list[float] = []
    ys: list[float] = []
    for name in names:
        b, v = base_run.tasks.get(name), variant_run.tasks.get(name)
        if b is None or v is None:
            return f"subtask {name} missing"
        got = _paired_values(b, v, metric, filt)
        if isinstance(got, str):
            return got
        xs.extend(got[0])
        ys.extend(got[1])
    return paired_test(xs, ys)


# ==================================================================== comparing
NO_SAMPLES = "no sample logs"


def _fallback_warnings(rows: list[Row]) -> list[str]:
    """One line per (variant, task, reason) whose paired test failed although logs exist."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for row in rows:
        for cell in row.cells:
            if cell.status == "ok" and cell.test not in (MCNEMAR, PAIRED_T):
                reason = cell.note.removesuffix("; no stderr either")
                if reason != NO_SAMPLES:
                    found.setdefault((cell.variant, row.task, cell.note), []).append(row.metric)
    return [
        f"{variant}: {task} ({', '.join(dict.fromkeys(metrics))}): no paired test ({note}); "
        + (
            "no test at all (no stderr either)"
            if note.endswith("no stderr either")
            else "used the z-test on lm-eval's stderr instead (less sensitive)"
        )
        for (variant, task, note), metrics in found.items()
    ]


def _coverage(base: Run, variants: list[Run], names: list[str], problems: list[str]) -> list[str]:
    """Report missing tasks; refuse when no variant shares a task with the base."""
    shared = {}
    for run in variants:
        missing = [n for n in names if n in base.tasks and n not in run.tasks]
        extra = [n for n in names if n not in base.tasks and n in run.tasks]
        if missing:
            problems.append(f"{run.label}: missing task(s) {missing} (present in the base)")
        if extra:
            problems.append(f"{run.label}: task(s) {extra} have no base result")
        shared[run.label] = [n for n in names if n in base.tasks and n in run.tasks]
    if not any(shared.values()):
        runs = "; ".join(f"{r.label}: {_few(r.tasks)}" for r in variants)
        raise RelNeuronError(
            f"nothing to compare: the base and the other runs share no task (base "
            f"{base.label}: {_few(base.tasks)}; {runs})",
            hint="pass lm-eval outputs of the same tasks, or check --tasks",
        )
    return [
        f"{label} shares no task with the base {base.label}: none of its results are compared"
        for label, names_shared in shared.items()
        if not names_shared
    ]


def _few(names: Iterable[str], shown: int = 5) -> str:
    names = sorted(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return (", ".join(names[:shown]) or "no tasks") + more


def _mismatch(base: TaskResult, variant: TaskResult, base_run: Run, variant_run: Run) -> str | None:
    reasons = []
    if str(base.version) != str(variant.version):
        reasons.append(f"task version {base.version} vs {variant.version}")
    if str(base.n_shot) != str(variant.n_shot):
        reasons.append(f"n-shot {base.n_shot} vs {variant.n_shot}")
    if base.n_docs != variant.n_docs:
        reasons.append(f"{base.n_docs} vs {variant.n_docs} documents")
    if _number(base_run.limit) != _number(variant_run.limit):
        reasons.append(f"--limit {base_run.limit} vs {variant_run.limit}")
    if base.task_hash and variant.task_hash and base.task_hash != variant.task_hash:
        reasons.append("different documents or prompts (task hashes differ)")
    return "; ".join(reasons) or None


def compare_runs(
    runs: list[Run],
    base: Run,
    *,
    alpha: float = 0.05,
    metrics: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    sort: str = "change",
    problems: list[str] | None = None,
) -> Comparison:
    """Build the comparison table of every other run against ``base``."""
    problems = list(problems or [])
    variants = [r for r in runs if r is not base]
    if not variants:
        raise RelNeuronError(
            "nothing to compare: only one run among the inputs",
            hint="pass the base run and at least one variant",
        )
    base_id = _model_identity(base.pretrained)
    for run in variants:
        if run.is_variant and _model_identity(run.pretrained) != base_id:
            problems.append(
                f"{run.label}: variant of pretrained={run.pretrained}, but the base is "
                f"pretrained={base.pretrained}"
            )
    names = list(base.tasks)
    for run in variants:
        names.extend(t for t in run.tasks if t not in names)
    if tasks:
        wanted = set(tasks)
        unknown = wanted - set(names)
        if unknown:
            raise RelNeuronError(
                f"--tasks {sorted(unknown)} not in any run", hint=f"tasks: {sorted(names)}"
            )
        names = [n for n in names if n in wanted]
    warnings = _coverage(base, variants, names, problems)
    rows = _rows(base, variants, names, metrics, alpha, problems)
    if not rows and metrics:
        found = sorted(
            {m for r in [base, *variants] for t in r.tasks.values() for m, _ in t.metrics}
        )
        raise RelNeuronError(
            f"--metric {', '.join(metrics)}: no compared task reports it",
            hint=f"the runs report: {', '.join(found) or 'no metrics'}; or --metric all",
        )
    _annotate(rows, base, variants, warnings)
    rows = sort_rows(rows, sort)
    return Comparison(
        base=base.label,
        variants=[r.label for r in variants],
        rows=rows,
        problems=list(dict.fromkeys(problems)),
        alpha=alpha,
        files={r.label: r.files for r in [base, *variants]},
        descriptions={r.label: r.relneuron for r in [base, *variants] if r.relneuron},
        warnings=warnings + _fallback_warnings(rows),
    )


def _rows(
    base: Run,
    variants: list[Run],
    names: list[str],
    metrics: Sequence[str] | None,
    alpha: float,
    problems: list[str],
) -> list[Row]:
    """One row per (task, metric, filter), one cell per variant."""
    rows: list[Row] = []
    for name in names:
        ref = base.tasks.get(name) or next(r.tasks[name] for r in variants if name in r.tasks)
        keys = list(ref.metrics)
        for run in variants:
            if name in run.tasks:
                keys.extend(k for k in run.tasks[name].metrics if k not in keys)
        keys = wanted_metrics(keys, metrics)
        base_task = base.tasks.get(name)
        for metric, filt in keys:
            base_value = base_task.metrics.get((metric, filt)) if base_task else None
            base_se = base_task.stderrs.get((metric, filt)) if base_task else None
            cells = []
            for run in variants:
                cells.append(_cell(base, run, base_task, name, metric, filt, alpha, problems))
            hib = (base_task or ref).higher_is_better.get(metric)
            rows.append(
                Row(
                    name,
                    "group" if ref.is_group else "task",
                    metric,
                    filt,
                    hib,
                    base_value,
                    base_se,
                    cells,
                    (base_task or ref).n_docs,
                )
            )
    return rows


def _cell(
    base: Run,
    run: Run,
    base_task: TaskResult | None,
    name: str,
    metric: str,
    filt: str,
    alpha: float,
    problems: list[str],
) -> Cell:
    task = run.tasks.get(name)
    value = task.metrics.get((metric, filt)) if task else None
    se = task.stderrs.get((metric, filt)) if task else None
    if task is None or value is None:
        return Cell(run.label, None, None, None, None, None, None, "missing", "not in this run")
    if base_task is None or (metric, filt) not in base_task.metrics:
        return Cell(run.label, value, se, None, None, None, None, "no-base", "not in the base run")
    reason = _mismatch(base_task, task, base, run)
    if reason:
        problems.append(f"{run.label}: {name} not compared: {reason}")
        return Cell(run.label, value, se, None, None, None, None, "mismatch", reason)
    delta = value - base_task.metrics[(metric, filt)]
    paired = _paired_test(base, run, base_task, metric, filt)
    note = ""
    if isinstance(paired, tuple):
        p_value, test = paired
    else:
        note = paired
        p_value, test = stderr_z(delta, base_task.stderrs.get((metric, filt)), se), STDERR_Z
        if p_value is None:
            test = None
            note = f"{paired}; no stderr either"
    significant = None if p_value is None else p_value < alpha
    return Cell(run.label, value, se, delta, p_value, test, significant, "ok", note)


def _annotate(rows: list[Row], base: Run, variants: list[Run], warnings: list[str]) -> None:
    """Mark the variants' own tasks; unmark acc_prefix2 p-values that mean nothing."""
    tasks = dict(base.tasks)
    for run in variants:
        tasks.update({n: t for n, t in run.tasks.items() if n not in tasks})
    own = own_variants(tasks, [(r.label, r.relneuron) for r in variants])
    flags = Prefix2Flags(base.model_args.get("tokenizer") or base.pretrained)
    for row in rows:
        row.own = own.get(row.task, [])
        task = tasks.get(row.task)
        if row.metric != "acc_prefix2" or task is None:
            continue
        row.flag = flags.flag(task)
        if row.flag:
            for cell in row.cells:
                if cell.significant is not None:
                    cell.significant = None
                    cell.note = "; ".join(filter(None, [cell.note, "acc_prefix2 flagged"]))
    warnings.extend(flags.warnings)


def sort_rows(rows: list[Row], sort: str) -> list[Row]:
    """The variants' own tasks first, then groups, then tasks; within each, the chosen
    order (a task's metrics stay together: a task is placed by its largest change)."""
    if sort not in SORTS:
        raise RelNeuronError(f"unknown sort {sort!r}", hint=f"use one of {list(SORTS)}")
    largest: dict[str, float] = {}
    top: dict[str, float | None] = {}
    for row in rows:
        largest[row.task] = max(largest.get(row.task, -1.0), row.max_abs_delta())
        if row.base is not None:
            top[row.task] = max(top.get(row.task) or 0.0, row.base)

    def key(row: Row) -> tuple:
        kind = 0 if row.own else 1 if row.kind == "group" else 2
        if sort == "change":
            return (kind, -largest[row.task], row.task, row.metric, row.filter)
        if sort == "base":
            best = top.get(row.task)
            return (kind, best is None, -(best or 0.0), row.task, row.metric, row.filter)
        return (kind, row.task, row.metric, row.filter)

    return sorted(rows, key=key)


# ===================================================================== rendering


# ========================================================================== CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", help="lm-eval --output_path folders or results_*.json files"
    )
    parser.add_argument("--base", help="label (or results file) of the base run, if not obvious")
    parser.add_argument(
        "--format", choices=FORMATS, default="table", help="output format (default: table)"
    )
    parser.add_argument(
        "--output", "-o", help="write the output to this file (atomically) instead of stdout"
    )
    parser.add_argument(
        "--heatmap",
        help="also write a PNG heatmap: variants by tasks, colour = change on a fixed scale "
        "(-1..+1 for fractions such as acc), not significant = faded and hatched",
    )
    parser.add_argument(
        "--metric",
        action="append",
        help="metric to show (repeatable), e.g. acc_prefix2; 'all' for every metric "
        "(default: one per task, the first of acc_match, acc, exact_match, acc_norm, f1, bleu "
        "it reports, else its first)",
    )
    parser.add_argument("--tasks", help="comma-separated tasks/groups to show")
    parser.add_argument(
        "--alpha", type=float, default=0.05, help="significance level (default 0.05)"
    )
    parser.add_argument(
        "--sort",
        choices=SORTS,
        default="change",
        help="row order: change (largest change first), name, base (base score)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with 1 when anything was not compared"
    )


def run(args: argparse.Namespace) -> int:
    if not 0.0 < args.alpha < 1.0:
        raise RelNeuronError(f"--alpha must be in (0, 1), got {args.alpha}")
    runs, problems = load_runs(args.inputs)
    base = choose_base(runs, args.base)
    comparison = compare_runs(
        runs,
        base,
        alpha=args.alpha,
        metrics=args.metric,
        tasks=[t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None,
        sort=args.sort,
        problems=problems,
    )
    for target in (args.output, args.heatmap):
        if target and Path(target).is_dir():
            raise RelNeuronError("is a folder; give a file name", path=target)
    text = RENDERERS[args.format](comparison)
    png = render_heatmap(comparison) if args.heatmap else None  # fail before writing anything
    if args.output:
        with atomic_write(args.output) as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    if png is not None:
        with atomic_write(args.heatmap, "wb") as handle:
            handle.write(png)
    if comparison.problems and args.format != "table":
        for problem in comparison.problems:
            print(f"warning: not compared: {problem}", file=sys.stderr)
    for warning in comparison.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 1 if args.strict and comparison.problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry (``python -m relneuron_eval.compare.command``) mirroring ``relneuron compare``."""
    parser = argparse.ArgumentParser(prog="relneuron compare", description=HELP)
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except RelNeuronError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
