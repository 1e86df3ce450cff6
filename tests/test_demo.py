"""`make demo` shows the effect the shipped report measured, with a paired test.

Before: the demo deactivated country_capital_city at top_k=3000 on 20 facts, where
real and random neurons both took the base to 0.00, and printed "relation-specific
effect is +0.00". The demo now runs the report's strongest specific relation at k = 400.
One run of ``scripts/demo.py`` (the embedded model through the real ``lm_eval`` CLI,
three times) serves every assertion; the expected sign and significance are read from
the report's ``results.json``, not written here.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def _demo_module():
    spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(the module, its printed output, compare's JSON, the output folder) of one run."""
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _demo_module(), proc.stdout, json.loads((out / "compare.json").read_text()), out


def _measured(module) -> dict:
    data = json.loads(module.REPORT.read_text())
    runs = [data["interference"], *data.get("interference_more_k", [])]
    (run,) = [r for r in runs if r["top_k"] == int(module.TOP_K)]
    return run["per_relation"][module.RELATION]


def test_demo_shows_the_reported_effect_with_a_paired_test(demo):
    module, printed, comparison, out = demo
    measured = _measured(module)
    assert measured["base"] >= measured["deact"] + 0.1  # the report's effect is a real drop
    roles = {
        ("control" if comparison["descriptions"][v].get("control") else "deactivated"): i
        for i, v in enumerate(comparison["variants"])
    }
    target = f"relfacts_{module.RELATION}"
    row = comparison["rows"][0]
    assert row["task"] == target and row["metric"] == "acc_match"
    assert row["own"] == comparison["variants"]  # both runs use the relation's group
    assert row["n"] == int(module.LIMIT)
    mine, ref = row["cells"][roles["deactivated"]], row["cells"][roles["control"]]
    for cell in row["cells"] + [c for r in comparison["rows"] for c in r["cells"]]:
        assert cell["test"] == "mcnemar", cell  # paired: the demo logs its samples
    # the sign and the significance the report measured on the full split
    assert (mine["delta"] < 0) == (measured["deact"] < measured["base"])
    assert mine["significant"] is measured["significant_drop"] is True
    assert ref["significant"] is measured["control_significant_drop"] is False
    assert mine["delta"] < ref["delta"]
    # ... and what the demo prints says so
    effect = mine["delta"] - ref["delta"]
    assert f"the relation-specific effect is {effect:+.2f} (on {row['n']} documents)" in " ".join(
        printed.split()
    )
    assert f"{mine['delta']:+.2f}*" in printed and "exact McNemar, paired" in printed
    assert f"{100 * measured['deact']:.1f}% deactivated" in printed
    assert "tests: M = exact McNemar" in printed
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_summary_marks_the_target_and_reports_the_other_task(demo):
    module, printed, comparison, _ = demo
    lines = module.summary(comparison, module.RELATION, report=module.REPORT)
    assert lines[2].split()[:2] == [f"relfacts_{module.RELATION}", "(target)"]
    other = [r for r in comparison["rows"] if r["task"] == f"relfacts_{module.OTHER}"]
    assert len(other) == 1 and other[0]["own"] == []
    assert "\n".join(lines[:4]) in printed
