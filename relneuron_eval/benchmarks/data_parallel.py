"""Data parallelism on CPU: the same lm-eval run with 2 ``accelerate`` processes vs 1.

One fixed workload (``--model relneuron-hf``, the embedded model, one relfacts task,
``--limit`` documents) runs through the real ``lm_eval`` CLI in a subprocess, alone
(``python -m lm_eval``) and under ``accelerate launch --multi_gpu --num_processes 2``
with ``ACCELERATE_USE_CPU=1`` (gloo), the invocation tests/harness/test_lm_eval_cli.py checks.
Every process gets ``OMP_NUM_THREADS=1``, so the comparison is 2 cores against 1.
The arms alternate for ``--rounds`` rounds; the wall time of each includes the start-up
of every process (imports, lm-eval's TaskManager, about 12 s, model load), which
data parallelism does not shorten.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from relneuron_eval.benchmarks.timing import interleaved, median, ratios


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="pretrained (default: embedded)")
    parser.add_argument("--tasks", default="relfacts_mc_landmark_on_continent")
    parser.add_argument("--limit", type=int, default=64, help="documents per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per lm-eval run")


def lm_eval_args(args: argparse.Namespace, output: Path) -> list[str]:
    return [
        "--model",
        "relneuron-hf",
        "--model_args",
        f"pretrained={args.model}",
        "--tasks",
        args.tasks,
        "--limit",
        str(args.limit),
        "--batch_size",
        str(args.batch_size),
        "--device",
        "cpu",
        "--output_path",
        str(output),
        "--log_samples",
    ]


def accelerate_prefix(processes: int = 2, module: str = "lm_eval") -> list[str]:
    """``accelerate launch`` of ``python -m module`` on ``processes`` local processes.

    On a CPU-only machine set ``ACCELERATE_USE_CPU=1`` in the environment (gloo backend).
    """
    accelerate = Path(sys.executable).with_name("accelerate")
    return [
        str(accelerate),
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        module,
    ]


def _results(output: Path) -> dict[str, Any]:
    files = sorted(output.rglob("results_*.json"))
    if len(files) != 1:
        raise RuntimeError(f"expected one results file under {output}, found {files}")
    return json.loads(files[0].read_text())["results"]


def _samples(output: Path) -> dict[tuple[str, int], tuple[str, list[Any]]]:
    """(task, doc_id) -> (the request arguments as text, the responses) of one run."""
    out = {}
    for path in sorted(output.rglob("samples_*.jsonl")):
        task = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                out[task, row["doc_id"]] = (json.dumps(row["arguments"]), row["resps"])
    return out


def compare_samples(
    a: dict[tuple[str, int], tuple[str, list[Any]]], b: dict[tuple[str, int], tuple[str, list[Any]]]
) -> dict[str, Any]:
    """Documents whose prompts differ, and the largest loglikelihood gap where they agree."""
    same_prompt = [key for key in a if key in b and a[key][0] == b[key][0]]
    gap = 0.0
    for key in same_prompt:
        for x, y in zip(a[key][1], b[key][1], strict=True):
            if isinstance(x[0], list):  # loglikelihood: [logprob, is_greedy]
                gap = max(gap, abs(float(x[0][0]) - float(y[0][0])))
    return {
        "docs": len(a),
        "docs_in_both": sum(key in b for key in a),
        "docs_with_other_prompt": sum(key in b for key in a) - len(same_prompt),
        "max_loglikelihood_gap_same_prompt": gap,
    }


class Measured(NamedTuple):
    """What the alternating runs produced, per arm ("one", "two")."""

    times: dict[str, list[float]]  # wall seconds of each run
    results: dict[str, list[dict[str, Any]]]  # lm-eval's results of each run
    samples: dict[str, list[Any]]  # logged samples of each run
    rank1_seen: list[bool]  # per 2-process run: whether rank 1 evaluated documents


def _measure(args: argparse.Namespace) -> Measured:
    """Run the 1-process and 2-process arms alternately for ``--rounds`` rounds."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
    }
    two_env = {**env, "ACCELERATE_USE_CPU": "1"}
    results: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
    samples: dict[str, list[Any]] = {"one": [], "two": []}
    rank1_seen: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="relneuron-bench-dp-") as tmp:
        calls = iter(range(1 << 30))

        def launch(arm: str) -> None:
            output = Path(tmp) / f"{arm}-{next(calls)}"
            prefix = [sys.executable, "-m", "lm_eval"] if arm == "one" else accelerate_prefix()
            proc = subprocess.run(
                [*prefix, *lm_eval_args(args, output)],
                env=env if arm == "one" else two_env,
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
            if proc.returncode != 0:
                raise RuntimeError(
                    f"lm_eval ({arm} process(es)) failed ({proc.returncode}):\n"
                    f"{proc.stderr[-4000:]}"
                )
            if arm == "two":
                rank1_seen.append("on rank 1" in proc.stderr)
            results[arm].append(_results(output))
            samples[arm].append(_samples(output))
            shutil.rmtree(output, ignore_errors=True)

        times = interleaved(
            {"one": lambda: launch("one"), "two": lambda: launch("two")},
            rounds=args.rounds,
            warmup=0,
        )
    return Measured(times, results, samples, rank1_seen)


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.rounds < 1 or args.limit < 1 or args.batch_size < 1:
        raise SystemExit("--rounds, --limit and --batch-size must be positive")
    times, results, samples, rank1_seen = _measure(args)
    ratio = ratios(times, "one")["two"]
    seconds = {k: round(median(v), 2) for k, v in times.items()}
    runs_agree = {arm: all(r == rs[0] for r in rs) for arm, rs in results.items()}
    same = results["two"][0] == results["one"][0]
    prompts = compare_samples(samples["one"][0], samples["two"][0])
    confirmed = bool(rank1_seen) and all(rank1_seen)
    agreement = (
        f"metrics of 1 vs 2 processes identical: {same}; documents whose prompt differs "
        f"between them: {prompts['docs_with_other_prompt']} of {prompts['docs']}; "
        f"largest loglikelihood gap where the prompt is the same: "
        f"{prompts['max_loglikelihood_gap_same_prompt']:.2g}"
    )
    if prompts["docs_with_other_prompt"]:
        agreement += (
            " (the few-shot demos differ: lm-eval's sampler draws them in each rank's own "
            "document order, EleutherAI/lm-evaluation-harness#1308)"
        )
    return {
        "tasks": args.tasks,
        "limit": args.limit,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "seconds": {k: [round(x, 2) for x in v] for k, v in times.items()},
        "median_seconds": seconds,
        "ratio_two_vs_one": ratio,
        "two_processes_confirmed": confirmed,
        "runs_of_an_arm_agree": runs_agree,
        "results": {arm: rs[0] for arm, rs in results.items()},
        "results_identical": same,
        "prompts_compared": prompts,
        "summary": [
            f"lm_eval --model relneuron-hf pretrained={args.model}, {args.tasks}, "
            f"--limit {args.limit}, --batch_size {args.batch_size}, --log_samples, CPU, "
            f"OMP_NUM_THREADS=1 per process (2 cores vs 1), {args.rounds} alternating rounds",
            f"median wall: 1 process {seconds['one']:.1f} s, accelerate 2 processes "
            f"{seconds['two']:.1f} s: ratio {ratio:.3f} (2-proc / 1-proc); rank 1 ran: {confirmed}",
            "wall time includes each process's start-up (imports, lm-eval TaskManager ~12 s, "
            "model load), which 2 processes do not shorten",
            agreement,
        ],
    }
