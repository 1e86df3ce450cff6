"""Inputs a newcomer meets (issue 18): each was a traceback, a wrong message or a blow-up.

Every test names the behaviour before the fix; the inputs are the ones the issue found.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from relneuron_eval.core.arglists import parse_layers, parse_names
from relneuron_eval.core.interventions import Intervention
from relneuron_eval.core.neuron_set import Neuron, NeuronSet, load, make_header
from relneuron_eval.core.spec import InterventionSpec
from relneuron_eval.errors import RelNeuronError

MAX_LINE = 4000  # characters an error line may have (errors.MAX_MESSAGE, twice)

MODEL = {
    "id": "tiny",
    "architecture": "LlamaForCausalLM",
    "num_layers": 4,
    "intermediate_size": 10,
    "hidden_size": 6,
}
HEADER = {"format": "relneuron-neuron-set", "version": 1, "model": MODEL, "method": {"name": "x"}}


def _neurons(group: str, count: int, layer: int = 1) -> list[Neuron]:
    return [Neuron(group, "mlp.act", layer, i, 1.0 - i / 100) for i in range(count)]


def _saved(tmp_path: Path, neurons: list[Neuron], name: str = "set.jsonl") -> Path:
    header = make_header(model=MODEL, method={"name": "hand"})
    return NeuronSet(header, neurons).save(tmp_path / name)


# ------------------------------------------------------------ groups=a+b (no quoting)
def test_plus_separates_groups_layers_and_sites_like_the_pipe(tmp_path):
    """Before: only '|', which an unquoted bash command line turns into a pipe."""
    path = _saved(tmp_path, [*_neurons("a", 3), *_neurons("b", 3, layer=2), *_neurons("c", 2)])
    plus = InterventionSpec.from_model_args(
        {"neuron_set": str(path), "groups": "a+b", "layers": "1+2", "sites": "mlp.act+mlp.up_proj"}
    )
    pipe = InterventionSpec.from_model_args(
        {"neuron_set": str(path), "groups": "a|b", "layers": "1|2", "sites": "mlp.act|mlp.up_proj"}
    )
    assert plus == pipe and plus.key() == pipe.key() and plus.label("m") == pipe.label("m")
    chosen = Intervention.from_spec(plus).selection
    assert chosen.groups() == ["a", "b"] and len(chosen) == 6
    assert parse_layers("3+5+10-12") == [3, 5, 10, 11, 12]
    assert parse_names("a+b|c") == ["a", "b", "c"]
    assert NeuronSet.load(path).select("a+c").groups() == ["a", "c"]


# ------------------------------------------------------------ damaged or odd files
def test_damaged_gzip_is_one_error_naming_the_file(tmp_path):
    """Before: zlib.error (47 of 500 fuzzed files) escaped as a traceback."""
    good = gzip.compress((json.dumps(HEADER) + "\n").encode() * 50, mtime=0)
    damaged = bytearray(good)
    damaged[20:40] = b"\xff" * 20  # inside the deflate stream: zlib.error, not BadGzipFile
    path = tmp_path / "damaged.jsonl.gz"
    path.write_bytes(bytes(damaged))
    with pytest.raises(RelNeuronError, match=r"damaged\.jsonl\.gz: corrupt gzip data"):
        load(path)
    truncated = tmp_path / "truncated.jsonl.gz"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(RelNeuronError, match="corrupt gzip data"):
        load(truncated)


def test_header_claiming_a_billion_layers_is_refused_before_any_list(tmp_path, memory_cap):
    """Before: layers=0-999999999 built a billion-item list (MemoryError under a cap)."""
    header = {**HEADER, "model": {**MODEL, "num_layers": 10**9}}
    path = tmp_path / "huge.jsonl"
    neuron = {"group": "r", "site": "mlp.act", "layer": 1, "index": 2, "score": 0.5}
    path.write_text(json.dumps(header) + "\n" + json.dumps(neuron) + "\n")
    spec = InterventionSpec.from_model_args({"neuron_set": str(path), "layers": "0-999999999"})
    with pytest.raises(RelNeuronError, match=r"huge\.jsonl:1: header model\.num_layers"):
        Intervention.from_spec(spec)
    with pytest.raises(RelNeuronError, match="outside 0-9999"):
        parse_layers("0-999999999", num_layers=10**9)


def test_header_only_set_says_it_has_no_neurons(tmp_path):
    """Before: 'no neuron matches these groups/layers/sites' (for a file with none)."""
    path = tmp_path / "empty.jsonl"
    path.write_text(json.dumps(HEADER) + "\n")
    for groups in ("*", "company_hq"):
        spec = InterventionSpec.from_model_args({"neuron_set": str(path), "groups": groups})
        with pytest.raises(RelNeuronError, match=r"empty\.jsonl: the neuron set has no neurons"):
            Intervention.from_spec(spec)


def test_error_lines_stay_short_whatever_the_input(tmp_path):
    """Before: a 100 MB group name gave a 100 MB error line (10 MB here)."""
    path = _saved(tmp_path, _neurons("a", 2))
    huge = "g" * 10_000_000
    spec = InterventionSpec.from_model_args({"neuron_set": str(path), "groups": huge})
    with pytest.raises(RelNeuronError) as caught:
        Intervention.from_spec(spec)
    line = str(caught.value)
    assert "not in the neuron set" in line and "groups in this file: a" in line
    assert "10,000,000 characters" in line and len(line) < MAX_LINE
    many = _saved(tmp_path, [Neuron(f"{'x' * 500}{i}", "mlp.act", 1, i, 0.5) for i in range(9)])
    with pytest.raises(RelNeuronError) as caught:
        NeuronSet.load(many).select("nope")
    assert len(str(caught.value)) < MAX_LINE
    with pytest.raises(RelNeuronError) as caught:
        parse_layers("x" * 1_000_000)
    assert len(str(caught.value)) < 300


# ------------------------------------------------------------ selection hash
def test_selection_hash_is_the_same_for_the_same_units(tmp_path):
    """Before: the whole group and top_k = its size gave different selection_sha256."""
    path = _saved(tmp_path, [*_neurons("a", 4), *_neurons("b", 2, layer=3)])
    full = load(path)

    def applied(**settings) -> str:
        spec = InterventionSpec.from_model_args({"neuron_set": str(path), **settings})
        return Intervention.from_spec(spec, full).selection.units_hash()

    whole = applied(groups="a")
    assert applied(groups="a", top_k=4) == whole
    assert applied(groups="a", fraction=1) == whole
    assert applied(groups="a", layers="0-3") == whole
    assert applied(groups="a", top_k=3) != whole
    assert applied(groups="a+b") != whole
    assert applied(groups="a", control="random") != whole
