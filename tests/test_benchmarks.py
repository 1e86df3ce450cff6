"""``relneuron bench``: the discovery benchmark end to end on a tiny model; dp's CLI.

Only structure and sanity are checked, never timings: the machines are too noisy.
"""

from __future__ import annotations

import json

import pytest
from lm_eval_helpers import save_tiny_llama

from relneuron_eval.cli import main


def test_bench_discovery_on_tiny_llama(tmp_path, capsys):
    model = save_tiny_llama(tmp_path / "tiny", hidden=32, intermediate=48, layers=2)
    out = tmp_path / "discovery.json"
    argv = ["bench", "discovery", "--model", str(model), "--prompts", "8,4"]
    argv += ["--batch-size", "4", "--rounds", "1", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["prompts"] == 8
    assert result["units"] == 2 * (48 + 48 + 32)  # gate + up + down per layer
    assert result["ratio_statistics_vs_forward"] > 0
    assert set(result["median_seconds"]) == {"statistics", "forward"}
    assert all(len(v) == 1 and v[0] > 0 for v in result["seconds"].values())
    memory = result["memory"]
    assert [m["prompts"] for m in memory] == [4, 8]
    for m in memory:
        assert m["peak_reset"] is True
        assert m["seconds"] > 0
        assert m["peak_rss_increase_mib"] >= 0
        assert isinstance(m["peak_anon_increase_mib"], float)
        assert isinstance(m["peak_file_increase_mib"], float)
        assert 0 <= m["correct"] <= m["prompts"]
        assert m["store_bytes"] >= m["prompts"] * m["units"] * 4
    assert memory[1]["store_bytes"] > memory[0]["store_bytes"]
    printed = capsys.readouterr().out
    assert "== discovery" in printed and "goal <= 1.25" in printed
    assert printed.count(" prompts: ") == 2


def test_bench_dp_help_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "dp", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for option in ("--rounds", "--limit", "--batch-size", "--tasks", "--json"):
        assert option in printed
