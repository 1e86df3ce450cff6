"""Knowledge-neuron selection: coarse and refined neurons, Dai et al.'s p search,
relation-level neurons, and the merge of a checkpoint into a neuron set.

Selection is cheap and reads only the checkpoint, so it can be redone at any threshold
at or above the stored fraction without recomputing attributions.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header
from relneuron_eval.discovery.kn_answers import AnswerCheck
from relneuron_eval.discovery.kn_checkpoint import FactResult, load_results
from relneuron_eval.discovery.kn_config import (
    DEFAULT_SELECT,
    METHOD_NAME,
    SITE,
    IGConfig,
    KnowledgeFact,
    SelectConfig,
    validate_facts,
    validate_select,
)
from relneuron_eval.discovery.kn_controls import set_statistics, shared_units, statistics_text


def coarse_mask(attr: np.ndarray, max_attr: np.ndarray, threshold: float) -> np.ndarray:
    """``[P, U]`` bool: attr >= threshold * the prompt's max (prompts with max <= 0: none)."""
    max_attr = np.asarray(max_attr, dtype=np.float32)[:, None]
    return (np.asarray(attr) >= np.float32(threshold) * max_attr) & (max_attr > 0)


def refine(mask: np.ndarray, p: float, min_shared: int = 1) -> np.ndarray:
    """``[U]`` bool: coarse in at least ``p * n_prompts`` (and ``min_shared``) prompts."""
    counts = mask.sum(axis=0)
    need = max(p * mask.shape[0] - 1e-9, min_shared)
    return counts >= need


def auto_p(
    masks: Sequence[np.ndarray], config: SelectConfig
) -> tuple[float, list[np.ndarray], int]:
    """Dai et al.'s p search over one scope: returns p, refined masks, evaluations used."""
    p = float(config.p_start)
    lo, hi = config.target
    for evaluation in range(1, config.p_evaluations + 1):
        refined = [refine(m, p, config.min_shared) for m in masks]
        mean = float(np.mean([r.sum() for r in refined])) if refined else 0.0
        if lo <= mean <= hi or evaluation == config.p_evaluations:
            break
        step = -config.p_step if mean < lo else config.p_step
        nxt = round(min(1.0, max(config.p_step, p + step)), 6)
        if nxt == p:
            break
        p = nxt
    return p, refined, evaluation


