"""Text renderings of a ``relneuron compare`` comparison: table, markdown, csv, json.

Every p-value says which test made it (``M`` exact McNemar and ``t`` paired t on the
``--log_samples`` logs, ``z`` the z-test on lm-eval's standard errors), and a line under
the table counts them, so a table of z-tests cannot pass for paired tests.
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING

from relneuron_eval.evaluation.statistics import MCNEMAR, PAIRED_T, STDERR_Z

if TYPE_CHECKING:
    from relneuron_eval.compare.command import Cell, Comparison, Row


def _fmt(value: float | None, digits: int = 4, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


# test -> (code after the p-value, what the legend calls it)
TESTS = {
    MCNEMAR: ("M", "exact McNemar, paired by document (--log_samples logs)"),
    PAIRED_T: ("t", "paired t, paired by document (--log_samples logs)"),
    STDERR_Z: ("z", "z-test on lm-eval's stderr (no sample logs: unpaired, less sensitive)"),
}
FLAGGED = "!"


def _p_text(cell: Cell, flagged: bool = False) -> str:
    if cell.status != "ok":
        return cell.status
    if cell.p_value is None:
        return "?"
    mark = FLAGGED if flagged else "*" if cell.significant else ""
    code = TESTS.get(cell.test or "", ("?", ""))[0]
    return f"{cell.p_value:.3g}{mark} {code}"


def _own_text(comparison: Comparison, row: Row) -> str:
    return ",".join(f"V{comparison.variants.index(v) + 1}" for v in row.own)


def _grid(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["own", "task", "metric", "n", "base"]
    for i, _ in enumerate(comparison.variants, start=1):
        header += [f"V{i}", f"Δ V{i}", f"p V{i}"]
    body = []
    for row in comparison.rows:
        label = row.task if row.kind == "task" else f"[{row.task}]"
        metric = row.metric + ("" if row.filter == "none" else f",{row.filter}")
        metric += "" if row.higher_is_better is not False else " ↓"
        n = "—" if row.n is None else str(row.n)
        line = [_own_text(comparison, row), label, metric, n, _fmt(row.base)]
        for cell in row.cells:
            line += [_fmt(cell.score), _fmt(cell.delta, signed=True), _p_text(cell, bool(row.flag))]
        body.append(line)
    return header, body


def tests_used(comparison: Comparison) -> str:
    """One line: how many compared cells each test decided, and what the marks mean."""
    counts: dict[str, int] = {}
    for row in comparison.rows:
        for cell in row.cells:
            if cell.status == "ok" and cell.p_value is not None:
                counts[cell.test or ""] = counts.get(cell.test or "", 0) + 1
    used = [f"{TESTS[t][0]} = {TESTS[t][1]}: {counts[t]} cells" for t in TESTS if t in counts]
    text = "tests: " + ("; ".join(used) if used else "none made")
    return text + f"; * = p < {comparison.alpha}"


def _notes(comparison: Comparison) -> list[str]:
    lines = [tests_used(comparison)]
    if any(row.own for row in comparison.rows):
        lines.append("own: the variants whose groups name the task's relation (listed first)")
    flagged = [row.task for row in comparison.rows if row.flag]
    if flagged:
        lines.append(
            f"{FLAGGED} = acc_prefix2 cannot tell this relation's objects apart (taskgen's "
            f"check), so its p is not a test of the fact: read acc_match ({', '.join(flagged)})"
        )
    return lines


def _legend(comparison: Comparison) -> list[str]:
    lines = [f"base: {comparison.base}"]
    lines += [
        f"V{i}: {name}" + (" (random control)" if comparison.is_control(name) else "")
        for i, name in enumerate(comparison.variants, start=1)
    ]
    return lines


def render_table(comparison: Comparison) -> str:
    header, body = _grid(comparison)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "  ".join(
            (c.ljust(w) if i < 3 else c.rjust(w))
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()

    out = [fmt(header), "  ".join("-" * w for w in widths)]
    out += [fmt(line) for line in body]
    out += ["", *_legend(comparison)]
    out += _notes(comparison)
    out.append("n = documents; [name] = group; ↓ = lower is better")
    out += _leaderboard_lines(comparison)
    if comparison.problems:
        out += ["", "PROBLEMS (not compared):" if comparison.problems else ""]
        out += [f"  - {p}" for p in comparison.problems]
    return "\n".join(out) + "\n"


def _leaderboard_lines(comparison: Comparison) -> list[str]:
    lines = ["", "variants by mean change (largest rise first):"]
    controls = False
    for entry in comparison.leaderboard():
        idx = comparison.variants.index(entry["variant"]) + 1
        if entry["control"] and not controls:
            controls = True
            lines.append("random controls (the reference for the variants, not candidates):")
        lines.append(
            f"  V{idx}: mean Δ {_fmt(entry['mean_delta'], signed=True)} over {entry['compared']} rows, "
            f"{entry['significant_down']} significantly down, {entry['significant_up']} up"
        )
    return lines


def render_markdown(comparison: Comparison) -> str:
    header, body = _grid(comparison)

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(esc(h) for h in header) + " |"]
    out.append("|" + "|".join([":---"] * 3 + ["---:"] * (len(header) - 3)) + "|")
    out += ["| " + " | ".join(esc(c) for c in line) + " |" for line in body]
    out += ["", *[f"- {esc(line)}" for line in _legend(comparison)]]
    out += ["", *[f"- {esc(line)}" for line in _notes(comparison)]]
    out += [
        line if line.startswith("  ") is False else "-" + line[1:]
        for line in _leaderboard_lines(comparison)
    ]
    if comparison.problems:
        out += ["", "**Problems (not compared):**", ""]
        out += [f"- {esc(p)}" for p in comparison.problems]
    return "\n".join(out) + "\n"


CSV_COLUMNS = [
    "task",
    "kind",
    "metric",
    "filter",
    "higher_is_better",
    "base",
    "base_stderr",
    "variant",
    "score",
    "stderr",
    "delta",
    "p_value",
    "test",
    "significant",
    "status",
    "note",
    "n",
    "own",
    "flag",
]


def render_csv(comparison: Comparison) -> str:
    """Long format: one line per (row, variant), ready for pandas or a spreadsheet."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in comparison.rows:
        for cell in row.cells:
            writer.writerow(
                [
                    row.task,
                    row.kind,
                    row.metric,
                    row.filter,
                    row.higher_is_better,
                    row.base,
                    row.base_stderr,
                    cell.variant,
                    cell.score,
                    cell.stderr,
                    cell.delta,
                    cell.p_value,
                    cell.test,
                    cell.significant,
                    cell.status,
                    cell.note,
                    row.n,
                    "|".join(row.own),
                    row.flag,
                ]
            )
    return buffer.getvalue()


def render_json(comparison: Comparison) -> str:
    return json.dumps(comparison.to_dict(), indent=2, ensure_ascii=False) + "\n"


RENDERERS = {
    "table": render_table,
    "markdown": render_markdown,
    "csv": render_csv,
    "json": render_json,
}
