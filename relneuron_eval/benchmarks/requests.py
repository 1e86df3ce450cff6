"""What the request-level benchmarks (``prefix``, ``mc``) share: the requests lm-eval's
real tasks send, their command-line options, and one torch thread count per run."""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

from relneuron_eval.benchmarks.timing import median
from relneuron_eval.errors import RelNeuronError


def add_arguments(parser: argparse.ArgumentParser, tasks: str, limit: int, batch_size: int) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="pretrained (default: embedded)")
    parser.add_argument("--tasks", default=tasks, help="comma-separated lm-eval tasks or groups")
    parser.add_argument("--include-path", default=None, help="extra lm-eval task folder")
    parser.add_argument("--limit", type=int, default=limit, help="documents per task (0: all)")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per arm")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")


def speedup_line(
    result: dict[str, Any], label: str, times: dict[str, list[float]], plain: str, fast: str
) -> str:
    """Store ``label``'s seconds and ``fast``'s speed-up over ``plain`` (median and per
    round) in ``result``; the line that says them."""
    speedup = median(times[plain]) / median(times[fast])
    rounds = [p / c for p, c in zip(times[plain], times[fast], strict=True)]
    result[f"{label}_seconds"] = {k: [round(x, 3) for x in v] for k, v in times.items()}
    result[f"{label}_speedup"] = round(speedup, 3)
    result[f"{label}_speedup_per_round"] = [round(x, 3) for x in rounds]
    return (
        f"{label} median seconds: "
        + ", ".join(f"{k} {median(v):.2f}" for k, v in times.items())
        + f"; speed-up {speedup:.2f}x (per round "
        + ", ".join(f"{x:.2f}" for x in rounds)
        + ")"
    )


def run_with_threads(
    args: argparse.Namespace, measure: Callable[[argparse.Namespace], dict[str, Any]]
) -> dict[str, Any]:
    """``measure(args)`` with the options checked and torch on ``--threads`` threads."""
    import torch

    for name in ("limit", "batch_size", "rounds", "threads"):
        value, least = getattr(args, name), 0 if name == "limit" else 1
        if value < least:
            option = "--" + name.replace("_", "-")
            raise RelNeuronError(f"{option} {value} is out of range", hint=f"use {least} or more")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return measure(args)
    finally:
        torch.set_num_threads(threads)


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


def fixed_length(request: Any, tokens: int) -> Any:
    """The generation request with no stop sequence and ``tokens`` new tokens (EOS still
    stops): every arm then makes the same forwards, whatever its answers."""
    prompt, kwargs = request.arguments
    out = copy.copy(request)
    out.arguments = (prompt, {**kwargs, "until": [], "max_gen_toks": tokens})
    return out


def counted_forwards(
    lm: Any, call: Callable[[], Any], forwards: list[int], cpu: list[float]
) -> Callable[[], Any]:
    """``call`` that appends the model forwards it made and its CPU seconds (the process's
    own time, hit less than wall time by other jobs on a shared machine)."""

    def counted() -> Any:
        count = [0]
        handle = lm.model.register_forward_pre_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        before = time.process_time()
        try:
            return call()
        finally:
            cpu.append(time.process_time() - before)
            handle.remove()
            forwards.append(count[0])

    return counted
