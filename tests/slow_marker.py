"""The `slow` marker, enforced by measurement (imported into tests/conftest.py).

A test that uses more CPU than ``SLOW_CPU_S`` (its setup included, so a module fixture's
cost counts) without being marked ``slow`` fails, so ``pytest -m "not slow"`` stays the
contributor's fast loop. CPU seconds of the test process and the subprocesses it waited
for, not wall time: a busy machine does not make a test slow. "Slow" means over ~10 s
(pyproject's marker); the bound leaves twice that as room for a noisy machine.
"""

from __future__ import annotations

import os
import resource

import pytest

SLOW_CPU_S = float(os.environ.get("RELNEURON_SLOW_CPU_S", "20"))
_CPU_AT_SETUP = pytest.StashKey[float]()


def cpu_seconds() -> float:
    """User + system time of this process and of its finished, waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pytest_collection_modifyitems(config, items):
    """The shipped relchecks score full test splits with the embedded model: slow.

    Under pytest-xdist (``--dist loadgroup``) every test of a file runs on one worker,
    so a module fixture is built once, unless the file is marked ``spread`` (independent,
    heavy tests without shared fixtures: the docs' commands, the relchecks).
    """
    for item in items:
        if item.get_closest_marker("relcheck") is not None:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.spread)
        if item.get_closest_marker("spread") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item.stash[_CPU_AT_SETUP] = cpu_seconds()
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call" or _CPU_AT_SETUP not in item.stash:
        return
    used = cpu_seconds() - item.stash[_CPU_AT_SETUP]
    report.user_properties.append(("cpu_s", round(used, 2)))
    if report.passed and used > SLOW_CPU_S and item.get_closest_marker("slow") is None:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} used {used:.1f} CPU s (setup + call) but is not marked "
            f"@pytest.mark.slow (the bound is {SLOW_CPU_S:g} s): mark it slow, or make it "
            "cheaper (a tiny model, a shared fixture), so that `pytest -m 'not slow'` stays fast"
        )
