"""Neuron-set format v1: round trips, selection, combination, and every kind of bad file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relneuron_eval.core.neuron_set import Neuron, NeuronSet, load, make_header, save
from relneuron_eval.errors import RelNeuronError

MODEL = {
    "id": "tiny",
    "architecture": "LlamaForCausalLM",
    "num_layers": 4,
    "intermediate_size": 10,
    "hidden_size": 6,
}


def _set(neurons) -> NeuronSet:
    return NeuronSet(make_header(model=MODEL, method={"name": "hand"}), list(neurons))


def _write(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


HEADER = {"format": "relneuron-neuron-set", "version": 1, "model": MODEL, "method": {"name": "x"}}
GOOD = {"group": "r", "site": "mlp.act", "layer": 1, "index": 2, "score": 0.5}


def test_round_trip_plain_and_gzip(tmp_path):
    original = _set(
        [
            Neuron("a", "mlp.act", 0, 3, 0.9),
            Neuron("a", "mlp.down_proj", 3, 5, -1.0),
            Neuron("b", "mlp.up_proj", 2, 9, 2),
        ]
    )
    for name in ("s.jsonl", "s.jsonl.gz"):
        path = save(original, tmp_path / name)
        loaded = load(path)
        assert loaded.neurons == original.neurons
        assert loaded.header == original.header
        assert loaded.content_hash() == original.content_hash()
    assert gzip.decompress((tmp_path / "s.jsonl.gz").read_bytes()).startswith(b'{"format"')


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\x85"])
def test_round_trip_of_a_group_name_with_a_unicode_line_separator(tmp_path, sep):
    """Saved unescaped (``ensure_ascii=False``), so loading must split at ``\\n`` only."""
    original = _set([Neuron(f"r{sep}x", "mlp.act", 0, 3, 0.9), Neuron("b", "mlp.act", 1, 2, 1)])
    for name in ("s.jsonl", "s.jsonl.gz"):
        loaded = load(save(original, tmp_path / name))
        assert loaded.neurons == original.neurons and f"r{sep}x" in loaded.groups()
    assert sep in (tmp_path / "s.jsonl").read_text(encoding="utf-8")  # written as is


def test_select_top_k_fraction_layers_and_ties():
    neurons = [
        Neuron("a", "mlp.act", layer, i, score)
        for layer, i, score in [(0, 1, 0.1), (1, 2, 0.9), (2, 3, 0.5), (3, 4, 0.9), (0, 5, 0.7)]
    ]
    neurons.append(Neuron("b", "mlp.act", 0, 1, 1.0))
    s = _set(neurons)
    top2 = s.select("a", top_k=2)
    # ties at 0.9 broken by layer
    assert [(n.layer, n.index) for n in top2] == [(1, 2), (3, 4)]
    assert len(s.select("a", fraction=0.4)) == 2
    assert {n.layer for n in s.select("a", layers=[0])} == {0}
    assert s.select("*").groups() == ["a", "b"]
    assert s.select("a|b", top_k=1).groups() == ["a", "b"]
    with pytest.raises(
        RelNeuronError,
        match=r"group\(s\) \['zzz'\] not in the neuron set.*groups in this file: a, b",
    ):
        s.select("zzz")
    for bad in ({"top_k": 0}, {"top_k": -3}, {"fraction": 0.0}, {"fraction": 1.5}):
        with pytest.raises(RelNeuronError):
            s.select("a", **bad)


def test_union_intersection_overlap():
    a = _set(
        [
            Neuron("a", "mlp.act", 0, 1, 0.1),
            Neuron("a", "mlp.act", 0, 2, 0.2),
            Neuron("b", "mlp.act", 0, 2, 0.3),
        ]
    )
    b = _set([Neuron("a", "mlp.act", 0, 2, 0.5), Neuron("a", "mlp.act", 1, 1, 0.4)])
    union = a.union(b)
    assert len(union) == 4
    assert {n.score for n in union if (n.group, n.layer, n.index) == ("a", 0, 2)} == {0.5}
    assert [(n.layer, n.index) for n in a.intersection(b)] == [(0, 2)]
    overlap = a.overlap_counts()
    assert overlap == {"a": {"a": 2, "b": 1}, "b": {"a": 1, "b": 1}}


def test_random_control_is_matched_and_disjoint():
    s = _set(
        [
            Neuron("a", site, layer, i, 0.0)
            for site in ("mlp.act", "mlp.down_proj")
            for layer in (0, 2)
            for i in (1, 3)
        ]
    )
    control = s.random_control(seed=3)
    key = lambda x: sorted((n.group, n.site, n.layer) for n in x)  # noqa: E731
    assert key(control) == key(s)
    assert not control.units() & s.units()
    assert s.random_control(seed=3).units() == control.units()
    assert s.random_control(seed=4).units() != control.units()


@pytest.mark.parametrize(
    ("lines", "message", "line"),
    [
        ([], "empty file", 1),
        (["not json"], "not valid JSON", 1),
        ([{"format": "other", "version": 1}], "wrong header", 1),
        ([{**HEADER, "version": 2}], "unknown format version 2", 1),
        ([{**HEADER, "model": {"id": "x"}}], "header model lacks", 1),
        (
            [HEADER, {"group": "r", "site": "mlp.act", "layer": 1}],
            r"lacks field\(s\) \['index', 'score'\]",
            2,
        ),
        ([HEADER, {**GOOD, "layer": "1"}], "layer must be an integer", 2),
        ([HEADER, {**GOOD, "layer": True}], "layer must be an integer", 2),
        ([HEADER, {**GOOD, "layer": -1}], "layer -1 out of range", 2),
        ([HEADER, {**GOOD, "layer": 4}], "layer 4 out of range", 2),
        ([HEADER, {**GOOD, "index": 10}], "index 10 out of range", 2),
        ([HEADER, {**GOOD, "site": "mlp.down_proj", "index": 6}], "index 6 out of range", 2),
        ([HEADER, {**GOOD, "site": "attn.q"}], "unknown site 'attn.q'", 2),
        (
            [HEADER, '{"group": "r", "site": "mlp.act", "layer": 1, "index": 2, "score": NaN}'],
            "not valid JSON",
            2,
        ),
        ([HEADER, {**GOOD, "score": "high"}], "score must be a finite number", 2),
        (
            [HEADER, '{"group": "r", "site": "mlp.act", "layer": 1, "index": 2, "score": 1e999}'],
            "score must be a finite number, got inf",
            2,
        ),
        # a 400-digit integer score raised OverflowError
        (
            [
                HEADER,
                '{"group": "r", "site": "mlp.act", "layer": 1, "index": 2, "score": 1'
                + "0" * 400
                + "}",
            ],
            "score must be a finite number",
            2,
        ),
        # unknown fields were silently dropped
        ([HEADER, GOOD, {**GOOD, "index": 3, "rank": 1}], r"unknown field\(s\) \['rank'\]", 3),
        ([HEADER, GOOD, GOOD], "duplicate neuron", 3),
        ([HEADER, [1, 2]], "must be a JSON object", 2),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, lines, message, line):
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(RelNeuronError, match=message) as info:
        load(path)
    assert info.value.path == str(path)
    assert info.value.line == line
    assert str(path) in str(info.value)


def test_missing_folder_and_binary(tmp_path):
    with pytest.raises(RelNeuronError, match="not found"):
        load(tmp_path / "nope.jsonl")
    with pytest.raises(RelNeuronError, match="folder"):
        load(tmp_path)
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(RelNeuronError, match="not UTF-8"):
        load(tmp_path / "bin.jsonl")
    (tmp_path / "bad.jsonl.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(RelNeuronError, match="corrupt gzip"):
        load(tmp_path / "bad.jsonl.gz")


def test_save_is_atomic_and_validates(tmp_path):
    target = tmp_path / "set.jsonl"
    good = _set([Neuron("a", "mlp.act", 0, 1, 0.5)])
    save(good, target)
    before = target.read_bytes()
    bad = _set([Neuron("a", "mlp.act", 0, 99, 0.5)])
    with pytest.raises(RelNeuronError):
        save(bad, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.jsonl"]


# ------------------------------------------------------------------ property based
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 40)
    | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
neuron_like = st.fixed_dictionaries(
    {},
    optional={
        "group": st.one_of(st.text(max_size=5), json_values),
        "site": st.sampled_from(["mlp.act", "mlp.up_proj", "mlp.down_proj", "x", ""]) | json_values,
        "layer": st.integers(-2, 6) | json_values,
        "index": st.integers(-2, 12) | json_values,
        "score": st.floats(allow_nan=True, allow_infinity=True) | json_values,
    },
)
header_like = st.one_of(
    st.just(HEADER),
    st.fixed_dictionaries(
        {},
        optional={
            "format": st.sampled_from(["relneuron-neuron-set", "x"]) | json_values,
            "version": st.integers(0, 3) | json_values,
            "model": st.just(MODEL) | json_values,
            "method": st.just({}) | json_values,
        },
    ),
    json_values,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    header=header_like,
    body=st.lists(st.one_of(neuron_like, json_values, st.text(max_size=20)), max_size=6),
    raw=st.binary(max_size=30),
    use_raw=st.booleans(),
)
def test_malformed_files_only_raise_our_error(tmp_path, header, body, raw, use_raw):
    path = tmp_path / "fuzz.jsonl"
    if use_raw:
        path.write_bytes(raw)
    else:
        lines = [header if isinstance(header, str) else json.dumps(header)]
        lines += [b if isinstance(b, str) else json.dumps(b) for b in body]
        path.write_bytes("\n".join(lines).encode("utf-8", errors="replace"))
    try:
        result = load(path)
    except RelNeuronError:
        return
    # whatever loads must be fully valid
    assert isinstance(result, NeuronSet)
    for n in result:
        assert n.site in ("mlp.act", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
        assert 0 <= n.layer < 4


def test_saved_files_get_normal_permissions(tmp_path):
    """Atomic writes go through a private temporary file; the result must not stay 0600."""
    import os

    path = tmp_path / "set.jsonl"
    _set([Neuron("g", "mlp.act", 0, 1, 0.5)]).save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_load_records_the_file_digest(tmp_path):
    import hashlib

    path = save(_set([Neuron("a", "mlp.act", 0, 1, 0.5)]), tmp_path / "s.jsonl.gz")
    loaded = load(path)
    assert loaded.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.select("a").file_sha256 is None  # a selection is not that file
    assert loaded.units_per_layer() == {"0": 1}


def test_random_control_equals_drawing_from_the_full_list():
    """The control draws from a lazy list of free units; it must equal the plain list."""
    import random

    from relneuron_eval.core.neuron_set import _FreeIndices

    rng = random.Random(0)
    for _ in range(200):
        size = rng.randint(1, 60)
        taken = set(rng.sample(range(size), rng.randint(0, size)))
        free = [i for i in range(size) if i not in taken]
        lazy = _FreeIndices(size, taken)
        assert len(lazy) == len(free) and list(lazy) == free
        k = rng.randint(0, len(free))
        assert random.Random(k).sample(lazy, k) == random.Random(k).sample(free, k)


def test_random_control_of_a_huge_header_needs_no_memory(tmp_path):
    """intermediate_size 1e9 in a header made the control list a billion indices (6.6 GB+).

    Run under a 1 GiB address-space limit, so the old behaviour fails fast (MemoryError)
    instead of eating the machine.
    """
    import subprocess
    import sys

    model = {**MODEL, "intermediate_size": 10**9}
    header = {**HEADER, "model": model}
    path = _write(tmp_path / "huge.jsonl", [header, GOOD, {**GOOD, "layer": 2, "index": 7}])
    code = f"""
import resource
resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30))
from relneuron_eval.core.neuron_set import load
control = load({str(path)!r}).random_control(seed=1)
assert len(control) == 2 and not control.units() & load({str(path)!r}).units()
print(sorted(control.units()))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
