"""Run the evaluations that check files need, each one once per session.

Evaluations go through ``evaluation.runner`` (as the report's do): the model is loaded
once per model args, as ``lm_eval --model relneuron-hf --model_args ...`` would load it
(one model in memory at a time: the next model's load frees the previous one),
and each intervention is a ``RelNeuronLM`` with its model args around those weights
(checked to be restored after each run), evaluated by ``lm_eval.simple_evaluate``. An
evaluation is keyed by everything that changes its numbers (model args, device,
batch size, limit, few-shot, task folders); before the first one runs, every collected
item has registered the tasks it needs, so the base model runs once on the union of
all tasks instead of once per item. Task managers come from ``task_index``, once per
process (the one with lm-eval's ~15k built-in tasks costs 12-25 s, so it is built only
when a check names a task outside relneuron's own and the check's folders); like
``lm_eval run``, each evaluation's tasks see its model args as metadata.
"""

from __future__ import annotations

import fnmatch
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.results import TaskResult
from relneuron_eval.evaluation.runner import LoadedModel, ModelSlot, evaluate
from relneuron_eval.relcheck.judge import Outcome, RowInput, judge
from relneuron_eval.relcheck.parse import (
    OTHERS,
    CheckSpec,
    Expectation,
    check_batch_size,
    check_limit,
)

SETTING_KEYS = ("device", "batch_size", "limit", "num_fewshot", "bootstrap_iters")
TARGETED_KINDS = ("drop", "drop_below", "control_drop_below", "raises", "compare")


# ==================================================================== options
@dataclass
class Overrides:
    """Command-line options that replace what check files say."""

    model: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    neuron_set: str | None = None
    device: str | None = None
    batch_size: int | str | None = None
    limit: int | float | None = None
    limit_given: bool = False  # "--relcheck-limit none" means: no limit

    @staticmethod
    def parse_limit(text: str) -> int | float | None:
        if text.strip().lower() in ("none", "all", "0"):
            return None
        try:
            value: Any = float(text) if "." in text else int(text)
        except ValueError:
            raise RelNeuronError(f"--relcheck-limit: not a number: {text!r}") from None
        return check_limit_cli(value)

    @staticmethod
    def parse_batch_size(text: str) -> int | str:
        value: Any = int(text) if text.isdigit() else text
        try:
            return check_batch_size(value)
        except Exception:
            raise RelNeuronError(
                f"--relcheck-batch-size: {text!r} is not a positive integer or 'auto'"
            ) from None

    @staticmethod
    def parse_model_args(text: str) -> dict[str, Any]:
        from relneuron_eval.relcheck.parse import INTERVENTION_KEYS

        out: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise RelNeuronError(f"--relcheck-model-args: expected key=value, got {part!r}")
            if key.strip() in ("pretrained", *INTERVENTION_KEYS):
                raise RelNeuronError(
                    f"--relcheck-model-args may not set {key.strip()!r}",
                    hint="use --relcheck-model / --relcheck-neuron-set",
                )
            out[key.strip()] = value.strip()
        return out


def check_limit_cli(value: Any) -> int | float | None:
    try:
        return check_limit(value, None, "--relcheck-limit")
    except Exception as exc:  # yaml_lines.LocatedError -> user error
        raise RelNeuronError(str(exc)) from None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ================================================================ evaluations
@dataclass(frozen=True)
class EvalConfig:
    """Everything that changes an evaluation's numbers, except the task list."""

    model_args: tuple[tuple[str, Any], ...]
    device: str
    batch_size: Any
    limit: Any
    num_fewshot: int | None
    bootstrap_iters: int
    include: tuple[str, ...]

    @property
    def key(self) -> str:
        return json.dumps(
            [
                self.model_args,
                self.device,
                self.batch_size,
                self.limit,
                self.num_fewshot,
                self.bootstrap_iters,
                self.include,
            ],
            sort_keys=True,
            default=str,
        )

    @property
    def is_base(self) -> bool:
        return not any(k == "neuron_set" for k, _ in self.model_args)

    def lm_args(self) -> dict[str, Any]:
        """The ``RelNeuronLM``'s model args: batch size per evaluation, not per load."""
        return {"batch_size": self.batch_size, **dict(self.model_args)}

    def describe(self) -> str:
        args = dict(self.model_args)
        settings = f"device={self.device} batch_size={self.batch_size} limit={self.limit}"
        if self.num_fewshot is not None:
            settings += f" num_fewshot={self.num_fewshot}"
        return f"model {args.get('pretrained')}  {settings}"


