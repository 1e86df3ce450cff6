"""lm-eval's environment record, collected once per process."""

from __future__ import annotations

from typing import Any


def env_info_once() -> None:
    """Make lm-eval collect its environment record once per process, not per call.

    ``simple_evaluate`` ends with ``add_env_info`` (torch's ``collect_env``: ``pip list``
    and other subprocesses), 2.1 s of every call on the 2-core machine, more than a tiny
    model's whole evaluation. The record cannot change within a process, so the first
    call's is copied into every later result (same keys, same values).
    """
    import copy

    import lm_eval.evaluator as lm_evaluator

    original = lm_evaluator.add_env_info
    if getattr(original, "relneuron_once", False):
        return
    first: dict[str, Any] = {}

    def add_env_info(storage: dict[str, Any]) -> None:
        if not first:
            original(first)
        storage.update(copy.deepcopy(first))

    add_env_info.relneuron_once = True  # type: ignore[attr-defined]
    lm_evaluator.add_env_info = add_env_info
