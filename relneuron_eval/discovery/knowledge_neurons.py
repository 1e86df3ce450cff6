"""Knowledge neurons (Dai et al. 2022) by integrated gradients over ``mlp.act`` units.

Method, as implemented here (every choice is recorded in the neuron-set header):

* Target: P(y*|x), the probability of the gold answer's FIRST token after the prompt
  (``answer_tokens="first"``; the answer is tokenized as ``prompt + " " + answer`` and
  the tokens after the prompt's own tokens are the answer's). ``answer_tokens="all"``
  uses the teacher-forced product of all answer-token probabilities instead.
* Attribution of unit i of layer l: scale the layer's ``mlp.act`` vector (the input of
  the down projection) at the last prompt position, w = a*w_hat, all other layers and
  positions untouched; attr_i = w_hat_i * (1/m) * sum_k dP(a_k*w_hat)/dw_i with a zero
  baseline and m steps. ``riemann="right"`` uses a_k = k/m, k = 1..m (the paper's
  equation); ``"left"`` uses (k-1)/m (Dai et al.'s released code), ``"midpoint"``
  (k-0.5)/m (the most accurate for the same m).
* Coarse neurons of a prompt: attr >= threshold * max attr of that prompt over all
  layers (threshold 0.2); a prompt whose max is <= 0 has none.
* Refined neurons of a fact: coarse in at least p * n of its n prompts (and in at least
  ``min_shared`` prompts). ``p="auto"`` is Dai et al.'s released procedure: per relation,
  start at p = 0.7 and move p by 0.05 (down when the relation's facts have < 2 refined
  neurons on average, up when > 5), at most 6 evaluations; the last p evaluated is used.
* Relation-level neurons (optional): refined neurons of at least 10% of a relation's
  facts; group = relation name, score = that fraction.
* Fact neurons have group = fact id and score = mean over the fact's prompts of
  attr / (prompt's max attr).

Speed. Only the last position is scaled, so (causal attention) every earlier position
is identical for all a, at every layer; and layers < l are identical too. Per prompt we
run ONE clean forward that keeps the key/value cache of positions 0..T-2 and, per layer,
the residual stream after attention and w_hat at the last position. The m steps of a
layer are then one batch that runs a single token through layers l+1..L-1 only
(``method="suffix"``, Llama family). ``"cached"`` (any architecture whose cache exposes
per-layer keys/values) runs that token through the whole model with the prefix cache;
``"batched"`` runs the full prompt m times in one batch; ``"plain"`` is the reference
per-layer, per-step loop. ``"auto"`` picks the fastest that applies and, per prompt,
checks that it reproduces the clean P(y*) at a = 1 before trusting it.

Runs are sharded by fact (``rank::world_size``) and checkpointed per fact (one atomic
``.npz`` per fact, never pickle); every fact is computed on its own with a batch
composition fixed by the settings, so the merged result does not depend on the number
of shards. (Bit-identity also needs the same BLAS thread count in every process: on CPU,
1 vs 2 threads changes attributions by ~1e-6 relative, which can flip a unit sitting
exactly on a threshold.)
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import warnings
import zipfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relneuron_eval.architectures import (
    decoder_layers,
    model_card,
    model_shape,
    site_module,
    unwrap,
)
from relneuron_eval.atomic import atomic_write
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.neuron_set import Neuron, NeuronSet, make_header

METHOD_NAME = "knowledge-neurons"
SITE = "mlp.act"
METHODS = ("auto", "suffix", "cached", "batched", "plain")
RIEMANN = ("right", "left", "midpoint")
ANSWER_TOKENS = ("first", "all")
P_SCOPES = ("relation", "fact", "all")
SUFFIX_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
CHECKPOINT_FORMAT = "relneuron-kn-checkpoint"
CHECKPOINT_VERSION = 1
LOGP_TOLERANCE = 1e-3  # |log P| difference allowed between a fast path and the clean pass


# ============================================================================ inputs
@dataclass(frozen=True)
class KnowledgeFact:
    """One fact: its paraphrase prompts (no trailing space) and its gold answer."""

    fact_id: str
    prompts: tuple[str, ...]
    answer: str
    relation: str = ""  # default: the part of fact_id before the last "/"

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(self.prompts))
        if not self.relation:
            object.__setattr__(self, "relation", self.fact_id.rpartition("/")[0] or "facts")

    def fingerprint(self) -> str:
        text = json.dumps([self.fact_id, self.relation, list(self.prompts), self.answer])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class IGConfig:
    """What is computed per prompt (changing any of it invalidates a checkpoint)."""

    steps: int = 20
    riemann: str = "right"
    answer_tokens: str = "first"
    answer_prefix: str = " "
    layers: tuple[int, ...] | None = None  # None: all layers
    method: str = "auto"
    step_batch: int | None = None  # rows per forward pass; None: all steps at once
    store_fraction: float | None = 0.1  # keep units >= this * max in the checkpoint

    def alphas(self) -> torch.Tensor:
        k = torch.arange(1, self.steps + 1, dtype=torch.float64)
        shift = {"right": 0.0, "left": 1.0, "midpoint": 0.5}[self.riemann]
        return ((k - shift) / self.steps).to(torch.float32)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = None if self.layers is None else list(self.layers)
        return out


@dataclass(frozen=True)
class SelectConfig:
    """How neurons are picked from the attributions (cheap; applied at merge time)."""

    threshold: float = 0.2
    p: float | str = "auto"
    p_scope: str = "relation"  # what "auto" averages over
    p_start: float = 0.7
    p_step: float = 0.05
    p_evaluations: int = 6
    target: tuple[float, float] = (2.0, 5.0)
    min_shared: int = 1
    relation_fraction: float | None = 0.1
    top_k: int | None = None  # at most this many neurons per fact (best scores)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = list(self.target)
        return out


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate_facts(facts: Sequence[KnowledgeFact]) -> None:
    """Reject empty input, duplicate ids, facts without prompts or answer."""
    if not facts:
        raise RelNeuronError("no facts given", hint="check --relations and the split")
    seen: set[str] = set()
    for fact in facts:
        if not isinstance(fact, KnowledgeFact):
            raise RelNeuronError(f"expected KnowledgeFact, got {type(fact).__name__}")
        if not fact.fact_id:
            raise RelNeuronError("a fact has an empty fact_id")
        if fact.fact_id in seen:
            raise RelNeuronError(f"duplicate fact id {fact.fact_id!r}")
        seen.add(fact.fact_id)
        if not fact.prompts or any(not isinstance(p, str) or not p.strip() for p in fact.prompts):
            raise RelNeuronError(f"fact {fact.fact_id!r} has no prompts or an empty prompt")
        if not isinstance(fact.answer, str) or not fact.answer.strip():
            raise RelNeuronError(f"fact {fact.fact_id!r} has an empty answer")


def validate_ig(config: IGConfig, num_layers: int | None = None) -> None:
    if not _is_int(config.steps) or config.steps < 1:
        raise RelNeuronError(f"steps must be a positive integer, got {config.steps!r}")
    if config.riemann not in RIEMANN:
        raise RelNeuronError(f"unknown riemann rule {config.riemann!r}", hint=f"use {RIEMANN}")
    if config.answer_tokens not in ANSWER_TOKENS:
        raise RelNeuronError(
            f"unknown answer_tokens {config.answer_tokens!r}", hint=f"use {ANSWER_TOKENS}"
        )
    if config.method not in METHODS:
        raise RelNeuronError(f"unknown method {config.method!r}", hint=f"use {METHODS}")
    if config.step_batch is not None and (not _is_int(config.step_batch) or config.step_batch < 1):
        raise RelNeuronError(f"step_batch must be a positive integer, got {config.step_batch!r}")
    sf = config.store_fraction
    if sf is not None and (not _is_num(sf) or not 0.0 <= sf < 1.0):
        raise RelNeuronError(f"store_fraction must be in [0, 1) or None, got {sf!r}")
    if config.layers is not None:
        bad = [x for x in config.layers if not _is_int(x)]
        if bad or not config.layers or len(set(config.layers)) != len(config.layers):
            raise RelNeuronError(f"layers must be distinct integers, got {config.layers!r}")
        if num_layers is not None and not all(0 <= x < num_layers for x in config.layers):
            raise RelNeuronError(f"layers {list(config.layers)} out of range [0, {num_layers - 1}]")


def validate_select(
    config: SelectConfig, total_units: int | None = None, store_fraction: float | None = None
) -> None:
    if not _is_num(config.threshold) or not 0.0 < config.threshold <= 1.0:
        raise RelNeuronError(f"threshold must be in (0, 1], got {config.threshold!r}")
    if config.p != "auto" and (not _is_num(config.p) or not 0.0 < config.p <= 1.0):
        raise RelNeuronError(f"p must be in (0, 1] or 'auto', got {config.p!r}")
    if config.p_scope not in P_SCOPES:
        raise RelNeuronError(f"unknown p_scope {config.p_scope!r}", hint=f"use {P_SCOPES}")
    if not (_is_num(config.p_start) and 0.0 < config.p_start <= 1.0):
        raise RelNeuronError(f"p_start must be in (0, 1], got {config.p_start!r}")
    if not (_is_num(config.p_step) and 0.0 < config.p_step < 1.0):
        raise RelNeuronError(f"p_step must be in (0, 1), got {config.p_step!r}")
    if not _is_int(config.p_evaluations) or config.p_evaluations < 1:
        raise RelNeuronError(f"p_evaluations must be >= 1, got {config.p_evaluations!r}")
    lo, hi = config.target
    if not (_is_num(lo) and _is_num(hi) and 0 <= lo <= hi):
        raise RelNeuronError(
            f"target must be (low, high) with 0 <= low <= high, got {config.target!r}"
        )
    if not _is_int(config.min_shared) or config.min_shared < 1:
        raise RelNeuronError(f"min_shared must be a positive integer, got {config.min_shared!r}")
    rf = config.relation_fraction
    if rf is not None and (not _is_num(rf) or not 0.0 < rf <= 1.0):
        raise RelNeuronError(f"relation_fraction must be in (0, 1] or None, got {rf!r}")
    if config.top_k is not None:
        if not _is_int(config.top_k) or config.top_k < 1:
            raise RelNeuronError(f"top_k must be a positive integer, got {config.top_k!r}")
        if total_units is not None and config.top_k > total_units:
            raise RelNeuronError(
                f"top_k {config.top_k} is larger than the number of {SITE} units ({total_units})",
                hint="use a smaller --top-k",
            )
    if store_fraction is not None and config.threshold < store_fraction:
        raise RelNeuronError(
            f"threshold {config.threshold} is below the checkpoint's store_fraction "
            f"{store_fraction}: the attributions under it were not kept",
            hint="recompute with a smaller store_fraction or raise the threshold",
        )


# ====================================================================== tokenization
def encode(
    tokenizer: Any, prompt: str, answer: str, config: IGConfig
) -> tuple[list[int], list[int]]:
    """Prompt ids and the gold answer's ids as they follow the prompt.

    The answer's tokens are those of ``prompt + prefix + answer`` after the prompt's own
    tokens; if the joint tokenization does not start with the prompt's (a merge across
    the boundary), the answer is tokenized alone.
    """
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    full = list(tokenizer(prompt + config.answer_prefix + answer)["input_ids"])
    if len(full) > len(prompt_ids) and full[: len(prompt_ids)] == prompt_ids:
        answer_ids = full[len(prompt_ids) :]
    else:
        answer_ids = list(
            tokenizer(config.answer_prefix + answer, add_special_tokens=False)["input_ids"]
        )
    if not prompt_ids or not answer_ids:
        raise RelNeuronError(f"prompt {prompt!r} or answer {answer!r} tokenizes to nothing")
    if config.answer_tokens == "first":
        answer_ids = answer_ids[:1]
    return prompt_ids, answer_ids


# ============================================================================ engine
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
    model: Any, ids: list[int], pos: int, q: int, answer_ids: list[int], *, mids: bool, cache: bool
) -> _Clean:
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
        if mids:
            handles.append(
                layers[layer].post_attention_layernorm.register_forward_pre_hook(grab(mid, layer))
            )
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


def suffix_supported(model: Any) -> bool:
    """Whether the layer-suffix path knows this model's structure (Llama family)."""
    base = unwrap(model)
    config = getattr(base, "config", None)
    if getattr(config, "model_type", None) not in SUFFIX_MODEL_TYPES:
        return False
    if getattr(config, "final_logit_softcapping", None):
        return False
    inner = getattr(base, "model", None)
    if not all(hasattr(inner, a) for a in ("norm", "rotary_emb", "layers")):
        return False
    if base.get_output_embeddings() is None:
        return False
    return all(
        hasattr(layer, "post_attention_layernorm") and hasattr(layer.mlp, "down_proj")
        for layer in decoder_layers(base)
    )


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
        want_suffix = method == "suffix"
        want_cache = method in ("suffix", "cached") and self.pos > 0
        self.clean = _clean_pass(
            self.model,
            self.ids,
            self.pos,
            self.q,
            self.answer_ids,
            mids=want_suffix,
            cache=want_cache,
        )
        if method in ("suffix", "cached") and self.clean.prefix is None:
            return "batched"
        if want_suffix:
            base = unwrap(self.model)
            inner = base.model
            self.layers = decoder_layers(base)
            self.norm, self.lm_head = inner.norm, base.get_output_embeddings()
            self.pos_ids = torch.tensor([[self.pos]], device=self.device)
            h = self.clean.mids[0].view(1, 1, -1)
            self.pos_emb = inner.rotary_emb(h, position_ids=self.pos_ids)
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
        layers = self.layers
        mid = self.clean.mids[layer]
        h = mid.unsqueeze(0) + layers[layer].mlp.down_proj(w.to(mid.dtype))
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
        logits = self.lm_head(self.norm(h))
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


