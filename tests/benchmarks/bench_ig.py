"""Benchmark: knowledge-neuron IG paths against the plain per-layer, per-step loop.

``python tests/benchmarks/bench_ig.py`` loads the embedded SmolLM2-135M (float32, CPU)
and attributes the same prompts with every path: ``plain`` (one forward + backward per
layer and step, the reference), ``batched`` (a layer's steps as one batch over the full
prompt), ``cached`` (one batch of the last token over the prefix key/value cache) and
``suffix`` (one batch of the last token through layers l+1.. only). It prints wall time
and CPU time (all threads; robust when other jobs share the machine) per path, the
speed-up over ``plain`` and how well each path agrees with it: the largest
attribution difference relative to the largest attribution, and the Jaccard overlap of
the coarse neurons (>= 0.2 x max). The plain loop gets ``logits_to_keep=1`` like the
others, so the ratio is not inflated by computing unused logits.

Measured (2-core machine shared with other jobs, load 3-10; 2 prompts of 6 tokens,
20 steps, layers 0,6,12,18,24,29; ``--layers`` spread over the depth because the plain
loop over all 30 layers takes ~15 min per prompt under that load):

speed-up over plain (wall)    batched  cached  suffix
1 thread (--threads 1)         3.4x    11.6x   15.9x
2 threads (default), run 1    12.1x    21.0x   37.5x
2 threads (default), run 2     4.4x     9.1x   20.0x
agreement with plain: max |diff| / max |attr| = 9e-8 (batched, 1 thread), 1.3e-4
(cached, suffix); coarse neuron sets identical in every run.

The 1-thread ratio is the stable one (CPU-time ratios agree with wall ones); with 2
threads the plain loop's many tiny matmuls suffer most from the shared cores. The
1.3e-4 of the cached/suffix paths is float32 rounding (each path is ~3e-5 from a
float64 run); the coarse neuron sets (>= 0.2 x max) are identical in every run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

PROMPTS = [
    ("The capital city of France is", "Paris"),
    ("The official language of Germany is", "German"),
    ("The CEO of Apple is", "Tim Cook"),
    ("Tokyo is a city in the country of", "Japan"),
]
METHODS = ("plain", "batched", "cached", "suffix")


def run(
    prompts: int = 2,
    steps: int = 20,
    threads: int | None = None,
    methods: tuple[str, ...] = METHODS,
    layers: tuple[int, ...] | None = None,
) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relneuron_eval.discovery.knowledge_neurons import (
        IGConfig,
        coarse_mask,
        encode,
        prompt_attributions,
    )
    from relneuron_eval.embedded import ensure_local

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
            print(f"{method:8s} {text!r}: {time.perf_counter() - start:.1f} s", flush=True)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2, help=f"1..{len(PROMPTS)}")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--layers", default=None, help="comma-separated; default all")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    layers = None if args.layers is None else tuple(int(x) for x in args.layers.split(","))
    result = run(
        prompts=args.prompts,
        steps=args.steps,
        threads=args.threads,
        methods=tuple(args.methods.split(",")),
        layers=layers,
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
