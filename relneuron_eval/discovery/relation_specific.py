"""Relation-specific neurons (Liu et al. 2025): rank units by average precision.

For relation r, positives are r's discovery prompts the model answers correctly and
negatives are ``ratio`` times as many prompts drawn (seeded) from the other relations.
A unit's score on a prompt is its token-mean output; its expertise for r is the AP of
those scores against the labels. The top-k units per relation are kept.

Memory is bounded by one layer of the activation store plus one sorted chunk of units,
so the paper's 835k-unit setting fits easily in a few GB (see tests/benchmarks).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from relneuron_eval.discovery.activations import ActivationStore
from relneuron_eval.discovery.ap import SortedBlock
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.neuron_set import Neuron


@dataclass
class Labelling:
    """Rows of the store used for one relation, and which of them are positive."""

    relation: str
    rows: np.ndarray  # sorted prompt indices (positives and negatives)
    positive: np.ndarray  # bool, aligned with rows


def make_labellings(
    prompt_relations: Sequence[str],
    correct: Sequence[bool],
    relations: Sequence[str],
    *,
    ratio: int = 4,
    seed: int = 0,
    min_positives: int = 10,
) -> dict[str, Labelling]:
    """Positives and seeded negatives per relation; too few positives is an error.

    Negatives are drawn from all discovery prompts of the other relations (correct or
    not), with a generator seeded by (seed, relation) so the draw for one relation does
    not depend on which other relations are in the run.
    """
    prompt_relations = list(prompt_relations)
    correct = np.asarray(correct, dtype=bool)
    out: dict[str, Labelling] = {}
    problems = []
    for rel in relations:
        mine = [i for i, r in enumerate(prompt_relations) if r == rel]
        pos = [i for i in mine if correct[i]]
        if len(pos) < min_positives:
            problems.append(
                f"{rel}: {len(pos)} of {len(mine)} discovery prompts answered correctly, "
                f"{min_positives} needed"
            )
            continue
        others = [i for i, r in enumerate(prompt_relations) if r != rel]
        if not others:
            problems.append(f"{rel}: no prompts of other relations to draw negatives from")
            continue
        rng = random.Random(f"relneuron-negatives:{seed}:{rel}")
        neg = rng.sample(others, min(len(others), ratio * len(pos)))
        rows = np.array(sorted(pos + neg))
        out[rel] = Labelling(rel, rows, np.isin(rows, pos))
    if problems:
        raise RelNeuronError(
            "too few correctly answered discovery prompts: " + "; ".join(problems),
            hint="lower --min-positives, add facts, or leave these relations out",
        )
    return out


class TopK:
    """Running top-k of (score, global unit id); ties keep the lower unit id."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.scores = torch.empty(0)
        self.ids = torch.empty(0, dtype=torch.long)

    def push(self, scores: torch.Tensor, ids: torch.Tensor) -> None:
        s = torch.cat([self.scores, scores.float()])
        i = torch.cat([self.ids, ids])
        # sort by id first so a stable score sort breaks ties by id
        by_id = torch.argsort(i, stable=True)
        s, i = s[by_id], i[by_id]
        order = torch.sort(s, descending=True, stable=True).indices[: self.k]
        self.scores, self.ids = s[order], i[order]


def rank_units(
    store: ActivationStore,
    labellings: dict[str, Labelling],
    top_k: int,
    *,
    unit_chunk: int = 4096,
    progress: bool = True,
) -> dict[str, TopK]:
    """AP of every unit for every relation, keeping the top-k per relation."""
    from tqdm.auto import tqdm

    layout = store.layout
    upl = layout.units_per_layer
    best = {rel: TopK(top_k) for rel in labellings}
    for layer in tqdm(range(layout.num_layers), desc="average precision", disable=not progress):
        block = store.read_layer(layer)
        for rel, lab in labellings.items():
            sub = np.asarray(block[lab.rows])  # [m, units_per_layer], copies only these rows
            for start in range(0, upl, unit_chunk):
                chunk = SortedBlock(sub[:, start : start + unit_chunk].T, units_first=True)
                ap = torch.from_numpy(chunk.average_precision(lab.positive))
                ids = torch.arange(start, start + ap.shape[0]) + layer * upl
                best[rel].push(ap, ids)
            del sub
        del block
    return best


def to_neurons(best: dict[str, TopK], store: ActivationStore) -> list[Neuron]:
    """Neurons per relation in descending score, named by (site, layer, index)."""
    layout = store.layout
    upl = layout.units_per_layer
    neurons = []
    for rel, top in best.items():
        for score, uid in zip(top.scores.tolist(), top.ids.tolist(), strict=True):
            layer, col = divmod(uid, upl)
            site, index = layout.unit_of(col)
            neurons.append(Neuron(rel, site, layer, index, round(float(score), 6)))
    return neurons