# ============================================================================= facts
@dataclass
class FactResult:
    """What the checkpoint keeps of one fact: enough to select at any threshold >= stored."""

    fact_id: str
    relation: str
    fingerprint: str
    layers: list[int]
    intermediate_size: int
    units: np.ndarray  # int64 flat ids layer * intermediate_size + index, sorted
    attr: np.ndarray  # float32 [n_prompts, len(units)]
    max_attr: np.ndarray  # float32 [n_prompts]
    prob: np.ndarray  # float32 [n_prompts], clean P(y*)
    methods: list[str] = field(default_factory=list)
    store_fraction: float | None = None

    @classmethod
    def from_prompts(
        cls,
        fact: KnowledgeFact,
        parts: Sequence[PromptAttribution],
        intermediate_size: int,
        store_fraction: float | None,
        fingerprint: str,
    ) -> FactResult:
        layers = parts[0].layers
        full = np.stack([p.attr for p in parts]).reshape(len(parts), -1)  # [P, nL * I]
        flat_ids = (
            np.asarray(layers, dtype=np.int64)[:, None] * intermediate_size
            + np.arange(intermediate_size, dtype=np.int64)[None, :]
        ).reshape(-1)
        max_attr = full.max(axis=1).astype(np.float32)
        if store_fraction is None:
            keep = np.ones(full.shape[1], dtype=bool)
        else:
            keep = ((full >= store_fraction * max_attr[:, None]) & (max_attr[:, None] > 0)).any(0)
        order = np.argsort(flat_ids[keep], kind="stable")
        return cls(
            fact_id=fact.fact_id,
            relation=fact.relation,
            fingerprint=fingerprint,
            layers=list(layers),
            intermediate_size=intermediate_size,
            units=flat_ids[keep][order],
            attr=np.ascontiguousarray(full[:, keep][:, order], dtype=np.float32),
            max_attr=max_attr,
            prob=np.asarray([p.prob for p in parts], dtype=np.float32),
            methods=[p.method for p in parts],
            store_fraction=store_fraction,
        )

    def save(self, path: Path) -> None:
        meta = {
            "fact_id": self.fact_id,
            "relation": self.relation,
            "fingerprint": self.fingerprint,
            "layers": self.layers,
            "intermediate_size": self.intermediate_size,
            "methods": self.methods,
            "store_fraction": self.store_fraction,
        }
        with atomic_write(path, "wb") as handle:
            np.savez(
                handle,
                meta=np.array(json.dumps(meta)),
                units=self.units,
                attr=self.attr,
                max_attr=self.max_attr,
                prob=self.prob,
            )

    @classmethod
    def load(cls, path: Path) -> FactResult:
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {k: data[k] for k in ("units", "attr", "max_attr", "prob")}
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            raise RelNeuronError(f"unreadable checkpoint file ({exc})", path=path) from None
        return cls(**meta, **arrays)


