"""Base-model tables of several models side by side, from their `lm_eval --log_samples` runs.

    python scripts/base_tables.py --run "SmolLM2-135M=out/smollm2" \
        --run "Gemma 3 270M=out/gemma" [--out table.md]

Per `relfacts_<relation>` task: n, the majority answer (always answering the most frequent
test object, from the logged documents), each model's acc_match ± lm-eval's standard
error, bold where the model *knows* the relation by the reports' eligibility rule (base
>= 20 % and >= majority + 10 pp); then per model the count of relations above the
majority answer and of known ones. When the runs hold them: the two-hop tasks, the
multiple-choice tasks (`acc`, the same rule) and the multilingual probes (acc_match per
relation and language, each language's macro). Every number is read from the runs; exit
2 with one line naming the folder or file when a run is missing or unreadable or the
models' documents differ.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relneuron_eval.atomic import atomic_write
from relneuron_eval.core.arglists import parse_named
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.report.controls import MIN_MARGIN, eligibility, majority

MIN_BASE = 0.20  # the reports' eligibility threshold (docs/report-full-v2/settings.yaml)
METRIC = "acc_match,none"
MC_METRIC = "acc,none"
LANGS = ("de", "es", "fr", "zh", "ja")
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


def _cell(row: dict[str, Any], known: bool | None = None, metric: str = METRIC) -> str:
    stderr = row.get(metric.replace(",", "_stderr,"))  # lm-eval writes "N/A" for one document
    spread = f" ± {100 * stderr:.1f}" if isinstance(stderr, (int, float)) else ""
    value = f"{100 * row[metric]:.1f}{spread}"
    return f"**{value}**" if known else value


def _in_every_run(runs: list[Run], tasks: list[str]) -> list[str]:
    return [t for t in tasks if all(t in r.results for r in runs)]


def _same_docs(runs: list[Run], task: str) -> list[dict[str, Any]]:
    """The first run's logged documents of ``task``; every run must have scored them."""
    docs = runs[0].docs(task)
    for other in runs[1:]:
        if [d["fact_id"] for d in other.docs(task)] != [d["fact_id"] for d in docs]:
            raise RelNeuronError(f"{task}: the runs scored different documents", path=other.folder)
    return docs


def _known_rows(
    runs: list[Run],
    tasks: list[str],
    metric: str,
    columns: Callable[[str, list[dict[str, Any]]], str],
) -> list[str]:
    """One row per task (``columns(task, docs)``: the cells before the models'), each
    model's score bold when known, then the counts of relations above the majority
    answer and known."""
    known = {r.name: 0 for r in runs}
    above = {r.name: 0 for r in runs}
    lines = []
    for task in tasks:
        docs = _same_docs(runs, task)
        top, rate = majority(docs)
        cells = []
        for run in runs:
            ok = eligibility(run.results[task][metric], rate, MIN_BASE, MIN_MARGIN)
            known[run.name] += ok
            above[run.name] += run.results[task][metric] > rate
            cells.append(_cell(run.results[task], ok, metric))
        lines.append(
            f"| {columns(task, docs)} | {100 * rate:.1f} ({top}) | " + " | ".join(cells) + " |"
        )
    blanks = "| " * (lines[0].count("|") - len(runs) - 2) if lines else ""
    for label, count in (("above the majority answer", above), ("known (bold)", known)):
        cells = " | ".join(f"{count[r.name]} of {len(tasks)}" for r in runs)
        lines.append(f"| relations {label} {blanks}| {cells} |")
    return lines


def relfacts_table(runs: list[Run]) -> list[str]:
    """The per-relation table and the count of relations each model knows."""
    tasks = _in_every_run(runs, runs[0].group_subtasks.get("relfacts", []))
    if not tasks:
        return []
    head = "| relation | n | majority answer | " + " | ".join(r.name for r in runs) + " |"
    rows = _known_rows(runs, tasks, METRIC, lambda task, docs: f"{task[9:]} | {len(docs)}")
    return [head, "|---|---:|---|" + "---:|" * len(runs), *rows]