@dataclass
class EvalResult:
    """Merged results of one configuration (possibly several lm-eval calls)."""

    config: EvalConfig
    tasks: dict[str, TaskResult] = field(default_factory=dict)  # with per-document records
    covered: set[str] = field(default_factory=set)
    relneuron: dict[str, Any] | None = None
    error: RelNeuronError | None = None


class TaskCatalog:
    """Task names, groups and tags known to one TaskManager, without loading datasets."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.names: list[str] = list(manager.all_tasks)
        self._groups = set(manager.all_groups)
        self._tags = set(manager.all_tags)

    def match(self, pattern: str) -> list[str]:
        if pattern in self.names:
            return [pattern]
        return sorted(fnmatch.filter(self.names, pattern))

    def kind(self, name: str) -> str:
        if name in self._groups:
            return "group"
        if name in self._tags:
            return "tag"
        return "task"

    def leaves(self, name: str, _seen: frozenset[str] = frozenset()) -> list[str]:
        """The individual tasks a name stands for (groups and tags expanded)."""
        if name in _seen:
            return []
        entry = self.manager.task_index.get(name)
        kind = self.kind(name)
        if entry is None or kind == "task":
            return [name]
        if kind == "tag":
            members = sorted(entry.tags or [])
        else:
            members = []
            for item in (entry.cfg or {}).get("task") or []:
                if isinstance(item, str):
                    members.extend(self.match(item) or [item])
                elif isinstance(item, dict):
                    sub = item.get("group") or item.get("task")
                    if isinstance(sub, str):
                        members.append(sub)
        out: list[str] = []
        for member in members:
            out.extend(x for x in self.leaves(member, _seen | {name}) if x not in out)
        return out


def plan_batches(names: set[str], catalog: TaskCatalog) -> list[list[str]]:
    """Split a task list into lm-eval calls without a task in two groups of one call.

    lm-eval refuses ``[group, member]`` in one call; members already inside a group are
    dropped, and groups that share a member go to separate calls.
    """
    groups = sorted(
        (n for n in names if catalog.kind(n) == "group"), key=lambda g: (-len(catalog.leaves(g)), g)
    )
    batches: list[tuple[list[str], set[str]]] = []
    for group in groups:
        leaves = set(catalog.leaves(group))
        for members, covered in batches:
            if not covered & leaves:
                members.append(group)
                covered |= leaves
                break
        else:
            batches.append(([group], set(leaves)))
    covered_anywhere = set().union(*(c for _, c in batches)) if batches else set()
    singles = sorted(
        {leaf for n in names if catalog.kind(n) != "group" for leaf in catalog.leaves(n)}
    )
    singles = [s for s in singles if s not in covered_anywhere]
    if singles:
        if batches:
            batches[0][0].extend(singles)
        else:
            batches.append((singles, set(singles)))
    return [members for members, _ in batches]


class Evaluator:
    """Session-wide cache of task managers and evaluations; records every lm-eval call."""

    def __init__(self) -> None:
        self._managers: dict[tuple[tuple[str, ...], bool], TaskCatalog] = {}
        self._full_needed: set[tuple[str, ...]] = set()
        self._planned: dict[str, set[str]] = {}
        self._results: dict[str, EvalResult] = {}
        self._slot = ModelSlot()
        self.records: list[dict[str, Any]] = []

    # ------------------------------------------------------------ task managers
    def catalog(self, include: tuple[str, ...], full: bool = False) -> TaskCatalog:
        key = (include, full)
        if key not in self._managers:
            from relneuron_eval.harness.task_index import manager

            self._managers[key] = TaskCatalog(manager(include, full=full))
        return self._managers[key]

    def expand(
        self, include: tuple[str, ...], patterns: list[str]
    ) -> tuple[dict[str, list[str]], bool]:
        """Match every pattern; falls back to lm-eval's built-in tasks only when needed."""
        small = self.catalog(include)
        found = {p: small.match(p) for p in patterns}
        if all(found.values()):
            return found, include in self._full_needed
        full = self.catalog(include, full=True)
        self._full_needed.add(include)
        return {p: full.match(p) for p in patterns}, True

    def catalog_for(self, include: tuple[str, ...]) -> TaskCatalog:
        return self.catalog(include, full=include in self._full_needed)

    # -------------------------------------------------------------- evaluations
    def plan(self, config: EvalConfig, names: list[str]) -> None:
        """Register tasks an item will need, so the first evaluation covers them all."""
        self._planned.setdefault(config.key, set()).update(names)

    def evaluate(self, config: EvalConfig, names: list[str], label: str) -> EvalResult:
        result = self._results.setdefault(config.key, EvalResult(config))
        if result.error is not None:
            raise result.error
        missing = set(names) - result.covered
        if not missing:
            return result
        wanted = (self._planned.get(config.key, set()) | missing) - result.covered
        catalog = self.catalog_for(config.include)
        try:
            for batch in plan_batches(wanted, catalog):
                self._run(result, batch, catalog, label)
        except RelNeuronError as exc:
            result.error = exc
            raise
        result.covered |= wanted
        return result

    def _model(self, config: EvalConfig) -> LoadedModel:
        """The configuration's model, loaded once per load args (interventions and batch
        size aside); another model replaces it, so memory holds one model at a time."""
        from relneuron_eval.core.spec import SETTING_NAMES

        load_args = {k: v for k, v in config.model_args if k not in SETTING_NAMES}
        return self._slot.get(load_args, device=config.device, batch_size=config.batch_size)

    def _run(self, result: EvalResult, batch: list[str], catalog: TaskCatalog, label: str) -> None:
        from relneuron_eval.harness.task_index import with_metadata

        config = result.config
        started = time.perf_counter()
        tasks = evaluate(
            self._model(config),
            config.lm_args(),
            batch,
            label=label,
            hint=config.describe(),
            task_manager=with_metadata(catalog.manager, dict(config.model_args)),
            limit=config.limit,
            num_fewshot=config.num_fewshot,
            bootstrap_iters=config.bootstrap_iters,
        )
        seconds = time.perf_counter() - started
        result.tasks.update(tasks)
        info = next((t.info for t in tasks.values() if t.info is not None), None)
        if info is not None:
            result.relneuron = info
        self.records.append(
            {
                "label": label,
                "base": config.is_base,
                "model": "relneuron-hf",
                "model_args": {k: v for k, v in config.model_args},
                "settings": {
                    "device": config.device,
                    "batch_size": config.batch_size,
                    "limit": config.limit,
                    "num_fewshot": config.num_fewshot,
                    "bootstrap_iters": config.bootstrap_iters,
                },
                "include_path": list(config.include),
                "tasks": batch,
                "seconds": round(seconds, 3),
                "relneuron": info,
                "results": {
                    name: {",".join(k): v for k, v in t.metrics.items()}
                    | {f"{m}_stderr,{f}": s for (m, f), s in t.stderrs.items() if s is not None}
                    for name, t in tasks.items()
                },
                "n_docs": {name: t.n_docs for name, t in tasks.items()},
            }
        )