def fact_attributions(
    model: Any, tokenizer: Any, fact: KnowledgeFact, config: IGConfig, fingerprint: str = ""
) -> FactResult:
    """Attributions of every prompt of one fact, reduced to what selection needs."""
    parts = []
    for prompt in fact.prompts:
        prompt_ids, answer_ids = encode(tokenizer, prompt, fact.answer, config)
        parts.append(prompt_attributions(model, prompt_ids, answer_ids, config))
    size = model_shape(model).intermediate_size
    return FactResult.from_prompts(
        fact, parts, size, config.store_fraction, fingerprint or fact.fingerprint()
    )


# ======================================================================= checkpoints
def _fact_path(root: Path, fact_id: str) -> Path:
    return root / "facts" / f"{hashlib.sha256(fact_id.encode()).hexdigest()[:24]}.npz"


def _run_meta(model: Any, config: IGConfig, model_id: str | None) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": model_card(model, model_id),
        "ig": config.as_dict(),
    }


def _open_checkpoint(root: Path, meta: dict[str, Any]) -> None:
    """Check (or write) ``run.json``; an unreadable one is rewritten, as fact files carry
    a key derived from it and stale ones are simply computed again."""
    from relneuron_eval.discovery.activations import notice_line, read_json_object

    path = root / "run.json"
    old = read_json_object(path) if path.exists() else None
    if path.exists() and old is None:
        notice_line(f"checkpoint {path} is unreadable; writing it again")
    elif old is not None:
        if old != meta:
            diff = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
            raise RelNeuronError(
                f"checkpoint folder was made with other settings ({', '.join(diff)} differ)",
                path=root,
                hint="use another checkpoint folder, or delete this one to start over",
            )
        return
    with atomic_write(path) as handle:
        handle.write(json.dumps(meta, indent=1, sort_keys=True))


