"""docs/CONTRACTS.md names only what exists: modules, functions, subcommands, model args.

The page drifted once (a local build environment, 19 relations, old signatures); these
checks make the next drift a failing test instead.
"""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "CONTRACTS.md").read_text(encoding="utf-8")
DOTTED = re.compile(r"`(relneuron_eval(?:\.[A-Za-z_]\w*)+)`")


def _backticked_after(label: str) -> set[str]:
    """The backticked words of the paragraph that starts at ``label``."""
    start = DOC.index(label) + len(label)
    paragraph = DOC[start:].split("\n\n", 1)[0]
    return set(re.findall(r"`([\w-]+)`", paragraph))


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted`` and look up the rest on it."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("dotted", sorted(set(DOTTED.findall(DOC))))
def test_every_named_object_exists(dotted):
    _resolve(dotted)


def test_subcommands_are_the_cli_ones():
    from relneuron_eval.cli import SUBCOMMANDS

    assert _backticked_after("Subcommands:") == set(SUBCOMMANDS)


def test_model_args_are_relneuron_hf_ones():
    from relneuron_eval.core.spec import SETTING_NAMES
    from relneuron_eval.harness.lm_model import RelNeuronLM

    own = set(inspect.signature(RelNeuronLM.__init__).parameters) - {"self", "pretrained", "kwargs"}
    params = own | set(SETTING_NAMES)  # the settings arrive as **kwargs, read by the spec
    assert _backticked_after("Intervention model args:") == params


def test_two_hop_fields_are_in_every_document():
    from relneuron_eval.data.twohop import build_chains

    doc = build_chains()[0].doc()
    assert {"hop1_fact", "hop2_fact", "bridge", "answer"} <= set(doc)
    assert re.fullmatch(r"\w+/\d+", doc["hop1_fact"])


def test_shipped_paths_exist():
    paths = set(re.findall(r"`((?:neuron_sets|tasks|tests)/[\w./-]+)`", DOC))
    assert paths
    assert [p for p in paths if not (ROOT / p).exists()] == []


def test_facts_imports_neither_torch_nor_lm_eval():
    code = (
        "import sys, relneuron_eval.data.facts\n"
        "print(sorted(m for m in ('torch', 'lm_eval') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
