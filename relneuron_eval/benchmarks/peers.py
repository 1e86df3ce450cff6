"""Peers side by side: one ablation through plain torch hooks, our two paths and other tools.

Users will ask why not use the tool they know. Every arm zeroes the same seeded draw of
``--neurons`` ``mlp.act`` units (the input of each layer's down projection) of one model:
(a) ``torch_hooks``, a hand-written forward pre-hook per layer (the baseline every other
arm is checked against); (b) ``fold`` and (c) ``hook``, relneuron-eval's
``apply_intervention``; (d) ``nnsight``, (e) ``pyvene`` and (f) ``transformer_lens``, where
they are installed (``pip install relneuron-eval[peers]``) and can load the model. A peer
that is missing or cannot load is reported with the reason, never raised.

Per arm: max |logit diff| vs (a) on a batched forward, whether the greedy generations
equal (a)'s, the ratio of its median time to the plain, unmodified model's on the forward
and on greedy generation (interleaved rounds), its one-time wrap time and its per-call
overhead (a 1-prompt x 1-token forward minus the plain model's: hook registration,
folding and undoing, tracing). Every timed call applies and undoes the ablation, as a
one-off call would.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relneuron_eval.benchmarks.timing import interleaved, median
from relneuron_eval.errors import RelNeuronError

NOT_INSTALLED = "not installed (pip install relneuron-eval[peers])"
OURS = ("torch_hooks", "fold", "hook")
PEERS = {"nnsight": "nnsight", "pyvene": "pyvene", "transformer_lens": "transformer_lens"}
ARMS = (*OURS, *PEERS)
GENERATION_PROMPTS = (
    "The capital city of France is the city of",
    "The Eiffel Tower is located in the country of",
    "The company Toyota has its headquarters in the city of",
    "Albert Einstein worked for most of his life as a famous",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="pretrained (default: embedded)")
    parser.add_argument("--neurons", type=int, default=3000, help="mlp.act units zeroed")
    parser.add_argument("--prompts", type=int, default=64, help="rows of the batched forward")
    parser.add_argument("--tokens", type=int, default=44, help="tokens per forward row")
    parser.add_argument("--new-tokens", type=int, default=16, help="greedy tokens generated")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated of {ARMS}")


@dataclass
class Arm:
    """How one tool runs the ablated model: each call applies and undoes the ablation."""

    forward: Callable[[Any], Any]  # input ids -> logits
    generate: Callable[[Any, int], Any]  # input ids, new tokens -> all token ids
    wrap_seconds: float = 0.0  # one-time cost to make the tool's model
    notes: list[str] = field(default_factory=list)


@dataclass
class Setting:
    """What every arm shares: the model, its tokenizer and the ablated units per layer."""

    model: Any
    tokenizer: Any
    units: dict[int, list[int]]  # layer -> mlp.act indices
    scale: dict[int, Any]  # layer -> multiplier vector (0 at the units, 1 elsewhere)
    intervention: Any  # relneuron_eval.core.interventions.Intervention

    def plain_generate(self, model: Any, ids: Any, new: int) -> Any:
        """Greedy decoding of exactly ``new`` tokens (eos cannot stop a row early)."""
        return model.generate(
            ids,
            attention_mask=ids.new_ones(ids.shape),
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=self.tokenizer.eos_token_id,
        )


# ===================================================================== our three arms
@contextlib.contextmanager
def torch_hooks(setting: Setting) -> Iterator[None]:
    """The hand-written baseline: one pre-hook per layer scales the down projection's input."""
    handles = []
    for layer, scale in setting.scale.items():
        module = setting.model.model.layers[layer].mlp.down_proj
        handles.append(module.register_forward_pre_hook(lambda m, a, s=scale: (a[0] * s,)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _context_arm(setting: Setting, make: Callable[[], Any]) -> Arm:
    """An arm that runs the plain model inside a context that applies the ablation."""

    def forward(ids: Any) -> Any:
        with make():
            return setting.model(ids).logits

    def generate(ids: Any, new: int) -> Any:
        with make():
            return setting.plain_generate(setting.model, ids, new)

    return Arm(forward, generate)


def _our_arm(name: str, setting: Setting) -> Arm:
    from relneuron_eval.core.interventions import apply_intervention

    if name == "torch_hooks":
        return _context_arm(setting, lambda: torch_hooks(setting))
    return _context_arm(
        setting, lambda: apply_intervention(setting.model, setting.intervention, name)
    )


# ========================================================================== the peers
def _nnsight_arm(setting: Setting) -> Arm:
    import torch
    from nnsight import TransformersModel

    lm = TransformersModel(setting.model, task="text-generation", tokenizer=setting.tokenizer)
    index = {layer: torch.tensor(units) for layer, units in setting.units.items()}

    def ablate() -> None:
        for layer, units in index.items():
            lm.model.layers[layer].mlp.down_proj.input[..., units] = 0

    def forward(ids: Any) -> Any:
        with lm.trace(ids):
            ablate()
            logits = lm.output.logits.save()
        return logits

    def generate(ids: Any, new: int) -> Any:
        options = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False}
        with lm.generate(ids, pad_token_id=setting.tokenizer.eos_token_id, **options) as tracer:
            for _step in tracer.iter[:new]:  # every forward of the generation, prompt included
                ablate()
            tokens = tracer.result.save()
        return tokens

    return Arm(forward, generate)


def _pyvene_arm(setting: Setting) -> Arm:
    import pyvene as pv

    representations = [
        pv.RepresentationConfig(
            layer=layer,
            component=f"model.layers[{layer}].mlp.down_proj.input",
            intervention_type=pv.ZeroIntervention,
        )
        for layer in setting.units
    ]
    model = pv.IntervenableModel(
        pv.IntervenableConfig(representations=representations), setting.model
    )
    model.disable_model_gradients()

    def subspaces(ids: Any) -> list[list[list[int]]]:  # per intervention, per row: the units
        return [[units] * ids.shape[0] for units in setting.units.values()]

    def forward(ids: Any) -> Any:
        _, out = model({"input_ids": ids}, subspaces=subspaces(ids))
        return out.logits

    def generate(ids: Any, new: int) -> Any:
        _, tokens = model.generate(
            {"input_ids": ids, "attention_mask": ids.new_ones(ids.shape)},
            subspaces=subspaces(ids),
            intervene_on_prompt=True,
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            pad_token_id=setting.tokenizer.eos_token_id,
        )
        return tokens

    return Arm(forward, generate)


def _transformer_lens_arm(setting: Setting) -> Arm:
    """TransformerLens 4 removed ``HookedTransformer``: its ``TransformerBridge`` wraps HF.

    The bridge switches its model to eager attention, so it gets a copy of ours (the
    other arms keep theirs); a checkpoint folder is all it needs to read the config.
    """
    import copy

    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(
        setting.model.config._name_or_path,
        hf_model=copy.deepcopy(setting.model),
        tokenizer=setting.tokenizer,
        device="cpu",
    )
    hooks = [
        (f"blocks.{layer}.mlp.hook_post", lambda x, hook, s=scale: x * s)
        for layer, scale in setting.scale.items()
    ]

    def forward(ids: Any) -> Any:
        return bridge.run_with_hooks(ids, fwd_hooks=hooks)

    def generate(ids: Any, new: int) -> Any:
        with bridge.hooks(fwd_hooks=hooks):
            return bridge.generate(
                ids, max_new_tokens=new, do_sample=False, stop_at_eos=False, verbose=False
            )

    notes = [
        "HookedTransformer was removed in 4.0: TransformerBridge.boot_transformers(hf_model=)",
        "generate() with its default use_past_kv_cache=True",
    ]
    return Arm(forward, generate, notes=notes)


def _peer_arm(name: str, setting: Setting) -> Arm | str:
    """The peer's arm, or why there is none (not installed, or the error that stopped it)."""
    builder = {"nnsight": _nnsight_arm, "pyvene": _pyvene_arm}.get(name, _transformer_lens_arm)
    start = time.perf_counter()
    try:
        arm = builder(setting)
    except ImportError as error:
        if getattr(error, "name", None) == PEERS[name] or sys.modules.get(PEERS[name], 0) is None:
            return NOT_INSTALLED
        return f"cannot load: {type(error).__name__}: {_first_line(error)}"
    except Exception as error:  # a peer's own failure is a result, not a crash
        return f"cannot load: {type(error).__name__}: {_first_line(error)}"
    arm.wrap_seconds = time.perf_counter() - start
    return arm


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else repr(error)


# ========================================================================= the run
def _setting(args: argparse.Namespace, folder: Path) -> Setting:
    """Load the model once and draw the units (``bench overhead``'s seeded draw)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relneuron_eval.benchmarks.overhead import _random_set
    from relneuron_eval.core.architectures import model_shape
    from relneuron_eval.core.embedded import resolve_pretrained
    from relneuron_eval.core.interventions import Intervention

    path = str(resolve_pretrained(args.model))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    shape = model_shape(model)
    if not 0 < args.neurons <= shape.num_layers * shape.intermediate_size:
        raise RelNeuronError(
            f"--neurons {args.neurons} is out of range for this model",
            hint=f"use 1 to {shape.num_layers * shape.intermediate_size}",
        )
    intervention = Intervention.build(
        _random_set(model, args.neurons, ["ablation"], folder / "s.jsonl")
    )
    units = {layer: list(idx) for (_site, layer), idx in sorted(intervention.units().items())}
    scale = {}
    for layer, idx in units.items():
        scale[layer] = torch.ones(shape.intermediate_size)
        scale[layer][idx] = 0.0
    return Setting(model, tokenizer, units, scale, intervention)


def _inputs(setting: Setting, args: argparse.Namespace) -> tuple[Any, Any]:
    """Seeded random token rows for the forward; real prompts cut to one length for generation."""
    import torch

    generator = torch.Generator().manual_seed(0)
    vocab = setting.model.config.vocab_size
    forward = torch.randint(100, vocab, (args.prompts, args.tokens), generator=generator)
    rows = [setting.tokenizer(p)["input_ids"] for p in GENERATION_PROMPTS]
    shortest = min(len(r) for r in rows)
    return forward, torch.tensor([r[:shortest] for r in rows])


def _check_args(args: argparse.Namespace) -> list[str]:
    for name in ("prompts", "tokens", "new_tokens", "rounds", "threads"):
        if getattr(args, name) < 1:
            option = "--" + name.replace("_", "-")
            raise RelNeuronError(
                f"{option} {getattr(args, name)} is out of range", hint="use 1 or more"
            )
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or "torch_hooks" not in arms:
        raise RelNeuronError(
            f"--arms {args.arms!r}: unknown {unknown}" if unknown else "--arms lacks torch_hooks",
            hint=f"use a comma-separated list of {list(ARMS)} that includes torch_hooks (the reference)",
        )
    return arms


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    names = _check_args(args)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
            return _measure(args, names, Path(tmp))
    finally:
        torch.set_num_threads(threads)


def _max_diff(a: Any, b: Any) -> float:
    """Max |a - b| row by row (a full difference of 64 x 44 x 49k logits is 0.5 GB more)."""
    if tuple(a.shape) != tuple(b.shape):
        return float("nan")
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b, strict=True))


def _build_arms(names: list[str], setting: Setting) -> dict[str, Arm | str]:
    model = setting.model
    arms: dict[str, Arm | str] = {
        "plain": Arm(
            lambda ids: model(ids).logits, lambda ids, n: setting.plain_generate(model, ids, n)
        )
    }
    for name in names:
        arms[name] = _our_arm(name, setting) if name in OURS else _peer_arm(name, setting)
    return arms


def _check(arms: dict[str, Arm | str], forward_ids: Any, gen_ids: Any, new: int) -> dict[str, Any]:
    """Each arm's agreement with ``torch_hooks``; an arm that fails here becomes its error."""
    reference = arms["torch_hooks"]
    assert isinstance(reference, Arm)
    ref_logits, ref_tokens = reference.forward(forward_ids), reference.generate(gen_ids, new)
    checks: dict[str, Any] = {}
    for name, arm in list(arms.items()):
        if not isinstance(arm, Arm):
            continue
        try:
            logits, tokens = arm.forward(forward_ids), arm.generate(gen_ids, new)
        except Exception as error:  # a peer failing on this model is a result
            arms[name] = f"fails: {type(error).__name__}: {_first_line(error)}"
            continue
        same = tuple(tokens.shape) == tuple(ref_tokens.shape) and bool((tokens == ref_tokens).all())
        checks[name] = {
            "max_abs_logit_diff": _max_diff(logits, ref_logits),
            "same_generation": same,
        }
        del logits
    return checks


def _overhead(arms: dict[str, Arm], rounds: int) -> dict[str, float]:
    """Per-call cost beyond the plain model: a 1 x 1 forward, minus the plain model's."""
    import torch

    one = torch.tensor([[1000]])
    times = interleaved(
        {n: (lambda a=a: a.forward(one)) for n, a in arms.items()}, rounds, warmup=1
    )
    base = median(times["plain"])
    return {n: median(t) - base for n, t in times.items() if n != "plain"}


def _measure(args: argparse.Namespace, names: list[str], folder: Path) -> dict[str, Any]:
    start, load_before = time.perf_counter(), os.getloadavg()
    setting = _setting(args, folder)
    forward_ids, gen_ids = _inputs(setting, args)
    arms = _build_arms(names, setting)
    checks = _check(arms, forward_ids, gen_ids, args.new_tokens)  # also the warm-up
    live = {n: a for n, a in arms.items() if isinstance(a, Arm)}
    forward = interleaved(
        {n: (lambda a=a: a.forward(forward_ids)) for n, a in live.items()}, args.rounds, warmup=0
    )
    generate = interleaved(
        {n: (lambda a=a: a.generate(gen_ids, args.new_tokens)) for n, a in live.items()},
        args.rounds,
        warmup=0,
    )
    overhead = _overhead(live, rounds=3 * args.rounds)
    rows = {}
    for name in names:
        arm = arms[name]
        if not isinstance(arm, Arm):
            rows[name] = {"loads": False, "status": arm}
            continue
        rows[name] = {
            "loads": True,
            **checks[name],
            "forward_ratio": round(median(forward[name]) / median(forward["plain"]), 4),
            "generation_ratio": round(median(generate[name]) / median(generate["plain"]), 4),
            "wrap_seconds": round(arm.wrap_seconds, 3),
            "per_call_overhead_ms": round(1000 * overhead[name], 2),
            "notes": arm.notes,
        }
    conditions = {
        "model": args.model,
        "units": args.neurons,
        "layers_touched": len(setting.units),
        "forward": f"{args.prompts} prompts x {args.tokens} tokens, one batch",
        "generation": f"{len(GENERATION_PROMPTS)} prompts x {gen_ids.shape[1]} tokens, "
        f"{args.new_tokens} greedy tokens",
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "versions": _versions(),
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    return {
        "conditions": conditions,
        "arms": rows,
        "median_seconds": {
            "forward": {n: round(median(t), 4) for n, t in forward.items()},
            "generation": {n: round(median(t), 4) for n, t in generate.items()},
        },
        "seconds": {  # every round, so a reader can judge the spread behind the medians
            "forward": {n: [round(x, 3) for x in t] for n, t in forward.items()},
            "generation": {n: [round(x, 3) for x in t] for n, t in generate.items()},
        },
        "summary": _summary(conditions, rows),
    }


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("torch", "transformers", "nnsight", "pyvene", "transformer-lens"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _summary(conditions: dict[str, Any], rows: dict[str, Any]) -> list[str]:
    lines = [
        f"{conditions['units']} mlp.act units zeroed in {conditions['layers_touched']} layers; "
        f"forward: {conditions['forward']}; generation: {conditions['generation']}; "
        f"{conditions['threads']} thread(s), {conditions['rounds']} interleaved rounds",
        f"load average before/after {conditions['load_average_before_after']}; "
        f"versions {conditions['versions']}",
        "arm               max|dlogit|  same gen  forward  generation  wrap s  per call ms",
    ]
    for name, row in rows.items():
        if not row["loads"]:
            lines.append(f"{name:<17} {row['status']}")
            continue
        lines.append(
            f"{name:<17} {row['max_abs_logit_diff']:>11.3g}  {row['same_generation']!s:>8}  "
            f"{row['forward_ratio']:>7.3f}  {row['generation_ratio']:>10.3f}  "
            f"{row['wrap_seconds']:>6.2f}  {row['per_call_overhead_ms']:>11.2f}"
        )
    lines.append("ratios: median time / the plain unmodified model's; max|dlogit| vs torch_hooks")
    return lines
