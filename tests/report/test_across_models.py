"""Claims across models: one row per claim and k, a column per model's report."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
from conftest import REPO

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.report.across_models import (
    KN_MEASURES,
    ModelBoard,
    ModelReport,
    base_table,
    claims_table,
    kn_table,
    load_kn_report,
    load_leaderboard,
    load_report,
    methods_table,
)

SMOL = REPO / "docs" / "report-smollm2-first100"
BOARD = REPO / "docs" / "leaderboard"
KN = REPO / "docs" / "report-kn-v2"


@pytest.fixture(scope="module")
def smol() -> ModelReport:
    return load_report("SmolLM2-135M", SMOL)


def _row(table: str, claim: str, k: str) -> list[str]:
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == claim and cells[1].startswith(k):
            return cells
    raise AssertionError(f"no row {claim!r} at k {k}")


def test_each_cell_reads_its_reports_interval_and_verdict(smol):
    table = claims_table([smol])
    claim = "own neurons take a relation's answers more than random units"
    for section in [smol.results["interference"], *smol.results["interference_more_k"]]:
        k = str(section["top_k"])
        lo, hi = section["summary"]["ci95_t"]
        cell = _row(table, claim, k)[2]
        assert f"[{100 * lo:+.1f}, {100 * hi:+.1f}]" in cell
        assert cell.startswith("**holds**") == (lo > 0)
        others = section["summary"]["others"]
        other_cell = _row(table, "... more than other relations' neurons of the same size", k)[2]
        assert other_cell.startswith("**holds**") == (others["ci95_t"][0] > 0)
        assert f"{others['n_significant_holm']} of {others['n']}" in other_cell


def test_a_reversed_effect_and_a_missing_k_are_named(smol):
    flipped = copy.deepcopy(smol.results)
    flipped["interference"]["summary"]["ci95_t"] = [-0.2, -0.05]
    flipped["interference_more_k"] = []
    other = ModelReport("other", SMOL, flipped)
    table = claims_table([smol, other])
    claim = "own neurons take a relation's answers more than random units"
    assert _row(table, claim, "3000")[3].startswith("**reversed**")
    fraction = _row(table, claim, "400")
    assert fraction[1].startswith("400 (paper's fraction)") and fraction[3] == "not measured"


def test_bad_report_folders_are_one_clear_error(tmp_path):
    with pytest.raises(RelNeuronError, match=r"results\.json not found"):
        load_report("x", tmp_path)
    (tmp_path / "results.json").write_text('{\n  "interference": [1,,]\n}')
    with pytest.raises(RelNeuronError, match=r"results\.json:2: not JSON"):
        load_report("x", tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"base": {}}))
    with pytest.raises(RelNeuronError, match="no interference experiment"):
        load_report("x", tmp_path)


def test_the_script_writes_the_page_or_fails_cleanly(tmp_path):
    out = tmp_path / "claims.md"
    script = str(REPO / "scripts" / "claims_across_models.py")
    ok = subprocess.run(
        [sys.executable, script, "--report", f"SmolLM2={SMOL}", "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    page = out.read_text()
    assert page.startswith("# Claims across models") and "| claim | k | SmolLM2 |" in page
    bad = subprocess.run(
        [sys.executable, script, "--report", "nofolder", "--out", str(tmp_path / "b.md")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "NAME=FOLDER" in bad.stderr
    assert not (tmp_path / "b.md").exists()


def test_base_table_marks_eligible_relations_and_missing_ones(smol):
    fewer = copy.deepcopy(smol.results)
    del fewer["interference"]["per_relation"]["star_constellation"]
    table = base_table([smol, ModelReport("other", SMOL, fewer)])
    per = smol.results["interference"]["per_relation"]
    for rel, entry in per.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {rel} |"))
        base = f"{100 * entry['base']:.1f}"
        assert (f"**{base}**" in row) == bool(entry["eligible"])
        assert f"| {entry['n_docs']} |" in row
    assert table.count("not in the set") == 1


def test_methods_table_reads_each_boards_areas_and_ranks(tmp_path):
    board = load_leaderboard("SmolLM2", BOARD)
    per = board.scores["per_method"]
    swapped = copy.deepcopy(board.scores)  # a second model where the last method is best
    last = min(per, key=lambda m: per[m]["area_disentangle"]["mean"])
    swapped["per_method"][last]["area_disentangle"]["mean"] = 0.99
    del swapped["per_method"]["random"]
    table = methods_table([board, ModelBoard("other", BOARD, swapped)])
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert list(rows) == sorted(per, key=lambda m: -per[m]["area_disentangle"]["mean"])
    for method, entry in per.items():
        lo, hi = entry["area_disentangle"]["ci"]
        assert (
            f"{100 * entry['area_disentangle']['mean']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
            in rows[method]
        )
    assert "+99.0 [" in rows[last] and rows[last].count("(rank 1;") == 1
    assert rows["random"].rstrip(" |").endswith("not run")
    with pytest.raises(RelNeuronError, match=r"leaderboard\.json not found"):
        load_leaderboard("x", tmp_path)


def test_kn_table_reads_own_minus_swapped_in_each_claims_direction(tmp_path):
    report = load_kn_report("SmolLM2", KN)
    flipped = copy.deepcopy(report.results)
    direct = flipped["reasoning"]["measures"]["direct"]["with_neurons"]
    direct["deactivate"]["specificity"]["ci"] = [0.01, 0.05]  # own hurts less: reversed
    del flipped["reasoning"]["measures"]["cot"]
    table = kn_table([report, ModelReport("other", KN, flipped)])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert len(rows) == 8 and all(len(r) == 4 for r in rows)
    for claim, label, cell, _ in rows:
        mode = "deactivate" if claim.startswith("suppressing") else "enhance"
        key = next(k for k, lab, _ in KN_MEASURES if lab == label)
        spec = report.results["reasoning"]["measures"][key]["with_neurons"][mode]["specificity"]
        lo, hi = spec["ci"]
        assert (
            f"{100 * spec['own_minus_swapped']:+.1f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}]" in cell
        )
        holds = hi < 0 if mode == "deactivate" else lo > 0
        assert cell.startswith("**holds**") == holds, cell
    by_label = {(r[0][:10], r[1]): r[3] for r in rows}
    assert by_label["suppressin", "direct answer (primary)"].startswith("**reversed**")
    assert by_label["suppressin", "CoT answer"] == "not measured"
    (tmp_path / "results.json").write_text(json.dumps({"interference": {}}))
    with pytest.raises(RelNeuronError, match="no reasoning experiment"):
        load_kn_report("x", tmp_path)
