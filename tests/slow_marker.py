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
import time

import pytest

SLOW_CPU_S = float(os.environ.get("RELNEURON_SLOW_CPU_S", "20"))
_CPU_AT_SETUP = pytest.StashKey[float]()


def cpu_seconds() -> float:
    """User + system time of this process and of its finished, waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


# Files whose tests may run on different workers (the `spread` marker: independent, heavy
# tests without shared module fixtures). The xdist controller sees node ids, not marks,
# so the scheduler decides by path; the collection hook checks that marks and paths agree.
SPREAD_PATHS = ("tests/test_readme_commands.py",)


def is_spread(nodeid: str) -> bool:
    return nodeid.split("::", 1)[0].startswith(SPREAD_PATHS)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The shipped relchecks score full test splits with the embedded model: slow.

    Heavy work first, so two workers finish together: spread tests (each a chain of
    the docs' commands), then files by their number of slow tests, then the rest, each
    in collection order (a stable sort: every worker collects the same order).
    """
    for item in items:
        if item.get_closest_marker("relcheck") is not None:  # one worker: they share runs
            item.add_marker(pytest.mark.slow)
        if (item.get_closest_marker("spread") is not None) != is_spread(item.nodeid):
            raise pytest.UsageError(
                f"{item.nodeid}: the `spread` marker and tests/slow_marker.py's SPREAD_PATHS "
                "disagree; add the file to SPREAD_PATHS (or remove the marker)"
            )
    slow_in_file: dict[str, int] = {}
    for item in items:
        file = item.nodeid.split("::", 1)[0]
        slow_in_file[file] = slow_in_file.get(file, 0) + bool(item.get_closest_marker("slow"))
    items.sort(
        key=lambda item: (not is_spread(item.nodeid), -slow_in_file[item.nodeid.split("::")[0]])
    )


def pytest_xdist_make_scheduler(config, log):
    """A file's tests on one worker, so its module fixtures are built once; a spread
    file's tests one by one; in the collection order above (xdist's `loadgroup` would do
    the first, but its group marks no longer reach node ids under pytest 9.2)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if is_spread(nodeid) else nodeid.split("::", 1)[0]

    config.option.loadscopereorder = False  # keep the heavy-first order
    return ByFile(config, log)


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
    log = os.environ.get("RELNEURON_CPU_LOG")  # where CI time goes: junit files under
    if log:  # xdist keep no user properties, so each worker appends its tests here
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")  # and when it finished:
        with open(log, "a", encoding="utf-8") as handle:  # the workers' balance
            handle.write(f"{used:.2f}\t{item.nodeid}\t{worker}\t{time.time():.0f}\n")
    if report.passed and used > SLOW_CPU_S and item.get_closest_marker("slow") is None:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} used {used:.1f} CPU s (setup + call) but is not marked "
            f"@pytest.mark.slow (the bound is {SLOW_CPU_S:g} s): mark it slow, or make it "
            "cheaper (a tiny model, a shared fixture), so that `pytest -m 'not slow'` stays fast"
        )
