"""Integrated-gradients kernels of the knowledge-neuron method: one prompt's attributions.

Four paths compute the same P(y*) of scaled ``mlp.act`` units (see ``knowledge_neurons``
for the method): ``suffix`` runs one token through layers l+1..L-1 by hand, using the
modules that the architecture table's ``suffix`` entry names; ``cached`` runs it through
the whole model with the prefix key/value cache; ``batched`` runs the full prompt m
times in one batch; ``plain`` is the per-step reference loop. ``prompt_attributions``
picks the fastest that applies and checks it against the clean forward.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from relneuron_eval.core.architectures import (
    SuffixModules,
    decoder_layers,
    site_module,
    suffix_modules,
    unwrap,
)
from relneuron_eval.discovery.kn_config import LOGP_TOLERANCE, SITE, IGConfig, validate_ig
from relneuron_eval.errors import RelNeuronError


@contextlib.contextmanager
def frozen(model: Any) -> Iterator[None]:
    """Eval mode, no parameter gradients (only the scaled activations need them)."""
    params = [p for p in model.parameters() if p.requires_grad]
    training = model.training
    for p in params:
        p.requires_grad_(False)
    model.eval()
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
        model.train(training)


def _act_module(model: Any, layer: int) -> torch.nn.Module:
    module, spec = site_module(model, SITE, layer)
    if spec.role != "input" or spec.offset_halves:
        raise RelNeuronError(f"{SITE} must be the plain input of a module in this architecture")
    return module


def _device(model: Any) -> torch.device:
    """Where input ids go (the input embedding's device)."""
    return unwrap(model).get_input_embeddings().weight.device


def _forward(model: Any, ids: torch.Tensor, keep: int, **kwargs: Any) -> Any:
    if "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters:
        kwargs["logits_to_keep"] = keep
    return model(input_ids=ids, **kwargs)


def _cache_arg(forward: Callable) -> str:
    """The keyword a forward takes its KV cache by: ``cache`` in current transformers 5.x
    (``past_key_values`` warns there and goes in 5.40), ``past_key_values`` in older ones."""
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def _output_cache(out: Any) -> Any:
    """The KV cache of a model output under either name, without the deprecated access."""
    name = "cache" if "cache" in getattr(out, "__dataclass_fields__", {}) else "past_key_values"
    return getattr(out, name, None)


def gold_probability(logits: torch.Tensor, answer_ids: Sequence[int]) -> torch.Tensor:
    """P(answer) per row from ``[B, q, V]`` logits at the answer positions (float32)."""
    q = len(answer_ids)
    logits = logits[:, -q:]
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    idx = torch.as_tensor(list(answer_ids), device=logits.device)
    return logp[:, torch.arange(q, device=logits.device), idx].sum(-1).exp()


def _replace_at(w: torch.Tensor, pos: int) -> Callable:
    """Forward pre-hook: row b of the module input at ``pos`` becomes ``w[b]``."""

    def hook(module, args):
        x = args[0].clone()
        x[:, pos] = w.to(x.dtype)
        return (x, *args[1:])

    return hook


@dataclass
class _Clean:
    acts: dict[int, torch.Tensor]  # layer -> w_hat [I]
    mids: dict[int, torch.Tensor]  # layer -> residual after attention at pos [H]
    prefix: list[tuple[torch.Tensor, torch.Tensor]] | None  # per layer K/V of 0..pos-1
    logp: float


def _cache_kv(cache: Any, n_layers: int, length: int) -> list | None:
    layers = getattr(cache, "layers", None)
    if layers is None or len(layers) != n_layers:
        return None
    out = []
    for layer in layers:
        k, v = getattr(layer, "keys", None), getattr(layer, "values", None)
        if not (isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor)):
            return None
        if k.dim() != 4 or k.shape[-2] != length:  # e.g. a sliding-window cache
            return None
        out.append((k, v))
    return out


