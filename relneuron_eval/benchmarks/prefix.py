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

from relneuron_eval.benchmarks.timing import interleaved, median
from relneuron_eval.errors import RelNeuronError

DEFAULT_TASKS = (
    "relfacts_company_hq,relfacts_country_capital_city,"
    "relfacts_person_occupation,relfacts_landmark_in_country"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="pretrained (default: embedded)")
    parser.add_argument(
        "--tasks", default=DEFAULT_TASKS, help="comma-separated lm-eval tasks or groups"
    )
    parser.add_argument("--include-path", default=None, help="extra lm-eval task folder")
    parser.add_argument("--limit", type=int, default=40, help="documents per task (0: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per arm")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")


def generation_requests(tasks: list[str], include_path: str | None, limit: int) -> list[Any]:
    """The generate_until requests lm-eval would send for these tasks (groups expanded)."""
    return task_requests(tasks, include_path, limit, "generate_until", "pick *_gen tasks")


def task_requests(
    tasks: list[str], include_path: str | None, limit: int, kind: str, hint: str
) -> list[Any]:
    """The ``kind`` requests lm-eval would send for these tasks (groups expanded)."""
    from relneuron_eval.harness.task_index import manager as task_manager

    manager = task_manager([include_path] if include_path else [])
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise RelNeuronError(
            f"unknown task(s) {unknown}",
            hint="see `lm_eval ls tasks`; --include-path adds a folder",
        )
    requests = []
    for task in manager.load(tasks)["tasks"].values():  # groups expanded to their tasks
        task.build_all_requests(limit=limit or None, rank=0, world_size=1)
        requests += [i for i in task.instances if i.request_type == kind]
    if not requests:
        raise RelNeuronError(f"tasks {tasks} send no {kind} requests", hint=hint)
    return requests


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
        speedup = median(times["plain"]) / median(times["prefix_cache"])
        rounds = [p / c for p, c in zip(times["plain"], times["prefix_cache"], strict=True)]
        result[f"{label}_seconds"] = {k: [round(x, 3) for x in v] for k, v in times.items()}
        result[f"{label}_speedup"] = round(speedup, 3)
        result[f"{label}_speedup_per_round"] = [round(x, 3) for x in rounds]
        exit_gain = median(times["prefix_cache_no_exit"]) / median(times["prefix_cache"])
        result[f"{label}_early_exit_speedup"] = round(exit_gain, 3)
        lines.append(
            f"{label} median seconds: "
            + ", ".join(f"{k} {median(v):.2f}" for k, v in times.items())
            + f"; speed-up {speedup:.2f}x (per round "
            + ", ".join(f"{x:.2f}" for x in rounds)
            + f") (goal >= 1.7x); early exit of finished rows: {exit_gain:.3f}x"
        )
    result["speedup"] = result["wall_speedup"]
    load = result["load_average_before_after"]
    lines += [
        f"identical answers: {result['identical_answers']} of {result['requests']}; "
        f"cache: {result['cache_stats']}",
        f"load average (1/5/15 min) before {load[:3]}, after {load[3:]}",
    ]
    result["summary"] = lines
    return result
