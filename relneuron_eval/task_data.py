"""In-memory datasets of the relfacts tasks, for lm-eval's ``custom_dataset: !function``.

The task YAMLs name this module's ``load`` with ``dataset_kwargs`` (family, relation,
language, spec), so no task depends on the current directory or on a dataset hub. Only
the ``test`` split (scored) and the ``fewshot`` split (demos) are ever built: tasks
never see the ``discovery`` split that neuron discovery reads.

Keyword names start with ``relfacts_`` because lm-eval passes the task's metadata (and
with it the model arguments) as keywords too.
"""

from __future__ import annotations

import hashlib
from typing import Any

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.facts import (
    Fact,
    Relation,
    fill,
    load_language_relation,
    load_relation,
    load_spec,
)

FAMILIES = ("gen", "mc", "2hop")


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
    from relneuron_eval.twohop import build_chains, fewshot_chains

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


def load(
    relfacts_family: str = "gen",
    relfacts_relation: str | None = None,
    relfacts_lang: str | None = None,
    relfacts_spec: str | None = None,
    **_metadata: Any,
):
    """``custom_dataset`` entry point: a ``datasets.DatasetDict`` with test and fewshot."""
    import datasets

    rows = rows_for(relfacts_family, relfacts_relation, relfacts_lang, relfacts_spec)
    return datasets.DatasetDict(
        {split: datasets.Dataset.from_list(items) for split, items in rows.items()}
    )
