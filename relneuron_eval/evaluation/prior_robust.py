"""A prior-robust accuracy for the multiple-choice tasks: ``acc_calibrated``.

``acc_match`` cannot tell "forgot the fact" from "switched to a default answer": a model
that answers "Antarctica" to every landmark scores the majority-class rate whatever it
knows. The relfacts_mc_* tasks score every object of the relation by log-likelihood, so
the model's preference for an object *regardless of the subject* can be measured and
removed: each object's log-likelihood is centred by its mean over the task's evaluated
documents (contextual calibration with the documents' average as the content-free input;
Zhao et al. 2021, and Holtzman et al. 2021's domain-conditional PMI), and a document
counts as correct when the gold object then ranks first. A switched default adds the
same amount to one object on every document and cancels exactly; a lost subject-object
association does not. Calibration assumes a uniform prior over objects, so the base
``acc_calibrated`` differs from ``acc``; compare interventions by their change.

The centring uses the documents of one evaluation (one filter), so a ``--limit`` run is
calibrated on its own documents; two runs compared document by document must cover the
same documents (``TaskResult.paired`` checks that). Pure Python.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

METRIC = "acc_calibrated"


def choice_loglikelihoods(rec: dict[str, Any]) -> list[float] | None:
    """Per-choice log-likelihoods of a multiple-choice sample record, else None.

    Live records hold ``(ll, is_greedy)`` tuples; lm-eval's sample log writes them as
    lists of strings. Anything else (a generation, a non-finite value) gives None.
    """
    resps = rec.get("filtered_resps")
    if not isinstance(resps, list) or len(resps) < 2:
        return None
    out = []
    for item in resps:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            return None
        try:
            value = float(item[0])
        except (TypeError, ValueError):
            return None
        if not math.isfinite(value):
            return None
        out.append(value)
    return out


def gold_indices(rec: dict[str, Any]) -> list[int] | None:
    """The gold choice index (or indices) of a sample record: the document's ``gold``."""
    doc = rec.get("doc") if isinstance(rec.get("doc"), dict) else {}
    gold = doc.get("gold", rec.get("target"))
    if isinstance(gold, str):
        try:
            gold = json.loads(gold)
        except ValueError:
            return None
    if isinstance(gold, bool):
        return None
    if isinstance(gold, int):
        return [gold]
    if isinstance(gold, list) and gold and all(isinstance(g, int) for g in gold):
        return list(gold)
    return None


def add_calibrated(records: Sequence[dict[str, Any]]) -> None:
    """Set ``acc_calibrated`` on every record that has ``choice_ll`` and ``gold``
    (per filter; the centring is over the records of that filter with the same number
    of choices, i.e. one task's documents)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for rec in records:
        lls, gold = rec.get("choice_ll"), rec.get("gold")
        if lls and gold is not None:
            groups.setdefault((rec.get("filter", "none"), len(lls)), []).append(rec)
    for rows in groups.values():
        n_choices = len(rows[0]["choice_ll"])
        means = [sum(r["choice_ll"][c] for r in rows) / len(rows) for c in range(n_choices)]
        for rec in rows:
            centred = [ll - m for ll, m in zip(rec["choice_ll"], means, strict=True)]
            best = max(range(n_choices), key=centred.__getitem__)
            rec[METRIC] = 1.0 if best in rec["gold"] else 0.0
