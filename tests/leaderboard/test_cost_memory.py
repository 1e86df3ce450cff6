"""Peak memory where it cannot be read (no ``/proc``, e.g. macOS): unknown, never NaN."""

from __future__ import annotations

import json

from relneuron_eval.leaderboard import discover, render


def test_unreadable_memory_is_none_in_json_and_na_in_tables(monkeypatch):
    monkeypatch.setattr(discover, "_rss_mb", lambda: float("nan"))
    with discover.measured("cpu") as record:
        pass
    assert record["peak_memory_mb"] is None and record["extra_memory_mb"] is None
    json.dumps(record, allow_nan=False)  # strict JSON: NaN would raise here
    assert render.cost_cells(record)[2] == "n/a"


def test_readable_memory_is_a_number():
    with discover.measured("cpu") as record:
        pass
    assert record["peak_memory_mb"] > 0
    assert render.cost_cells(record)[2].endswith(" MB")
