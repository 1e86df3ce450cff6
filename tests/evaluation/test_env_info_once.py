"""lm-eval's environment record is collected once per process, not per evaluation.

``simple_evaluate`` ends with ``add_env_info``, which runs ``pip list`` and other
subprocesses (2.1 s of every call on the 2-core machine, more than a tiny model's whole
evaluation; 13 leaderboard calls on a tiny Llama spent 57 CPU s before, see
tests/leaderboard). After ``env_info_once`` a second record is the first one's copy and
starts no subprocess.
"""

from __future__ import annotations

import subprocess


def test_second_record_starts_no_subprocess_and_is_identical(monkeypatch):
    import lm_eval.evaluator as lm_evaluator

    from relneuron_eval.harness.env_info import env_info_once

    # restored after the test, so the wrapper does not leak into later tests of this worker
    monkeypatch.setattr(lm_evaluator, "add_env_info", lm_evaluator.add_env_info)
    env_info_once()
    env_info_once()  # idempotent: wraps once
    assert getattr(lm_evaluator.add_env_info, "relneuron_once", False)
    first: dict = {}
    lm_evaluator.add_env_info(first)
    started = []
    real_popen = subprocess.Popen

    def counting(*args, **kwargs):
        started.append(args)
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", counting)
    second: dict = {}
    lm_evaluator.add_env_info(second)
    assert started == []
    assert second == first and "pretty_env_info" in second
    second["pretty_env_info"] = "changed"
    third: dict = {}
    lm_evaluator.add_env_info(third)
    assert third == first  # a caller's edit does not leak into the next record
