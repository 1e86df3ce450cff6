"""DiffMean, activation magnitude and the units' activation statistics, from ONE pass.

The baselines of the method leaderboard read the same numbers as relation-specific
neurons: each unit's output averaged over the query tokens of a discovery prompt
(``activations.TokenMeanHooks``), stored per prompt in a resumable ``ActivationStore``.
Unlike relation-specific neurons they need no answers, so the pass is one forward per
prompt through the transformer body (no LM head, no greedy decoding), and one store
serves every method that reads it (``--workdir`` shared, ``--keep-workdir``):

* ``diffmean`` (AxBench's DiffMean, per unit): score = |mean over r's prompts - mean over
  the other relations' prompts| of the token-mean output. The absolute value: a unit
  much less active on r is as relation-specific as one much more active.
* ``activation-magnitude``: score = mean over r's prompts of |token-mean output|, the
  baseline that asks whether "specific" is more than "active".
* unit statistics (mean and standard deviation of every unit's token-mean over all
  prompts): what ``matched_random`` matches random units on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header
from relneuron_eval.discovery.activations import (
    ActivationStore,
    Layout,
    TokenMeanHooks,
    _average_mask,
    _pad_id,
    make_batches,
    pad_right,
    query_token_counts,
)
from relneuron_eval.errors import RelNeuronError

PAPER_SITES = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
METHODS = {
    "diffmean": "|mean token-mean output on r's prompts - on the other relations' prompts|",
    "activation-magnitude": "mean over r's prompts of |token-mean output|",
}


@dataclass(frozen=True)
class PassConfig:
    """What the activation pass depends on (it keys the store) and the kept budget."""

    top_k: int = 3000
    sites: tuple[str, ...] = PAPER_SITES
    average_over: str = "query"
    batch_size: int = 16
    store_dtype: str = "float32"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sites": list(self.sites)}


def validate_pass(config: PassConfig, total_units: int | None = None) -> None:
    """Every argument error before model work."""
    from relneuron_eval.core.neuron_set import SITES

    unknown = [s for s in config.sites if s not in SITES]
    if unknown or not config.sites:
        raise RelNeuronError(f"unknown or no site(s) {unknown}", hint=f"sites: {list(SITES)}")
    if config.top_k < 1 or config.batch_size < 1:
        raise RelNeuronError("--top-k and --batch-size must be >= 1")
    if total_units is not None and config.top_k > total_units:
        raise RelNeuronError(
            f"--top-k {config.top_k} is larger than the {total_units:,} units at the chosen sites",
            hint=f"use --top-k {total_units} or less",
        )
    if config.average_over not in ("query", "prompt"):
        raise RelNeuronError(f"unknown --average-over {config.average_over!r}")
    if config.store_dtype not in ("float32", "float16"):
        raise RelNeuronError(f"unknown store dtype {config.store_dtype!r}")


def store_key(model: Any, card: dict, prompts: list, config: PassConfig, kind: str) -> dict:
    """What the stored per-prompt numbers depend on (not top_k, not batch size)."""
    from relneuron_eval.discovery.data import answers_fingerprint, prompts_fingerprint
    from relneuron_eval.discovery.relation_specific import weights_fingerprint

    return {
        "kind": kind,
        "model": card,
        "weights": weights_fingerprint(model),
        "prompts": prompts_fingerprint(prompts),
        "answers": answers_fingerprint(prompts),
        "config": {k: config.as_dict()[k] for k in ("sites", "average_over", "store_dtype")},
    }


def open_store(
    workdir: Any, layout: Layout, n: int, meta: dict, dtype: str, rank: int, barrier: Callable
) -> ActivationStore:
    """Rank 0 opens (verifies, or starts) the store; the others open it after it did."""
    store = None
    if rank == 0:
        store = ActivationStore.open(workdir, layout, n, meta, dtype=dtype)
    barrier()
    if rank != 0:
        store = ActivationStore.open(workdir, layout, n, meta, dtype=dtype, create=False)
    assert store is not None
    return store


@torch.no_grad()
def fill_token_means(
    model: Any,
    tokenizer: Any,
    store: ActivationStore,
    texts: Sequence[str],
    config: PassConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    stop_after: int | None = None,
) -> int:
    """This process's shard of token-means, skipping finished batches; batches run."""
    from tqdm.auto import tqdm

    average_last = query_token_counts(tokenizer, texts) if config.average_over == "query" else None
    batches = make_batches(tokenizer, texts, config.batch_size)[rank::world_size]
    done = store.done()
    todo = [b for b in batches if not all(done[i] for i in b)]
    hooks = TokenMeanHooks(model, store.layout)
    device = model.get_input_embeddings().weight.device
    ran = 0
    try:
        for batch in tqdm(todo, desc="activations", disable=not progress, unit="batch"):
            if stop_after is not None and ran >= stop_after:
                raise KeyboardInterrupt("simulated interruption")
            seqs = [tokenizer(texts[i])["input_ids"] for i in batch]
            ids, mask = pad_right(seqs, _pad_id(tokenizer))
            last = None if average_last is None else [average_last[i] for i in batch]
            hooks.begin(_average_mask(mask, last))
            try:
                model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device))
            finally:
                per_layer = hooks.end()
            store.write_batch(batch, per_layer, [False] * len(batch), config.batch_size)
            ran += 1
    finally:
        hooks.remove()
    return ran