@torch.no_grad()
def _clean_pass(
    model: Any,
    ids: list[int],
    pos: int,
    q: int,
    answer_ids: list[int],
    *,
    mids: SuffixModules | None,
    cache: bool,
) -> _Clean:
    """One clean forward: ``w_hat`` per layer, the residual after attention per layer
    (only with ``mids``, read at the input of its ``mid_norm``) and the prefix's K/V."""
    acts: dict[int, torch.Tensor] = {}
    mid: dict[int, torch.Tensor] = {}
    handles = []
    layers = decoder_layers(model)

    def grab(store: dict, layer: int) -> Callable:
        def hook(module, args):
            store[layer] = args[0][0, pos].detach().clone()

        return hook

    for layer in range(len(layers)):
        handles.append(_act_module(model, layer).register_forward_pre_hook(grab(acts, layer)))
        if mids is not None:
            handles.append(mids.mid_norm(layer).register_forward_pre_hook(grab(mid, layer)))
    try:
        out = _forward(model, torch.tensor([ids], device=_device(model)), q, use_cache=cache)
    finally:
        for h in handles:
            h.remove()
    prefix = None
    if cache:
        kv = _cache_kv(_output_cache(out), len(layers), len(ids))
        if kv is not None:
            prefix = [(k[:, :, :pos], v[:, :, :pos]) for k, v in kv]
    logp = float(gold_probability(out.logits, answer_ids)[0].log())
    return _Clean(acts, mid, prefix, logp)


