"""Attribution patching (Kramár et al. 2024): gradient x activation of the gold answer.

Per discovery prompt, ONE forward and ONE backward pass: the prompt followed by its gold
answer (``prompt + " " + object``, teacher-forced, every answer token; the tokenization
of ``kn_config.encode``) gives L = sum of log p(answer token | what precedes it).
Deactivating a unit sets its output a_t to 0 at every position t, so to first order

    delta L (unit zeroed)  ~=  - sum_t a_t * dL/da_t

The stored per-prompt attribution of a unit is ``sum_t a_t * dL/da_t`` over the
sequence's real positions: the first-order *drop* of the gold answer's log-probability
when the unit is zeroed (sign: positive = removing it hurts the answer). A relation's
score of a unit is the MEAN of that attribution over the relation's discovery prompts
(all of them, answered correctly or not); units are ranked by it, highest first, so
the set holds the units whose deactivation is predicted to hurt r's answers most.

Gradients flow from the input embeddings (no parameter gradients are kept). The
per-prompt values live in an ``ActivationStore``: resumable and sharded like the
token-mean pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from relneuron_eval.core.architectures import model_shape
from relneuron_eval.core.neuron_set import NeuronSet
from relneuron_eval.discovery.activations import (
    ActivationStore,
    Layout,
    _pad_id,
    make_batches,
    watch_sites,
)
from relneuron_eval.discovery.simple_methods import (
    PassConfig,
    check_finished,
    open_store,
    relation_stats,
    scored_set,
    store_key,
    validate_pass,
)

METHOD_NAME = "attribution-patching"
SCORE_RULE = (
    "mean over r's discovery prompts of sum_t a_t * dL/da_t, L = teacher-forced log-prob of "
    "the gold answer (all its tokens); = first-order drop of L when the unit is zeroed; "
    "highest first"
)


class GradTimesActivation:
    """Forward hooks that keep each site's slice (in the graph) for one batch."""

    def __init__(self, model: Any, layout: Layout) -> None:
        self.layout = layout
        # (layer, column, first feature, features, the module's whole tensor): the slice
        # itself is a new graph node nothing downstream uses, so its gradient would be None
        self.kept: list[tuple[int, int, int, int, torch.Tensor]] = []
        self.handles = watch_sites(model, layout, self._keeper)

    def _keeper(self, layer: int, col: int, start: int, size: int) -> Callable:
        def keep(x: torch.Tensor) -> None:
            self.kept.append((layer, col, start, size, x))

        return keep

    def attributions(self, loss: torch.Tensor, rows: int) -> dict[int, np.ndarray]:
        """``sum_t a_t * dloss/da_t`` per row and unit, by layer; clears the kept tensors."""
        tensors = [t for *_, t in self.kept]
        grads = torch.autograd.grad(loss, tensors, allow_unused=True)
        out = {
            layer: np.zeros((rows, self.layout.units_per_layer), dtype=np.float32)
            for layer in range(self.layout.num_layers)
        }
        for (layer, col, start, size, x), g in zip(self.kept, grads, strict=True):
            if g is None:
                continue
            a, g = x.detach()[..., start : start + size], g[..., start : start + size]
            value = (a.float() * g.float()).sum(1).cpu().numpy()
            out[layer][:, col : col + value.shape[1]] = value
        self.kept = []
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def encode_pairs(tokenizer: Any, prompts: Sequence[Any]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, gold answer ids) per prompt, as the knowledge neurons tokenize them."""
    from relneuron_eval.discovery.kn_config import IGConfig, encode

    config = IGConfig(answer_tokens="all")
    return [encode(tokenizer, p.text, p.object, config) for p in prompts]


def batch_attributions(
    model: Any, hooks: GradTimesActivation, pairs: list[tuple[list[int], list[int]]], pad: int
) -> dict[int, np.ndarray]:
    """One forward and one backward for a batch of (prompt, answer) pairs."""
    device = model.get_input_embeddings().weight.device
    seqs = [p + a for p, a in pairs]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    ids, mask = ids.to(device), mask.to(device)
    hooks.kept = []  # nothing from an earlier forward
    rows = torch.tensor([i for i, (_, a) in enumerate(pairs) for _ in a], device=device)
    cols = torch.tensor([len(p) - 1 + j for p, a in pairs for j in range(len(a))], device=device)
    gold = torch.tensor([t for _, a in pairs for t in a], device=device)
    with torch.enable_grad():
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        hidden = model.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        # the LM head only where an answer token is predicted (a 49k vocabulary is a
        # sixth of a small model's forward when run over every position)
        logits = model.get_output_embeddings()(hidden[rows, cols]).float()
        total = torch.log_softmax(logits, dim=-1).gather(1, gold[:, None]).sum()
        return hooks.attributions(total, len(seqs))


def fill_attributions(
    model: Any,
    tokenizer: Any,
    store: ActivationStore,
    prompts: Sequence[Any],
    batch_size: int,
    *,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    stop_after: int | None = None,
) -> int:
    """This process's shard of per-prompt attributions; batches run."""
    from tqdm.auto import tqdm

    pairs = encode_pairs(tokenizer, prompts)
    texts = [p.text for p in prompts]
    batches = make_batches(tokenizer, texts, batch_size)[rank::world_size]
    done = store.done()
    todo = [b for b in batches if not all(done[i] for i in b)]
    hooks = GradTimesActivation(model, store.layout)
    pad = _pad_id(tokenizer)
    ran = 0
    try:
        for batch in tqdm(todo, desc="attribution", disable=not progress, unit="batch"):
            if stop_after is not None and ran >= stop_after:
                raise KeyboardInterrupt("simulated interruption")
            per_layer = batch_attributions(model, hooks, [pairs[i] for i in batch], pad)
            store.write_batch(batch, per_layer, [False] * len(batch), batch_size)
            ran += 1
    finally:
        hooks.remove()
    return ran


def find_attribution_patching(
    model: Any,
    tokenizer: Any,
    prompts: list,
    workdir: Any,
    config: PassConfig,
    *,
    model_id: str | None = None,
    data: dict | None = None,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> NeuronSet | None:
    """Attribute every prompt (resumably), then rank units per relation on rank 0."""
    from relneuron_eval.core.architectures import model_card

    layout = Layout.for_shape(model_shape(model), config.sites)
    validate_pass(config, layout.total_units)
    barrier = barrier or (lambda: None)
    card = model_card(model, model_id)
    meta = store_key(model, card, prompts, config, METHOD_NAME)
    store = open_store(workdir, layout, len(prompts), meta, config.store_dtype, rank, barrier)
    was_training = model.training
    model.eval()
    try:
        fill_attributions(
            model,
            tokenizer,
            store,
            prompts,
            config.batch_size,
            rank=rank,
            world_size=world_size,
            progress=progress,
            stop_after=stop_after,
        )
    finally:
        model.train(was_training)
    barrier()
    if rank != 0:
        return None
    check_finished(store)
    stats = relation_stats(store, [p.relation for p in prompts])
    record = {**(data or {}), "prompts": len(prompts), "prompts_fingerprint": meta["prompts"]}
    params = {**config.as_dict(), "average_over": "every real position (sum)"}
    neuron_set = scored_set(
        METHOD_NAME, stats.mean, stats.relations, layout, config, card, record, SCORE_RULE
    )
    neuron_set.header["method"]["params"] = {**params, "score": SCORE_RULE}
    neuron_set.header["method"]["paper"] = (
        "Kramár et al. 2024, AtP*: An efficient and scalable method for localizing LLM "
        "behaviour to components"
    )
    return neuron_set
