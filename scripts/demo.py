"""`make demo`: one relation's neurons off, next to the base model and a random control.

Runs the plain ``lm_eval`` CLI three times on the embedded SmolLM2-135M (base, the
relation-specific neurons of one relation deactivated, a size-matched random control)
on three relfacts tasks, then ``relneuron compare`` prints the table and writes a
heatmap, and a short summary says what the numbers mean: the random control is the
reference for the deactivated neurons (a relation-specific effect is a drop on the
relation's own task beyond the control's), never a candidate of its own. About two
minutes on a 2-core CPU. Everything goes to ``out/demo/``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "out" / "demo"
NEURON_SET = "neuron_sets/smollm2-135m/relation_specific.jsonl.gz"
RELATION = "country_capital_city"
TASKS = "relfacts_country_capital_city,relfacts_country_language,relfacts_landmark_on_continent"
LIMIT = "20"
TOP_K = "3000"
METRIC = "acc_prefix2"

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
    compare = [str(bin_dir / "relneuron"), "compare", *(str(OUT / name) for name in VARIANTS)]
    run([*compare, "--metric", METRIC, "--heatmap", str(OUT / "compare.png")])
    data = OUT / "compare.json"
    subprocess.run([*compare, "--metric", METRIC, "--format", "json", "-o", str(data)], check=True)
    print("\n" + "\n".join(summary(json.loads(data.read_text()), RELATION)))
    print(f"\nheatmap: {OUT / 'compare.png'}; lm-eval outputs: {OUT}/<variant>/")
    return 0


def summary(comparison: dict, relation: str, target: str | None = None) -> list[str]:
    """What the demo shows, in words: the deactivated neurons against the random control."""
    controls = {name for name, about in comparison["descriptions"].items() if about.get("control")}
    columns = {
        ("random control" if v in controls else "deactivated"): i
        for i, v in enumerate(comparison["variants"])
    }
    target = target or f"relfacts_{relation}"
    metric = "/".join(dict.fromkeys(r["metric"] for r in comparison["rows"]))
    lines = [f"summary ({metric}, change vs. the base model; * = p < {comparison['alpha']}):"]
    names = [r["task"] + (" (target)" if r["task"] == target else "") for r in comparison["rows"]]
    width = max(len(n) for n in [*names, "task"])
    lines.append(f"  {'task':<{width}} {'deactivated':>12} {'random control':>15}")
    for name, row in zip(names, comparison["rows"], strict=True):
        cells = {role: row["cells"][i] for role, i in columns.items()}
        shown = [_delta(cells.get(role)) for role in ("deactivated", "random control")]
        lines.append(f"  {name:<{width}} {shown[0]:>12} {shown[1]:>15}")
    lines += textwrap.wrap(
        "The random control switches off as many random units: it is the reference the "
        "deactivated neurons are judged against, not a candidate.",
        88,
    )
    own = next((r for r in comparison["rows"] if r["task"] == target), None)
    if own and {"deactivated", "random control"} <= columns.keys():
        mine, ref = (own["cells"][columns[k]]["delta"] for k in ("deactivated", "random control"))
        if mine is not None and ref is not None:
            lines += textwrap.wrap(
                f"On {target}, deactivating the {relation} neurons changed {metric} by "
                f"{mine:+.2f}, the random control by {ref:+.2f}: the relation-specific "
                f"effect is {mine - ref:+.2f} (on {own.get('n')} documents; the p-values "
                "above say which changes are larger than noise).",
                88,
            )
    return lines


def _delta(cell: dict | None) -> str:
    if cell is None or cell.get("delta") is None:
        return "not compared"
    return f"{cell['delta']:+.2f}" + ("*" if cell.get("significant") else "")


if __name__ == "__main__":
    sys.exit(main())
