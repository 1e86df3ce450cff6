"""Several ``relneuron report`` processes on one ``--out``, and ``--plan-only``.

* the runner: two runners (threads) on one folder evaluate each call exactly once, and the
  one left without work waits for the other's results;
* a claim whose process is dead is taken over: a hand-written one, and one left by a
  process killed (SIGKILL) in the middle of an evaluation;
* two report processes with the same arguments: every evaluation exactly once over both,
  the stage boundary waits, and both write the results.json of a single process;
* ``--plan-only`` counts what a run then evaluates, says when later stages are estimated,
  and loads no model.

The report's evaluator is test_report.py's ``HandEval`` (designed per-document outcomes).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

import pytest

from relneuron_eval.evaluation.claims import CLAIM_PREFIX, Holder
from relneuron_eval.evaluation.results import TaskResult
from relneuron_eval.evaluation.runner import Runner, Variant

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_report import HandEval, _args, smol_set

RELATIONS = ["company_hq", "country_capital_city", "landmark_in_country"]


class SlowEval:
    """Every document right; records (variant label, task) per call, thread-safe."""

    def __init__(self, seconds: float, log: list, lock: threading.Lock) -> None:
        self.seconds, self.log, self.lock = seconds, log, lock

    def __call__(self, variant, samples):
        time.sleep(self.seconds)
        with self.lock:
            self.log.extend((variant.label, t) for t in samples)
        return {
            t: TaskResult(t, [{"doc_id": d, "acc": 1.0} for d in docs])
            for t, docs in samples.items()
        }


def _variants(n: int) -> list[Variant]:
    return [
        Variant.make(f"v{i}", "/s.jsonl", "h", groups=f"r{i}", mode="deactivate") for i in range(n)
    ]


def _request_all(runner: Runner, variants: list[Variant]) -> None:
    for v in variants:
        runner.request(v, ["t1", "t2"], {"t1": [0, 1, 2], "t2": [0, 1]})


# ================================================================== runner
def test_two_runners_share_the_calls_and_wait_for_each_other(tmp_path):
    import io

    log: list = []
    lock = threading.Lock()
    variants = _variants(8)
    streams = [io.StringIO(), io.StringIO()]
    runners = [
        Runner(tmp_path, {"model": "m"}, SlowEval(0.15, log, lock), progress=False, stream=s)
        for s in streams
    ]
    for r in runners:
        r.poll_seconds = 0.05
        _request_all(r, variants)
    threads = [threading.Thread(target=r.run) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    # every (variant, task) exactly once, over both runners
    assert sorted(log) == sorted((v.label, t) for v in variants for t in ("t1", "t2"))
    assert sum(r.calls for r in runners) == 8 and all(r.calls > 0 for r in runners)
    for r in runners:
        assert r.evaluated + r.reused == 16  # the other's results are read from the cache
        for v in variants:
            assert r.get(v, "t1", [0, 1, 2]).doc_ids() == {0, 1, 2}
    assert not list(tmp_path.glob(f"{CLAIM_PREFIX}*"))  # claims removed with the results


def test_a_runner_waits_for_a_call_claimed_by_another(tmp_path):
    import io

    log: list = []
    v = _variants(1)[0]
    first = Runner(tmp_path, {"model": "m"}, SlowEval(0.5, log, threading.Lock()), progress=False)
    _request_all(first, [v])
    thread = threading.Thread(target=first.run)
    thread.start()
    claim = tmp_path / f"{CLAIM_PREFIX}{first.claim_key(v)}"
    deadline = time.time() + 10
    while not claim.exists() and time.time() < deadline:
        time.sleep(0.01)
    stream = io.StringIO()
    second = Runner(tmp_path, {"model": "m"}, SlowEval(0, log, threading.Lock()), stream=stream)
    second.progress, second.poll_seconds = False, 0.05
    _request_all(second, [v])
    second.run()  # returns once the first runner's results are saved
    thread.join(10)
    assert (first.calls, second.calls, second.reused) == (1, 0, 2)
    assert sorted(log) == [("v0", "t1"), ("v0", "t2")]
    assert second.get(v, "t2", [0, 1]).values("acc") == [1.0, 1.0]
    said = stream.getvalue()
    assert f"waiting for 1 evaluation(s) claimed by pid {os.getpid()}" in said


def _run_within(runner: Runner, seconds: float = 15.0) -> None:
    """``runner.run()``, failing (not hanging) if it waits for a claim it should take."""
    errors: list = []

    def target() -> None:
        try:
            runner.run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "run() still waiting: the claim was not taken over"
    if errors:
        raise errors[0]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_stale_claim_is_taken_over(tmp_path):
    import io

    log: list = []
    v = _variants(1)[0]
    stream = io.StringIO()
    runner = Runner(tmp_path, {"model": "m"}, SlowEval(0, log, threading.Lock()), stream=stream)
    runner.progress = False
    claim = tmp_path / f"{CLAIM_PREFIX}{runner.claim_key(v)}"
    record = {"pid": _dead_pid(), "host": socket.gethostname(), "started": "then", "token": "x"}
    claim.write_text(json.dumps(record))
    _request_all(runner, [v])
    _run_within(runner)
    assert log == [("v0", "t1"), ("v0", "t2")] and not claim.exists()
    assert f"taking over the evaluation claimed by pid {record['pid']}" in stream.getvalue()
    # a live pid holds its claim; one on another host cannot be checked, so it holds too
    assert not Holder(os.getpid(), socket.gethostname(), "now", "y").is_stale()
    assert not Holder(record["pid"], "elsewhere", "now", "y").is_stale()
    assert Holder(record["pid"], socket.gethostname(), "now", "y").is_stale()


def test_a_claim_of_another_host_names_its_file_and_ends_when_deleted(tmp_path):
    """Another host's process cannot be checked: the runner waits (never takes over) and
    says which file to delete; deleting it lets the run go on."""
    import io

    log: list = []
    v = _variants(1)[0]
    stream = io.StringIO()
    runner = Runner(tmp_path, {"model": "m"}, SlowEval(0, log, threading.Lock()), stream=stream)
    runner.progress, runner.poll_seconds = False, 0.05
    claim = tmp_path / f"{CLAIM_PREFIX}{runner.claim_key(v)}"
    record = {"pid": _dead_pid(), "host": "elsewhere", "started": "then", "token": "x"}
    claim.write_text(json.dumps(record))
    _request_all(runner, [v])
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while "waiting for" not in stream.getvalue() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # several polls: the claim still holds
    assert thread.is_alive() and claim.exists() and log == []
    said = stream.getvalue()
    assert f"claimed by pid {record['pid']} on elsewhere" in said
    assert f"claim file {claim}: delete it if that process is gone" in said
    claim.unlink()
    thread.join(10)
    assert not thread.is_alive() and log == [("v0", "t1"), ("v0", "t2")]


KILLED_WORKER = """
import sys, time
from relneuron_eval.evaluation.runner import Runner, Variant
def hang(variant, samples):
    print("evaluating", flush=True)
    time.sleep(60)
