"""Shared few-shot prefixes computed once (``prefix_cache``) vs the plain generation path.

The same lm-eval generation requests (built by the real relfacts tasks, whose demos are
fixed per relation) go through one ``relneuron-hf`` model with its prefix cache off and
on, in interleaved rounds; the ratio of the medians is the speed-up, from wall time and
from the process's CPU time (on a shared machine the latter is hit less by other jobs;
with one thread it is the work done). Every answer of
the cached arm is compared with the plain arm's. ``--tasks relfacts`` (the group) with
``--limit 0`` is the full English fact family.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from relneuron_eval.benchmarks import requests as bench_requests
from relneuron_eval.benchmarks.timing import interleaved, median

DEFAULT_TASKS = (
    "relfacts_company_hq,relfacts_country_capital_city,"
    "relfacts_person_occupation,relfacts_landmark_in_country"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    bench_requests.add_arguments(parser, DEFAULT_TASKS, limit=40, batch_size=16)


def generation_requests(tasks: list[str], include_path: str | None, limit: int) -> list[Any]:
    """The generate_until requests lm-eval would send for these tasks (groups expanded)."""
    return bench_requests.task_requests(
        tasks, include_path, limit, "generate_until", "pick *_gen tasks"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    return bench_requests.run_with_threads(args, _measure)


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    from relneuron_eval.harness.lm_model import RelNeuronLM

    tasks = [t for t in args.tasks.split(",") if t]
    requests = generation_requests(tasks, args.include_path, args.limit)
    lm = RelNeuronLM(
        pretrained=args.model, batch_size=args.batch_size, device=args.device, dtype="float32"
    )
    # prefix_cache_no_exit: finished rows stay in the batch until it stops (as in HF)
    cpu: dict[str, list[float]] = {"plain": [], "prefix_cache": [], "prefix_cache_no_exit": []}

    def arm(name: str) -> Any:
        def call() -> list[str]:
            lm._rn_prefix.enabled = name != "plain"
            lm._rn_prefix.early_exit = name == "prefix_cache"
            before = time.process_time()
            try:
                return lm.generate_until(requests, disable_tqdm=True)
            finally:
                cpu[name].append(time.process_time() - before)

        return call

    arms = {name: arm(name) for name in cpu}
    start, load_before = time.perf_counter(), os.getloadavg()
    outputs = {name: call() for name, call in arms.items()}  # also the warm-up
    same = sum(
        a == b == c
        for a, b, c in zip(
            outputs["plain"], outputs["prefix_cache"], outputs["prefix_cache_no_exit"], strict=True
        )
    )
    lm._rn_prefix.stats.clear()
    for values in cpu.values():
        values.clear()
    wall = interleaved(arms, rounds=args.rounds, warmup=0)
    load = [round(x, 2) for x in (*load_before, *os.getloadavg())]
    result = {
        "tasks": tasks,
        "requests": len(requests),
        "limit": args.limit,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "identical_answers": same,
        "cache_stats": dict(lm._rn_prefix.stats),
        "load_average_before_after": load,
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    return _summarise(result, wall, cpu)


def _summarise(
    result: dict[str, Any], wall: dict[str, list[float]], cpu: dict[str, list[float]]
) -> dict[str, Any]:
    """Speed-ups from wall and from CPU time (the process's own, less hit by other jobs)."""
    lines = [
        f"{result['requests']} generation requests from {len(result['tasks'])} task(s) "
        f"(limit {result['limit']}), batch {result['batch_size']}, {result['threads']} "
        f"thread(s), {result['rounds']} interleaved rounds",
    ]
    for label, times in (("wall", wall), ("cpu", cpu)):
        line = bench_requests.speedup_line(result, label, times, "plain", "prefix_cache")
        exit_gain = median(times["prefix_cache_no_exit"]) / median(times["prefix_cache"])
        result[f"{label}_early_exit_speedup"] = round(exit_gain, 3)
        lines.append(f"{line} (goal >= 1.7x); early exit of finished rows: {exit_gain:.3f}x")
    result["speedup"] = result["wall_speedup"]
    load = result["load_average_before_after"]
    lines += [
        f"identical answers: {result['identical_answers']} of {result['requests']}; "
        f"cache: {result['cache_stats']}",
        f"load average (1/5/15 min) before {load[:3]}, after {load[3:]}",
    ]
    result["summary"] = lines
    return result
