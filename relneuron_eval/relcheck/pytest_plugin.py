"""pytest plugin: regression checks on neuron sets (``*.relcheck.yaml``).

Installed with the package (entry point ``pytest11: relneuron``). Each expectation of a
check file is one pytest item; evaluations are shared by all items of a session (the
base model runs once), and ``--relcheck-*`` options swap the model, neuron set, device,
batch size and ``--limit`` so the same checks run on the embedded model in CI and on a
large model on a GPU runner. Loading this plugin imports only pytest: nothing heavy
happens unless a check file is collected. Disable with ``-p no:relneuron``.
"""

from __future__ import annotations

import fnmatch
import json
import time
from pathlib import Path
from typing import Any

import pytest

DEFAULT_PATTERNS = ["*.relcheck.yaml", "*.relcheck.yml"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("relcheck", "relneuron-eval regression checks (*.relcheck.yaml)")
    group.addoption(
        "--relcheck-model",
        metavar="PRETRAINED",
        help="model for every check instead of its 'model:' (HF id, local folder, smollm2-135m)",
    )
    group.addoption(
        "--relcheck-model-args",
        metavar="K=V,...",
        help="extra relneuron-hf/hf model args for every check, e.g. dtype=bfloat16",
    )
    group.addoption(
        "--relcheck-neuron-set",
        metavar="PATH",
        help="neuron set for every check instead of its 'neuron_set:'",
    )
    group.addoption("--relcheck-device", metavar="DEVICE", help="e.g. cpu, cuda, cuda:1")
    group.addoption("--relcheck-batch-size", metavar="N", help="a number or 'auto'")
    group.addoption(
        "--relcheck-limit",
        metavar="N",
        help="documents per task (a count, a fraction in (0,1), or 'none' for all)",
    )
    group.addoption(
        "--relcheck-json",
        metavar="PATH",
        help="write every evaluation's scores and every expectation's outcome to PATH",
    )
    parser.addini(
        "relcheck_patterns", type="args", default=DEFAULT_PATTERNS, help="check-file globs"
    )


class RelCheckSession:
    """Per-session state: overrides, the shared evaluator, outcomes for the artifact."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.started = time.time()
        self.outcomes: list[dict[str, Any]] = []
        self.checks: list[dict[str, Any]] = []
        self._overrides = None
        self._evaluator = None

    @property
    def overrides(self):
        if self._overrides is None:
            from relneuron_eval.relcheck.run import Overrides

            opt = self.config.getoption
            limit = opt("relcheck_limit")
            batch = opt("relcheck_batch_size")
            args = opt("relcheck_model_args")
            self._overrides = Overrides(
                model=opt("relcheck_model"),
                model_args=Overrides.parse_model_args(args) if args else {},
                neuron_set=opt("relcheck_neuron_set"),
                device=opt("relcheck_device"),
                batch_size=Overrides.parse_batch_size(batch) if batch else None,
                limit=Overrides.parse_limit(limit) if limit is not None else None,
                limit_given=limit is not None,
            )
        return self._overrides

    @property
    def evaluator(self):
        if self._evaluator is None:
            from relneuron_eval.relcheck.run import Evaluator

            self._evaluator = Evaluator()
        return self._evaluator

    @property
    def used(self) -> bool:
        return self._evaluator is not None

    def artifact(self) -> dict[str, Any]:
        records = self._evaluator.records if self._evaluator else []
        return {
            "relcheck": 1,
            "started": self.started,
            "seconds": round(time.time() - self.started, 3),
            "options": {
                k: self.config.getoption(f"relcheck_{k}")
                for k in ("model", "model_args", "neuron_set", "device", "batch_size", "limit")
            },
            "checks": self.checks,
            "evaluations": records,
            "expectations": self.outcomes,
            "summary": {
                "evaluations": len(records),
                "base_evaluations": sum(1 for r in records if r["base"]),
                **{
                    status: sum(1 for o in self.outcomes if o["status"] == status)
                    for status in ("passed", "failed", "error", "skipped")
                },
            },
        }


_SESSION = pytest.StashKey[RelCheckSession]()


def _session(config: pytest.Config) -> RelCheckSession:
    return config.stash[_SESSION]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "relcheck: an expectation from a *.relcheck.yaml file")
    state = RelCheckSession(config)
    config.stash[_SESSION] = state
    given = ("model_args", "batch_size", "limit")
    if any(config.getoption(f"relcheck_{k}", None) is not None for k in given):
        from relneuron_eval.errors import RelNeuronError

        try:
            state.overrides  # noqa: B018 - parse the options now, not at first collection
        except RelNeuronError as exc:
            raise pytest.UsageError(str(exc)) from None


def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    patterns = parent.config.getini("relcheck_patterns") or DEFAULT_PATTERNS
    if any(fnmatch.fnmatch(file_path.name, p) for p in patterns):
        return RelCheckFile.from_parent(parent, path=file_path)
    return None


class RelCheckFailure(Exception):
    """An expectation that did not hold; its message is the whole report."""


class RelCheckFile(pytest.File):
    """One check file; collecting it validates the file and matches its tasks."""

    def collect(self):
        from relneuron_eval.errors import RelNeuronError
        from relneuron_eval.relcheck.parse import parse_check
        from relneuron_eval.relcheck.run import resolve_check

        session = _session(self.config)
        try:
            spec = parse_check(self.path)
            check = resolve_check(spec, session.overrides, session.evaluator)
        except RelNeuronError as exc:
            raise self.CollectError(f"relcheck: {exc}") from None
        session.checks.append(
            {
                "file": str(self.path),
                "model": check.model,
                "neuron_set": check.neuron_set,
                "settings": check.settings,
                "tasks": check.universe,
                "interventions": {k: v.args for k, v in spec.interventions.items()},
            }
        )
        for exp in spec.expectations:
            yield RelCheckItem.from_parent(self, name=exp.id, check=check, expectation=exp)


class RelCheckItem(pytest.Item):
    """One expectation of a check file."""

    def __init__(self, *, check: Any, expectation: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.expectation = expectation
        self.add_marker(pytest.mark.relcheck)

    def register_needs(self) -> None:
        if self.check.skip_reason:
            return
        evaluator = _session(self.config).evaluator
        for config, names, _label in self.check.needs(self.expectation):
            evaluator.plan(config, names)

    def runtest(self) -> None:
        from relneuron_eval.errors import RelNeuronError
        from relneuron_eval.relcheck.run import run_expectation

        session = _session(self.config)
        record: dict[str, Any] = {
            "nodeid": self.nodeid,
            "id": self.expectation.id,
            "file": str(self.path),
            "line": self.expectation.line,
            "kind": self.expectation.kind,
            "intervention": self.expectation.intervention,
            "than": self.expectation.than,
            "expected": self.expectation.describe(),
        }
        session.outcomes.append(record)
        if self.check.skip_reason:
            record["status"] = "skipped"
            record["message"] = self.check.skip_reason
            pytest.skip(self.check.skip_reason)
        try:
            outcome = run_expectation(self.check, self.expectation, session.evaluator)
        except RelNeuronError as exc:
            record.update(status="error", message=str(exc))
            raise
        record.update(status="passed" if outcome.passed else "failed", **outcome.to_dict())
        record["message"] = outcome.message
        self.user_properties.append(("relcheck", outcome.summary))
        if not outcome.passed:
            raise RelCheckFailure(outcome.message)
        self.add_report_section("call", "relcheck", outcome.message)  # the margins, with -rA

    def repr_failure(self, excinfo, style=None):
        from relneuron_eval.errors import RelNeuronError

        if isinstance(excinfo.value, RelCheckFailure):
            return str(excinfo.value)
        if isinstance(excinfo.value, RelNeuronError):
            return f"{self.expectation.id}: could not evaluate: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, self.expectation.line - 1, f"relcheck {self.expectation.id}"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    """After deselection: let every remaining item register the tasks it will need."""
    for item in items:
        if isinstance(item, RelCheckItem):
            item.register_needs()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("relcheck_json", None)
    state = session.config.stash.get(_SESSION, None)
    if not path or state is None:
        return
    from relneuron_eval.atomic import atomic_write

    with atomic_write(Path(path)) as handle:
        json.dump(state.artifact(), handle, indent=2, default=str)
        handle.write("\n")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_SESSION, None)
    if state is None or not state.used or not state.outcomes:
        return
    summary = state.artifact()["summary"]
    line = (
        f"relcheck: {summary['evaluations']} evaluation(s), {summary['base_evaluations']} of the "
        f"base model; {summary['passed']} passed, {summary['failed']} failed, "
        f"{summary['error']} error(s)"
    )
    path = config.getoption("relcheck_json", None)
    if path:
        line += f"; results in {path}"
    terminalreporter.write_line(line)
