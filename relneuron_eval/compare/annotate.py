"""What a compare row means: its metric, whose own relation it is, whether its p counts.

Three things lm-eval's files do not say on their own, worked out once for every output
format of ``relneuron compare``:

* **one metric per task by default** (:func:`primary_metric`): ``acc_match`` where a
  task has it (the relfacts generation tasks), else ``acc`` (multiple choice), ...; 20
  tasks are 20 rows, not 44 with a task's two metrics apart;
* **the intervention's own tasks** (:func:`own_variants`): the tasks of the relations
  named in a variant's ``config.relneuron`` groups, found from the task's
  ``dataset_kwargs`` (``relfacts_relation``) in the results file, else from its name;
* **acc_prefix2 that cannot tell the relation's objects apart** (:class:`Prefix2Flags`):
  the relations ``relneuron taskgen`` warns about (``data.prefix_check``, checked with
  the base model's tokenizer); their ``acc_prefix2`` p-value is shown but never marked
  significant, since a wrong answer that shares the first two tokens scores too.

Pure Python apart from the tokenizer, which is loaded only when an ``acc_prefix2`` row of
a relfacts task is shown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.results import TaskResult, read_json

# The first of these a task reports is its row by default (then the task's first metric).
PRIMARY_METRICS = ("acc_match", "acc", "exact_match", "acc_norm", "f1", "bleu")
ALL_METRICS = "all"
PREFIX2 = "acc_prefix2"

_CONFIGS: dict[str, dict[str, Any]] = {}


def task_config(task: TaskResult) -> dict[str, Any]:
    """The task's entry of ``configs`` in the results file it was read from ({} if none)."""
    source = task.source
    if source not in _CONFIGS:
        try:
            data = read_json(Path(source)) if source and Path(source).is_file() else {}
        except RelNeuronError:
            data = {}
        configs = data.get("configs") if isinstance(data, dict) else None
        _CONFIGS[source] = configs if isinstance(configs, dict) else {}
    entry = _CONFIGS[source].get(task.name)
    return entry if isinstance(entry, dict) else {}


def dataset_kwargs(task: TaskResult) -> dict[str, Any]:
    kwargs = task_config(task).get("dataset_kwargs")
    return kwargs if isinstance(kwargs, dict) else {}


# ------------------------------------------------------------------ metric choice
def wanted_metrics(
    keys: list[tuple[str, str]], metrics: Sequence[str] | None
) -> list[tuple[str, str]]:
    """The (metric, filter) keys shown for one task: ``--metric`` or its primary metric."""
    if metrics and ALL_METRICS in metrics:
        return keys
    if metrics:
        return [k for k in keys if k[0] in metrics]
    chosen = primary_metric([k[0] for k in keys])
    return [k for k in keys if k[0] == chosen]


def primary_metric(names: Iterable[str]) -> str | None:
    """The metric a task's row shows by default."""
    names = list(dict.fromkeys(names))
    return next((m for m in PRIMARY_METRICS if m in names), names[0] if names else None)


# ------------------------------------------------------------------ own tasks
def task_relation(task: TaskResult) -> str | None:
    """The relation a relfacts task is about (its dataset_kwargs), None if it is not one."""
    relation = dataset_kwargs(task).get("relfacts_relation")
    return str(relation) if relation else None


def _groups(description: dict[str, Any] | None) -> list[str]:
    """A variant's groups when they pick particular relations (not per_doc, not '*')."""
    if not description or description.get("per_doc"):
        return []
    groups = description.get("groups") or []
    if isinstance(groups, str):
        groups = groups.split("|")
    return [str(g) for g in groups if str(g) not in ("*", "")]


def _is_about(task: TaskResult, group: str) -> bool:
    relation = task_relation(task)
    if relation is not None:
        return relation == group
    return task.name == group or task.name.endswith(f"_{group}")