def _fact_key(fact: KnowledgeFact, meta: dict[str, Any]) -> str:
    text = fact.fingerprint() + json.dumps(meta, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _is_done(root: Path, fact: KnowledgeFact, meta: dict[str, Any]) -> bool:
    """A current result exists (an unreadable or stale file is redone, damage with a notice)."""
    from relneuron_eval.discovery.activations import notice_line

    path = _fact_path(root, fact.fact_id)
    if not path.exists():
        return False
    try:
        return FactResult.load(path).fingerprint == _fact_key(fact, meta)
    except RelNeuronError:
        notice_line(f"checkpoint {path} ({fact.fact_id}) is damaged; computing it again")
        return False


def shard(facts: Sequence[KnowledgeFact], rank: int, world_size: int) -> list[KnowledgeFact]:
    """This process's facts: every ``world_size``-th, starting at ``rank``."""
    if not (_is_int(world_size) and world_size >= 1 and _is_int(rank) and 0 <= rank < world_size):
        raise RelNeuronError(f"bad rank/world_size {rank}/{world_size}")
    return list(facts[rank::world_size])


@dataclass
class ShardReport:
    computed: int
    skipped: int


def compute_shard(
    model: Any,
    tokenizer: Any,
    facts: Sequence[KnowledgeFact],
    checkpoint: str | Path,
    config: IGConfig = IGConfig(),
    *,
    rank: int = 0,
    world_size: int = 1,
    model_id: str | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> ShardReport:
    """Attribute this rank's facts into ``checkpoint``; facts already there are skipped.

    ``stop_after`` simulates an interruption after that many facts (tests).
    """
    from tqdm.auto import tqdm

    validate_facts(facts)
    validate_ig(config, model_shape(model).num_layers)
    mine = shard(facts, rank, world_size)
    root = Path(checkpoint)
    meta = _run_meta(model, config, model_id)
    _open_checkpoint(root, meta)
    todo = [fact for fact in mine if not _is_done(root, fact, meta)]
    done = 0
    bar = tqdm(
        todo,
        desc=f"{METHOD_NAME}[{rank}]" if world_size > 1 else METHOD_NAME,
        unit="fact",
        disable=not progress,
    )
    for fact in bar:
        if stop_after is not None and done >= stop_after:
            raise KeyboardInterrupt("simulated interruption")
        result = fact_attributions(model, tokenizer, fact, config, _fact_key(fact, meta))
        result.save(_fact_path(root, fact.fact_id))
        done += 1
    return ShardReport(computed=done, skipped=len(mine) - len(todo))


# ========================================================================= selection
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

    def text(self) -> str:
        lines = [
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
        return "\n".join(lines)


def load_results(
    facts: Sequence[KnowledgeFact], checkpoint: str | Path
) -> tuple[dict[str, Any], list[FactResult]]:
    """The run's metadata and every fact's result; missing or stale facts are an error."""
    root = Path(checkpoint)
    from relneuron_eval.discovery.activations import read_json_object

    meta = read_json_object(root / "run.json")
    if meta is None:
        raise RelNeuronError(
            "not a knowledge-neuron checkpoint (no readable run.json)",
            path=root,
            hint="run the attribution step again (it resumes) before merging",
        )
    results, missing = [], []
    for fact in facts:
        path = _fact_path(root, fact.fact_id)
        result = FactResult.load(path) if path.exists() else None
        if result is None or result.fingerprint != _fact_key(fact, meta):
            missing.append(fact.fact_id)
        else:
            results.append(result)
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise RelNeuronError(
            f"{len(missing)} of {len(facts)} facts have no (current) result: {shown}",
            path=root,
            hint="run the attribution step again (it resumes) before merging",
        )
    return meta, results


def merge(
    facts: Sequence[KnowledgeFact],
    checkpoint: str | Path,
    select: SelectConfig = SelectConfig(),
    *,
    data: Any = None,
) -> tuple[NeuronSet, MergeSummary]:
    """Build the neuron set (groups = fact ids, then relation names) from a checkpoint."""
    validate_facts(facts)
    meta, results = load_results(facts, checkpoint)
    card = meta["model"]
    ig = IGConfig(**{**meta["ig"], "layers": meta["ig"]["layers"] and tuple(meta["ig"]["layers"])})
    size = int(card["intermediate_size"])
    validate_select(select, int(card["num_layers"]) * size, ig.store_fraction)

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
    relation_counts: dict[str, int] = {}
    if select.relation_fraction is not None:
        for relation, unit_lists in fact_units.items():
            units, share = relation_units(unit_lists, select.relation_fraction)
            relation_counts[relation] = len(units)
            for u, s in zip(units, share, strict=True):
                layer, index = divmod(int(u), size)
                neurons.append(Neuron(relation, SITE, layer, index, float(s)))

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
    )
    header = make_header(
        model=card,
        method={
            "name": METHOD_NAME,
            "params": {
                "target": f"P(gold answer, {ig.answer_tokens} token(s)) at the last prompt position",
                "baseline": "zero",
                **{k: v for k, v in ig.as_dict().items() if k not in ("method", "step_batch")},
                **select.as_dict(),
                "p_used": p_used,
                "score": "mean over prompts of attribution / prompt max (fact groups); "
                "share of the relation's facts (relation groups)",
            },
            "data": {
                "source": data,
                "facts": len(results),
                "prompts": summary.prompts,
                "facts_fingerprint": hashlib.sha256(
                    "".join(f.fingerprint() for f in facts).encode()
                ).hexdigest()[:16],
            },
        },
        knowledge_neurons={
            "facts": len(results),
            "facts_without_neurons": empty,
            "relations": sorted(relation_counts),
        },
    )
    return NeuronSet(header, neurons), summary


def find_knowledge_neurons(
    model: Any,
    tokenizer: Any,
    facts: Sequence[KnowledgeFact],
    checkpoint: str | Path,
    out: str | Path | None = None,
    ig: IGConfig = IGConfig(),
    select: SelectConfig = SelectConfig(),
    *,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    model_id: str | None = None,
    data: Any = None,
    progress: bool = True,
) -> tuple[NeuronSet, MergeSummary] | None:
    """Attribute this rank's shard, wait for the others, merge and save on rank 0.

    All arguments are checked before anything is written. Under several processes pass
    ``barrier`` (e.g. ``accelerate.PartialState().wait_for_everyone``); ranks other than
    0 return None.
    """
    validate_facts(facts)
    shape = model_shape(model)
    validate_ig(ig, shape.num_layers)
    validate_select(select, shape.num_layers * shape.intermediate_size, ig.store_fraction)
    shard(facts, rank, world_size)
    if out is not None and Path(out).is_dir():
        raise RelNeuronError("output path is a folder", path=out)
    for fact in facts:  # tokenization problems surface before hours of compute
        for prompt in fact.prompts:
            encode(tokenizer, prompt, fact.answer, ig)
    compute_shard(
        model,
        tokenizer,
        facts,
        checkpoint,
        ig,
        rank=rank,
        world_size=world_size,
        model_id=model_id,
        progress=progress,
    )
    if world_size > 1:
        if barrier is None:
            raise RelNeuronError("several processes need a barrier to merge")
        barrier()
    if rank != 0:
        return None
    neuron_set, summary = merge(facts, checkpoint, select, data=data)
    if out is not None:
        neuron_set.save(out)
    return neuron_set, summary
