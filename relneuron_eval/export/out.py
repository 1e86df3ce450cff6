"""Where ``relneuron export`` writes: ``--out`` checks, ``--force``, interrupted exports.

An export is built in a hidden ``.<out>.XXXX.tmp`` folder next to ``--out`` and moved into
place when complete (:func:`relneuron_eval.atomic.atomic_dir`). A killed export leaves
that folder behind (hundreds of MB for a checkpoint), so each one carries a small writer
file (pid, process start time, host); the next export to the same ``--out`` removes the
folders whose writer is gone and leaves every other folder alone.

``--force`` replaces a folder only when it holds nothing but the files a previous export
wrote (listed under ``files`` in its ``relneuron.json``): a user's own files in ``--out``
are refused, never deleted.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from relneuron_eval.errors import RelNeuronError

MANIFEST = "relneuron.json"
WRITER = ".relneuron-export-writer.json"
FORCE_HELP = (
    "replace --out when it holds a previous `relneuron export` and nothing else (the "
    "files listed in its relneuron.json); a folder with any other file is refused, never "
    "deleted. The old folder is removed only after the new export is complete"
)
# Files whose presence means "this folder holds a model or an adapter".
_MODEL_FILES = (
    "config.json",
    "adapter_config.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    MANIFEST,
)
_MODEL_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt")
# What an export wrote before relneuron.json listed its files (manifests without "files").
_LEGACY_FILES = re.compile(
    r"(README\.md|relneuron\.json|config\.json|generation_config\.json|adapter_config\.json"
    r"|adapter_model\.safetensors|model(-\d{5}-of-\d{5})?\.safetensors"
    r"|model\.safetensors\.index\.json|tokenizer(_config)?\.json|special_tokens_map\.json"
    r"|added_tokens\.json|vocab\.json|merges\.txt|tokenizer\.model|chat_template\.jinja)"
)


# ================================================================ --out and --force
def _holds_model(folder: Path) -> bool:
    if any((folder / name).exists() for name in _MODEL_FILES):
        return True
    return any(p.is_file() and p.name.endswith(_MODEL_SUFFIXES) for p in folder.iterdir())


def _export_files(folder: Path) -> set[str] | None:
    """The files a previous export wrote into ``folder`` (None: not an export)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != "relneuron-export":
        return None
    files = manifest.get("files")
    if isinstance(files, list) and all(isinstance(f, str) for f in files):
        return set(files)
    legacy = {p.name for p in folder.iterdir() if _LEGACY_FILES.fullmatch(p.name)}
    return legacy | {MANIFEST}


def foreign_entries(folder: Path) -> list[str]:
    """Paths in ``folder`` that no previous export wrote (all of them if it is no export)."""
    ours = _export_files(folder) or set()
    foreign = []
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_dir() and not path.is_symlink():
            if not any(f.startswith(name + "/") for f in ours) and not any(path.iterdir()):
                foreign.append(name + "/")
            continue
        if name not in ours:
            foreign.append(name)
    return foreign


def _check_force(out: Path) -> None:
    foreign = foreign_entries(out)
    if not foreign:
        return
    shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
    what = (
        "holds files a previous relneuron export did not write"
        if (out / MANIFEST).is_file()
        else "was not written by relneuron export"
    )
    raise RelNeuronError(
        f"--out {what} ({shown}); --force replaces only a previous export, so nothing was "
        "written or deleted",
        path=out,
        hint="move those files elsewhere, or choose a new folder for the export",
    )


def check_out(out: str | Path, *, force: bool, model_path: Path | str | None = None) -> Path:
    """The output folder, or a clear refusal; nothing is written or deleted here."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise RelNeuronError("--out exists and is not a folder", path=out)
    resolved = out.resolve()
    if model_path is not None and Path(model_path).exists():
        base = Path(model_path).resolve()
        if resolved == base or resolved in base.parents:
            raise RelNeuronError(
                "--out would replace the base model's own folder",
                path=out,
                hint="choose a new folder for the export",
            )
    if out.is_dir() and any(out.iterdir()):
        if force:
            _check_force(out)
        else:
            kind = "already holds a model" if _holds_model(out) else "is not empty"
            raise RelNeuronError(
                f"--out {kind}; nothing was written",
                path=out,
                hint="choose a new folder, or pass --force to replace a previous export "
                "once the new one is complete",
            )
    return out


def written_files(folder: Path) -> list[str]:
    """What an export put in ``folder`` (plus its manifest, written last): for ``--force``."""
    names = {
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.name != WRITER
    }
    return sorted(names | {MANIFEST})


# ============================================================ interrupted exports
def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to detect a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _start_time(pid)
    return started is None or now is None or now == started


def _stale(folder: Path) -> int | None:
    """The dead writer's pid when ``folder`` is an abandoned export of this host, else None."""
    try:
        writer = json.loads((folder / WRITER).read_text(encoding="utf-8"))
        pid, host, started = int(writer["pid"]), str(writer["host"]), writer.get("started")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not ours, or still being set up: leave it alone
    if host != socket.gethostname() or _alive(pid, started):
        return None
    return pid


def _size_mb(folder: Path) -> float:
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 1e6


def remove_stale(out: Path) -> list[Path]:
    """Remove the temporary folders of killed exports to ``out``; say so on stderr."""
    removed = []
    if not out.parent.is_dir():
        return removed
    # the name is a literal: "[v1]" in --out would otherwise be a glob character class
    for folder in sorted(out.parent.glob(f".{glob.escape(out.name)}.*.tmp")):
        if not folder.is_dir() or folder.is_symlink():
            continue
        pid = _stale(folder)
        if pid is None:
            continue
        size = _size_mb(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
        print(
            f"relneuron export: removed {folder} ({size:.0f} MB), the unfinished output of an "
            f"interrupted export (process {pid}, no longer running)",
            file=sys.stderr,
        )
    return removed


@contextlib.contextmanager
def build_dir(out: Path, *, force: bool) -> Iterator[Path]:
    """An atomic ``out`` with a writer file, after removing stale ones; re-checks ``out`` last."""
    from relneuron_eval.atomic import atomic_dir

    remove_stale(out)
    with atomic_dir(out, overwrite=True) as tmp:
        writer = {"pid": os.getpid(), "host": socket.gethostname()}
        writer["started"] = _start_time(os.getpid())
        (tmp / WRITER).write_text(json.dumps(writer))
        yield tmp
        check_out(out, force=force)  # --out may have changed while the export was built
        (tmp / WRITER).unlink()
