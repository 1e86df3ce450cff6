"""The evaluation grid: two lm-eval passes per (method, budget) cover every relation.

Cause: one pass with ``per_doc=relation`` over every relation's test documents, each
document deactivating its own relation's top-k units. Isolate: one pass per
``isolate_shift`` s with a *deranged* copy of the set, in which relation j's group holds
the units of relation (j + s) mod n (the settings' relation order): every relation's
units are applied to another relation's documents and every relation is hit once. The
sets of every (method, budget, shift) are written to ``OUT/sets/grid/`` (the random
control is drawn per budget from the reference method's top-k, ``control=random``'s
size-matched draw) and evaluated through the project's one runner
(``evaluation.runner``): results are cached per (variant, task) under ``OUT/runs``,
written atomically, claimed between processes, and reused when a run is resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relneuron_eval.core.neuron_set import Neuron, NeuronSet, load
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.runner import Runner, Variant
from relneuron_eval.harness.task_data import task_rows
from relneuron_eval.leaderboard.discover import Found
from relneuron_eval.leaderboard.settings import Settings


@dataclass(frozen=True)
class Cell:
    """One (method, budget, shift) pass; shift 0 is the Cause pass."""

    method: str
    k: int
    shift: int
    variant: Variant


def common_relations(settings: Settings, sets: dict[str, NeuronSet]) -> tuple[list[str], list[str]]:
    """Settings' relations that every method has units for (in settings order), and notes."""
    notes, keep = [], []
    for r in settings.relations:
        missing = [m for m, s in sets.items() if r not in set(s.groups())]
        if missing:
            notes.append(f"{r}: left out, no units in {', '.join(missing)}")
        else:
            keep.append(r)
    if len(keep) < 2:
        raise RelNeuronError(
            "fewer than 2 relations have units in every method's set",
            path=settings.path,
            hint="; ".join(notes) or None,
        )
    return keep, notes


def full_sets(found: dict[str, Found]) -> dict[str, NeuronSet]:
    """Every method's full set (random: its reference's, drawn from per budget)."""
    out: dict[str, NeuronSet] = {}
    for name, f in found.items():
        source = found[f.spec.of].path if f.spec.name == "random" and f.spec.of else f.path
        out[name] = load(source)
    return out


def deranged(selection: NeuronSet, relations: list[str], shift: int) -> NeuronSet:
    """Relation j's group holds relation (j + shift)'s units (scores kept)."""
    n = len(relations)
    by_group: dict[str, list[Neuron]] = {r: [] for r in relations}
    for x in selection.neurons:
        if x.group in by_group:
            by_group[x.group].append(x)
    neurons = [
        Neuron(relations[j], x.site, x.layer, x.index, x.score)
        for j in range(n)
        for x in by_group[relations[(j + shift) % n]]
    ]
    return selection.with_neurons(
        neurons, derangement={"shift": shift, "order": relations, "rule": "group j <- (j+shift)"}
    )


def build_cells(
    settings: Settings,
    found: dict[str, Found],
    sets: dict[str, NeuronSet],
    relations: list[str],
    out: Path,
) -> list[Cell]:
    """Write every pass's neuron set and return its variant."""
    folder = out / "sets" / "grid"
    folder.mkdir(parents=True, exist_ok=True)
    cells = []
    for name, full in sets.items():
        spec = found[name].spec
        for k in settings.budgets:
            selection = full.select(groups=relations, top_k=k)
            if spec.name == "random":
                selection = selection.random_control(spec.seed)
            for shift in [0, *settings.isolate_shifts]:
                chosen = selection if shift == 0 else deranged(selection, relations, shift)
                tag = "cause" if shift == 0 else f"isolate{shift}"
                path = folder / f"{name}-k{k}-{tag}.jsonl.gz"
                digest = chosen.save_unless_same(path)
                variant = Variant.make(
                    f"{name} k={k} {tag}",
                    str(path),
                    digest,
                    groups="*",
                    per_doc="relation",
                    mode="deactivate",
                )
                cells.append(Cell(name, k, shift, variant))
    return cells


def task_docs(settings: Settings, relations: list[str], limit: int | None) -> dict[str, list[int]]:
    """Each relation's task and its test documents (the first ``limit`` with a limit)."""
    out = {}
    for r in relations:
        n = len(task_rows(settings.task(r))["test"])
        out[settings.task(r)] = list(range(n if limit is None else min(n, limit)))
    return out


def run_grid(runner: Runner, cells: list[Cell], docs: dict[str, list[int]]) -> None:
    """Base first (its accuracies are the denominators), then every cell; cached ones skip."""
    runner.request(Variant.base(), list(docs), docs)
    for cell in cells:
        runner.request(cell.variant, list(docs), docs)
    runner.run()


def outcomes(
    runner: Runner,
    settings: Settings,
    cells: list[Cell],
    docs: dict[str, list[int]],
    relations: list[str],
) -> dict[str, Any]:
    """Per-document 0/1 outcomes: base[r], and per cell [r] (from the runner's cache)."""
    metric = settings.metric_key

    def values(variant: Variant, r: str) -> list[float]:
        task = settings.task(r)
        result = runner.get(variant, task, docs[task])
        by_doc = result.by_doc(metric)
        return [by_doc[d] for d in docs[task]]

    base = {r: values(Variant.base(), r) for r in relations}
    per_cell = {
        (c.method, c.k, c.shift): {r: values(c.variant, r) for r in relations} for c in cells
    }
    return {"base": base, "cells": per_cell}
