"""`make demo`: one relation's neurons off, next to the base model and a random control.

Runs the plain ``lm_eval`` CLI three times on the embedded SmolLM2-135M (base, the
relation-specific neurons of one relation deactivated, a size-matched random control)
on three relfacts tasks, then ``relneuron compare`` prints the table and writes a
heatmap. About two minutes on a 2-core CPU. Everything goes to ``out/demo/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "out" / "demo"
NEURON_SET = "neuron_sets/smollm2-135m/relation_specific.jsonl.gz"
RELATION = "country_capital_city"
TASKS = "relfacts_country_capital_city,relfacts_country_language,relfacts_landmark_on_continent"
LIMIT = "20"
TOP_K = "3000"

VARIANTS = {
    "base": "pretrained=smollm2-135m",
    "deactivated": (
        f"pretrained=smollm2-135m,neuron_set={NEURON_SET},groups={RELATION},"
        f"top_k={TOP_K},mode=deactivate"
    ),
    "random-control": (
        f"pretrained=smollm2-135m,neuron_set={NEURON_SET},groups={RELATION},"
        f"top_k={TOP_K},mode=deactivate,control=random,seed=0"
    ),
}


def run(command: list[str]) -> None:
    """Echo a command the way a user would type it, then run it; stop on failure."""
    print("\n$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # faster than 2 on a shared 2-core CPU
    bin_dir = Path(sys.executable).parent
    for name, model_args in VARIANTS.items():
        run(
            [
                str(bin_dir / "lm_eval"),
                "--model",
                "relneuron-hf",
                "--model_args",
                model_args,
                "--tasks",
                TASKS,
                "--limit",
                LIMIT,
                "--batch_size",
                "16",
                "--device",
                "cpu",
                "--log_samples",
                "--output_path",
                str(OUT / name),
            ]
        )
    run(
        [
            str(bin_dir / "relneuron"),
            "compare",
            *(str(OUT / name) for name in VARIANTS),
            "--metric",
            "acc_prefix2",
            "--heatmap",
            str(OUT / "compare.png"),
        ]
    )
    print(f"\nheatmap: {OUT / 'compare.png'}; lm-eval outputs: {OUT}/<variant>/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
