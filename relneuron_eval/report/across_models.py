"""Claims across models: the same report's verdicts side by side for several models.

A finding on one small model is a case study. This reads the ``results.json`` of
``relneuron report`` runs made with the same design on different models (the same
documents, seeds, controls and tests; see docs/report-gemma/settings.yaml) and lays each
claim out as one row with a column per model: the measured number with its interval
and a verdict derived from the interval alone (no threshold chosen per model).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError

FORGOT = "forgot"


@dataclass(frozen=True)
class ModelReport:
    """One model's report: its name as the table shows it, and its results."""

    name: str
    folder: Path
    results: dict[str, Any]


def _read_json(path: Path, hint: str) -> Any:
    """A finished run's JSON file, or one error naming it (and the line, if unparsable)."""
    if not path.is_file():
        raise RelNeuronError(f"{path} not found", hint=hint)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RelNeuronError(f"not JSON: {exc.msg}", path=str(path), line=exc.lineno) from None


def load_report(name: str, folder: Path) -> ModelReport:
    """``FOLDER/results.json`` of a finished interference report (one clear error if not)."""
    path = folder / "results.json"
    results = _read_json(path, "name the folder of a finished `relneuron report`")
    if not isinstance(results, dict) or "interference" not in results:
        raise RelNeuronError(
            "no interference experiment in this report",
            path=str(path),
            hint="claims across models need `--experiments interference` runs",
        )
    return ModelReport(name, folder, results)


def _pp(value: float) -> str:
    return f"{100 * value:+.1f} pp"


def _interval(ci: Sequence[float] | None) -> str:
    if not ci:
        return "[no interval]"
    return f"[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def _verdict(ci: Sequence[float] | None) -> str:
    """Holds when the 95 % interval lies above 0, against when below, else not shown."""
    if not ci:
        return "not measured"
    if ci[0] > 0:
        return "**holds**"
    if ci[1] < 0:
        return "**reversed**"
    return "**not shown**"