runner = Runner(sys.argv[1], {"model": "m"}, hang, progress=False)
v = Variant.make("v0", "/s.jsonl", "h", groups="r0", mode="deactivate")
runner.request(v, ["t1", "t2"], {"t1": [0, 1, 2], "t2": [0, 1]})
runner.run()
"""


def test_a_process_killed_mid_call_leaves_a_claim_the_next_run_takes_over(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_WORKER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "evaluating"
        claims = list(tmp_path.glob(f"{CLAIM_PREFIX}*"))
        assert len(claims) == 1 and json.loads(claims[0].read_text())["pid"] == child.pid
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
    assert claims[0].exists()  # nothing removed it
    log: list = []
    runner = Runner(tmp_path, {"model": "m"}, SlowEval(0, log, threading.Lock()), progress=False)
    _request_all(runner, _variants(1))
    _run_within(runner)
    assert sorted(log) == [("v0", "t1"), ("v0", "t2")] and not claims[0].exists()


# ============================================================ the report
def _report_args(rs: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(out), "--neuron-set", str(rs), "--relations", ",".join(RELATIONS),
        "--experiments", "interference,cumulativity", "--top-k", "40", "--ks", "10,all",
        "--limit", "4", "--limit-own", "4", "--matrix-relations", "auto:2",
        "--cumulativity-relations", "auto:2", *extra,
    ]  # fmt: skip


def _until(check: Any, seconds: float = 10.0) -> None:
    deadline = time.time() + seconds
    while not check() and time.time() < deadline:
        time.sleep(0.02)


def _worker(folder: Path, name: str, names: list[str], argv: list[str], barrier: Any) -> None:
    """One report process: HandEval, each call logged to ``folder/calls.jsonl``.

    With peers, the interleaving is made certain rather than likely: the base call
    returns only once a peer says it waits for it (the stage boundary), and a worker's
    first later call only once a peer has started one too (both share stage 2). A peer
    that never does so fails the test's assertions after 10 s.
    """
    from relneuron_eval.report.command import build_setup, run_report

    sys.stderr = open(folder / f"stderr-{name}.txt", "w", buffering=1)  # lines, for peers
    log = folder / "calls.jsonl"
    peers = [n for n in names if n != name]

    def peer_waits() -> bool:
        return any("waiting for" in (folder / f"stderr-{p}.txt").read_text() for p in peers)

    def peer_called() -> bool:
        return any(json.loads(line)[0] in peers for line in log.read_text().splitlines())

    try:
        Runner.poll_seconds = 0.1
        setup, notes = build_setup(_args(*argv), check_model=False)
        inner = HandEval(set())

        def evaluate(variant, samples):
            with open(log, "a") as handle:
                line = [name, variant.label, variant.spec.to_model_args(), sorted(samples)]
                handle.write(json.dumps(line) + "\n")
            if peers:
                _until(peer_waits if variant.is_base else peer_called)
            return inner(variant, samples)

        barrier.wait(30)  # start together
        run_report(setup, evaluate, notes=notes, progress=False)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stderr.flush()


def _workers(folder: Path, out: Path, rs: Path, names: list[str]) -> list[str]:
    """Report processes with the same arguments on ``out`` at once; their stderr.

    Forked from this process, which has imported and warmed what a report needs
    (transformers for the prefix2 audit, matplotlib, the task fingerprints): a fresh
    interpreter spends ~15 s on that, which is not what is tested here.
    """
    context = multiprocessing.get_context("fork")
    folder.mkdir(exist_ok=True)
    barrier = context.Barrier(len(names))
    argv = _report_args(rs, out)
    procs = [context.Process(target=_worker, args=(folder, n, names, argv, barrier)) for n in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    errs = [(folder / f"stderr-{n}.txt").read_text() for n in names]
    assert [p.exitcode for p in procs] == [0] * len(names), errs
    return errs


def _calls(folder: Path) -> list[list]:
    return [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]


def _stable(path: Path) -> dict:
    """results.json without what differs between runs (times, this process's counts)."""
    data = json.loads(path.read_text())
    for key in ("created", "wall_seconds", "compute_seconds", "evaluations", "command"):
        data["meta"].pop(key)
    return data


def test_two_report_processes_share_one_out(tmp_path):
    from relneuron_eval.data.prefix_check import report_record
    from relneuron_eval.report.command import build_setup
    from relneuron_eval.report.planning import plan_report
    from relneuron_eval.report.plots import _plt

    rs = smol_set(tmp_path / "rs.jsonl.gz", dict.fromkeys(RELATIONS, 40))
    # warm what the workers inherit: imports, the task index, the task fingerprints
    report_record("smollm2-135m", RELATIONS)
    _plt()
    plan_report(build_setup(_args(*_report_args(rs, tmp_path / "alone")), check_model=False)[0])
    _workers(tmp_path / "single", tmp_path / "alone", rs, ["single"])
    errs = _workers(tmp_path / "pair", tmp_path / "shared", rs, ["a", "b"])
    pair, single = _calls(tmp_path / "pair"), _calls(tmp_path / "single")

    def evaluations(calls):
        return sorted((json.dumps(args, sort_keys=True), t) for _, _, args, ts in calls for t in ts)

    assert evaluations(pair) == evaluations(single)  # each evaluation once, none missing
    assert {name for name, *_ in pair} == {"a", "b"}  # both did some
    base_by = next(name for name, label, *_ in pair if label == "base")
    waiter = errs[["a", "b"].index("b" if base_by == "a" else "a")]
    assert "waiting for 1 evaluation(s) claimed by pid" in waiter  # the stage boundary
    assert _stable(tmp_path / "shared" / "results.json") == _stable(
        tmp_path / "alone" / "results.json"
    )
    assert not list((tmp_path / "shared" / "runs").glob(f"{CLAIM_PREFIX}*"))


# ============================================================ --plan-only
class CountingHand(HandEval):
    def __init__(self) -> None:
        super().__init__(set())
        self.results = self.documents = 0

    def __call__(self, variant, samples):
        self.results += len(samples)
        self.documents += sum(len(d) for d in samples.values())
        return super().__call__(variant, samples)


def test_plan_counts_what_a_run_evaluates(tmp_path):
    from relneuron_eval.report.command import build_setup, run_report
    from relneuron_eval.report.planning import plan_report, render_plan

    rs = smol_set(tmp_path / "rs.jsonl.gz", dict.fromkeys(RELATIONS, 40))
    explicit = ("--matrix-relations", "company_hq,landmark_in_country")
    every = ("--experiments", "interference,cumulativity,versatility", "--langs", "de")
    argv = _report_args(rs, tmp_path / "out", *explicit, *every)
    setup, notes = build_setup(_args(*argv), check_model=False)
    rows = plan_report(setup)
    names = [r.name for r in rows]
    assert names[0].startswith("stage 1") and names[-2:] == ["stage 2 together", "total"]
    assert [r.estimated for r in rows if r.name.endswith("interference")] == [None]
    cumul = next(r for r in rows if r.name.endswith("cumulativity"))
    assert "auto:2 relations: base accuracies not cached yet" in cumul.estimated
    assert "(estimated)" in render_plan(setup, rows)
    ev = CountingHand()
    _, runner = run_report(setup, ev, notes=notes, progress=False)
    total = rows[-1]
    assert (total.calls, total.n_computed, total.documents) == (
        ev.calls,
        ev.results,
        ev.documents,
    )
    assert (runner.calls, runner.evaluated) == (total.calls, total.n_computed)
    assert ev.calls > len(RELATIONS)
    again = plan_report(setup)  # everything cached now, and the auto:2 choice is known
    assert again[-1].calls == 0 and again[-1].cached == len(again[-1].results) == len(total.results)
    assert not any(r.estimated for r in again)


def test_plan_only_cli_loads_no_model_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from relneuron_eval import cli
    from relneuron_eval.evaluation.runner import LoadedModel

    def no_load(self):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(LoadedModel, "_load", no_load)
    rs = smol_set(tmp_path / "rs.jsonl.gz", dict.fromkeys(RELATIONS, 40))
    out = tmp_path / "out"
    argv = _report_args(rs, out)
    assert cli.main(["report", "--out", *argv, "--plan-only"]) == 0
    text = capsys.readouterr().out
    assert "lm-eval calls" in text and "stage 2: interference (estimated)" in text
    assert "base accuracies not cached yet" in text
    assert not out.exists()


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
