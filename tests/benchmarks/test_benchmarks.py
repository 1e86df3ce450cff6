"""``relneuron bench``: the discovery benchmark end to end on a tiny model; dp's CLI.

Only structure and sanity are checked, never timings: the machines are too noisy.
"""

from __future__ import annotations

import argparse
import json
import sys

import pytest
from lm_eval_helpers import save_tiny_llama

from relneuron_eval.benchmarks import peers
from relneuron_eval.cli import main


@pytest.mark.slow
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


def test_bench_peers_agree_and_missing_peers_are_reported(tmp_path, capsys, monkeypatch):
    """Our two paths give the hand-written hooks' logits; an absent peer is a row, not a crash."""
    for module in ("nnsight", "pyvene", "transformer_lens"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed: import fails
    model = save_tiny_llama(tmp_path / "tiny", hidden=32, intermediate=48, layers=2, mlp_std=0.5)
    out = tmp_path / "peers.json"
    argv = ["bench", "peers", "--model", str(model), "--neurons", "40", "--prompts", "3"]
    argv += ["--tokens", "5", "--new-tokens", "3", "--rounds", "1", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    arms = result["arms"]
    assert list(arms) == ["torch_hooks", "fold", "hook", "nnsight", "pyvene", "transformer_lens"]
    for name in ("torch_hooks", "fold", "hook"):
        assert arms[name]["loads"] is True
        assert arms[name]["max_abs_logit_diff"] == 0.0
        assert arms[name]["same_generation"] is True
        assert arms[name]["forward_ratio"] > 0 and arms[name]["generation_ratio"] > 0
    for name in ("nnsight", "pyvene", "transformer_lens"):
        assert arms[name] == {"loads": False, "status": peers.NOT_INSTALLED}
    assert result["conditions"]["units"] == 40 and result["conditions"]["layers_touched"] == 2
    assert set(result["seconds"]["forward"]) == {"plain", "torch_hooks", "fold", "hook"}
    assert all(len(times) == 1 for times in result["seconds"]["generation"].values())
    printed = capsys.readouterr().out
    assert "== peers" in printed and printed.count(peers.NOT_INSTALLED) == 3


def test_bench_peers_ablation_changes_logits_and_restores_the_model(tmp_path):
    """The reference arm really ablates, and no arm leaves the model changed after its call."""
    import torch

    model = save_tiny_llama(tmp_path / "tiny", hidden=32, intermediate=48, layers=2, mlp_std=0.5)
    args = argparse.Namespace(model=str(model), neurons=40, prompts=2, tokens=4)
    setting = peers._setting(args, tmp_path)
    ids, _ = peers._inputs(setting, args)
    with torch.no_grad():  # as run() does
        before = setting.model(ids).logits
        arms = peers._build_arms(["torch_hooks", "fold", "hook"], setting)
        ablated = [arm.forward(ids) for name, arm in arms.items() if name != "plain"]
        after = setting.model(ids).logits
    assert all(torch.equal(logits, ablated[0]) for logits in ablated)
    assert peers._max_diff(before, ablated[0]) > 1e-3
    assert torch.equal(after, before)


def test_bench_peers_refuses_arms_without_the_reference(capsys):
    assert main(["bench", "peers", "--arms", "fold,nnsight"]) != 0
    assert "torch_hooks" in capsys.readouterr().err


def test_bench_per_doc_mixes_groups_with_equal_work(tmp_path):
    """Every arm runs the same forwards (fixed tokens); the batch mixes several groups."""
    from lm_eval_helpers import save_tiny_lm, save_tiny_set

    from relneuron_eval.report.setup import task_rows

    facts = list(dict.fromkeys(r["hop1_fact"] for r in task_rows("relfacts_2hop")["test"]))
    model = save_tiny_lm(tmp_path / "tiny")
    neurons = save_tiny_set(tmp_path / "kn.jsonl", facts[:6], ["mlp.act"], per_layer=24, seed=1)
    out = tmp_path / "per_doc.json"
    argv = ["bench", "per-doc", "--model", str(model), "--neuron-set", str(neurons)]
    argv += ["--docs", "4", "--rounds", "1", "--fixed-tokens", "3", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["documents_per_task"] == [4, 4] and result["requests"] == 8
    assert result["groups_in_requests"] >= 3
    assert len(set(result["forwards"].values())) == 1  # the same work in every arm
    assert set(result["ratio_vs_hf"]) == {"hf", "per_doc", "one_group", "hf_again", "per_doc_off"}
    assert all(r > 0 for r in result["cpu_ratio_vs_hf"].values())
    assert result["answers_changed_vs_hf"]["per_doc"] > 0  # the edits reach the rows


def test_bench_mc_compares_both_paths_on_real_mc_requests(tmp_path):
    """Real relfacts_mc requests on the tiny model: both arms score every request, the
    cache serves the shared contexts, and the per-document choices are compared."""
    from lm_eval_helpers import save_tiny_lm

    model = save_tiny_lm(tmp_path / "tiny")
    out = tmp_path / "mc.json"
    argv = ["bench", "mc", "--model", str(model), "--tasks", "relfacts_mc_country_on_continent"]
    argv += ["--limit", "3", "--rounds", "1", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["documents"] == 3 and result["requests"] == 3 * 7  # 7 continents each
    assert result["same_choice"] == 3 and result["same_greedy_flag"] == result["requests"]
    assert result["max_abs_logp_difference"] < 1e-3
    assert result["cache_stats"]["cached_requests"] == result["requests"]
    assert set(result["cpu_seconds"]) == {"plain", "context_cache"}
    assert result["wall_speedup"] > 0


def test_bench_overhead_compares_like_with_like(tmp_path):
    """Every intervention arm runs HFLM's path with fixed-length generations: the same
    forwards as plain hf; relneuron-hf's defaults (prefix cache) are a separate arm."""
    from lm_eval_helpers import save_tiny_lm

    model = save_tiny_lm(tmp_path / "tiny")
    out = tmp_path / "overhead.json"
    argv = ["bench", "overhead", "--model", str(model), "--limit", "3", "--rounds", "1"]
    argv += ["--neurons", "12", "--fixed-tokens", "3", "--json", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["requests"] == {"loglikelihood": 15, "generate_until": 3}
    on_hflm_path = {k: v for k, v in result["forwards"].items() if k != "rn_default"}
    assert len(set(on_hflm_path.values())) == 1, result["forwards"]  # the same work
    assert set(result["cpu_ratio_vs_hf"]) == {*on_hflm_path, "rn_default"}
    assert result["intervention_changes_outputs"]["fold"]  # the edit reaches the outputs
    assert result["fold_vs_hook"]["max_loglikelihood_gap"] < 1e-4
    assert result["fold_vs_hook"]["generations_identical"]