# ===================================================================== checks
@dataclass
class ResolvedCheck:
    """A check file with command-line overrides applied and its tasks matched."""

    spec: CheckSpec
    model: str
    model_args: dict[str, Any]
    neuron_set: str | None
    settings: dict[str, Any]
    include: tuple[str, ...]
    universe: list[str]  # the check's `tasks`, matched
    expanded: dict[str, list[str] | None]  # expectation id -> matched names (None: `others`)
    skip_reason: str | None = None

    def config(self, intervention: str | None) -> EvalConfig:
        args: dict[str, Any] = {"pretrained": self.model, **self.model_args}
        if intervention is not None:
            iv = self.spec.interventions[intervention]
            args["neuron_set"] = iv.neuron_set or self.neuron_set
            args.update(iv.args)
        return EvalConfig(
            model_args=tuple(sorted(args.items())),
            device=self.settings["device"],
            batch_size=self.settings["batch_size"],
            limit=self.settings["limit"],
            num_fewshot=self.settings["num_fewshot"],
            bootstrap_iters=self.settings["bootstrap_iters"],
            include=self.include,
        )

    def needs(self, exp: Expectation) -> list[tuple[EvalConfig, list[str], str]]:
        """(configuration, task names, label) pairs this expectation reads."""
        names = self.expanded[exp.id]
        names = self.universe if names is None else names
        out = [(self.config(None), names, "base")]
        for iv in exp.interventions():
            out.append((self.config(iv), names, iv))
        return out

    def context_lines(self, exp: Expectation, catalog: TaskCatalog | None = None) -> list[str]:
        lines = [f"check:    {self.spec.path}:{exp.line}"]
        for name in exp.interventions():
            iv = self.spec.interventions[name]
            nset = Path(iv.neuron_set or self.neuron_set or "?").name
            lines.append(f"intervention {name}: {iv.describe()}  (neuron set {nset})")
        lines.append(self.config(None).describe())
        return lines


