"""Knowledge-neuron sets: how fact-specific are they, and controls that tell.

A knowledge-neuron set names units per fact (groups = fact ids). When many facts name
the same few units (one unit of the shipped set is in 122 of its 135 facts), an effect of
"the bridge fact's neurons" may be the effect of a shared pool that any fact's neurons
would hit. This module measures that and builds the sets that test it, all as ordinary
v1 neuron sets whose groups are the same fact ids, so they run through the normal
``per_doc=hop1_fact`` path:

* :func:`set_statistics`: distinct units, sharing (units in >= N facts, the top unit's
  fact count, facts with a unit of their own) and the layer histogram;
* :func:`swapped_control`: each fact gets the neurons of ANOTHER fact of the same
  relation with a different object, the donor matched on count and layers as closely as
  the set allows (seeded tie-breaks); fact-specificity = own - swapped;
* :func:`shared_pool_control`: each fact keeps only its units that many facts share;
* :func:`refine_shared`: the refinement against shared units (drop units in >= N facts,
  or held by facts of >= N different objects), as a post-hoc filter on a set; ``merge``
  applies the same rule at discovery time (``SelectConfig.drop_shared/drop_objects``).

Pure Python (no torch): cheap enough to run on every set, in tests and in the report.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from relneuron_eval.core.neuron_set import Neuron, NeuronSet
from relneuron_eval.errors import RelNeuronError

SHARED_AT = 10  # "shared by many facts": the and the card's threshold
Unit = tuple[str, int, int]


def relation_groups(neuron_set: NeuronSet) -> set[str]:
    """Relation-level groups of a knowledge-neuron set (named in its header)."""
    info = neuron_set.header.get("knowledge_neurons") or {}
    return set(info.get("relations") or [])


def fact_units(neuron_set: NeuronSet) -> dict[str, list[Neuron]]:
    """Each fact group's neurons, in file order (relation-level groups left out)."""
    skip = relation_groups(neuron_set)
    out: dict[str, list[Neuron]] = defaultdict(list)
    for n in neuron_set.neurons:
        if n.group not in skip:
            out[n.group].append(n)
    return dict(out)


def relation_of(fact_id: str) -> str:
    """``city_in_country/12`` -> ``city_in_country`` (the fact-id convention)."""
    return fact_id.rpartition("/")[0] or fact_id


def unit_fact_counts(facts: Mapping[str, Sequence[Neuron]]) -> Counter[Unit]:
    """How many facts name each unit."""
    counts: Counter[Unit] = Counter()
    for neurons in facts.values():
        counts.update({n.unit for n in neurons})
    return counts


def set_statistics(neuron_set: NeuronSet, shared_at: int = SHARED_AT) -> dict[str, Any]:
    """How fact-specific a knowledge-neuron set is, as numbers for its header and card."""
    facts = fact_units(neuron_set)
    counts = unit_fact_counts(facts)
    entries = sum(len(v) for v in facts.values())
    shape = neuron_set.shape
    own = [f for f, ns in facts.items() if any(counts[n.unit] == 1 for n in ns)]
    top = min(counts.items(), key=lambda kv: (-kv[1], kv[0]), default=None)
    layers_units = Counter(layer for _site, layer, _i in counts)
    layers_entries = Counter(n.layer for ns in facts.values() for n in ns)
    last = shape.num_layers - 1
    return {
        "facts_with_neurons": len(facts),
        "fact_neurons": entries,
        "distinct_units": len(counts),
        "units_in_model": shape.num_layers * shape.intermediate_size,
        "shared_at": shared_at,
        "units_shared": sum(1 for c in counts.values() if c >= shared_at),
        "entries_on_shared_units": sum(c for c in counts.values() if c >= shared_at),
        "top_unit": None if top is None else {"unit": list(top[0]), "facts": top[1]},
        "facts_with_own_unit": len(own),
        "facts_without_own_unit": len(facts) - len(own),
        "layers_units": {str(k): v for k, v in sorted(layers_units.items())},
        "layers_entries": {str(k): v for k, v in sorted(layers_entries.items())},
        "last_layer_share": {
            "units": _share(layers_units[last], len(counts)),
            "entries": _share(layers_entries[last], entries),
        },
        "layer0_share": {
            "units": _share(layers_units[0], len(counts)),
            "entries": _share(layers_entries[0], entries),
        },
    }


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def statistics_text(stats: dict[str, Any]) -> str:
    """One paragraph of :func:`set_statistics` for a card or a command's output."""
    top = stats["top_unit"]
    top_text = (
        "none"
        if top is None
        else f"layer {top['unit'][1]} #{top['unit'][2]} in {top['facts']} of {stats['facts_with_neurons']} facts"
    )
    layers = ", ".join(f"{k}:{v}" for k, v in stats["layers_units"].items())
    return (
        f"{stats['facts_with_neurons']} facts hold {stats['fact_neurons']} fact-neuron entries on "
        f"{stats['distinct_units']} distinct units (of {stats['units_in_model']}); "
        f"{_n(stats['units_shared'], 'unit')} in >= {stats['shared_at']} facts "
        f"({stats['entries_on_shared_units']} entries); top unit {top_text}; "
        f"{stats['facts_with_own_unit']} facts have a unit of their own, "
        f"{stats['facts_without_own_unit']} none; last layer "
        f"{_pct(stats['last_layer_share']['units'])} of the units "
        f"({_pct(stats['last_layer_share']['entries'])} of the entries), layer 0 "
        f"{_pct(stats['layer0_share']['units'])} ({_pct(stats['layer0_share']['entries'])}); "
        f"distinct units per layer: {layers}"
    )


