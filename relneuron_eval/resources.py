"""Locate the shipped ``tasks/`` and ``neuron_sets/`` folders.

In a wheel they live in ``relneuron_eval/_data/``; in a source checkout (editable
install, tests) they are the top-level folders next to the package.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    installed = _PACKAGE_DIR / "_data" / name
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / name


def tasks_dir() -> Path:
    """The folder of lm-eval task YAMLs that ships with the package."""
    return _data_dir("tasks")


def neuron_sets_dir() -> Path:
    """The folder of neuron sets that ship with the package."""
    return _data_dir("neuron_sets")


def resolve_shipped(path: str | Path) -> Path:
    """Resolve ``neuron_sets/...`` or ``tasks/...`` relative paths to the shipped copy.

    A path that exists as given wins; otherwise a path starting with ``neuron_sets/`` or
    ``tasks/`` is looked up in the installed data, so README commands work from any cwd.
    """
    p = Path(path).expanduser()
    if p.exists() or p.is_absolute():
        return p
    parts = p.parts
    if parts and parts[0] in ("neuron_sets", "tasks"):
        candidate = _data_dir(parts[0]).joinpath(*parts[1:])
        if candidate.exists():
            return candidate
    return p


def file_hash(path: str | Path, length: int = 8) -> str:
    """Short SHA-256 of a (shipped) file's bytes, used in variant names."""
    digest = hashlib.sha256(resolve_shipped(path).read_bytes()).hexdigest()
    return digest[:length]