def resolve_check(spec: CheckSpec, overrides: Overrides, evaluator: Evaluator) -> ResolvedCheck:
    """Apply overrides, match tasks, and validate interventions against the neuron set."""
    model = overrides.model or spec.model
    model_args = {**spec.model_args, **overrides.model_args}
    skip = None
    if overrides.neuron_set:
        from relneuron_eval.resources import resolve_shipped

        neuron_set: str | None = str(resolve_shipped(overrides.neuron_set))
    else:
        neuron_set = spec.neuron_set_for(model)
        if neuron_set is None and isinstance(spec.neuron_set, dict):
            skip = (
                f"no neuron set for model {model!r} in this check "
                f"(it has: {', '.join(spec.neuron_set)}); pass --relcheck-neuron-set"
            )
    settings = {
        "device": overrides.device or spec.defaults.get("device") or default_device(),
        "batch_size": overrides.batch_size or spec.defaults.get("batch_size", 8),
        "limit": overrides.limit if overrides.limit_given else spec.defaults.get("limit"),
        "num_fewshot": spec.defaults.get("num_fewshot"),
        "bootstrap_iters": spec.defaults.get("bootstrap_iters", 1000),
    }
    include = tuple(str(p) for p in spec.include_path)
    patterns = list(spec.tasks)
    for exp in spec.expectations:
        patterns += [p for p in (exp.tasks or []) if p != OTHERS]
    matched, _ = evaluator.expand(include, list(dict.fromkeys(patterns)))
    catalog = evaluator.catalog_for(include)

    def names_for(items: list[str], line: int) -> list[str]:
        out: list[str] = []
        for pattern in items:
            hits = matched.get(pattern) or []
            if not hits:
                import difflib

                close = difflib.get_close_matches(pattern, catalog.names, n=3)
                raise spec.error(
                    f"unknown task {pattern!r}",
                    line,
                    f"did you mean {', '.join(close)}?"
                    if close
                    else "check the name or include_path",
                )
            out.extend(h for h in hits if h not in out)
        return out

    universe = names_for(spec.tasks, spec.tasks_line)
    expanded: dict[str, list[str] | None] = {}
    for exp in spec.expectations:
        if exp.uses_others:
            expanded[exp.id] = None
        elif exp.tasks is None:
            expanded[exp.id] = universe
        else:
            expanded[exp.id] = names_for(exp.tasks, exp.line)
    if skip is None:
        _check_interventions(spec, neuron_set)
    return ResolvedCheck(
        spec, model, model_args, neuron_set, settings, include, universe, expanded, skip
    )


def _check_interventions(spec: CheckSpec, neuron_set: str | None) -> None:
    """Load each neuron set once and try every selection (groups, top_k, fraction)."""
    from relneuron_eval.core.neuron_set import load

    loaded: dict[str, Any] = {}
    for iv in spec.interventions.values():
        path = iv.neuron_set or neuron_set
        line = iv.line if iv.neuron_set else (spec.neuron_set_line or iv.line)
        if path is None:
            raise spec.error(f"intervention {iv.name!r} has no neuron set", iv.line)
        try:
            if path not in loaded:
                loaded[path] = load(path)
        except RelNeuronError as exc:
            raise spec.error(f"neuron set: {exc}", line) from None
        try:
            loaded[path].select(
                iv.args.get("groups", "*"),
                top_k=iv.args.get("top_k"),
                fraction=iv.args.get("fraction"),
            )
        except RelNeuronError as exc:
            raise spec.error(
                f"intervention {iv.name!r}: {exc.message}", iv.line, exc.hint
            ) from None


