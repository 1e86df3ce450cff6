"""Reading a user's file: a missing or unreadable one is a RelNeuronError that names it.

One definition, so the neuron-set reader and the results reader word these alike.
"""

from __future__ import annotations

from pathlib import Path

from relneuron_eval.errors import RelNeuronError


def read_bytes(path: Path, what: str, *, hint: str | None = None) -> bytes:
    """The file's bytes; ``what`` names the file in errors, ``hint`` says what to check
    when it does not exist."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise RelNeuronError(f"{what} not found", path=path, hint=hint) from None
    except OSError as exc:
        raise RelNeuronError(f"cannot read {what}: {exc.strerror}", path=path) from None
