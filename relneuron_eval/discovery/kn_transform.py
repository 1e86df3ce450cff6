"""``relneuron find knowledge-neurons --from-set SET``: refine or control an existing set.

No attribution runs: the set's fact groups are filtered against shared units
(``--drop-shared``/``--drop-objects``, the same rule discovery applies with those options)
and/or replaced by a control (``--control swapped|shared-pool``), and the result is
written as a v1 neuron set with the same fact ids, so it runs through ``per_doc=hop1_fact``
like the original. The objects the swapped control and ``--drop-objects`` need come from
the relation data by fact id. Deterministic: the same set, options and ``--seed`` give
the same file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from relneuron_eval.core.neuron_set import NeuronSet, load
from relneuron_eval.discovery import kn_controls as kc
from relneuron_eval.errors import RelNeuronError


def transform_set(
    neuron_set: NeuronSet,
    *,
    drop_shared: int | None = None,
    drop_objects: int | None = None,
    control: str | None = None,
    shared_at: int = kc.SHARED_AT,
    seed: int = 0,
) -> NeuronSet:
    """Refinement first (when asked), then the control of the refined set."""
    facts = kc.fact_units(neuron_set)
    if not facts:
        raise RelNeuronError(
            "the set has no fact groups", path=neuron_set.source, hint="pass a knowledge-neuron set"
        )
    needs_objects = drop_objects is not None or control == "swapped"
    objects = kc.fact_objects(list(facts)) if needs_objects else None
    out = neuron_set
    if drop_shared is not None or drop_objects is not None:
        out = kc.refine_shared(out, objects, max_facts=drop_shared, max_objects=drop_objects)
    if control == "swapped":
        assert objects is not None
        out = kc.swapped_control(out, objects, seed)
    elif control == "shared-pool":
        out = kc.shared_pool_control(out, shared_at)
    elif control is not None:
        raise RelNeuronError(f"unknown control {control!r}", hint="use swapped or shared-pool")
    return out


def transform(args: argparse.Namespace, out: Path) -> int:
    """The command: read --from-set, transform, write --out, print what changed."""
    if args.from_set is None:
        raise RelNeuronError("--control needs --from-set SET (the set to control)")
    drop_objects = args.drop_objects or None  # 0: no refinement (discovery's way to say so)
    if args.drop_shared is None and drop_objects is None and args.control is None:
        raise RelNeuronError(
            "--from-set needs --drop-shared, --drop-objects or --control (nothing to do)"
        )
    source = load(args.from_set)
    result = transform_set(
        source,
        drop_shared=args.drop_shared,
        drop_objects=drop_objects,
        control=args.control,
        shared_at=args.shared_at,
        seed=args.seed,
    )
    result.save(out)
    print(f"wrote {out} ({len(result)} neurons, {len(result.groups())} groups)")
    print("before: " + kc.statistics_text(kc.set_statistics(source, args.shared_at)))
    print("after:  " + kc.statistics_text(kc.set_statistics(result, args.shared_at)))
    return 0
