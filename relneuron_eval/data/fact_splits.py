"""Merging repeated subjects and assigning splits: where the honesty rule is enforced.

A subject belongs to exactly one of ``discovery`` / ``fewshot`` / ``test``: neuron
discovery reads ``discovery``, tasks score ``test``, demos come from ``fewshot``. So
repeated rows of one subject are merged first (a subject named in two splits is an
error), and the split is a function of the subject alone.

Base facts (a relation's ``facts:`` files) are ordered by a hash of (relation, normalised
subject); the first FEWSHOT_SHARE (at least MIN_FEWSHOT) go to ``fewshot``, the next
DISCOVERY_SHARE to ``discovery``, the rest to ``test``, exactly as when the shipped neuron
sets were discovered. Facts of ``added_facts:`` files get the same shares by a hash
threshold (``fact_sources.added_split``), so adding facts never moves a base fact.
Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from relneuron_eval.data.fact_files import FactRow
from relneuron_eval.data.fact_sources import added_split
from relneuron_eval.data.fact_text import stable_hash, subject_key
from relneuron_eval.errors import RelNeuronError

DISCOVERY_SHARE = 0.5
FEWSHOT_SHARE = 0.05
MIN_FEWSHOT = 4


@dataclass
class Subject:
    """All rows of one subject: the first gives its id, line and primary object."""

    key: str  # fact_text.subject_key of the subject
    number: int
    path: Path
    line: int
    subject: str
    split: str | None
    added: bool
    objects: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)


def merge_subjects(rows: list[FactRow]) -> list[Subject]:
    """One ``Subject`` per subject key, in first-seen order; split leaks are errors."""
    merged: dict[str, Subject] = {}
    for r in rows:
        k = subject_key(r.subject)
        m = merged.get(k)
        if m is None:
            merged[k] = Subject(
                k, r.number, r.path, r.line, r.subject, r.split, r.added, [r.object], [*r.answers]
            )
            continue
        if r.split != m.split:
            raise RelNeuronError(
                f"subject {r.subject!r} is in split {r.split!r} here and in {m.split!r} on "
                f"line {m.line}: that would leak it between splits",
                path=r.path,
                line=r.line,
                hint="a subject must belong to one split",
            )
        m.objects.append(r.object)
        m.answers.extend(r.answers)
    return list(merged.values())


def assign_splits(relation: str, merged: list[Subject]) -> None:
    """Splits by hash: rank within the base facts, a threshold for added ones.

    Explicit splits in the facts file are kept as they are, but only if every fact has one.
    """
    explicit = [m for m in merged if m.split is not None]
    if explicit and len(explicit) != len(merged):
        missing = next(m for m in merged if m.split is None)
        raise RelNeuronError(
            "some facts name a split and others do not",
            path=missing.path,
            line=missing.line,
            hint="give every fact a 'split' or none (then splits are assigned by hash)",
        )
    if explicit:
        return
    for m in merged:
        if m.added:
            m.split = added_split(relation, m.key)
    base = [m for m in merged if not m.added]
    order = sorted(base, key=lambda m: (stable_hash(relation, m.key), m.key))
    n = len(order)
    n_few = max(MIN_FEWSHOT, round(FEWSHOT_SHARE * n))
    n_disc = round(DISCOVERY_SHARE * n)
    for rank, m in enumerate(order):
        m.split = "fewshot" if rank < n_few else "discovery" if rank < n_few + n_disc else "test"
