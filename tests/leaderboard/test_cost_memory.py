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


def test_a_store_users_ratio_adds_the_store_pass_ratio_taken_under_its_own_load(tmp_path):
    """The token-mean pass and a method reading its store may run in different processes
    (or sessions, under other load): each ratio is against its own process's plain forward,
    so seconds add but forward passes must not be re-divided by one reference."""
    store = {"seconds": 300.0, "plain_forward_seconds": 600.0, "forward_equivalents": 0.5}
    store.update(prompts=10, peak_memory_mb=50.0, prompts_done_before=4)
    own = {"seconds": 10.0, "plain_forward_seconds": 100.0, "forward_equivalents": 0.1}
    own.update(prompts=10, peak_memory_mb=80.0)
    (tmp_path / "token-means.cost.json").write_text(json.dumps(store))
    (tmp_path / "diffmean.cost.json").write_text(json.dumps(own))
    cost = discover.read_cost(tmp_path / "diffmean.cost.json")
    assert cost["seconds"] == 310.0 and cost["shared_pass_seconds"] == 300.0
    assert cost["forward_equivalents"] == 0.6  # 10 / 100 + 0.5, not 310 / 100
    assert cost["peak_memory_mb"] == 80.0
    assert render.cost_cells(cost)[0] == "≥ 0.6"  # the store pass was resumed: a lower bound
    assert discover.read_cost(tmp_path / "token-means.cost.json") == store
