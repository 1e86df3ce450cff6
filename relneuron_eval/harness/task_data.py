"""In-memory datasets of the relfacts tasks, for lm-eval's ``custom_dataset: !function``.

The task YAMLs name this module's ``load`` with ``dataset_kwargs`` (family, relation,
language, spec), so no task depends on the current directory or on a dataset hub. Only
the ``test`` split (scored) and the ``fewshot`` split (demos) are ever built: tasks
never see the ``discovery`` split that neuron discovery reads.

Keyword names start with ``relfacts_`` because lm-eval passes the task's metadata (and
with it the model arguments) as keywords too.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

from relneuron_eval.data.facts import (
    Fact,
    Relation,
    fill,
    load_language_relation,
    load_relation,
    load_spec,
)
from relneuron_eval.errors import RelNeuronError

FAMILIES = ("gen", "mc", "2hop")
TASK_LANGS = ("de", "es", "fr", "zh", "ja")  # relfacts_<lang>_<relation>


def fact_row(rel: Relation, fact: Fact) -> dict[str, Any]:
    """One document of a relfacts generation task: the fact asked with its eval template."""
    index = rel.eval_template_index(fact)
    return {
        "fact_id": fact.fact_id,
        "relation": rel.name,
        "lang": rel.language,
        "subject": fact.subject,
        "object": fact.object,
        "answers": list(fact.answers),
        "prompt": fill(rel.templates["eval"][index], fact.subject),
        "template_index": index,
        "delimiter": rel.target_delimiter,
    }


def mc_row(rel: Relation, fact: Fact) -> dict[str, Any]:
    """A multiple-choice document: all of the relation's objects, gold = every true one."""
    row = fact_row(rel, fact)
    gold = [i for i, obj in enumerate(rel.objects) if obj in fact.answers]
    row.update(choices=list(rel.objects), gold=gold)
    return row