class _PrefixCache:
    """A read-only key/value prefix shared by B rows; ``update`` returns prefix + new.

    Decoder layers call ``update(k, v, layer_idx)``; nothing is stored, so one instance
    serves every suffix pass of a prompt without copying the prefix.
    """

    def __init__(self, prefix: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> None:
        self.prefix, self.batch = prefix, batch

    def update(self, key, value, layer_idx, *args, **kwargs):
        k, v = self.prefix[layer_idx]
        k = k.expand(self.batch, -1, -1, -1)
        v = v.expand(self.batch, -1, -1, -1)
        return torch.cat([k, key], dim=-2), torch.cat([v, value], dim=-2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self.prefix[layer_idx][0].shape[-2])


def _suffix_modules(model: Any) -> SuffixModules | None:
    """What the suffix path runs, from the architecture table's ``suffix`` entry; None
    where the row has none, the model lacks a module, or its logits are soft-capped."""
    if getattr(getattr(unwrap(model), "config", None), "final_logit_softcapping", None):
        return None
    return suffix_modules(model)


def suffix_supported(model: Any) -> bool:
    """Whether the layer-suffix path knows this model's structure (the architecture
    table's rows with a ``suffix`` entry: the Llama family)."""
    return _suffix_modules(model) is not None


class _Runner:
    """Probability of the gold answer for B scaled copies of one layer's w_hat."""

    def __init__(self, model: Any, ids: list[int], answer_ids: list[int], config: IGConfig):
        self.model, self.config = model, config
        self.answer_ids = answer_ids[:1] if config.answer_tokens == "first" else answer_ids
        # input: prompt, plus all but the last answer token when scoring all of them
        self.ids = ids + self.answer_ids[:-1]
        self.pos = len(ids) - 1  # last prompt position
        self.q = len(self.answer_ids)
        self.n_layers = len(decoder_layers(model))
        self.device = _device(model)

    def prepare(self, method: str) -> str:
        """Clean pass for ``method``; returns the method actually usable."""
        suffix = _suffix_modules(self.model) if method == "suffix" else None
        want_cache = method in ("suffix", "cached") and self.pos > 0
        self.clean = _clean_pass(
            self.model,
            self.ids,
            self.pos,
            self.q,
            self.answer_ids,
            mids=suffix,
            cache=want_cache,
        )
        if method in ("suffix", "cached") and self.clean.prefix is None:
            return "batched"
        if suffix is not None:
            self.suffix = suffix
            self.pos_ids = torch.tensor([[self.pos]], device=self.device)
            h = self.clean.mids[0].view(1, 1, -1)
            self.pos_emb = suffix.rotary_emb(h, position_ids=self.pos_ids)
        return method

    def probs(self, method: str, layer: int, w: torch.Tensor) -> torch.Tensor:
        if method == "suffix":
            return self._suffix(layer, w)
        module = _act_module(self.model, layer)
        if method == "cached":
            b = w.shape[0]
            cache = _dynamic_cache(self.clean.prefix, b)
            ids = torch.tensor([self.ids[self.pos :]], device=self.device).expand(b, -1)
            hook = _replace_at(w, 0)
            kwargs = {_cache_arg(unwrap(self.model).forward): cache, "use_cache": True}
        else:
            ids = torch.tensor([self.ids], device=self.device).expand(w.shape[0], -1)
            hook = _replace_at(w, self.pos)
            kwargs = {"use_cache": False}
        handle = module.register_forward_pre_hook(hook)
        try:
            logits = _forward(self.model, ids, self.q, **kwargs).logits
        finally:
            handle.remove()
        return gold_probability(logits, self.answer_ids)

    def _suffix(self, layer: int, w: torch.Tensor) -> torch.Tensor:
        b = w.shape[0]
        layers = self.suffix.layers
        mid = self.clean.mids[layer]
        h = mid.unsqueeze(0) + self.suffix.down_proj(layer)(w.to(mid.dtype))
        h = h.unsqueeze(1)
        cache = {_cache_arg(layers[-1].forward): _PrefixCache(self.clean.prefix, b)}
        for j in range(layer + 1, self.n_layers):
            out = layers[j](
                h,
                attention_mask=None,
                position_ids=self.pos_ids,
                use_cache=False,
                position_embeddings=self.pos_emb,
                **cache,
            )
            h = out[0] if isinstance(out, tuple) else out
        logits = self.suffix.lm_head(self.suffix.final_norm(h))
        return gold_probability(logits, self.answer_ids)

    def check(self, method: str, layer: int) -> bool:
        """Does ``method`` reproduce the clean log P(y*) at a = 1?"""
        with torch.no_grad():
            p = self.probs(method, layer, self.clean.acts[layer].unsqueeze(0))
        low = unwrap(self.model).dtype in (torch.float16, torch.bfloat16)
        return abs(float(p[0].log()) - self.clean.logp) <= (50 if low else 1) * LOGP_TOLERANCE


def _dynamic_cache(prefix: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> Any:
    from transformers import DynamicCache

    return DynamicCache(
        ddp_cache_data=[
            (k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in prefix
        ]
    )


@dataclass
class PromptAttribution:
    """IG attributions of one prompt: ``attr[j]`` belongs to ``layers[j]``."""

    layers: list[int]
    attr: np.ndarray  # float32 [len(layers), intermediate_size]
    prob: float  # clean P(y*)
    method: str  # the path actually used


_WARNED: set[str] = set()


def _pick_method(model: Any, config: IGConfig) -> list[str]:
    if config.method != "auto":
        return [config.method]
    order = ["cached", "batched"]
    if config.answer_tokens == "first" and suffix_supported(model):
        order.insert(0, "suffix")
    return order


def prompt_attributions(
    model: Any, prompt_ids: Sequence[int], answer_ids: Sequence[int], config: IGConfig
) -> PromptAttribution:
    """Integrated gradients of P(y*) w.r.t. every selected layer's ``mlp.act`` units.

    Use a float32 model for reproducible results (half precision works, but noisier).
    The steps of a layer form one batch (or ``step_batch``-sized chunks), so the result
    depends only on this prompt and the settings.
    """
    validate_ig(config)
    if config.method == "suffix" and (
        config.answer_tokens != "first" or not suffix_supported(model)
    ):
        raise RelNeuronError(
            "method 'suffix' needs a Llama-family model and answer_tokens='first'",
            hint="use method='auto'",
        )
    runner = _Runner(model, list(prompt_ids), list(answer_ids), config)
    layers = list(range(runner.n_layers)) if config.layers is None else list(config.layers)
    device = _device(model)
    # the scaled activations, their gradients and the sums stay in float32 (float64 for
    # a float64 model) whatever the model's dtype; the hooks cast to the model's
    acc = torch.float64 if unwrap(model).dtype == torch.float64 else torch.float32
    alphas = config.alphas().to(device=device, dtype=acc)
    chunk = config.step_batch or config.steps
    with frozen(model):
        for candidate in _pick_method(model, config):
            method = runner.prepare(candidate)
            if config.method != "auto" or method == "batched" or runner.check(method, layers[0]):
                break
            if candidate not in _WARNED:
                _WARNED.add(candidate)
                warnings.warn(
                    f"knowledge neurons: the {candidate!r} path does not reproduce this model's "
                    "clean output; falling back to a slower path",
                    stacklevel=2,
                )
        if method == "plain":
            chunk = 1
        rows = []
        for layer in layers:
            w_hat = runner.clean.acts[layer]
            w_hat = w_hat.to(acc)
            total = torch.zeros_like(w_hat)
            for start in range(0, config.steps, chunk):
                a = alphas[start : start + chunk]
                w = (a[:, None] * w_hat[None, :]).detach().requires_grad_(True)
                with torch.enable_grad():
                    p = runner.probs("batched" if method == "plain" else method, layer, w)
                    (grad,) = torch.autograd.grad(p.sum(), w)
                total += grad.sum(0)
            rows.append((w_hat * total / config.steps).float().cpu().numpy())
    return PromptAttribution(
        layers=layers,
        attr=np.stack(rows).astype(np.float32),
        prob=float(np.exp(runner.clean.logp)),
        method=method,
    )
