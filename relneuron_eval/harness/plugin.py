"""Registration of relneuron-eval's model, tasks and output naming inside lm-eval.

Called by ``_hook`` right after the corresponding lm-eval module has executed, so
nothing here runs unless lm-eval is imported. Every function is idempotent.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from types import ModuleType
from typing import Any

MODEL_NAME = "relneuron-hf"
MODEL_TARGET = "relneuron_eval.harness.lm_model:RelNeuronLM"
TRACEBACK_ENV = "RELNEURON_TRACEBACK"
ERROR_EXIT_CODE = 2  # the same as ``relneuron``'s own command line


def register_model() -> None:
    """Register ``relneuron-hf`` as a lazy placeholder (the class is imported on use)."""
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


def on_models_loaded(module: ModuleType) -> None:
    register_model()


def on_task_manager_loaded(module: ModuleType) -> None:
    """Add our task folder to every TaskManager that includes lm-eval's defaults.

    An lm-eval with task entry points (#4015's ``discover_plugin_task_paths``) finds it
    through ours (pyproject.toml) itself; adding it again would index every task twice.
    """
    import importlib

    from relneuron_eval.harness import index_cache

    # lm-eval's own ~14k task YAMLs, indexed once and cached
    index_cache.install(importlib.import_module("lm_eval.tasks._index"))
    if hasattr(module, "discover_plugin_task_paths"):
        return
    manager_cls = module.TaskManager
    if getattr(manager_cls.__init__, "_relneuron_wrapped", False):
        return
    original_init = manager_cls.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, include_path=None, include_defaults=True, **kwargs):
        if include_defaults:
            from relneuron_eval.resources import tasks_dir

            ours = str(tasks_dir())
            if include_path is None:
                include_path = [ours]
            elif isinstance(include_path, (list, tuple)):
                include_path = [ours, *include_path]
            else:
                include_path = [ours, include_path]
        original_init(
            self, *args, include_path=include_path, include_defaults=include_defaults, **kwargs
        )

    __init__._relneuron_wrapped = True  # type: ignore[attr-defined]
    manager_cls.__init__ = __init__


def on_evaluation_tracker_loaded(module: ModuleType) -> None:
    """Name output folders and leaderboard rows after the variant, not only the base model."""
    tracker_cls = module.GeneralConfigTracker
    original = tracker_cls._get_model_name
    if getattr(original, "_relneuron_wrapped", False):
        return

    def _get_model_name(model_args):
        from relneuron_eval.core.variant import variant_name_from_model_args

        base = original(model_args)
        name = variant_name_from_model_args(model_args, base)
        return name if name is not None else base

    _get_model_name._relneuron_wrapped = True  # type: ignore[attr-defined]
    tracker_cls._get_model_name = staticmethod(_get_model_name)


# ------------------------------------------------------------------ lm_eval command line
def relneuron_error_in(exc: BaseException | None) -> BaseException | None:
    """The ``RelNeuronError`` behind ``exc``: itself or an explicit ``raise ... from`` cause.

    Implicit context ("during handling of ... another exception occurred") is not
    followed: a different error raised there is not bad input of ours.
    """
    from relneuron_eval.errors import RelNeuronError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, RelNeuronError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None


UNKNOWN_TASKS = "Tasks not found: "  # lm-eval 0.4.13's message (EvaluatorConfig.process_tasks)


def _our_task_names() -> list[str]:
    """Names of the shipped tasks, groups and tags (their folder only: 0.2 s to index)."""
    from relneuron_eval.harness import task_index

    return sorted(str(name) for name in task_index.manager().task_index)


def unknown_task_error(exc: BaseException) -> BaseException | None:
    """lm-eval's "Tasks not found" for a name close to one of ours, with the close names.

    ``relfacts_capital_city`` (for ``relfacts_country_capital_city``) or ``relfacts_mc``
    (the group is ``relfacts-mc``) used to end in lm-eval's traceback with no hint. Names
    near none of ours are left to lm-eval.
    """
    import difflib

    from relneuron_eval.errors import RelNeuronError, clip, clip_list

    text = str(exc)
    if not isinstance(exc, ValueError) or not text.startswith(UNKNOWN_TASKS):
        return None
    missing = [n.strip() for n in text[len(UNKNOWN_TASKS) :].split(",") if n.strip()]
    ours = _our_task_names()
    hints = []
    for name in missing[:5]:
        close = difflib.get_close_matches(name[:200], ours, n=3, cutoff=0.75)
        prefixed = [t for t in ours if t.startswith(name + "_")]
        if prefixed and f"{name}_*" not in close:
            close.append(f"'{name}_*' ({len(prefixed)} tasks)")
        if close:
            hints.append(f"{clip(name)} -> {', '.join(close)}")
    if not hints:
        return None
    return RelNeuronError(
        f"task(s) not found: {clip_list(missing, 5)}",
        path="--tasks",
        hint="close names: " + "; ".join(hints) + "; relfacts groups are hyphenated "
        "(relfacts-mc); `lm_eval ls tasks` lists every name",
    )


def wants_traceback(args: Any) -> bool:
    """Tracebacks on request only: ``RELNEURON_TRACEBACK=1`` or lm-eval's DEBUG level."""
    if os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0"):
        return True
    levels = (getattr(args, "verbosity", None), os.environ.get("LMEVAL_LOG_LEVEL"))
    return any(str(level or "").strip().upper() == "DEBUG" for level in levels)


def _announce_start_up(args: Any) -> None:
    """Say what the silent first 10-30 s of an ``lm_eval run`` with our model or tasks are."""
    tasks = getattr(args, "tasks", None) or []
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    ours = getattr(args, "model", None) == MODEL_NAME or any("relfacts" in str(t) for t in tasks)
    if getattr(args, "command", None) != "run" or not ours:
        return
    logging.getLogger("lm_eval.relneuron").info(
        "relneuron-eval: lm-eval is importing torch/transformers and indexing its tasks "
        "(10-30 s on a small CPU machine) ..."
    )


def on_cli_loaded(module: ModuleType) -> None:
    """Bad input under ``lm_eval`` is one ``error:`` line on stderr and exit code 2
    (our errors, and lm-eval's unknown-task error for names close to ours).

    Every entry point (the ``lm_eval``/``lm-eval`` scripts, ``python -m lm_eval``,
    ``accelerate launch -m lm_eval``) runs ``HarnessCLI.execute``; other exceptions
    pass through unchanged.
    """
    cli_cls = module.HarnessCLI
    original = cli_cls.execute
    if getattr(original, "_relneuron_wrapped", False):
        return

    @functools.wraps(original)
    def execute(self: Any, args: Any) -> Any:
        _announce_start_up(args)
        try:
            return original(self, args)
        except Exception as exc:
            error = relneuron_error_in(exc) or unknown_task_error(exc)
            if error is None:
                raise
            if wants_traceback(args):
                traceback.print_exc()
            sys.stdout.flush()
            print(f"error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(ERROR_EXIT_CODE) from None

    execute._relneuron_wrapped = True  # type: ignore[attr-defined]
    cli_cls.execute = execute


def _child_exit_codes(exc: BaseException) -> list[int]:
    """Exit codes of the failed processes behind an ``accelerate launch`` error."""
    if isinstance(getattr(exc, "returncode", None), int):  # subprocess.CalledProcessError
        return [exc.returncode]  # type: ignore[attr-defined]
    failures = getattr(exc, "failures", None)  # torch's ChildFailedError (multi-process)
    if isinstance(failures, dict):
        return [int(getattr(f, "exitcode", 1)) for f in failures.values()]
    return []


def on_accelerate_launch_loaded(module: ModuleType) -> None:
    """``accelerate launch -m lm_eval`` exits 2 without its own traceback on bad input.

    Each lm_eval process has printed its ``error:`` line (or argparse its usage) and
    exited 2; the launcher would bury that under a 40-line ``ChildFailedError``. Other
    scripts and other failures are left to accelerate.
    """
    original = module.launch_command
    if getattr(original, "_relneuron_wrapped", False):
        return

    @functools.wraps(original)
    def launch_command(args: Any) -> Any:
        script = os.path.basename(str(getattr(args, "training_script", "")))
        if script not in ("lm_eval", "lm-eval", "lm_eval.__main__"):
            return original(args)
        try:
            return original(args)
        except Exception as exc:
            codes = _child_exit_codes(exc)
            if ERROR_EXIT_CODE in codes and all(c == ERROR_EXIT_CODE or c < 0 for c in codes):
                raise SystemExit(ERROR_EXIT_CODE) from None
            raise

    launch_command._relneuron_wrapped = True  # type: ignore[attr-defined]
    module.launch_command = launch_command