def relation_units(refined: Sequence[np.ndarray], fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Units (flat ids) in at least ``fraction`` of the facts' refined sets, and that share."""
    counts: Counter[int] = Counter()
    for units in refined:
        counts.update(int(u) for u in np.unique(units))
    n = len(refined)
    keep = sorted(u for u, c in counts.items() if c >= max(fraction * n - 1e-9, 1))
    return np.asarray(keep, dtype=np.int64), np.asarray([counts[u] / n for u in keep])


def fact_scores(result: FactResult) -> np.ndarray:
    """Mean over prompts of attr / prompt max (a prompt with max <= 0 contributes 0)."""
    m = result.max_attr.astype(np.float64)[:, None]
    norm = np.where(m > 0, result.attr / np.where(m > 0, m, 1.0), 0.0)
    return norm.mean(axis=0)


# ============================================================================= merge
@dataclass
class MergeSummary:
    facts: int
    prompts: int
    mean_gold_prob: float
    neurons_per_fact: float
    facts_without_neurons: list[str]
    p_used: dict[str, float]
    relation_neurons: dict[str, int]
    layer_counts: dict[int, int]
    methods: dict[str, int]
    answer_check: str = ""  # AnswerCheck.text() of the run, when it had one
    statistics: str = ""  # kn_controls.statistics_text of the set: how shared its units are

    def text(self) -> str:
        lines = [self.answer_check] if self.answer_check else []
        lines += [
            f"knowledge neurons: {self.facts} facts, {self.prompts} prompts, "
            f"mean P(gold) {self.mean_gold_prob:.3f}",
            f"  {self.neurons_per_fact:.2f} neurons per fact on average; "
            f"{len(self.facts_without_neurons)} facts without any",
            "  p used: " + ", ".join(f"{k}={v:g}" for k, v in sorted(self.p_used.items())),
        ]
        if self.relation_neurons:
            lines.append(
                "  relation-level neurons: "
                + ", ".join(f"{k}={v}" for k, v in sorted(self.relation_neurons.items()))
            )
        top = sorted(self.layer_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        lines.append("  busiest layers: " + ", ".join(f"{k}:{v}" for k, v in top))
        lines.append("  paths: " + ", ".join(f"{k}={v}" for k, v in sorted(self.methods.items())))
        if self.statistics:
            lines.append("  sharing: " + self.statistics)
        return "\n".join(lines)


def refine_all(
    results: Sequence[FactResult], select: SelectConfig
) -> tuple[list[np.ndarray], dict[str, float]]:
    """Each fact's refined mask, with p fixed or searched per ``p_scope``; and the p used."""
    masks = [coarse_mask(r.attr, r.max_attr, select.threshold) for r in results]
    scope_of = {
        "relation": lambda r: r.relation,
        "fact": lambda r: r.fact_id,
        "all": lambda r: "*",
    }[select.p_scope]
    refined: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(results)
    p_used: dict[str, float] = {}
    by_scope: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(results):
        by_scope[scope_of(r) if select.p == "auto" else "*"].append(i)
    for scope, idx in by_scope.items():
        if select.p == "auto":
            p, chosen, _ = auto_p([masks[i] for i in idx], select)
        else:
            p = float(select.p)
            chosen = [refine(masks[i], p, select.min_shared) for i in idx]
        p_used[scope] = p
        for i, r in zip(idx, chosen, strict=True):
            refined[i] = r
    return refined, p_used


def drop_shared_units(
    results: Sequence[FactResult],
    refined: list[np.ndarray],
    select: SelectConfig,
    answers: dict[str, str],
) -> int | None:
    """Apply ``drop_shared``/``drop_objects`` to the refined masks in place (the
    refinement against units many facts share); returns the number of units dropped."""
    if select.drop_shared is None and select.drop_objects is None:
        return None
    units = {r.fact_id: r.units[keep].tolist() for r, keep in zip(results, refined, strict=True)}
    drop = shared_units(
        units, answers, max_facts=select.drop_shared, max_objects=select.drop_objects
    )
    for i, r in enumerate(results):
        refined[i] = refined[i] & ~np.isin(r.units, np.asarray(sorted(drop), dtype=np.int64))
    return len(drop)


def _fact_neurons(
    results: Sequence[FactResult], refined: Sequence[np.ndarray], select: SelectConfig, size: int
) -> tuple[list[Neuron], dict[str, list[np.ndarray]], list[str]]:
    """Fact-group neurons (at most ``top_k`` best per fact), each relation's units per
    fact, and the facts left without neurons."""
    neurons: list[Neuron] = []
    fact_units: dict[str, list[np.ndarray]] = defaultdict(list)
    empty = []
    for r, keep in zip(results, refined, strict=True):
        scores = fact_scores(r)
        idx = np.flatnonzero(keep)
        if select.top_k is not None and len(idx) > select.top_k:
            order = sorted(idx, key=lambda j: (-scores[j], int(r.units[j])))
            idx = np.sort(np.asarray(order[: select.top_k]))
        fact_units[r.relation].append(r.units[idx])
        if len(idx) == 0:
            empty.append(r.fact_id)
        for j in idx:
            layer, index = divmod(int(r.units[j]), size)
            neurons.append(Neuron(r.fact_id, SITE, layer, index, float(scores[j])))
    return neurons, fact_units, empty


def _relation_neurons(
    fact_units: dict[str, list[np.ndarray]], fraction: float, size: int
) -> tuple[list[Neuron], dict[str, int]]:
    """Relation-group neurons (score = share of the relation's facts) and their counts."""
    neurons: list[Neuron] = []
    counts: dict[str, int] = {}
    for relation, unit_lists in fact_units.items():
        units, share = relation_units(unit_lists, fraction)
        counts[relation] = len(units)
        for u, s in zip(units, share, strict=True):
            layer, index = divmod(int(u), size)
            neurons.append(Neuron(relation, SITE, layer, index, float(s)))
    return neurons, counts


def _method_record(
    ig: IGConfig,
    select: SelectConfig,
    p_used: dict[str, float],
    facts: Sequence[KnowledgeFact],
    summary: MergeSummary,
    data: Any,
    answer_check: AnswerCheck | None,
) -> dict[str, Any]:
    """The neuron-set header's ``method``: every setting that shaped the set."""
    params = answer_check.params() if answer_check else {}  # none: merged on its own
    return {
        "name": METHOD_NAME,
        "params": {
            "target": f"P(gold answer, {ig.answer_tokens} token(s)) at the last prompt position",
            "baseline": "zero",
            **{k: v for k, v in ig.as_dict().items() if k not in ("method", "step_batch")},
            **select.as_dict(),
            "p_used": p_used,
            "score": "mean over prompts of attribution / prompt max (fact groups); "
            "share of the relation's facts (relation groups)",
            **params,
        },
        "data": {
            "source": data,
            "facts": summary.facts,
            "prompts": summary.prompts,
            "facts_fingerprint": hashlib.sha256(
                "".join(f.fingerprint() for f in facts).encode()
            ).hexdigest()[:16],
            **(answer_check.data() if answer_check else {}),
        },
    }


def merge(
    facts: Sequence[KnowledgeFact],
    checkpoint: str | Path,
    select: SelectConfig = DEFAULT_SELECT,
    *,
    data: Any = None,
    answer_check: AnswerCheck | None = None,
) -> tuple[NeuronSet, MergeSummary]:
    """Build the neuron set (groups = fact ids, then relation names) from a checkpoint.

    ``answer_check`` (how ``facts`` were chosen) is recorded in the header; without it
    the header says nothing about answers, which reads as "not checked".
    """
    validate_facts(facts)
    meta, results = load_results(facts, checkpoint)
    card = meta["model"]
    ig = IGConfig(**{**meta["ig"], "layers": meta["ig"]["layers"] and tuple(meta["ig"]["layers"])})
    size = int(card["intermediate_size"])
    validate_select(select, int(card["num_layers"]) * size, ig.store_fraction)

    refined, p_used = refine_all(results, select)
    dropped = drop_shared_units(results, refined, select, {f.fact_id: f.answer for f in facts})
    neurons, fact_units, empty = _fact_neurons(results, refined, select, size)
    relation_counts: dict[str, int] = {}
    if select.relation_fraction is not None:
        extra, relation_counts = _relation_neurons(fact_units, select.relation_fraction, size)
        neurons.extend(extra)

    fact_neurons = [n for n in neurons if n.group not in relation_counts]
    methods = Counter(m for r in results for m in r.methods)
    summary = MergeSummary(
        facts=len(results),
        prompts=int(sum(len(r.prob) for r in results)),
        mean_gold_prob=float(np.mean(np.concatenate([r.prob for r in results]))),
        neurons_per_fact=len(fact_neurons) / len(results),
        facts_without_neurons=empty,
        p_used=p_used,
        relation_neurons=relation_counts,
        layer_counts=dict(sorted(Counter(n.layer for n in fact_neurons).items())),
        methods=dict(methods),
        answer_check=answer_check.text() if answer_check else "",
    )
    info: dict[str, Any] = {
        "facts": len(results),
        "facts_without_neurons": empty,
        "relations": sorted(relation_counts),
    }
    if dropped is not None:
        info["shared_units_dropped"] = dropped
    header = make_header(
        model=card,
        method=_method_record(ig, select, p_used, facts, summary, data, answer_check),
        knowledge_neurons=info,
    )
    neuron_set = NeuronSet(header, neurons)
    info["statistics"] = set_statistics(neuron_set)  # distinct units, sharing, layers
    summary.statistics = statistics_text(info["statistics"])
    return neuron_set, summary
