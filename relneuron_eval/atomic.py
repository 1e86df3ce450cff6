"""Atomic file and folder writes: readers see the old content or the new, never half."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from relneuron_eval.errors import RelNeuronError


def _default_mode(base: int = 0o666) -> int:
    """``base`` minus the process umask: what ``open`` / ``mkdir`` would have created."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Write to a temporary file in the same folder and rename it over ``path`` on success.

    If the body raises (or the process dies), ``path`` is left untouched and the
    temporary file is removed (or, after a crash, left as a hidden ``.tmp`` file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        os.chmod(tmp, _default_mode())  # mkstemp's 0600 would make outputs private
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# ``mkdtemp``'s random part: 8 characters of ``tempfile``'s name alphabet
_RANDOM = "[a-z0-9_]{8}"


def _backups(path: Path) -> list[Path]:
    """Backups of ``path`` left by an interrupted replace (this module's names only).

    Exactly ``.NAME.<8 random characters>.old`` as ``_swap`` makes them: a looser glob
    (``.NAME.*.old``) would take a sibling's backup (``.out.x.ab12cd34.old`` for ``out``)
    for this folder's and refuse to replace it.
    """
    exact = re.compile(rf"\.{re.escape(path.name)}\.{_RANDOM}\.old")
    legacy = path.with_name(f".{path.name}.old")  # the name earlier versions used
    candidates = path.parent.glob(f".{glob.escape(path.name)}.*.old")
    found = sorted(p for p in candidates if exact.fullmatch(p.name))
    return [legacy, *found] if legacy.exists() or legacy.is_symlink() else found


def _check_replaceable(path: Path, overwrite: bool) -> None:
    """Refuse, before any work, what replacing ``path`` could lose."""
    if overwrite and (path.is_symlink() or (path.exists() and not path.is_dir())):
        raise RelNeuronError(
            "exists and is not a folder; nothing was replaced",
            path=path,
            hint="remove it or choose another output path",
        )
    left = _backups(path) if overwrite else []  # without overwrite nothing is moved
    if left:
        state = "is missing" if not path.exists() else "was replaced since"
        raise RelNeuronError(
            f"{left[0]} holds an earlier content of this folder (a replace was interrupted, "
            f"and the folder {state}); it is not deleted automatically",
            path=path,
            hint=f"move it back to {path.name} or delete it, then run again",
        )


def _swap(tmp: Path, path: Path) -> None:
    """Put ``tmp`` in place of the folder ``path``; on failure ``path`` is restored.

    The old folder goes to a backup folder made here (a unique name), so nothing that was
    not made by this call is ever deleted, and a crash between the two renames leaves
    the old content under that name (``_check_replaceable`` names it next time).
    """
    backup = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    moved = False
    try:
        os.replace(path, backup)  # a folder may replace an empty folder
        moved = True
        os.replace(tmp, path)
    except BaseException:
        if moved and not path.exists():
            os.replace(backup, path)
        with contextlib.suppress(OSError):
            backup.rmdir()  # only ever empty here: the one made above
        raise
    shutil.rmtree(backup, ignore_errors=True)
    if backup.exists():
        print(f"notice: could not remove the old content, now in {backup}", file=sys.stderr)


@contextlib.contextmanager
def atomic_dir(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name and move it into place when the body succeeds.

    With ``overwrite`` an existing folder ``path`` is replaced (a file or link there is
    refused before the body runs, as is a backup of an earlier interrupted replace).
    """
    path = Path(path)
    _check_replaceable(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, _default_mode(0o777))  # mkdtemp's 0700 likewise
        yield tmp
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise FileExistsError(path)
            _check_replaceable(path, overwrite)  # it may have changed while the body ran
            _swap(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
