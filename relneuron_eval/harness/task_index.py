"""The task manager of every in-process evaluation (report, relcheck, tests).

``lm_eval.simple_evaluate`` without a ``task_manager`` builds ``TaskManager()``, which
indexes lm-eval's ~15k built-in task YAMLs: 12-25 s on a small CPU machine, every call.
Our evaluations mostly read the shipped relfacts tasks (about 100 names, indexed in
0.2 s), so ``task_manager`` indexes the shipped folder plus the caller's folders and
adds lm-eval's own tasks only when a requested name is in neither. A name that is
nowhere is one ``RelNeuronError`` before anything is evaluated.

Indexes are built once per process and folder list. ``metadata`` (what
``simple_evaluate`` would pass by default: the model arguments) gives a copy that
shares the index, so a task that reads it (``custom_dataset`` keywords) sees the
same values as under ``lm_eval run``.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError


def folders(include: Sequence[str | Path] | str | Path = ()) -> tuple[str, ...]:
    """The shipped tasks folder, then the caller's, absolute and without repeats."""
    from relneuron_eval.resources import tasks_dir

    extra = [include] if isinstance(include, (str, Path)) else list(include)
    # abspath, not resolve: a spec named relative to a symlinked task folder stays found
    paths = [os.path.abspath(Path(p).expanduser()) for p in [tasks_dir(), *extra]]
    return tuple(dict.fromkeys(paths))


@functools.cache
def _build(paths: tuple[str, ...], full: bool) -> Any:
    from lm_eval.tasks import TaskManager

    if not full:
        return TaskManager(include_path=list(paths), include_defaults=False)
    # With lm-eval's defaults, the plugin's TaskManager hook adds the shipped folder
    # itself; naming it twice would log "overrides existing task" for each of ours.
    hooked = getattr(TaskManager.__init__, "_relneuron_wrapped", False)
    return TaskManager(include_path=list(paths[1:] if hooked else paths) or None)


def manager(include: Sequence[str | Path] | str | Path = (), *, full: bool = False) -> Any:
    """A cached TaskManager over ``folders(include)`` (``full``: plus lm-eval's own tasks)."""
    return _build(folders(include), full)


def unknown(manager: Any, names: Iterable[Any]) -> list[str]:
    """The requested names ``manager.load`` would not find (YAML paths and configs are found)."""
    missing: list[str] = []
    for spec in names:
        if isinstance(spec, str):
            if spec not in manager.task_index and not Path(spec).is_file():
                missing.append(spec)
        elif isinstance(spec, dict) and "group" in spec:  # an inline group names its members
            members = spec.get("task") or []
            missing += unknown(manager, members if isinstance(members, list) else [members])
    return missing


def task_manager(
    names: Iterable[Any] = (),
    include: Sequence[str | Path] | str | Path = (),
    metadata: dict[str, Any] | None = None,
) -> Any:
    """The TaskManager to pass to ``simple_evaluate`` for ``names`` (task, group, tag names).

    lm-eval's built-in tasks are indexed only when a name is neither shipped nor in
    ``include``; a name found nowhere raises ``RelNeuronError``.
    """
    names = list(names)
    found = manager(include)
    if unknown(found, names):
        found = manager(include, full=True)
        missing = unknown(found, names)
        if missing:
            raise RelNeuronError(
                f"unknown task {', '.join(map(repr, missing))}: not a relneuron task, not in "
                f"lm-eval's built-in tasks, not in the task folders {list(folders(include)[1:])}",
                hint="check the name (`lm_eval ls tasks --include_path DIR` lists them) or "
                "pass the folder of its YAML as an include path",
            )
    return with_metadata(found, metadata)


def with_metadata(manager: Any, metadata: dict[str, Any] | None) -> Any:
    """``manager`` building its tasks with ``metadata``, sharing the cached index."""
    if not metadata:
        return manager
    from lm_eval.tasks._factory import TaskFactory

    out = copy.copy(manager)
    out.metadata = dict(metadata)
    out._factory = TaskFactory(meta=dict(metadata))
    return out