# ===================================================================== judging
def _metric_key(task: TaskResult, wanted: str | None) -> tuple[str, str]:
    keys = list(task.metrics)
    if wanted and "," in wanted:
        metric, _, filt = wanted.partition(",")
        if (metric, filt) in task.metrics:
            return metric, filt
        candidates: list[tuple[str, str]] = []
    else:
        name = wanted or ("acc" if any(m == "acc" for m, _ in keys) else None)
        candidates = [k for k in keys if k[0] == name] if name else keys
        if name is None and len({m for m, _ in keys}) == 1:
            candidates = keys
        if len(candidates) > 1:
            candidates = [k for k in candidates if k[1] == "none"] or candidates
        if len(candidates) == 1:
            return candidates[0]
    shown = ", ".join(",".join(k) for k in keys) or "none"
    raise RelNeuronError(
        f"task {task.name}: metric {wanted or '(default)'} is ambiguous or missing",
        hint=f"set metric: to one of {shown}",
    )


def _pairs(
    ref: EvalResult, var: EvalResult, leaves: list[str], metric: str, filt: str
) -> tuple[list[float], list[float]] | None:
    xs: list[float] = []
    ys: list[float] = []
    for leaf in leaves:
        a, b = ref.tasks.get(leaf), var.tasks.get(leaf)
        if a is None or b is None or not a.docs or not b.docs:
            return None
        got = a.paired(b, metric, filt)
        if isinstance(got, str):
            return None
        xs.extend(got[0])
        ys.extend(got[1])
    return (xs, ys) if xs else None


def rows_for(check: ResolvedCheck, exp: Expectation, catalog: TaskCatalog) -> list[str]:
    """The task/group names an expectation is judged on."""
    names = check.expanded[exp.id]
    if names is None:  # others: the check's tasks minus this intervention's targets
        universe = [leaf for n in check.universe for leaf in catalog.leaves(n)]
        own: set[str] = set()
        for other in check.spec.expectations:
            if other.intervention == exp.intervention and other.kind in TARGETED_KINDS:
                for n in check.expanded[other.id] or []:
                    if other.tasks is not None:
                        own.update(catalog.leaves(n))
        rows = [t for t in dict.fromkeys(universe) if t not in own]
    else:
        rows = []
        for n in names:
            parts = catalog.leaves(n) if catalog.kind(n) == "tag" else [n]
            rows.extend(p for p in parts if p not in rows)
    return [r for r in rows if not any(fnmatch.fnmatch(r, x) for x in exp.excludes)]


def run_expectation(check: ResolvedCheck, exp: Expectation, evaluator: Evaluator) -> Outcome:
    """Evaluate what is needed (cached) and judge the expectation."""
    catalog = evaluator.catalog_for(check.include)
    needs = check.needs(exp)
    base = evaluator.evaluate(*needs[0])
    variant = evaluator.evaluate(*needs[1])
    ref = base
    if exp.kind == "compare" and exp.than != "base":
        ref = evaluator.evaluate(*needs[2])
    rows: list[RowInput] = []
    for name in rows_for(check, exp, catalog):
        results = [r.tasks.get(name) for r in (base, ref, variant)]
        if any(t is None for t in results):
            raise RelNeuronError(f"task {name} has no result", hint="was it evaluated?")
        b, r, v = results
        metric, filt = _metric_key(b, exp.metric)
        for other in (r, v):
            if (metric, filt) not in other.metrics:
                raise RelNeuronError(
                    f"task {name}: no {metric},{filt} in the intervention's results"
                )
        leaves = b.subtasks if b.is_group else [name]
        rows.append(
            RowInput(
                task=name,
                metric=f"{metric},{filt}",
                base=b.metrics[(metric, filt)],
                reference=r.metrics[(metric, filt)],
                score=v.metrics[(metric, filt)],
                higher_is_better=b.higher_is_better.get(metric, True),
                pairs=_pairs(ref, variant, leaves, metric, filt),
            )
        )
    ref_label = exp.than if exp.kind == "compare" and exp.than else "base"
    return judge(exp, rows, ref_label=ref_label, context=check.context_lines(exp))