def mc_table(runs: list[Run]) -> list[str]:
    """Multiple choice: n, choices, chance, the majority answer and each model's ``acc``
    (bold by the same rule), the counts and the macro over the tasks."""
    tasks = _in_every_run(runs, runs[0].group_subtasks.get("relfacts-mc", []))
    if not tasks:
        return []

    def columns(task: str, docs: list[dict[str, Any]]) -> str:
        choices = len(docs[0]["choices"])
        return f"{task[12:]} | {len(docs)} | {choices} | {100 / choices:.1f}"

    names = " | ".join(f"{r.name} acc" for r in runs)
    head = f"| relation (mc) | n | choices | chance | majority answer | {names} |"
    lines = [head, "|---|---:|---:|---:|---|" + "---:|" * len(runs)]
    lines += _known_rows(runs, tasks, MC_METRIC, columns)
    macro = " | ".join(_cell(_macro(r, tasks), metric=MC_METRIC) for r in runs)
    lines.append(f"| **relfacts-mc** (macro) | | | | | {macro} |")
    return lines


def _macro(run: Run, tasks: list[str]) -> dict[str, Any]:
    """lm-eval's `relfacts-mc` group score, or, for a run made as several task lists, the
    same aggregate (mean over tasks, standard errors combined as independent)."""
    if "relfacts-mc" in run.results:
        return run.results["relfacts-mc"]
    stderr = MC_METRIC.replace(",", "_stderr,")
    rows = [run.results[t] for t in tasks]
    spread = [r.get(stderr) for r in rows]
    out: dict[str, Any] = {MC_METRIC: sum(r[MC_METRIC] for r in rows) / len(rows)}
    if all(isinstance(x, (int, float)) for x in spread):
        out[stderr] = sum(x * x for x in spread) ** 0.5 / len(rows)
    return out


def multilingual_table(runs: list[Run]) -> list[str]:
    """acc_match per relation and language, the models side by side in each cell
    (n = that language's test facts), then each language's macro (lm-eval's group score)
    and the count of (relation, language) probes above their majority answer."""
    probe = re.compile(rf"relfacts_({'|'.join(LANGS)})_.+")
    tasks = _in_every_run(runs, sorted(t for t in runs[0].results if probe.fullmatch(t)))
    if not tasks:
        return []
    relations = sorted({t[12:] for t in tasks})
    cells: dict[tuple[str, str], str] = {}
    above = {r.name: 0 for r in runs}
    for task in tasks:
        docs = _same_docs(runs, task)
        rate = majority(docs)[1]
        for run in runs:
            above[run.name] += run.results[task][METRIC] > rate
        values = " / ".join(f"{100 * r.results[task][METRIC]:.1f}" for r in runs)
        cells[task[12:], task[9:11]] = f"{values} (n={len(docs)})"
    lines = ["| relation | " + " | ".join(LANGS) + " |", "|---|" + "---|" * len(LANGS)]
    for relation in relations:
        row = (cells.get((relation, lang), "-") for lang in LANGS)
        lines.append(f"| {relation} | " + " | ".join(row) + " |")
    macro = (
        " / ".join(_cell(r.results[f"relfacts-{lang}"]) for r in runs)
        if all(f"relfacts-{lang}" in r.results for r in runs)
        else "-"
        for lang in LANGS
    )
    lines.append("| **macro** | " + " | ".join(macro) + " |")
    counts = ", ".join(f"{r.name} {above[r.name]} of {len(tasks)}" for r in runs)
    return [f"Models in each cell: {' / '.join(r.name for r in runs)}.", "", *lines, "",
            f"Probes above their majority answer: {counts}."]  # fmt: skip


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
        sections = [
            table(runs) for table in (relfacts_table, twohop_table, mc_table, multilingual_table)
        ]
        if not any(sections):
            raise RelNeuronError(
                "no relfacts, two-hop, mc or multilingual task in every run", path=runs[0].folder
            )
        text = "\n\n".join("\n".join(lines) for lines in sections if lines) + "\n"
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
