"""Interpreter start-up with the plugin's ``.pth`` hook installed.

``python -c pass`` is timed with the hook active and with it switched off
(``RELNEURON_EVAL_NO_AUTOLOAD=1``: the ``.pth`` line still imports the tiny hook module
but installs no finder), interleaved; ``-X importtime`` gives the import cost of the
hook itself, and lists anything heavy it might pull in (there must be nothing).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any

from relneuron_eval.benchmarks.timing import interleaved, median, ratios

HEAVY = ("torch", "transformers", "lm_eval", "numpy", "datasets")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=40)


def _python(env: dict[str, str]) -> Any:
    return lambda: subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)


def import_times() -> dict[str, int]:
    """Self import time in microseconds of every module ``python -c pass`` imports."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True
    )
    out = {}
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            self_us, _cumulative, name = line.split(":", 1)[1].split("|")
            if self_us.strip().isdigit():
                out[name.strip()] = int(self_us)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    on = dict(os.environ)
    on.pop("RELNEURON_EVAL_NO_AUTOLOAD", None)
    off = {**on, "RELNEURON_EVAL_NO_AUTOLOAD": "1"}
    times = interleaved({"hook_off": _python(off), "hook_on": _python(on)}, rounds=args.rounds)
    modules = import_times()
    ours = sum(us for name, us in modules.items() if name.startswith("relneuron_eval"))
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    ratio = ratios(times, "hook_off")["hook_on"]
    return {
        "median_seconds": {k: round(median(v), 4) for k, v in times.items()},
        "ratio_on_vs_off": ratio,
        "hook_import_microseconds": ours,
        "heavy_modules_imported": heavy,
        "summary": [
            f"python -c pass: median {median(times['hook_on']) * 1e3:.1f} ms with the hook, "
            f"{median(times['hook_off']) * 1e3:.1f} ms without (ratio {ratio:.3f})",
            f"hook modules import in {ours} us; heavy modules imported: {heavy or 'none'}",
        ],
    }