def _n(count: int, noun: str) -> str:
    """'1 unit is', '24 units are'."""
    return f"{count} {noun} is" if count == 1 else f"{count} {noun}s are"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


# ============================================================== controls
def _layer_hist(neurons: Sequence[Neuron]) -> Counter[tuple[str, int]]:
    return Counter((n.site, n.layer) for n in neurons)


def _mismatch(a: Counter[tuple[str, int]], b: Counter[tuple[str, int]]) -> tuple[int, int]:
    """(count difference, layer-histogram L1 distance) of two neuron lists' layers."""
    l1 = sum(abs(a[k] - b[k]) for k in set(a) | set(b))
    return abs(sum(a.values()) - sum(b.values())), l1


def _after_trim(own: Counter[tuple[str, int]], donor: Counter[tuple[str, int]]) -> tuple[int, int]:
    """The mismatch a donor leaves once :func:`_trim` cut it to the own count: neurons
    missing, then layer-histogram L1 distance (what the donor match minimises)."""
    n_own, n_donor = sum(own.values()), sum(donor.values())
    matched = sum(min(own[k], donor[k]) for k in own)
    return max(0, n_own - n_donor), (n_own - matched) + (min(n_own, n_donor) - matched)


def _trim(own: Sequence[Neuron], donor: Sequence[Neuron], rng: random.Random) -> list[Neuron]:
    """At most ``len(own)`` of the donor's neurons, first those in the own fact's layers."""
    if len(donor) <= len(own):
        return list(donor)
    want = _layer_hist(own)
    first, rest = [], []
    for n in rng.sample(list(donor), len(donor)):
        key = (n.site, n.layer)
        if want[key] > 0:
            want[key] -= 1
            first.append(n)
        else:
            rest.append(n)
    return (first + rest)[: len(own)]


def _check_objects(facts: Mapping[str, Any], objects: Mapping[str, str]) -> None:
    missing = [f for f in facts if f not in objects]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise RelNeuronError(
            f"no object known for {len(missing)} fact group(s): {shown}",
            hint="groups must be fact ids of the relation data (relation/number)",
        )


def swapped_control(neuron_set: NeuronSet, objects: Mapping[str, str], seed: int = 0) -> NeuronSet:
    """Each fact group holds the neurons of a donor fact: same relation, another object,
    the closest count and layer histogram (ties broken by ``seed``), at most as many
    neurons as the fact's own. Facts without a donor keep no neurons (recorded)."""
    facts = {f: ns for f, ns in fact_units(neuron_set).items() if ns}
    _check_objects(facts, objects)
    rng = random.Random(f"relneuron-kn-swapped:{seed}")
    donors: dict[str, str] = {}
    drawn: list[Neuron] = []
    for fact in sorted(facts):
        own = facts[fact]
        hist = _layer_hist(own)
        candidates = [
            g
            for g in sorted(facts)
            if g != fact
            and relation_of(g) == relation_of(fact)
            and objects[g].casefold() != objects[fact].casefold()
        ]
        if not candidates:
            continue
        scored = [(_after_trim(hist, _layer_hist(facts[g])), rng.random(), g) for g in candidates]
        donor = min(scored)[2]
        donors[fact] = donor
        for n in sorted(_trim(own, facts[donor], rng)):
            drawn.append(Neuron(fact, n.site, n.layer, n.index, n.score))
    control = {
        "kind": "swapped",
        "seed": seed,
        "of": neuron_set.content_hash()[:12],
        "rule": "each fact gets the neurons of another fact of its relation with a different "
        "object: fewest neurons missing, then closest layer histogram after trimming the "
        "donor to the fact's count (its neurons in the fact's layers first)",
        "donors": donors,
        "facts_without_donor": sorted(set(facts) - set(donors)),
        **match_quality(facts, drawn, donors),
    }
    return neuron_set.with_neurons(drawn, control=control)


