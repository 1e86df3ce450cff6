"""`make demo`: one relation's neurons off, next to the base model and a random control.

The worked example is the strongest relation-specific effect of the shipped report
(docs/report-full-v2, k = 400, 10 random-control seeds): country_language, base well above the majority-class rate
("English"). The plain ``lm_eval`` CLI runs three times on the embedded SmolLM2-135M
(base, the top-400 country_language neurons deactivated, the same number of random
units), with ``--log_samples`` so that ``relneuron compare`` pairs the runs by document
(exact McNemar). Then compare prints its table and writes a heatmap, and a summary says
what the numbers mean, next to what the report measured on the full test split: the
random control is the reference for the deactivated neurons, never a candidate. The
first 30 test facts of the relation are enough for a paired test to see the drop; a
second relation's task shows what the same neurons do elsewhere. A few minutes on a
laptop CPU. Everything goes to ``out/demo/`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REPORT = REPO / "docs" / "report-full-v2" / "results.json"
NEURON_SET = "neuron_sets/smollm2-135m/relation_specific.jsonl.gz"
RELATION = "country_language"
OTHER = "country_on_continent"
TASKS = f"relfacts_{RELATION},relfacts_{OTHER}"
LIMIT = "30"
TOP_K = "400"

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
TEST_NAMES = {"mcnemar": "exact McNemar, paired", "paired-t": "paired t", "stderr-z": "z-test"}


def run(command: list[str]) -> None:
    """Echo a command the way a user would type it, then run it; stop on failure."""
    print("\n$ " + " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def lm_eval_command(bin_dir: Path, model_args: str, out: Path) -> list[str]:
    return [
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
        str(out),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "out" / "demo"), help="output folder")
    out = Path(parser.parse_args(argv).out).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # faster than 2 on a shared 2-core CPU
    bin_dir = Path(sys.executable).parent
    start = time.monotonic()
    for name, model_args in VARIANTS.items():
        run(lm_eval_command(bin_dir, model_args, out / name))
    compare = [str(bin_dir / "relneuron"), "compare", *(str(out / name) for name in VARIANTS)]
    run([*compare, "--heatmap", str(out / "compare.png")])
    data = out / "compare.json"
    subprocess.run([*compare, "--format", "json", "-o", str(data)], check=True)
    print("\n" + "\n".join(summary(json.loads(data.read_text()), RELATION, report=REPORT)))
    print(f"\nheatmap: {out / 'compare.png'}; lm-eval outputs: {out}/<variant>/")
    print(f"demo took {time.monotonic() - start:.0f} s")
    return 0


def summary(
    comparison: dict, relation: str, target: str | None = None, report: Path | None = None
) -> list[str]:
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
    lines += _wrap(
        "The random control switches off as many random units: it is the reference the "
        "deactivated neurons are judged against, not a candidate.",
        88,
    )
    own = next((r for r in comparison["rows"] if r["task"] == target), None)
    if own and {"deactivated", "random control"} <= columns.keys():
        mine, ref = (own["cells"][columns[k]] for k in ("deactivated", "random control"))
        if mine["delta"] is not None and ref["delta"] is not None:
            lines += _wrap(
                f"On {target}, deactivating the {relation} neurons changed {metric} by "
                f"{mine['delta']:+.2f} ({_p(mine)}), the random control by "
                f"{ref['delta']:+.2f} ({_p(ref)}): the relation-specific effect is "
                f"{mine['delta'] - ref['delta']:+.2f} (on {own.get('n')} documents).",
                88,
            )
    if report is not None:
        lines += _wrap(reported(report, relation), 88)
    return lines


def reported(report: Path, relation: str, top_k: int = int(TOP_K)) -> str:
    """What the shipped report measured for this relation and k, on its full test split."""
    data = json.loads(report.read_text())
    runs = [data["interference"], *data.get("interference_more_k", [])]
    found = next((r for r in runs if r.get("top_k") == top_k), None)
    entry = (found or {}).get("per_relation", {}).get(relation)
    if entry is None:
        return f"({report.relative_to(REPO)} has no {relation} at k = {top_k}.)"
    return (
        f"The report ({report.parent.relative_to(REPO)}/report.md) measured on all "
        f"{entry['n_docs']} test facts at k = {top_k}: {100 * entry['base']:.1f}% -> "
        f"{100 * entry['deact']:.1f}% deactivated vs {100 * entry['control']:.1f}% under "
        f"random units (mean of {len(entry.get('control_seeds') or [0])} seeds), p "
        f"{_p_value(entry['p_deact_vs_base'])} vs base "
        f"({TEST_NAMES.get(entry['test'], entry['test'])})."
    )


def _wrap(text: str, width: int = 88) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False)


def _p(cell: dict) -> str:
    if cell.get("p_value") is None:
        return "no test"
    return f"p {_p_value(cell['p_value'])}, {TEST_NAMES.get(cell.get('test'), cell.get('test'))}"


def _p_value(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _delta(cell: dict | None) -> str:
    if cell is None or cell.get("delta") is None:
        return "not compared"
    return f"{cell['delta']:+.2f}" + ("*" if cell.get("significant") else "")


if __name__ == "__main__":
    sys.exit(main())
