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

from relneuron_eval.benchmarks import requests as bench_requests
from relneuron_eval.benchmarks.timing import interleaved

DEFAULT_TASKS = (
    "relfacts_mc_country_currency,relfacts_mc_city_in_country,"
    "relfacts_mc_person_occupation,relfacts_mc_landmark_on_continent"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bench_requests.add_arguments(parser, DEFAULT_TASKS, limit=8, batch_size=32)


def run(args: argparse.Namespace) -> dict[str, Any]:
    return bench_requests.run_with_threads(args, _measure)


def chosen_answers(requests: list[Any], answers: list[tuple[float, bool]]) -> list[int]:
    """Per document (task, doc id), the index of its highest-scoring choice."""
    scores: dict[tuple[str, int], dict[int, float]] = defaultdict(dict)
    for request, (logp, _) in zip(requests, answers, strict=True):
        scores[(request.task_name, request.doc_id)][request.idx] = logp
    return [max(choice, key=choice.__getitem__) for _, choice in sorted(scores.items())]


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from relneuron_eval.harness.lm_model import RelNeuronLM

    tasks = [t for t in args.tasks.split(",") if t]
    requests = bench_requests.task_requests(
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
        lines.append(bench_requests.speedup_line(result, label, times, "plain", "context_cache"))
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