def own_variants(
    tasks: dict[str, TaskResult], variants: Sequence[tuple[str, dict[str, Any] | None]]
) -> dict[str, list[str]]:
    """Task name -> labels of the variants whose groups name its relation.

    A variant that would own every task (all groups, ``per_doc``) marks none: the mark
    is there to find the target among the other tasks. Groups (kind ``group``) are never
    marked; their member tasks are.
    """
    own: dict[str, list[str]] = {name: [] for name in tasks}
    leaves = {n: t for n, t in tasks.items() if not t.is_group}
    for label, description in variants:
        groups = _groups(description)
        hits = [n for n, t in leaves.items() if any(_is_about(t, g) for g in groups)]
        if hits and len(hits) < len(leaves):
            for name in hits:
                own[name].append(label)
    return own


# ------------------------------------------------------------------ acc_prefix2
class Prefix2Flags:
    """Which relfacts tasks' ``acc_prefix2`` is undiscriminating (taskgen's warning)."""

    def __init__(self, tokenizer_name: str | None) -> None:
        self.tokenizer_name = tokenizer_name
        self._tokenizer: Any = None
        self._failed: str | None = None
        self._checks: dict[tuple[str, str, str], Any] = {}
        self.warnings: list[str] = []

    def _load_tokenizer(self) -> Any:
        if self._tokenizer is None and self._failed is None:
            from relneuron_eval.data.prefix_check import load_tokenizer

            try:
                if not self.tokenizer_name:
                    raise RelNeuronError("the base run names no pretrained model")
                self._tokenizer = load_tokenizer(self.tokenizer_name)
            except RelNeuronError as exc:
                self._failed = exc.message
                self.warnings.append(
                    f"acc_prefix2 not checked for relations whose first two tokens are shared "
                    f"(taskgen's check): {exc.message}"
                )
        return self._tokenizer

    def flag(self, task: TaskResult) -> str:
        """Why this task's acc_prefix2 cannot be read as a test ('' when it can)."""
        kwargs = dataset_kwargs(task)
        relation = kwargs.get("relfacts_relation")
        if not relation or task.is_group or kwargs.get("relfacts_family", "gen") != "gen":
            return ""
        key = (str(relation), str(kwargs.get("relfacts_lang") or ""), str(task.source))
        if key not in self._checks:
            self._checks[key] = self._check(task, kwargs)
        check = self._checks[key]
        if check is None or not check.flagged:
            return ""
        return (
            f"acc_prefix2 cannot tell {100 * check.share:.0f}% of {check.relation}'s facts from "
            "wrong answers that share their first 2 tokens (taskgen's check): its p is not "
            "marked significant; read acc_match"
        )

    def _check(self, task: TaskResult, kwargs: dict[str, Any]) -> Any:
        tokenizer = self._load_tokenizer()
        if tokenizer is None:
            return None
        from relneuron_eval.data.prefix_check import check_relation

        try:
            relation = _load_relation(task, kwargs)
        except RelNeuronError as exc:
            self.warnings.append(f"{task.name}: acc_prefix2 not checked: {exc.message}")
            return None
        return check_relation(tokenizer, relation)


def _load_relation(task: TaskResult, kwargs: dict[str, Any]) -> Any:
    """The task's relation as its dataset loader reads it (shipped, language or a spec)."""
    from relneuron_eval.data.facts import load_relation
    from relneuron_eval.data.multilingual import load_language_relation

    name, lang, spec = (
        kwargs.get(k) for k in ("relfacts_relation", "relfacts_lang", "relfacts_spec")
    )
    if spec:
        from relneuron_eval.data.relation_spec import load_spec
        from relneuron_eval.harness.task_data import resolve_spec

        source = (task_config(task).get("metadata") or {}).get("config_source")
        relations = load_spec(Path(resolve_spec(str(spec), source)))
        if name not in relations:
            raise RelNeuronError(f"relation {name!r} is not in its spec {spec}")
        return relations[name]
    if lang and lang != "en":
        return load_language_relation(str(lang), str(name))
    return load_relation(str(name))
