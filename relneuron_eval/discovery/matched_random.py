"""Random units matched to a neuron set on activation statistics (per layer and site).

A size-matched random control (``NeuronSet.random_control``) keeps each group's count per
layer and site but not *what kind* of units were chosen: top-AP units are high-variance
responders, random ones mostly are not. This control replaces each unit of a reference
group, in the reference's score order, by a random unit of the SAME layer and site whose
activation statistics are close: the statistics are the mean and the log standard
deviation of the unit's token-mean output over all discovery prompts (the shared
token-mean store of ``simple_methods``), z-scored within the (layer, site), and the
replacement is drawn uniformly (seeded by seed and group) among the ``pool`` nearest
units not in the reference group and not drawn before for it. Matching in score order
means that the first k units of the control match the reference's top k, for every k.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import numpy as np

from relneuron_eval.core.neuron_set import Neuron, NeuronSet
from relneuron_eval.discovery.activations import Layout
from relneuron_eval.errors import RelNeuronError

METHOD_NAME = "random-matched"
EPS = 1e-8


def unit_features(layout: Layout, all_mean: np.ndarray, all_std: np.ndarray) -> np.ndarray:
    """``[units, 2]``: (mean, log std), z-scored within each (layer, site) block."""
    feats = np.stack([all_mean, np.log(all_std + EPS)], axis=1)
    upl, offsets = layout.units_per_layer, layout.offsets()
    for layer in range(layout.num_layers):
        for site, size in zip(layout.sites, layout.sizes, strict=True):
            start = layer * upl + offsets[site]
            block = feats[start : start + size]
            sd = block.std(0)
            feats[start : start + size] = (block - block.mean(0)) / np.where(sd > 0, sd, 1.0)
    return feats


def match_group(
    members: list[Neuron],
    layout: Layout,
    feats: np.ndarray,
    rng: random.Random,
    pool: int,
) -> tuple[list[Neuron], list[float]]:
    """Matched replacements of ``members`` (score order) and each match's distance."""
    offsets = layout.offsets()
    taken: dict[tuple[str, int], set[int]] = defaultdict(set)
    for n in members:  # the reference's own units are never drawn
        taken[(n.site, n.layer)].add(n.index)
    out, dist = [], []
    for rank, n in enumerate(members):
        start = n.layer * layout.units_per_layer + offsets[n.site]
        size = layout.sizes[layout.sites.index(n.site)]
        d = np.linalg.norm(feats[start : start + size] - feats[start + n.index], axis=1)
        d[list(taken[(n.site, n.layer)])] = np.inf
        free = int(np.isfinite(d).sum())
        if free == 0:
            raise RelNeuronError(
                f"no free unit left at {n.site} layer {n.layer} to match {n.group}",
                hint="the reference covers almost the whole layer; use a smaller --top-k",
            )
        nearest = np.argsort(d, kind="stable")[: min(pool, free)]
        index = int(nearest[rng.randrange(len(nearest))])
        taken[(n.site, n.layer)].add(index)
        out.append(Neuron(n.group, n.site, n.layer, index, float(len(members) - rank)))
        dist.append(float(d[index]))
    return out, dist


def matched_set(
    reference: NeuronSet,
    layout: Layout,
    all_mean: np.ndarray,
    all_std: np.ndarray,
    *,
    top_k: int | None,
    seed: int = 0,
    pool: int = 5,
    reference_path: str | None = None,
) -> NeuronSet:
    """The matched control of each group's first ``top_k`` units (all with None)."""
    if pool < 1:
        raise RelNeuronError(f"--pool must be >= 1, got {pool}")
    unknown = sorted({n.site for n in reference.neurons} - set(layout.sites))
    if unknown:
        raise RelNeuronError(
            f"the reference set has units at {unknown}, not in the statistics' sites",
            path=reference.source,
            hint=f"pass --sites {','.join(sorted(set(layout.sites) | set(unknown)))}",
        )
    feats = unit_features(layout, all_mean, all_std)
    chosen = reference.select(top_k=top_k)
    sizes = dict(zip(layout.sites, layout.sizes, strict=True))
    outside = [
        n for n in chosen.neurons if n.layer >= layout.num_layers or n.index >= sizes[n.site]
    ]
    if outside:
        raise RelNeuronError(
            f"the reference set has units outside this model (e.g. {outside[0].site} layer "
            f"{outside[0].layer} #{outside[0].index})",
            path=reference.source,
            hint="match a set found on the same model",
        )
    by_group: dict[str, list[Neuron]] = defaultdict(list)
    for n in chosen.neurons:
        by_group[n.group].append(n)
    neurons, quality = [], {}
    for group, members in by_group.items():
        rng = random.Random(f"relneuron-matched:{seed}:{group}")
        drawn, dist = match_group(members, layout, feats, rng, pool)
        neurons.extend(drawn)
        quality[group] = round(float(np.mean(dist)), 4) if dist else 0.0
    header = {
        **reference.header,
        "method": {
            **reference.method,
            "name": METHOD_NAME,
            "matched_to": {
                "method": reference.method.get("name"),
                "path": reference_path,
                "sha256": reference.content_hash(),
                "top_k": top_k,
            },
            "params": {
                "seed": seed,
                "pool": pool,
                "statistics": "mean and log std of the unit's token-mean output over all "
                "discovery prompts, z-scored per (layer, site)",
                "rule": "per reference unit in score order: uniform among the `pool` "
                "nearest free units of the same layer and site",
                "mean_distance_per_group": quality,
            },
        },
    }
    header.pop("selection", None)
    return NeuronSet(header, neurons)


def find_matched(
    reference_path: str,
    store: Any,
    prompts: list,
    *,
    top_k: int | None,
    seed: int,
    pool: int,
) -> NeuronSet:
    """Load the reference set and match it on the statistics of a token-mean store."""
    from relneuron_eval.core.neuron_set import load
    from relneuron_eval.discovery.simple_methods import relation_stats

    reference = load(reference_path)
    stats = relation_stats(store, [p.relation for p in prompts])
    return matched_set(
        reference,
        store.layout,
        stats.all_mean,
        stats.all_std,
        top_k=top_k,
        seed=seed,
        pool=pool,
        reference_path=str(reference_path),
    )
