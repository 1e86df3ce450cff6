"""Multiple-choice log-likelihoods with shared contexts computed once vs HFLM's path.

The same lm-eval log-likelihood requests (built by the real ``relfacts_mc`` tasks: one
request per choice, all choices of a document behind the same few-shot prompt) go
through one ``relneuron-hf`` model with ``context_cache`` off (HFLM's full forwards,
``hf`` to the bit) and on, in interleaved rounds; the ratio of the
medians is the speed-up, from wall time and from the process's CPU time. Each
document's chosen answer (argmax over its choices) and the largest log-probability
difference are compared between the arms.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from typing import Any

from relneuron_eval.benchmarks.prefix import task_requests
from relneuron_eval.benchmarks.timing import interleaved, median
from relneuron_eval.errors import RelNeuronError

DEFAULT_TASKS = (
    "relfacts_mc_country_currency,relfacts_mc_city_in_country,"
    "relfacts_mc_person_occupation,relfacts_mc_landmark_on_continent"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="pretrained (default: embedded)")
    parser.add_argument(
        "--tasks", default=DEFAULT_TASKS, help="comma-separated lm-eval tasks or groups"
    )
    parser.add_argument("--include-path", default=None, help="extra lm-eval task folder")
    parser.add_argument("--limit", type=int, default=8, help="documents per task (0: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per arm")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    for name in ("limit", "batch_size", "rounds", "threads"):
        value, least = getattr(args, name), 0 if name == "limit" else 1
        if value < least:
            option = "--" + name.replace("_", "-")
            raise RelNeuronError(f"{option} {value} is out of range", hint=f"use {least} or more")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _measure(args)
    finally:
        torch.set_num_threads(threads)


def chosen_answers(requests: list[Any], answers: list[tuple[float, bool]]) -> list[int]:
    """Per document (task, doc id), the index of its highest-scoring choice."""
    scores: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
    for request, (logp, _) in zip(requests, answers, strict=True):
        scores[(request.task_name, request.doc_id)][request.idx] = logp
    return [max(choice, key=choice.__getitem__) for _, choice in sorted(scores.items())]


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from relneuron_eval.harness.lm_model import RelNeuronLM

    tasks = [t for t in args.tasks.split(",") if t]
    requests = task_requests(
        tasks, args.include_path, args.limit, "loglikelihood", "pick multiple-choice tasks"
    )
    lm = RelNeuronLM(
        pretrained=args.model, batch_size=args.batch_size, device=args.device, dtype="float32"
    )
    cpu: dict[str, list[float]] = {"plain": [], "context_cache": []}

    def arm(name: str) -> Any:
        def call() -> list[tuple[float, bool]]:
            lm._rn_context_cache = name != "plain"
            before = time.process_time()
            try:
                return lm.loglikelihood(requests, disable_tqdm=True)
            finally:
                cpu[name].append(time.process_time() - before)

        return call

    arms = {name: arm(name) for name in cpu}
    start, load_before = time.perf_counter(), os.getloadavg()
    outputs = {name: call() for name, call in arms.items()}  # also the warm-up
    plain, cached = outputs["plain"], outputs["context_cache"]
    choices = [chosen_answers(requests, out) for out in (plain, cached)]
    lm._rn_context_stats.clear()
    for values in cpu.values():
        values.clear()
    wall = interleaved(arms, rounds=args.rounds, warmup=0)
    result = {
        "tasks": tasks,
        "requests": len(requests),
        "documents": len(choices[0]),
        "limit": args.limit,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "same_choice": sum(a == b for a, b in zip(*choices, strict=True)),
        "same_greedy_flag": sum(a[1] == b[1] for a, b in zip(plain, cached, strict=True)),
        "max_abs_logp_difference": max(
            abs(a[0] - b[0]) for a, b in zip(plain, cached, strict=True)
        ),
        "cache_stats": dict(lm._rn_context_stats),
        "load_average_before_after": [round(x, 2) for x in (*load_before, *os.getloadavg())],
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    return _summarise(result, wall, cpu)


def _summarise(
    result: dict[str, Any], wall: dict[str, list[float]], cpu: dict[str, list[float]]
) -> dict[str, Any]:
    lines = [
        f"{result['requests']} log-likelihood requests ({result['documents']} documents) from "
        f"{len(result['tasks'])} task(s) (limit {result['limit']}), batch "
        f"{result['batch_size']}, {result['threads']} thread(s), {result['rounds']} "
        "interleaved rounds",
    ]
    for label, times in (("wall", wall), ("cpu", cpu)):
        speedup = median(times["plain"]) / median(times["context_cache"])
        rounds = [p / c for p, c in zip(times["plain"], times["context_cache"], strict=True)]
        result[f"{label}_seconds"] = {k: [round(x, 3) for x in v] for k, v in times.items()}
        result[f"{label}_speedup"] = round(speedup, 3)
        result[f"{label}_speedup_per_round"] = [round(x, 3) for x in rounds]
        lines.append(
            f"{label} median seconds: "
            + ", ".join(f"{k} {median(v):.2f}" for k, v in times.items())
            + f"; speed-up {speedup:.2f}x (per round "
            + ", ".join(f"{x:.2f}" for x in rounds)
            + ")"
        )
    result["speedup"] = result["wall_speedup"]
    load = result["load_average_before_after"]
    lines += [
        f"same chosen answer: {result['same_choice']} of {result['documents']} documents; "
        f"same greedy flag: {result['same_greedy_flag']} of {result['requests']}; largest "
        f"log-probability difference {result['max_abs_logp_difference']:.2e}",
        f"cache: {result['cache_stats']}",
        f"load average (1/5/15 min) before {load[:3]}, after {load[3:]}",
    ]
    result["summary"] = lines
    return result