def _sections(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The interference sections in k order given: the headline k first."""
    return [results["interference"], *results.get("interference_more_k", [])]


def _vs_random(section: dict[str, Any]) -> str:
    s = section["summary"]
    ci = s.get("ci95_t")
    n = s["absolute"]["n"]
    return (
        f"{_verdict(ci)}: {_pp(s['absolute']['mean_difference'])} {_interval(ci)}, "
        f"{s['n_significant_vs_control']} of {n} relations below their control (Holm)"
    )


def _vs_others(section: dict[str, Any]) -> str:
    others = section["summary"].get("others")
    if not others:
        return "not measured"
    ci = others.get("ci95_t")
    return (
        f"{_verdict(ci)}: {_pp(others['mean_difference'])} {_interval(ci)}, "
        f"{others['n_significant_holm']} of {others['n']} (Holm)"
    )


def _random_damage(section: dict[str, Any]) -> str:
    s = section["summary"]
    return f"{s['n_control_significant_drop']} of {s['absolute']['n']} relations"


def _forgetting(section: dict[str, Any]) -> str:
    verdicts = [
        e["verdict"]
        for e in section["per_relation"].values()
        if e.get("eligible") and e.get("verdict") and not e["verdict"].startswith("n/a")
    ]
    if not verdicts:
        return "no eligible closed-set relation"
    forgot = sum(v == FORGOT for v in verdicts)
    other = len(verdicts) - forgot
    return f"{forgot} of {len(verdicts)} read as forgot; {other} a broken format, default or small drop"


def _interference(section: dict[str, Any]) -> str:
    diff = (section.get("matrix") or {}).get("offdiag_difference")
    if not diff or diff.get("mean_own_minus_control_drop") is None:
        return "not measured"
    ci = diff.get("ci95_cluster_bootstrap")
    extra = _pp(diff["mean_own_minus_control_drop"])
    return (
        f"{extra} extra drop beyond random {_interval(ci)} over {diff['n_cells']} cells, "
        f"{diff['n_dropped_significant_holm']} significant drops (Holm)"
    )


def _known(report: ModelReport) -> str:
    s = report.results["interference"]["summary"]
    return f"{s['n_eligible']} of {s['n_total']}"


ROWS = (
    ("relations the model knows (base >= 20 % and >= majority + 10 pp)", None),
    ("own neurons take a relation's answers more than random units", _vs_random),
    ("... more than other relations' neurons of the same size", _vs_others),
    ("random units alone drop relations significantly (Holm)", _random_damage),
    ("the drop is forgetting (closed-set relations)", _forgetting),
    ("other relations keep their answers (matrix, own - random)", _interference),
)


def claims_table(reports: Sequence[ModelReport]) -> str:
    """One markdown table: a row per claim and k, a column per model."""
    if len(reports) < 1:
        raise RelNeuronError("no report given")
    head = "| claim | k | " + " | ".join(r.name for r in reports) + " |"
    lines = [head, "|" + "---|" * (len(reports) + 2)]
    for claim, read in ROWS:
        if read is None:
            lines.append(f"| {claim} | - | " + " | ".join(_known(r) for r in reports) + " |")
            continue
        depth = max(len(_sections(r.results)) for r in reports)
        for i in range(depth):
            cells, ks = [], []
            for r in reports:
                sections = _sections(r.results)
                if i < len(sections):
                    cells.append(read(sections[i]))
                    ks.append(str(sections[i]["top_k"]))
                else:
                    cells.append("not measured")
            label = "headline" if i == 0 else "paper's fraction"
            lines.append(f"| {claim} | {' / '.join(ks)} ({label}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def base_table(reports: Sequence[ModelReport]) -> str:
    """Base accuracy per relation on each report's own-task documents, with n and the
    majority-answer rate (the same documents give the same n and rate), eligible ones bold."""
    per = [r.results["interference"]["per_relation"] for r in reports]
    relations = sorted(set().union(*per))
    lines = [
        "| relation | n | majority answer | " + " | ".join(r.name for r in reports) + " |",
        "|" + "---|" * (len(reports) + 3),
    ]
    for rel in relations:
        entries = [p.get(rel) for p in per]
        first = next(e for e in entries if e)
        cells = []
        for e in entries:
            if not e:
                cells.append("not in the set")
                continue
            text = f"{100 * e['base']:.1f}"
            cells.append(f"**{text}**" if e.get("eligible") else text)
        lines.append(
            f"| {rel} | {first['n_docs']} | {100 * first['majority_rate']:.1f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def sources(reports: Sequence[ModelReport]) -> str:
    """Where each column comes from: folder, model, set hash, documents and seeds."""
    out = []
    for r in reports:
        meta = r.results.get("meta", {})
        neuron_set = meta.get("neuron_set") or {}
        sha = neuron_set.get("sha256", "?")[:12] if isinstance(neuron_set, dict) else "?"
        out.append(
            f"- {r.name}: `{r.folder.as_posix()}` (model `{meta.get('model')}`, set sha256 "
            f"`{sha}`, own task: first {meta.get('limit_own')} test facts, matrix: first "
            f"{meta.get('limit')}, seeds {meta.get('seeds')}, k {meta.get('top_ks')})"
        )
    return "\n".join(out) + "\n"


# ================================================================== leaderboards
@dataclass(frozen=True)
class ModelBoard:
    """One model's method leaderboard (``relneuron leaderboard``'s leaderboard.json)."""

    name: str
    folder: Path
    scores: dict[str, Any]


def load_leaderboard(name: str, folder: Path) -> ModelBoard:
    """``FOLDER/leaderboard.json`` of a finished leaderboard (one clear error if not)."""
    path = folder / "leaderboard.json"
    data = _read_json(path, "name the --out folder of a finished `relneuron leaderboard`")
    per_method = (data.get("scores") or {}).get("per_method") if isinstance(data, dict) else None
    if not per_method:
        raise RelNeuronError("no per-method scores in this leaderboard", path=str(path))
    return ModelBoard(name, folder, data["scores"])


def _area(entry: dict[str, Any], key: str) -> float:
    return entry[key]["mean"]


def methods_table(boards: Sequence[ModelBoard]) -> str:
    """A row per method, a column per model: its Disentangle area [95 % interval] and its
    rank on that model (1 = best); the methods in the first board's order of rank."""
    if not boards:
        raise RelNeuronError("no leaderboard given")
    ranks = []
    for board in boards:
        per = board.scores["per_method"]
        order = sorted(per, key=lambda m: -_area(per[m], "area_disentangle"))
        ranks.append({m: i + 1 for i, m in enumerate(order)})
    methods = sorted(ranks[0], key=ranks[0].get)
    methods += sorted({m for r in ranks[1:] for m in r} - set(methods))
    lines = [
        "| method | " + " | ".join(b.name for b in boards) + " |",
        "|" + "---|" * (len(boards) + 1),
    ]
    for method in methods:
        cells = []
        for board, rank in zip(boards, ranks, strict=True):
            entry = board.scores["per_method"].get(method)
            if entry is None:
                cells.append("not run")
                continue
            area = entry["area_disentangle"]
            cells.append(
                f"{100 * area['mean']:+.1f} {_interval(area.get('ci'))} (rank {rank[method]}; "
                f"Cause {100 * _area(entry, 'area_cause'):+.1f}, "
                f"Isolate {100 * _area(entry, 'area_isolate'):+.1f})"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ============================================================ knowledge neurons
# (measure key, row label, unit of n): the reasoning experiment's measures, primary first
KN_MEASURES = (
    ("direct", "direct answer (primary)", "chains"),
    ("cot", "CoT answer", "chains"),
    ("bridge_recall", "CoT bridge recall", "chains"),
    ("hop1_heldout", "hop 1 held out (the fact itself)", "facts"),
)
# mode -> (claim, the sign own - swapped has when the claim holds)
KN_MODES = {
    "deactivate": ("suppressing a bridge fact's own neurons hurts more than another fact's", -1),
    "enhance": ("enhancing a bridge fact's own neurons helps more than another fact's", 1),
}


def load_kn_report(name: str, folder: Path) -> ModelReport:
    """``FOLDER/results.json`` of a finished reasoning report (one clear error if not)."""
    path = folder / "results.json"
    results = _read_json(path, "name the folder of a finished `relneuron report`")
    if not isinstance(results, dict) or "measures" not in (results.get("reasoning") or {}):
        raise RelNeuronError(
            "no reasoning experiment in this report",
            path=str(path),
            hint="knowledge-neuron claims need `--experiments reasoning` runs",
        )
    return ModelReport(name, folder, results)


def _kn_cell(results: dict[str, Any], measure: str, mode: str, unit: str) -> str:
    """own - swapped [95 % interval] (n), its verdict read in the claim's direction."""
    section = results["reasoning"]["measures"].get(measure, {}).get("with_neurons") or {}
    spec = (section.get(mode) or {}).get("specificity")
    if not spec:
        return "not measured"
    sign = KN_MODES[mode][1]
    ci = spec.get("ci")
    verdict = _verdict(sorted(sign * c for c in ci) if ci else None)
    value = f"{_pp(spec['own_minus_swapped'])} {_interval(ci)}"
    return f"{verdict}: {value} ({spec['n']} {unit})"


def kn_table(reports: Sequence[ModelReport]) -> str:
    """A row per claim and measure, a column per model: own - swapped, in the claim's
    direction (suppression: below 0 holds; enhancement: above 0 holds)."""
    if not reports:
        raise RelNeuronError("no reasoning report given")
    lines = [
        "| claim | measure | " + " | ".join(r.name for r in reports) + " |",
        "|" + "---|" * (len(reports) + 2),
    ]
    for mode, (claim, _) in KN_MODES.items():
        for measure, label, unit in KN_MEASURES:
            cells = (_kn_cell(r.results, measure, mode, unit) for r in reports)
            lines.append(f"| {claim} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