def match_quality(
    facts: Mapping[str, Sequence[Neuron]], drawn: Sequence[Neuron], donors: Mapping[str, str]
) -> dict[str, Any]:
    """How well the swapped neurons match the own ones: counts, layers, shared units."""
    got: dict[str, list[Neuron]] = defaultdict(list)
    for n in drawn:
        got[n.group].append(n)
    same_count = sum(1 for f in donors if len(got[f]) == len(facts[f]))
    l1 = sum(_mismatch(_layer_hist(facts[f]), _layer_hist(got[f]))[1] for f in donors)
    overlap = sum(len({n.unit for n in facts[f]} & {n.unit for n in got[f]}) for f in donors)
    return {
        "facts_same_count": same_count,
        "layer_l1_total": l1,
        "own_neurons": sum(len(facts[f]) for f in donors),
        "swapped_neurons": len(drawn),
        "units_also_own": overlap,
    }


def shared_pool_control(neuron_set: NeuronSet, min_facts: int = SHARED_AT) -> NeuronSet:
    """Each fact keeps only its units that at least ``min_facts`` facts name: what the
    shared pool alone does (facts with none run unmodified)."""
    _check_threshold(min_facts, "min_facts")
    facts = fact_units(neuron_set)
    counts = unit_fact_counts(facts)
    kept = [n for ns in facts.values() for n in ns if counts[n.unit] >= min_facts]
    pool = sorted(u for u, c in counts.items() if c >= min_facts)
    control = {
        "kind": "shared-pool",
        "min_facts": min_facts,
        "of": neuron_set.content_hash()[:12],
        "rule": f"each fact keeps only its units that >= {min_facts} facts name",
        "pool_units": len(pool),
        "facts_with_pool_units": len({n.group for n in kept}),
    }
    return neuron_set.with_neurons(kept, control=control)


def _check_threshold(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise RelNeuronError(f"{name} must be an integer >= 2, got {value!r}")


def shared_units(
    facts: Mapping[str, Sequence[Any]],
    objects: Mapping[str, str] | None,
    *,
    max_facts: int | None = None,
    max_objects: int | None = None,
) -> set[Any]:
    """Units to drop: in >= ``max_facts`` facts, or in facts of >= ``max_objects``
    different objects (units are any hashable: ``Neuron.unit`` or flat ids)."""
    holders: dict[Any, set[str]] = defaultdict(set)
    for fact, units in facts.items():
        for u in units:
            holders[u].add(fact)
    drop = set()
    for u, fs in holders.items():
        if max_facts is not None and len(fs) >= max_facts:
            drop.add(u)
        elif max_objects is not None and objects is not None:
            if len({objects[f].casefold() for f in fs}) >= max_objects:
                drop.add(u)
    return drop


def refine_shared(
    neuron_set: NeuronSet,
    objects: Mapping[str, str] | None = None,
    *,
    max_facts: int | None = None,
    max_objects: int | None = None,
) -> NeuronSet:
    """The set without the units shared across facts (see :func:`shared_units`);
    relation-level groups are left out (they are shared units by definition)."""
    if max_facts is None and max_objects is None:
        raise RelNeuronError("nothing to refine: give max_facts and/or max_objects")
    for value, name in ((max_facts, "max_facts"), (max_objects, "max_objects")):
        if value is not None:
            _check_threshold(value, name)
    facts = fact_units(neuron_set)
    if max_objects is not None:
        if objects is None:
            raise RelNeuronError("max_objects needs the facts' objects")
        _check_objects(facts, objects)
    units = {f: [n.unit for n in ns] for f, ns in facts.items()}
    drop = shared_units(units, objects, max_facts=max_facts, max_objects=max_objects)
    kept = [n for ns in facts.values() for n in ns if n.unit not in drop]
    info = dict(neuron_set.header.get("knowledge_neurons") or {})
    info["relations"] = []
    info["refined"] = {
        "of": neuron_set.content_hash()[:12],
        "drop_shared": max_facts,
        "drop_objects": max_objects,
        "units_dropped": len(drop),
        "neurons_dropped": sum(len(ns) for ns in facts.values()) - len(kept),
        "facts_left_without_neurons": sorted(f for f, ns in units.items() if set(ns) <= drop),
    }
    refined = neuron_set.with_neurons(kept, knowledge_neurons=info)
    info["statistics"] = set_statistics(refined)
    return refined


def fact_objects(fact_ids: Sequence[str]) -> dict[str, str]:
    """The object of each fact id, from the relation data (``city_in_country/12``)."""
    from relneuron_eval.data.facts import load_relation

    out: dict[str, str] = {}
    by_relation: dict[str, list[str]] = defaultdict(list)
    for f in fact_ids:
        by_relation[relation_of(f)].append(f)
    for name, ids in sorted(by_relation.items()):
        try:
            relation = load_relation(name)
        except RelNeuronError:
            continue  # not a relation of the data: _check_objects names the facts
        known = {fact.fact_id: fact.object for fact in relation.facts}
        out.update({f: known[f] for f in ids if f in known})
    return out
