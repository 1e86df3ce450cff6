"""Base-model tables of several models side by side, from their `lm_eval --log_samples` runs.

    python scripts/base_tables.py --run "SmolLM2-135M=out/smollm2" \
        --run "Gemma 3 270M=out/gemma" [--out table.md]

Per `relfacts_<relation>` task: n, the majority answer (always answering the most frequent
test object, from the logged documents), each model's acc_match ± lm-eval's standard
error, bold where the model *knows* the relation by the reports' eligibility rule (base
>= 20 % and >= majority + 10 pp); then per model the count of relations above the
majority answer and of known ones and, when the runs hold them, the two-hop tasks. Every
number is read from the runs; exit 2 with one line naming the folder or file when a run
is missing or unreadable or the models' documents differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from relneuron_eval.atomic import atomic_write
from relneuron_eval.core.arglists import parse_named
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.report.controls import MIN_MARGIN, eligibility, majority

MIN_BASE = 0.20  # the reports' eligibility threshold (docs/report-full-v2/settings.yaml)
METRIC = "acc_match,none"
TWOHOP = (
    "relfacts_2hop_hop1",
    "relfacts_2hop_hop1_heldout",
    "relfacts_2hop_hop2",
    "relfacts_2hop",
    "relfacts_2hop_cot",
)


class Run:
    """One model's lm-eval output folder: its results files (a later one wins per task)
    and logged documents."""

    def __init__(self, name: str, folder: Path) -> None:
        files = sorted(folder.rglob("results_*.json"))
        if not files:
            raise RelNeuronError("no lm-eval results_*.json below this folder", path=folder)
        self.name, self.folder = name, folder
        self.results: dict[str, dict[str, Any]] = {}
        self.group_subtasks: dict[str, list[str]] = {}
        for file in files:  # several runs into one folder: the newest result of a task wins
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise RelNeuronError(f"not JSON: {exc.msg}", path=file, line=exc.lineno) from None
            self.results.update(data["results"])
            self.group_subtasks.update(data.get("group_subtasks", {}))

    def docs(self, task: str) -> list[dict[str, Any]]:
        files = sorted(self.folder.rglob(f"samples_{task}_*.jsonl"))
        if not files:
            raise RelNeuronError(
                f"no logged samples of {task} (run with --log_samples)", path=self.folder
            )
        lines = files[-1].read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["doc"] for line in lines if line.strip()]


def _cell(row: dict[str, Any], known: bool | None = None) -> str:
    stderr = row.get(METRIC.replace(",", "_stderr,"))  # lm-eval writes "N/A" for one document
    spread = f" ± {100 * stderr:.1f}" if isinstance(stderr, (int, float)) else ""
    value = f"{100 * row[METRIC]:.1f}{spread}"
    return f"**{value}**" if known else value


def relfacts_table(runs: list[Run]) -> list[str]:
    """The per-relation table and the count of relations each model knows."""
    tasks = [
        t for t in runs[0].group_subtasks.get("relfacts", []) if all(t in r.results for r in runs)
    ]
    if not tasks:
        raise RelNeuronError(
            "no relfacts tasks in every run (run `--tasks relfacts`)", path=runs[0].folder
        )
    head = "| relation | n | majority answer | " + " | ".join(r.name for r in runs) + " |"
    lines = [head, "|---|---:|---|" + "---:|" * len(runs)]
    known = {r.name: 0 for r in runs}
    above = {r.name: 0 for r in runs}
    for task in tasks:
        docs = runs[0].docs(task)
        for other in runs[1:]:
            if [d["fact_id"] for d in other.docs(task)] != [d["fact_id"] for d in docs]:
                raise RelNeuronError(
                    f"{task}: the runs scored different documents", path=other.folder
                )
        top, rate = majority(docs)
        cells = []
        for run in runs:
            ok = eligibility(run.results[task][METRIC], rate, MIN_BASE, MIN_MARGIN)
            known[run.name] += ok
            above[run.name] += run.results[task][METRIC] > rate
            cells.append(_cell(run.results[task], ok))
        lines.append(
            f"| {task[9:]} | {len(docs)} | {100 * rate:.1f} ({top}) | " + " | ".join(cells) + " |"
        )
    for label, count in (("above the majority answer", above), ("known (bold)", known)):
        cells = " | ".join(f"{count[r.name]} of {len(tasks)}" for r in runs)
        lines.append(f"| relations {label} | | | {cells} |")
    return lines


def twohop_table(runs: list[Run]) -> list[str]:
    tasks = [t for t in TWOHOP if all(t in r.results for r in runs)]
    if not tasks:
        return []
    lines = [
        "| task | n | " + " | ".join(r.name for r in runs) + " |",
        "|---|---:|" + "---:|" * len(runs),
    ]
    for task in tasks:
        n = len(runs[0].docs(task))
        lines.append(f"| {task} | {n} | " + " | ".join(_cell(r.results[task]) for r in runs) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="NAME=FOLDER")
    parser.add_argument("--out", type=Path, help="write the markdown here (default: stdout)")
    args = parser.parse_args(argv)
    try:
        named = (parse_named(spec, "--run", "FOLDER") for spec in args.run)
        runs = [Run(name, Path(folder)) for name, folder in named]
        lines = relfacts_table(runs)
        hop = twohop_table(runs)
        text = "\n".join(lines + (["", *hop] if hop else [])) + "\n"
    except (RelNeuronError, OSError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        with atomic_write(args.out) as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
