"""The one error type users see from relneuron-eval.

Every message says which file and line (when there is one), what is wrong, and what
to do about it, so a failed run can be fixed without reading our source.
"""

from __future__ import annotations

from pathlib import Path


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
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        text = where + self.message
        if self.hint:
            text += f" ({self.hint})"
        return text