def _shuffled(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Documents in a fixed pseudo-random order, so ``--limit N`` scores a fair sample.

    (The source files are grouped, e.g. by country; the first N lines are not.)
    """
    return sorted(rows, key=lambda r: hashlib.sha256(r[key].encode()).hexdigest())


def relation_rows(rel: Relation, family: str) -> dict[str, list[dict[str, Any]]]:
    make = mc_row if family == "mc" else fact_row
    return {
        split: _shuffled([make(rel, f) for f in rel.facts_in(split)], "fact_id")
        for split in ("test", "fewshot")
    }


def twohop_rows() -> dict[str, list[dict[str, Any]]]:
    """The two-hop documents: built once per process (0.7 s of pure Python, asked for by
    each of the five two-hop tasks in every evaluation), a fresh copy for each caller."""
    return copy.deepcopy(_twohop_rows_once())


@functools.lru_cache(maxsize=1)
def _twohop_rows_once() -> dict[str, list[dict[str, Any]]]:
    from relneuron_eval.data.twohop import build_chains, fewshot_chains

    return {
        "test": _shuffled([c.doc() for c in build_chains()], "chain_id"),
        "fewshot": [c.doc() for c in fewshot_chains()],
    }


def rows_for(
    family: str,
    relation: str | None = None,
    lang: str | None = None,
    spec: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """The documents of one task, by split (pure Python; used by ``load`` and the tests)."""
    if family not in FAMILIES:
        raise RelNeuronError(f"unknown relfacts family {family!r}", hint=f"use one of {FAMILIES}")
    if family == "2hop":
        return twohop_rows()
    if relation is None:
        raise RelNeuronError(f"relfacts family {family!r} needs a relation")
    if spec:
        relations = load_spec(spec)
        if relation not in relations:
            raise RelNeuronError(f"no relation {relation!r} in the spec", path=spec)
        rel = relations[relation]
    elif lang and lang != "en":
        rel = load_language_relation(lang, relation)
    else:
        rel = load_relation(relation)
    return relation_rows(rel, family)


def resolve_spec(spec: str, config_source: Any = None) -> str:
    """A user spec named by a task YAML: absolute, or relative to the YAML's folder.

    ``relneuron taskgen --spec`` writes the relative form, so a task folder that moves
    (another machine, a CI checkout) together with its spec keeps working. lm-eval
    passes the YAML's path to ``custom_dataset`` as the metadata key ``config_source``.
    """
    path = Path(spec).expanduser()
    source = str(config_source) if config_source and config_source != "inline" else None
    if not path.is_absolute():
        path = (Path(source).parent if source else Path.cwd()) / path
    if not path.is_file():
        raise RelNeuronError(
            f"the relation spec {spec!r} of this task is not at {path}",
            path=source,
            hint="keep the spec where it was relative to the task folder, or regenerate the "
            "tasks with `relneuron taskgen --spec SPEC --out DIR`",
        )
    return str(path)


def load(
    relfacts_family: str = "gen",
    relfacts_relation: str | None = None,
    relfacts_lang: str | None = None,
    relfacts_spec: str | None = None,
    **_metadata: Any,
):
    """``custom_dataset`` entry point: a ``datasets.DatasetDict`` with test and fewshot."""
    import datasets

    spec = resolve_spec(relfacts_spec, _metadata.get("config_source")) if relfacts_spec else None
    rows = rows_for(relfacts_family, relfacts_relation, relfacts_lang, spec)
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(items) for split, items in rows.items()}
    )


# lm-eval 0.4.13 (api/task.py, ConfigurableTask.download) logs this two-line hint for
# every task whose ``custom_dataset`` is a function, whether or not it reads metadata.
# Ours read none, so each relfacts task printed two useless lines (160+ with a glob).
_METADATA_HINT = "Custom kwargs can be passed to `--metadata`"


def _downloading_our_task(depth: int = 12) -> bool:
    """Whether the caller's stack is a task's ``download`` whose dataset comes from ``load``."""
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            return False
        task = frame.f_locals.get("self") if frame.f_code.co_name == "download" else None
        if task is not None:
            return getattr(getattr(task, "config", None), "custom_dataset", None) is load
        frame = frame.f_back
    return False


class _MetadataHintFilter(logging.Filter):
    """Drops lm-eval's ``--metadata`` hint for relfacts tasks; other tasks keep it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _METADATA_HINT not in str(record.msg) or not _downloading_our_task()


def _install_metadata_hint_filter() -> None:
    """Idempotent; runs at import, i.e. when lm-eval resolves ``!function ...load``."""
    logger = logging.getLogger("lm_eval.api.task")
    if not any(isinstance(f, _MetadataHintFilter) for f in logger.filters):
        logger.addFilter(_MetadataHintFilter())


_install_metadata_hint_filter()


def task_rows(task: str) -> dict[str, list[dict[str, Any]]]:
    """The documents of a relfacts task, by its name, by split (no lm-eval)."""
    if task.startswith("relfacts_2hop"):
        return rows_for("2hop")
    rest = task[len("relfacts_") :]
    if rest.startswith("mc_"):
        return rows_for("mc", rest[3:])
    lang = rest[:2]
    if lang in TASK_LANGS and rest[2:3] == "_":
        return rows_for("gen", rest[3:], lang)
    return rows_for("gen", rest)


@functools.cache
def task_fingerprint(task: str) -> str:
    """Hash of what decides a task's numbers apart from the model: its YAML files, its
    documents (test and few-shot), the few-shot sampler and the metric code. Cached runs of
    a task whose data, templates, demos or scoring changed are then evaluated again (the
    report's and the leaderboard's runner caches)."""
    import json

    from relneuron_eval.data import answers
    from relneuron_eval.harness import fewshot, task_metrics
    from relneuron_eval.resources import tasks_dir

    digest = hashlib.sha256()
    folder = tasks_dir() / "relfacts"
    for path in sorted(folder.rglob(f"{task}.yaml")) + sorted(folder.glob("_base_*.yaml")):
        digest.update(path.read_bytes())
    digest.update(json.dumps(task_rows(task), sort_keys=True, default=str).encode())
    for module in (task_metrics, answers, fewshot):  # scoring, answer judging, demos
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:16]
