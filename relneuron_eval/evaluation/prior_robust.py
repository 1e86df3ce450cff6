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

The centring uses exactly the documents a result holds (one filter): the per-choice
log-likelihoods are kept with each record (also in the report's and leaderboard's run
caches), and ``TaskResult.subset`` calibrates again over the documents it keeps, so two
runs compared on the same documents are calibrated on the same documents, and a change
of this rule needs no new evaluation. Fewer than ``MIN_DOCS`` documents give no value
(one document centres every choice to 0). Only relfacts MC documents qualify: they carry
their gold indices in ``doc["gold"]``. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from relneuron_eval.errors import RelNeuronError

METRIC = "acc_calibrated"
MIN_DOCS = 2


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
    """The gold choice indices of a relfacts MC sample record (``doc["gold"]``), else None."""
    doc = rec.get("doc") if isinstance(rec.get("doc"), dict) else {}
    gold = doc.get("gold")
    if isinstance(gold, bool):
        return None
    if isinstance(gold, int):
        return [gold]
    if isinstance(gold, list) and gold and all(type(g) is int for g in gold):
        return list(gold)
    return None


def add_calibrated(records: Sequence[dict[str, Any]]) -> None:
    """Set ``acc_calibrated`` on every record that has ``choice_ll`` and ``gold``, centred
    over the records of its filter with the same number of choices (one task's documents).
    A gold index outside the choices is bad input (raised, naming the document)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for rec in records:
        lls, gold = rec.get("choice_ll"), rec.get("gold")
        if not lls or gold is None:
            continue
        if any(not 0 <= g < len(lls) for g in gold):
            raise RelNeuronError(
                f"document {rec.get('doc_id')}: gold index {gold} outside its {len(lls)} choices"
            )
        groups.setdefault((rec.get("filter", "none"), len(lls)), []).append(rec)
    for rows in groups.values():
        if len(rows) < MIN_DOCS:
            for rec in rows:
                rec.pop(METRIC, None)
            continue
        n_choices = len(rows[0]["choice_ll"])
        means = [sum(r["choice_ll"][c] for r in rows) / len(rows) for c in range(n_choices)]
        for rec in rows:
            centred = [ll - m for ll, m in zip(rec["choice_ll"], means, strict=True)]
            best = max(range(n_choices), key=centred.__getitem__)  # ties: the first, as argmax
            rec[METRIC] = 1.0 if best in rec["gold"] else 0.0


def missing_hint(records: Sequence[dict[str, Any]]) -> str | None:
    """Why a result has no ``acc_calibrated``, when that is the question."""
    if not records:
        return None
    if not any("choice_ll" in r for r in records):
        return (
            "acc_calibrated needs per-choice log-likelihoods: a relfacts MC task "
            "(relfacts_mc_*) evaluated by this version (a run cached by an older one: "
            "delete its file under runs/ to evaluate it again)"
        )
    return f"acc_calibrated needs at least {MIN_DOCS} documents"
