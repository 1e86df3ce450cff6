"""``per_doc`` in a group-mixed batch: each row its own group's edits, vs plain ``hf``.

The reasoning experiment's case: the two-hop tasks' chains whose bridge fact has
knowledge neurons (``neuron_sets/<model>/knowledge_neurons.jsonl.gz``), spread evenly
over that pool as the report spreads them, so nearly every batch row belongs to another
group. The same lm-eval requests go through plain ``hf``, ``relneuron-hf`` with
``per_doc=hop1_fact`` (every group's edits in one batch, per-row tables), the same with
one fixed group and hooks (the cost of hooking alone), a second plain ``hf`` loaded
last (what the machine can resolve), and the per_doc model run as plain ``hf``
(``per_doc_off``: the same weights in the same memory, so where a load put them cancels
out). The prefix cache is off in every arm: plain ``hf`` has none, and its speed-up would
hide the intervention's cost. Every row generates ``--fixed-tokens`` tokens, so every arm
does the same work (with the tasks' stop sequences, edits that change answers change the
number of decoding steps); each arm's model forward calls are counted to show it.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from relneuron_eval.benchmarks.requests import counted_forwards, fixed_length
from relneuron_eval.benchmarks.timing import interleaved, median, ratios

DEFAULT_TASKS = "relfacts_2hop,relfacts_2hop_hop1"
KN_SET = "knowledge_neurons.jsonl.gz"  # the --model's shipped one unless --neuron-set is given


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="pretrained (default: embedded)")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated two-hop tasks")
    parser.add_argument(
        "--neuron-set", help=f"per-group neuron set (default: the embedded --model's {KN_SET})"
    )
    parser.add_argument("--field", default="hop1_fact", help="the documents' group field")
    parser.add_argument("--docs", type=int, default=32, help="documents per task (0: the pool)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--fixed-tokens",
        type=int,
        default=8,
        help="generate exactly this many tokens per row, so every arm does the same work "
        "(0: the tasks' own stop sequences; edits that change answers then change the work)",
    )


def _requests(args: argparse.Namespace, groups: set[str]) -> tuple[list[Any], list[int]]:
    """Generation requests of the documents whose group has neurons, spread evenly."""
    from relneuron_eval.harness.task_index import manager as task_manager
    from relneuron_eval.report.analysis import evenly_spaced

    requests: list[Any] = []
    sizes = []
    names = [t for t in args.tasks.split(",") if t]
    for task in task_manager().load(names)["tasks"].values():
        docs = list(task.eval_docs)
        pool = [i for i, doc in enumerate(docs) if str(doc.get(args.field)) in groups]
        picked = [pool[i] for i in evenly_spaced(len(pool), args.docs or None)]
        task.build_all_requests(samples=picked, rank=0, world_size=1)
        requests += [i for i in task.instances if i.request_type == "generate_until"]
        sizes.append(len(picked))
    if args.fixed_tokens:
        requests = [fixed_length(r, args.fixed_tokens) for r in requests]
    return requests, sizes


def _generate(lm: Any, requests: list[Any], plain: bool = False) -> Any:
    """One ``generate_until`` call of ``lm`` (``plain``: HFLM's, no intervention)."""
    from lm_eval.models.huggingface import HFLM

    method = HFLM.generate_until if plain else type(lm).generate_until
    return lambda: method(lm, requests, disable_tqdm=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from lm_eval.models.huggingface import HFLM

    from relneuron_eval.core.embedded import resolve_pretrained
    from relneuron_eval.core.models import shipped_set
    from relneuron_eval.core.neuron_set import load
    from relneuron_eval.harness.lm_model import RelNeuronLM

    args.neuron_set = args.neuron_set or shipped_set(args.model, KN_SET)
    neuron_set = load(args.neuron_set)
    groups = neuron_set.groups()
    requests, sizes = _requests(args, set(groups))
    row_groups = {str(r.doc[args.field]) for r in requests}
    common = {"pretrained": str(resolve_pretrained(args.model)), "device": args.device}
    common |= {"batch_size": args.batch_size, "dtype": "float32"}
    variant = {**common, "neuron_set": args.neuron_set, "prefix_cache": False}
    arms = {
        "hf": HFLM(**common),
        "per_doc": RelNeuronLM(**variant, per_doc=args.field),
        "one_group": RelNeuronLM(**variant, groups=groups[0], strategy="hook"),
        "hf_again": HFLM(**common),
    }
    start, load_before = time.perf_counter(), os.getloadavg()
    forwards: dict[str, list[int]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    # the per_doc model itself, run as plain hf: the same weights in the same memory
    arms["per_doc_off"] = arms["per_doc"]
    forwards["per_doc_off"], cpu["per_doc_off"] = [], []
    calls = {
        name: counted_forwards(
            lm, _generate(lm, requests, plain=name == "per_doc_off"), forwards[name], cpu[name]
        )
        for name, lm in arms.items()
    }
    with torch.no_grad():
        outputs = {name: call() for name, call in calls.items()}  # also the warm-up
        for values in cpu.values():
            values.clear()
        times = interleaved(calls, rounds=args.rounds, warmup=0)
    ratio, cpu_ratio = ratios(times, "hf"), ratios(cpu, "hf")
    steps = {name: median(counts) for name, counts in forwards.items()}
    per_forward = {
        name: round((median(times[name]) / steps[name]) / (median(times["hf"]) / steps["hf"]), 4)
        for name in arms
    }
    load = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    result = {
        "tasks": args.tasks,
        "fixed_tokens": args.fixed_tokens,
        "documents_per_task": sizes,
        "requests": len(requests),
        "groups_in_requests": len(row_groups),
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "median_seconds": {k: round(median(v), 4) for k, v in times.items()},
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "forwards": steps,
        "ratio_vs_hf": ratio,
        "cpu_seconds": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
        "cpu_ratio_vs_hf": cpu_ratio,
        "ratio_per_forward_vs_hf": per_forward,
        "answers_changed_vs_hf": {
            name: sum(a != b for a, b in zip(outputs[name], outputs["hf"], strict=True))
            for name in ("per_doc", "one_group")
        },
        "load_average_before_after": load,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    result["summary"] = _summary(result)
    return result


def _summary(result: dict[str, Any]) -> list[str]:
    ratio, per_forward = result["ratio_vs_hf"], result["ratio_per_forward_vs_hf"]
    cpu = result["cpu_ratio_vs_hf"]
    load = result["load_average_before_after"]
    return [
        f"{result['requests']} generation requests ({result['tasks']}, "
        f"{result['documents_per_task']} documents), {result['groups_in_requests']} groups, "
        f"batch {result['batch_size']}, {result['threads']} thread(s), "
        f"{result['rounds']} interleaved rounds, "
        + (
            f"{result['fixed_tokens']} tokens per row"
            if result["fixed_tokens"]
            else "the tasks' stop sequences"
        ),
        "median seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in result["median_seconds"].items()),
        f"model forwards per call: {result['forwards']}; answers changed vs hf: "
        f"{result['answers_changed_vs_hf']}",
        f"ratio vs hf: per_doc {ratio['per_doc']:.3f} (goal <= 1.03), one fixed group hooked "
        f"{ratio['one_group']:.3f}, second hf {ratio['hf_again']:.3f} (resolution)",
        f"CPU-time ratio vs hf: per_doc {cpu['per_doc']:.3f}, one_group "
        f"{cpu['one_group']:.3f}, hf_again {cpu['hf_again']:.3f}; per_doc vs its own model run "
        f"plain: {cpu['per_doc'] / cpu['per_doc_off']:.3f}",
        f"per forward call (wall): per_doc {per_forward['per_doc']:.3f}, one_group "
        f"{per_forward['one_group']:.3f}, hf_again {per_forward['hf_again']:.3f}",
        f"load average (1/5/15 min) before {load[:3]}, after {load[3:]}",
    ]
