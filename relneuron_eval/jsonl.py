"""Reading JSON-lines files (facts, sample logs) with errors that say ``FILE:LINE``.

One reader for every JSONL input, so each of them reports a broken line the same way
and none of them accepts what JSON does not: ``NaN``/``Infinity`` (Python's ``json``
takes them by default) are refused, and every non-blank line must be an object. Lines
end at ``\\n`` only, as JSON Lines defines them: a U+2028 or form feed inside a string (a
model's generation in a sample log) is part of its line, not a line break
(``str.splitlines`` would cut it). Bytes are decoded line by line, so a bad byte is
reported on its own line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError

HINT = "each line must be one JSON object"


def _reject_constant(name: str) -> float:
    """``json.loads``'s ``parse_constant``: refuse ``NaN``/``Infinity``/``-Infinity``,
    which Python's ``json`` accepts but JSON (and other readers of the file) do not."""
    raise ValueError(f"{name} is not a JSON number")


def parse_value(text: str, path: str | Path, line: int, hint: str = HINT) -> Any:
    """One line as any JSON value (for readers with their own message for a non-object,
    e.g. a neuron set's header); invalid JSON raises with ``path:line``."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RelNeuronError(
            f"not valid JSON ({exc.msg})", path=path, line=line, hint=hint
        ) from None
    except (ValueError, RecursionError) as exc:
        raise RelNeuronError(f"not valid JSON ({exc})", path=path, line=line, hint=hint) from None


def parse_line(text: str, path: str | Path, line: int) -> dict[str, Any]:
    """One JSONL line as an object; anything else raises with ``path:line``."""
    value = parse_value(text, path, line)
    if not isinstance(value, dict):
        raise RelNeuronError(
            f"expected a JSON object, got a JSON {type(value).__name__}",
            path=path,
            line=line,
            hint=HINT,
        )
    return value


class JsonLines:
    """Iterate ``(line number, object)`` over the non-blank lines of a JSONL file.

    ``lines`` is the number of lines read so far (blank ones included; after a full
    iteration: the file's line count). ``missing`` is the message for a missing file.
    """

    def __init__(self, path: str | Path, *, missing: str = "file not found") -> None:
        self.path = Path(path)
        self.missing = missing
        self.lines = 0

    def __iter__(self) -> Iterator[tuple[int, dict[str, Any]]]:
        self.lines = 0
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            raise RelNeuronError(self.missing, path=self.path) from None
        except OSError as exc:
            raise RelNeuronError(f"cannot read: {exc.strerror}", path=self.path) from None
        with handle:
            for number, raw in enumerate(handle, start=1):
                self.lines = number
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise RelNeuronError(
                        f"not UTF-8 text ({exc.reason})", path=self.path, line=number
                    ) from None
                if text.strip():
                    yield number, parse_line(text, self.path, number)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of each non-blank line of ``path`` (see ``JsonLines``)."""
    return iter(JsonLines(path))
