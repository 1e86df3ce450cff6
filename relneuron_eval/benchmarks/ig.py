"""Knowledge-neuron integrated gradients: each fast path against the plain loop.

Loads the embedded SmolLM2-135M (float32, CPU) and attributes the same prompts with
every path: ``plain`` (one forward + backward per layer and step, the reference),
``batched`` (a layer's steps as one batch over the full prompt), ``cached`` (one batch
of the last token over the prefix key/value cache) and ``suffix`` (one batch of the last
token through layers l+1.. only). Per prompt the paths run back to back, so drift hits
all of them; reported: wall and CPU time per path, the speed-up over ``plain``, and the
agreement with it (largest attribution difference relative to the largest attribution,
and the Jaccard overlap of the coarse neurons, >= 0.2 x max). The plain loop also gets
``logits_to_keep=1``, so the ratio is not inflated by computing unused logits.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from relneuron_eval.core.arglists import parse_layers

PROMPTS = [
    ("The capital city of France is", "Paris"),
    ("The official language of Germany is", "German"),
    ("The CEO of Apple is", "Tim Cook"),
    ("Tokyo is a city in the country of", "Japan"),
]
METHODS = ("plain", "batched", "cached", "suffix")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", type=int, default=2, help=f"1..{len(PROMPTS)}")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--layers", default="0,6,12,18,24,29", help="layers to attribute (the plain loop is slow)"
    )


def run(args: argparse.Namespace) -> dict:
    layers = None if args.layers in (None, "", "all") else tuple(parse_layers(args.layers))
    result = attribute_all(
        args.prompts, args.steps, args.threads, tuple(args.methods.split(",")), layers
    )
    speed = result["speedup_wall"]
    result["summary"] = [
        f"{result['prompts']} prompts, {result['steps']} steps, layers {result['layers']}, "
        f"{result['threads']} threads",
        "speed-up over the plain loop (wall): "
        + ", ".join(f"{m} {v:.1f}x" for m, v in speed.items() if m != result["reference"]),
        "agreement: "
        + ", ".join(
            f"{m} max|diff|/max {a['max_abs_diff_over_max']:.2g}, coarse Jaccard "
            f"{a['coarse_jaccard_min']:.3f}"
            for m, a in result["agreement"].items()
            if m != result["reference"]
        ),
    ]
    return result


def attribute_all(
    prompts: int = 2,
    steps: int = 20,
    threads: int | None = None,
    methods: tuple[str, ...] = METHODS,
    layers: tuple[int, ...] | None = None,
) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relneuron_eval.core.embedded import ensure_local
    from relneuron_eval.discovery.knowledge_neurons import (
        IGConfig,
        coarse_mask,
        encode,
        prompt_attributions,
    )

    if threads:
        torch.set_num_threads(threads)
    path = ensure_local()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    items = PROMPTS[:prompts]
    times = {m: 0.0 for m in methods}
    cpu = {m: 0.0 for m in methods}
    attrs: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    used: dict[str, list[str]] = {m: [] for m in methods}
    tokens = []
    for text, answer in items:
        cfg = IGConfig(steps=steps, layers=layers)
        prompt_ids, answer_ids = encode(tokenizer, text, answer, cfg)
        tokens.append(len(prompt_ids))
        for method in methods:
            cfg = IGConfig(steps=steps, layers=layers, method=method)
            start, start_cpu = time.perf_counter(), time.process_time()
            result = prompt_attributions(model, prompt_ids, answer_ids, cfg)
            times[method] += time.perf_counter() - start
            cpu[method] += time.process_time() - start_cpu
            attrs[method].append(result.attr)
            used[method].append(result.method)
    ref_name = "plain" if "plain" in methods else methods[0]
    out = {
        "model": "smollm2-135m (float32)",
        "threads": torch.get_num_threads(),
        "prompts": len(items),
        "prompt_tokens": tokens,
        "steps": steps,
        "layers": "all" if layers is None else list(layers),
        "reference": ref_name,
        "wall_seconds": {m: round(t, 2) for m, t in times.items()},
        "cpu_seconds": {m: round(t, 2) for m, t in cpu.items()},
        "speedup_wall": {m: round(times[ref_name] / t, 2) for m, t in times.items()},
        "speedup_cpu": {m: round(cpu[ref_name] / t, 2) for m, t in cpu.items()},
        "paths_used": used,
        "agreement": {},
    }
    for method in methods:
        rel, jac = [], []
        for a, ref in zip(attrs[method], attrs[ref_name], strict=True):
            rel.append(float(np.abs(a - ref).max() / np.abs(ref).max()))
            ca = coarse_mask(a.reshape(1, -1), a.max(keepdims=True).reshape(1), 0.2)[0]
            cr = coarse_mask(ref.reshape(1, -1), ref.max(keepdims=True).reshape(1), 0.2)[0]
            jac.append(float((ca & cr).sum() / max(1, (ca | cr).sum())))
        out["agreement"][method] = {
            "max_abs_diff_over_max": float(f"{max(rel):.3g}"),
            "coarse_jaccard_min": round(min(jac), 4),
        }
    return out