def check_finished(store: ActivationStore) -> None:
    missing = int((np.asarray(store.done()) == 0).sum())
    if missing:
        raise RelNeuronError(
            f"{missing} prompts have no values after all processes finished",
            path=store.root,
            hint="run the same command again to resume",
        )


@dataclass
class RelationStats:
    """Per relation and unit: mean and mean |.| over its prompts; per unit over all."""

    relations: list[str]
    mean: np.ndarray  # [R, units]
    mean_abs: np.ndarray  # [R, units]
    counts: np.ndarray  # [R] prompts per relation
    all_mean: np.ndarray  # [units]
    all_std: np.ndarray  # [units]


def relation_stats(store: ActivationStore, prompt_relations: Sequence[str]) -> RelationStats:
    """Reduce the store layer by layer (one layer in memory at a time)."""
    relations = list(dict.fromkeys(prompt_relations))
    labels = np.array([relations.index(r) for r in prompt_relations])
    upl, n_layers = store.layout.units_per_layer, store.layout.num_layers
    shape = (len(relations), upl * n_layers)
    mean, mean_abs = np.zeros(shape), np.zeros(shape)
    all_mean, all_std = np.zeros(shape[1]), np.zeros(shape[1])
    counts = np.bincount(labels, minlength=len(relations))
    for layer in range(n_layers):
        block = np.asarray(store.read_layer(layer), dtype=np.float64)
        cols = slice(layer * upl, (layer + 1) * upl)
        for r in range(len(relations)):
            rows = block[labels == r]
            mean[r, cols] = rows.mean(0)
            mean_abs[r, cols] = np.abs(rows).mean(0)
        all_mean[cols] = block.mean(0)
        all_std[cols] = block.std(0)
        del block
    return RelationStats(relations, mean, mean_abs, counts, all_mean, all_std)


def method_scores(method: str, stats: RelationStats) -> np.ndarray:
    """``[R, units]`` scores of a method (higher = more the relation's)."""
    if method == "activation-magnitude":
        return stats.mean_abs
    if method == "diffmean":
        total = stats.mean * stats.counts[:, None]
        rest = stats.counts.sum() - stats.counts
        if (rest < 1).any():
            raise RelNeuronError("diffmean needs prompts of at least 2 relations")
        others = (total.sum(0, keepdims=True) - total) / rest[:, None]
        return np.abs(stats.mean - others)
    raise RelNeuronError(f"unknown method {method!r}", hint=f"one of {list(METHODS)}")


def top_units(scores: np.ndarray, k: int) -> np.ndarray:
    """Unit ids of the ``k`` highest scores; ties go to the lower id."""
    return np.lexsort((np.arange(len(scores)), -scores))[:k]


def neurons_from_scores(
    scores: np.ndarray, relations: Sequence[str], layout: Layout, top_k: int
) -> list[Neuron]:
    """Each relation's top-k units as neurons, in descending score."""
    upl = layout.units_per_layer
    out = []
    for r, rel in enumerate(relations):
        for uid in top_units(scores[r], top_k).tolist():
            layer, col = divmod(uid, upl)
            site, index = layout.unit_of(col)
            out.append(Neuron(rel, site, layer, index, round(float(scores[r, uid]), 8)))
    return out


def scored_set(
    method: str,
    scores: np.ndarray,
    relations: Sequence[str],
    layout: Layout,
    config: PassConfig,
    card: dict,
    data: dict,
    score_rule: str,
) -> NeuronSet:
    """The v1 neuron set of a method with its header (how it was made, from what)."""
    header = make_header(
        model=card,
        method={
            "name": method,
            "params": {**config.as_dict(), "score": score_rule},
            "data": {"split": "discovery", "templates": "discovery", **data},
        },
    )
    return NeuronSet(header, neurons_from_scores(scores, relations, layout, config.top_k))


def token_mean_store(
    model: Any,
    tokenizer: Any,
    prompts: list,
    workdir: Any,
    config: PassConfig,
    *,
    model_id: str | None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[ActivationStore | None, dict, Layout]:
    """Fill (or resume) the shared token-mean store; (store on rank 0, card, layout)."""
    from relneuron_eval.core.architectures import model_card, model_shape

    layout = Layout.for_shape(model_shape(model), config.sites)
    validate_pass(config, layout.total_units)
    barrier = barrier or (lambda: None)
    card = model_card(model, model_id)
    meta = store_key(model, card, prompts, config, "token-means")
    store = open_store(workdir, layout, len(prompts), meta, config.store_dtype, rank, barrier)
    texts = [p.text for p in prompts]
    fill_token_means(
        model,
        tokenizer,
        store,
        texts,
        config,
        rank=rank,
        world_size=world_size,
        progress=progress,
        stop_after=stop_after,
    )
    barrier()
    if rank != 0:
        return None, card, layout
    check_finished(store)
    return store, card, layout


def find_simple(
    method: str, store: ActivationStore, prompts: list, config: PassConfig, card: dict, data: dict
) -> NeuronSet:
    """A DiffMean or activation-magnitude set from a filled token-mean store."""
    stats = relation_stats(store, [p.relation for p in prompts])
    scores = method_scores(method, stats)
    data = {**data, "prompts": len(prompts), "prompts_fingerprint": store.meta.get("prompts")}
    return scored_set(
        method, scores, stats.relations, store.layout, config, card, data, METHODS[method]
    )
