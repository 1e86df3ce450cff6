"""The `slow` marker is enforced by measurement: an unmarked CPU-heavy test fails."""

from __future__ import annotations

import os
import time
from pathlib import Path

pytest_plugins = ["pytester"]

_SUITE = """
import time

import pytest


def _burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_cheap():
    assert True


def test_heavy_unmarked():
    _burn(0.6)


@pytest.mark.slow
def test_heavy_marked():
    _burn(0.6)
"""


def test_unmarked_heavy_test_fails_and_marked_one_passes(pytester, monkeypatch):
    monkeypatch.setenv("RELNEURON_SLOW_CPU_S", "0.3")
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    pytester.makeini("[pytest]\nmarkers =\n    slow: heavy\n")
    pytester.makepyfile(test_suite=_SUITE)
    result = pytester.runpytest_subprocess("-p", "slow_marker", "-q")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*test_heavy_unmarked used * CPU s*not marked*slow*"])


def test_cpu_log_names_each_test_with_its_cpu_seconds(pytester, monkeypatch, tmp_path):
    log = tmp_path / "cpu.tsv"
    monkeypatch.setenv("RELNEURON_CPU_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    pytester.makeini("[pytest]\nmarkers =\n    slow: heavy\n")
    pytester.makepyfile(test_suite=_SUITE)
    pytester.runpytest_subprocess("-p", "slow_marker", "-q", "-k", "marked")
    rows = [line.split("\t") for line in log.read_text().splitlines()]
    names = {name for _, name, _, _ in rows}
    assert names == {"test_suite.py::test_heavy_unmarked", "test_suite.py::test_heavy_marked"}
    assert all(float(cpu) >= 0.6 for cpu, _, _, _ in rows)
    here = os.environ.get("PYTEST_XDIST_WORKER", "main")  # the inner run inherits ours
    assert {worker for _, _, worker, _ in rows} == {here}
    ends = [int(end) for _, _, _, end in rows]  # when each finished, in the order written
    assert ends == sorted(ends) and abs(ends[-1] - time.time()) < 600
