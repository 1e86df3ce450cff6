"""The one error type users see from relneuron-eval.

Every message says which file and line (when there is one), what is wrong, and what
to do about it, so a failed run can be fixed without reading our source. An error line
stays readable whatever the input: values echoed from it are clipped (``clip``) and
the message and hint are capped (a 100 MB group name once gave a 100 MB line).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

MAX_MESSAGE = 2000  # characters of a message, and of a hint, in one error line
MAX_VALUE = 80  # characters of one echoed value (a name, a number as typed)


def clip(value: Any, limit: int = MAX_VALUE) -> str:
    """``repr``-like text of ``value`` cut to ``limit`` characters, saying how much was cut."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 20, 10)]}... ({len(text):,} characters)"


def clip_list(values: Iterable[Any], limit: int = 10, width: int = MAX_VALUE) -> str:
    """``a, b, c ... and N more``: at most ``limit`` values, each clipped to ``width``."""
    items = list(values)
    shown = ", ".join(clip(v, width) for v in items[:limit])
    return shown + (f" ... and {len(items) - limit} more" if len(items) > limit else "")


def _cap(text: str) -> str:
    if len(text) <= MAX_MESSAGE:
        return text
    return f"{text[: MAX_MESSAGE - 40]}... ({len(text):,} characters in all)"


class RelNeuronError(ValueError):
    """Bad input or a failed precondition, with a location and a hint for the user."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = _cap(str(message))
        self.path = None if path is None else clip(str(path), 1000)
        self.line = line
        self.hint = None if hint is None else _cap(str(hint))
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        text = where + self.message
        if self.hint:
            text += f" ({self.hint})"
        return text
