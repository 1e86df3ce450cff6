"""What a report evaluates: its validated configuration and the relfacts tasks it reads.

``Setup`` (built by ``report.build_setup``) names the model, neuron sets, relations,
experiments and limits, and turns them into tasks, document indices and the ``Variant`` of
each deactivation or random control. The task helpers read documents and fingerprints in
pure Python, without lm-eval, so planning and cache keys cost nothing.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relneuron_eval.core.neuron_set import NeuronSet
from relneuron_eval.evaluation.metrics import METRICS as METRIC_TABLE
from relneuron_eval.evaluation.metrics import metric_task
from relneuron_eval.evaluation.runner import Variant
from relneuron_eval.harness.task_data import TASK_LANGS, task_rows
from relneuron_eval.report.analysis import KValue, canonical_top_k, evenly_spaced, first

EXPERIMENTS = ("cumulativity", "versatility", "interference", "reasoning")
METRICS = tuple(METRIC_TABLE)
LANGS = TASK_LANGS
TWOHOP_TASKS = ("relfacts_2hop", "relfacts_2hop_cot", "relfacts_2hop_hop1")
KN_MODES: dict[str, dict[str, Any]] = {
    "deactivate": {"mode": "deactivate"},
    "enhance": {"mode": "enhance", "factor": 2.0},
}


@dataclass
class Setup:
    """A validated report configuration (built by ``report.build_setup``)."""

    model: str
    model_key: dict[str, Any]
    out: Path
    neuron_set_path: str
    neuron_set: NeuronSet
    set_hash: str
    relations: list[str]  # R: relations with neurons and tasks
    experiments: list[str]
    ks: list[KValue]
    top_k: int  # the first (primary) top-k: headline, versatility
    seeds: list[int]
    limit: int | None
    reasoning_limit: int | None
    limit_own: int | None
    metric: str
    min_base: float
    matrix: list[str] | int  # explicit relations, or N = the N best-known relations
    cumulativity: list[str] | int
    min_margin: float = 0.10  # eligible: base - majority-class rate >= this (issue 19)
    other_controls: int = 0  # other relations' neurons of the same size per relation
    # name -> (path, content hash, set): further controls, e.g. activation-matched units
    control_sets: dict[str, tuple[str, str, NeuronSet]] = field(default_factory=dict)
    langs: dict[str, list[str]] = field(default_factory=dict)  # relation -> languages
    reasoning_chains: str = "with-neurons"  # or "all": which chains the sample spreads over
    top_ks: list[int] = field(default_factory=list)  # every top-k of interference (first = top_k)
    kn_set_path: str | None = None
    kn_set: NeuronSet | None = None
    kn_hash: str | None = None
    kn_controls: dict[int, tuple[str, str]] = field(default_factory=dict)  # seed -> (path, hash)
    kn_control_sets: dict[int, NeuronSet] = field(default_factory=dict, repr=False)
    _sizes: dict[str, int] | None = field(default=None, repr=False)

    def save_controls(self) -> None:
        """Write the random-control knowledge-neuron sets (unless the same one is there)."""
        from relneuron_eval.core.neuron_set import load

        for seed, control in self.kn_control_sets.items():
            path, digest = self.kn_controls[seed]
            try:
                same = Path(path).is_file() and load(path).content_hash() == digest
            except Exception:
                same = False
            if not same:
                control.save(path)

    # ---------------------------------------------------------------- tasks
    def task(self, relation: str) -> tuple[str, str]:
        """(task, metric) that measures a relation under the report's metric."""
        return metric_task(self.metric, relation)

    def docs(self, task: str, own: bool = False) -> list[int]:
        """Document indices of a task: the first ``limit`` (``limit_own`` for a relation's
        own task in the specificity experiment); two-hop chains spread evenly."""
        n = count_docs(task)
        if task in TWOHOP_TASKS:
            pool = self.chain_pool()
            return [pool[i] for i in evenly_spaced(len(pool), self.reasoning_limit)]
        return first(n, self.limit_own if own else self.limit)

    def chain_pool(self) -> list[int]:
        """Chains the reasoning sample is spread over: those whose bridge fact has
        knowledge neurons (``with-neurons``; the others would run unmodified), or all."""
        n = count_docs("relfacts_2hop")
        if self.reasoning_chains == "all" or self.kn_set is None:
            return list(range(n))
        groups = set(self.kn_set.groups())
        rows = task_rows("relfacts_2hop")["test"]
        return [i for i in range(n) if rows[i]["hop1_fact"] in groups]

    def all_top_ks(self) -> list[int]:
        """The top-ks of the interference experiment, the primary one first."""
        return list(dict.fromkeys([self.top_k, *self.top_ks]))

    def size_notes(self) -> list[str]:
        """Relations with fewer neurons than a top-k: all of them are used there."""
        notes = []
        for r in self.relations:
            size = self.group_size(r)
            below = [k for k in self.all_top_ks() if size < k]
            if below:
                ks = ", ".join(map(str, below))
                notes.append(f"{r} has {size} neurons (< --top-k {ks}): all are used")
        return notes

    def group_size(self, relation: str) -> int:
        if self._sizes is None:
            self._sizes = Counter(n.group for n in self.neuron_set.neurons)
        return self._sizes.get(relation, 0)

    # ------------------------------------------------------------- variants
    def deact(self, relation: str, k: KValue | None) -> Variant:
        return self._deactivation(relation, k)

    def control(self, relation: str, k: KValue | None, seed: int) -> Variant:
        return self._deactivation(relation, k, seed)

    def _deactivation(self, relation: str, k: KValue | None, seed: int | None = None) -> Variant:
        """Relation's top-k deactivated, or (with a seed) its size-matched random control."""
        top_k = canonical_top_k(k, self.group_size(relation))
        label = f"deact {relation} k={top_k or 'all'}"
        control = {}
        if seed is not None:
            label = f"control {relation} k={top_k or 'all'} s={seed}"
            control = {"control": "random", "seed": seed}
        return Variant.make(
            label,
            self.neuron_set_path,
            self.set_hash,
            groups=relation,
            mode="deactivate",
            top_k=top_k,
            **control,
        )

    def kn(self, mode: str, seed: int | None = None) -> Variant:
        """Knowledge neurons of each chain's bridge fact (or their random control)."""
        assert self.kn_set_path is not None and self.kn_hash is not None
        path, digest = (self.kn_set_path, self.kn_hash) if seed is None else self.kn_controls[seed]
        label = f"KN {mode}" if seed is None else f"KN control {mode} s={seed}"
        return Variant.make(label, path, digest, groups="*", per_doc="hop1_fact", **KN_MODES[mode])


@functools.cache
def count_docs(task: str) -> int:
    """Number of test documents of a relfacts task (pure Python, no lm-eval)."""
    return len(task_rows(task)["test"])


def lang_task(lang: str, relation: str) -> str:
    return f"relfacts_{lang}_{relation}"
