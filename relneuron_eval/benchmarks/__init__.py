"""``relneuron bench``: benchmarks that print ratios against a baseline taken in the same run.

Machines are noisy and absolute times are not comparable between runs, so every
benchmark interleaves its arms and reports medians and ratios. Subcommands:
``overhead`` (relneuron-hf vs hf), ``load`` (cached vs first load of the embedded model),
``startup`` (interpreter start-up with the plugin's hook), ``ap-scale`` (relation-specific
ranking at Llama-2-7B scale on synthetic activations), ``ig`` (batched integrated
gradients vs the plain loop), ``discovery`` (the relation-specific statistics pass vs a
plain forward, and its memory as prompts grow), ``dp`` (lm-eval with 2 ``accelerate``
CPU processes vs 1), ``prefix`` (generation with shared few-shot prefixes cached vs
plain), ``mc`` (multiple-choice log-likelihoods with shared contexts computed once vs
HFLM's path), ``per-doc`` (per-document interventions in group-mixed batches vs
plain ``hf``), ``peers`` (one ablation through plain torch hooks, our paths and peer tools),
``all`` (overhead, load and startup).
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

from relneuron_eval.atomic import atomic_write

HELP = (
    "benchmarks (ratios against a same-run baseline): "
    "overhead, load, startup, ap-scale, ig, discovery, dp, prefix, mc, per-doc, peers"
)

# name -> (module, one-line help); each module has add_arguments(parser) and run(args) -> dict
BENCHMARKS: dict[str, tuple[str, str]] = {
    "overhead": (
        "relneuron_eval.benchmarks.overhead",
        "relneuron-hf with a 3,000-unit deactivation (folded and hooked) vs plain hf",
    ),
    "load": ("relneuron_eval.benchmarks.loading", "cached vs first load of the embedded model"),
    "startup": ("relneuron_eval.benchmarks.startup", "python start-up with the .pth hook"),
    "ap-scale": (
        "relneuron_eval.benchmarks.ap_scale",
        "relation-specific ranking at Llama-2-7B scale (835,584 units) on synthetic data",
    ),
    "ig": ("relneuron_eval.benchmarks.ig", "batched integrated gradients vs the plain loop"),
    "discovery": (
        "relneuron_eval.benchmarks.discovery",
        "relation-specific statistics pass vs a plain forward; its memory as prompts grow",
    ),
    "dp": (
        "relneuron_eval.benchmarks.data_parallel",
        "lm-eval with accelerate launch, 2 CPU processes vs 1 (wall time)",
    ),
    "prefix": (
        "relneuron_eval.benchmarks.prefix",
        "generation with shared few-shot prefixes cached (prefix_cache) vs the plain path",
    ),
    "mc": (
        "relneuron_eval.benchmarks.mc",
        "multiple-choice log-likelihoods, shared contexts computed once vs HFLM's path",
    ),
    "per-doc": (
        "relneuron_eval.benchmarks.per_doc",
        "per_doc (each row its own group's edits) on group-mixed two-hop batches vs plain hf",
    ),
    "peers": (
        "relneuron_eval.benchmarks.peers",
        "one ablation through torch hooks, fold, hook, nnsight, pyvene, TransformerLens",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module_name, short_help) in BENCHMARKS.items():
        child = sub.add_parser(name, help=short_help, description=short_help)
        importlib.import_module(module_name).add_arguments(child)
        child.add_argument("--json", default=None, help="also write the result to this file")
    everything = sub.add_parser("all", help="overhead, load and startup with their defaults")
    everything.add_argument("--json", default=None, help="also write the results to this file")


def _report(name: str, result: dict[str, Any]) -> None:
    print(f"== {name}")
    for line in result.get("summary", []):
        print(f"   {line}")


def run(args: argparse.Namespace) -> int:
    names = ["overhead", "load", "startup"] if args.benchmark == "all" else [args.benchmark]
    results: dict[str, Any] = {}
    for name in names:
        module = importlib.import_module(BENCHMARKS[name][0])
        if args.benchmark == "all":
            sub = argparse.ArgumentParser()
            module.add_arguments(sub)
            bench_args = sub.parse_args([])
        else:
            bench_args = args
        results[name] = module.run(bench_args)
        _report(name, results[name])
    if args.json:
        with atomic_write(args.json) as handle:
            json.dump(results if len(results) > 1 else results[names[0]], handle, indent=2)
            handle.write("\n")
    return 0
