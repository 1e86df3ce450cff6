"""Load time of the embedded model: first load (de-quantize the GGUF file) vs cached.

Each load runs in its own subprocess with its own ``RELNEURON_CACHE`` so that the
first load really starts from an empty cache; the subprocess times only the model
construction (``relneuron-hf`` with ``pretrained=smollm2-135m``), after its imports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import Any

from relneuron_eval.benchmarks.timing import median

_CHILD = """
import json, time
from relneuron_eval.harness.lm_model import RelNeuronLM
start = time.perf_counter()
RelNeuronLM(pretrained="smollm2-135m", device="cpu", batch_size=1)
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="first/cached pairs to time")


def _timed_load(cache: str) -> float:
    env = {**os.environ, "RELNEURON_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"model load failed:\n{proc.stderr[-3000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["seconds"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    first, cached = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="relneuron-cache-") as cache:
            first.append(_timed_load(cache))
            cached.append(_timed_load(cache))
    ratio = median(cached) / median(first)
    return {
        "first_load_seconds": [round(t, 2) for t in first],
        "cached_load_seconds": [round(t, 2) for t in cached],
        "ratio_cached_vs_first": round(ratio, 4),
        "summary": [
            f"median first load {median(first):.2f} s, cached {median(cached):.2f} s",
            f"ratio cached/first {ratio:.3f} (goal <= 0.2)",
        ],
    }
