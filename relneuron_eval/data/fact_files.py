"""Facts files (JSON lines of ``{"subject", "object"[, "answers", "split"]}``): reading them.

Facts files are large and partly hand-edited, so every malformed line is reported with
its file and line, and text is cleaned as it is read (``fact_text.clean_text``), so the
shipped copies stay byte-identical to what was downloaded. Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from relneuron_eval.data.fact_text import clean_text
from relneuron_eval.data.relation import SPLITS
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.jsonl import JsonLines


@dataclass
class FactRow:
    """One line of a facts file, before repeated subjects are merged."""

    path: Path
    line: int
    subject: str
    object: str
    split: str | None
    answers: tuple[str, ...]
    number: int = 0  # fact number: index of the line in the concatenated facts files
    first_file: bool = True
    added: bool = False  # from `added_facts:` (split by hash threshold, see fact_sources)


def read_facts_file(path: Path, relation: str) -> tuple[list[FactRow], int]:
    """Rows of a facts file and its number of lines; malformed lines raise with file:line."""
    lines = JsonLines(path, missing=f"relation {relation!r}: facts file not found")
    rows = []
    for number, row in lines:
        values = {}
        for key in ("subject", "object"):
            if key not in row:
                raise RelNeuronError(
                    f"missing field {key!r}",
                    path=path,
                    line=number,
                    hint='each line needs {"subject": ..., "object": ...}',
                )
            value = row[key]
            if not isinstance(value, str) or not clean_text(value):
                raise RelNeuronError(f"empty or non-string {key!r}", path=path, line=number)
            values[key] = clean_text(value)
        split = row.get("split")
        if split is not None and split not in SPLITS:
            raise RelNeuronError(
                f"unknown split {split!r}", path=path, line=number, hint=f"use one of {SPLITS}"
            )
        answers = row.get("answers", [])
        if not isinstance(answers, list) or not all(
            isinstance(a, str) and clean_text(a) for a in answers
        ):
            raise RelNeuronError(
                "'answers' must be a list of non-empty strings", path=path, line=number
            )
        rows.append(
            FactRow(
                path,
                number,
                values["subject"],
                values["object"],
                split,
                tuple(map(clean_text, answers)),
            )
        )
    return rows, lines.lines
