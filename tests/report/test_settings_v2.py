"""docs/report-full-v2/settings.yaml: the re-run's command says what its settings say."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import yaml

SETTINGS = Path(__file__).resolve().parents[2] / "docs" / "report-full-v2" / "settings.yaml"


def test_the_command_matches_the_settings():
    from relneuron_eval.report.options import add_arguments

    data = yaml.safe_load(SETTINGS.read_text(encoding="utf-8"))
    argv = shlex.split(data["command"])
    assert argv[:2] == ["relneuron", "report"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(argv[2:])
    assert [int(s) for s in args.seeds.split(",")] == data["seeds"] and len(data["seeds"]) >= 10
    assert [int(k) for k in args.top_k.split(",")] == data["top_k"]
    assert args.metric == data["metric"] and args.other_controls == data["other_controls"]
    assert args.min_base == data["eligibility"]["min_base"]
    assert args.min_margin == data["eligibility"]["min_margin"]
    assert args.experiments.split(",") == data["experiments"]
    assert args.limit_own == "none" and int(args.limit) == data["documents"]["matrix"]
    assert args.neuron_set == data["neuron_set"] and args.model == data["model"]
