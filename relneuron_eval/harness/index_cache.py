"""lm-eval's index of its own tasks, cached on disk: every ``lm_eval`` start ~10 s sooner.

lm-eval 0.4.13 parses all ~14,000 YAML files of its built-in tasks whenever a
``TaskManager`` is made (12 CPU seconds here), so every ``lm_eval`` command pays that
before it evaluates anything. The built-in folder belongs to the installed lm-eval and
the index depends only on its files, so the index is kept as JSON in the project's cache
folder (``$RELNEURON_CACHE``), keyed by lm-eval's version and every YAML file's path,
size and modification time: an edited, added or removed file builds it anew. Only that
folder is cached; task folders of users (and ours) are indexed as lm-eval does. Reading
the cache costs ~2 s (listing the files included); it is JSON, never pickle, and one
that cannot be read or whose entries JSON cannot hold is rebuilt or skipped.
``RELNEURON_NO_INDEX_CACHE=1`` switches it off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

OFF_ENV = "RELNEURON_NO_INDEX_CACHE"
FORMAT = 1
log = logging.getLogger(__name__)

Build = Callable[..., dict[str, Any]]


def builtin_root(index_module: ModuleType) -> Path:
    """lm-eval's own task folder: where its ``tasks/_index.py`` lives."""
    return Path(index_module.__file__).resolve().parent


def signature(root: Path, ignore: Iterable[str]) -> str:
    """SHA-256 over lm-eval's version and each YAML file's path, size and mtime."""
    from importlib.metadata import version

    ignored = set(ignore)
    digest = hashlib.sha256(f"{FORMAT}\n{version('lm_eval')}\n{root}\n".encode())
    for path in sorted(root.glob("**/*.yaml"), key=lambda p: p.as_posix()):
        if ignored.isdisjoint(path.parts):
            stat = path.stat()
            digest.update(
                f"{path.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


def _encode(index: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "name": e.name,
            "kind": e.kind.name,
            "yaml_path": str(e.yaml_path) if e.yaml_path is not None else None,
            "cfg": e.cfg,
            "tags": sorted(e.tags),
        }
        for name, e in index.items()
    }


def _decode(data: dict[str, Any], index_module: ModuleType) -> dict[str, Any]:
    entry, kind = index_module.Entry, index_module.Kind
    return {
        name: entry(
            name=v["name"],
            kind=kind[v["kind"]],
            yaml_path=Path(v["yaml_path"]) if v["yaml_path"] is not None else None,
            cfg=v["cfg"],
            tags=set(v["tags"]),
        )
        for name, v in data.items()
    }


def cached_index(root: Path, build: Build, index_module: ModuleType) -> dict[str, Any]:
    """``build([root])``, from the cache when ``root``'s files are unchanged."""
    from relneuron_eval.atomic import atomic_write
    from relneuron_eval.core.embedded import cache_root

    key = signature(root, index_module._IGNORE_DIRS)
    path = cache_root() / "lm-eval-task-index" / f"{key[:24]}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and data.get("signature") == key:
            return _decode(data["index"], index_module)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no cache yet, or one that cannot be read: build it
    index = build([root])
    for old in path.parent.glob("*.json"):  # indexes of earlier versions of the files
        if old != path:
            old.unlink(missing_ok=True)
    try:
        text = json.dumps({"signature": key, "index": _encode(index)})
        if _decode(json.loads(text)["index"], index_module) != index:
            return index  # an entry JSON cannot hold exactly: do not cache
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as handle:
            handle.write(text)
    except (TypeError, ValueError, OSError) as exc:
        log.debug("lm-eval task index not cached: %s", exc)
    return index


def install(index_module: ModuleType) -> None:
    """Serve ``TaskIndex.build``'s first folder from the cache when it is lm-eval's own."""
    task_index = index_module.TaskIndex
    original: Build = task_index.build
    if getattr(original, "_relneuron_wrapped", False):
        return

    def build(paths: Iterable[Path], *, resolve_includes: bool = True) -> dict[str, Any]:
        paths = [Path(p) for p in paths]
        if (
            os.environ.get(OFF_ENV)
            or not resolve_includes
            or not paths
            or paths[0].resolve() != builtin_root(index_module)
        ):
            return original(paths, resolve_includes=resolve_includes)
        index = cached_index(paths[0], original, index_module)
        for name, entry in original(paths[1:]).items() if paths[1:] else ():
            if name in index:  # lm-eval's own message for a later folder's override
                index_module.log.warning(
                    "Task '%s' from %s overrides existing task from %s",
                    name,
                    entry.yaml_path,
                    index[name].yaml_path,
                )
            index[name] = entry
        return index

    build._relneuron_wrapped = True  # type: ignore[attr-defined]
    build.__wrapped_original__ = original  # type: ignore[attr-defined]
    task_index.build = staticmethod(build)
