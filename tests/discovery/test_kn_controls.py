"""Knowledge-neuron sets: sharing statistics, the swapped and shared-pool controls and the
refinement against shared units, on hand-made sets whose answers are known by hand."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from relneuron_eval.cli import main
from relneuron_eval.core.neuron_set import Neuron, NeuronSet, load, make_header
from relneuron_eval.discovery import kn_controls as kc
from relneuron_eval.discovery.kn_checkpoint import FactResult
from relneuron_eval.discovery.kn_config import SelectConfig, validate_select
from relneuron_eval.discovery.kn_selection import drop_shared_units
from relneuron_eval.errors import RelNeuronError

SHAPE = {"num_layers": 4, "intermediate_size": 16, "hidden_size": 8}
A = "mlp.act"
# r/1..r/4 of relation r (objects X, X, Y, Z), q/1 of relation q; unit (A, 0, 0) is in all
# five facts, (A, 3, 1) in r/1..r/3; r/1 and q/1 have units of their own.
FACTS = {
    "r/1": [(0, 0), (3, 1), (2, 5)],
    "r/2": [(0, 0), (3, 1)],
    "r/3": [(0, 0), (3, 1), (2, 6)],
    "r/4": [(0, 0), (2, 6), (1, 2)],
    "q/1": [(0, 0), (3, 9)],
}
OBJECTS = {"r/1": "X", "r/2": "X", "r/3": "Y", "r/4": "Z", "q/1": "W"}


def hand_set(facts=FACTS, relations=("r",)) -> NeuronSet:
    header = make_header(
        model={"id": "t", "architecture": "LlamaForCausalLM", **SHAPE},
        method={"name": "knowledge-neurons"},
        knowledge_neurons={"facts": len(facts), "relations": list(relations)},
    )
    neurons = [Neuron(f, A, layer, i, 0.5) for f, units in facts.items() for layer, i in units]
    neurons += [Neuron(r, A, 0, 0, 1.0) for r in relations]  # relation-level: never a fact
    return NeuronSet(header, neurons)


def units_of(neuron_set: NeuronSet) -> dict[str, set]:
    return {f: {n.unit for n in ns} for f, ns in kc.fact_units(neuron_set).items()}


def test_statistics_by_hand():
    stats = kc.set_statistics(hand_set(), shared_at=3)
    assert stats["facts_with_neurons"] == 5 and stats["fact_neurons"] == 13
    assert stats["distinct_units"] == 6  # (0,0) (3,1) (2,5) (2,6) (1,2) (3,9); "r" is no fact
    assert stats["units_shared"] == 2  # (0,0) in 5 facts, (3,1) in 3
    assert stats["entries_on_shared_units"] == 8
    assert stats["top_unit"] == {"unit": [A, 0, 0], "facts": 5}
    # own units: r/1 (2,5), r/4 (1,2), q/1 (3,9); (2,6) is in r/3 and r/4
    assert stats["facts_with_own_unit"] == 3 and stats["facts_without_own_unit"] == 2
    assert stats["layers_units"] == {"0": 1, "1": 1, "2": 2, "3": 2}
    assert stats["layers_entries"] == {"0": 5, "1": 1, "2": 3, "3": 4}
    assert stats["last_layer_share"] == {"units": round(2 / 6, 4), "entries": round(4 / 13, 4)}
    text = kc.statistics_text(stats)
    assert "6 distinct units" in text and "top unit layer 0 #0 in 5 of 5 facts" in text


def test_swapped_control_takes_another_object_of_the_same_relation():
    own = hand_set()
    control = kc.swapped_control(own, OBJECTS, seed=0)
    info = control.header["control"]
    donors = info["donors"]
    assert set(donors) == {"r/1", "r/2", "r/3", "r/4"}  # q/1 has no other fact: no donor
    assert info["facts_without_donor"] == ["q/1"]
    mine = units_of(own)
    got = units_of(control)
    for fact, donor in donors.items():
        assert donor.split("/")[0] == fact.split("/")[0]
        assert OBJECTS[donor] != OBJECTS[fact]
        assert got[fact] <= mine[donor]  # the donor's neurons, nothing invented
        assert len(got[fact]) == min(len(mine[fact]), len(mine[donor]))
    assert "q/1" not in got and "r" not in control.groups()
    # r/1 (X: 2 layers 0,3 + layer 2) is best matched by r/3 (Y: same layers, same count)
    assert donors["r/1"] == "r/3" and donors["r/3"] == "r/1"
    # seeded and deterministic
    assert kc.swapped_control(own, OBJECTS, 0).content_hash() == control.content_hash()
    with pytest.raises(RelNeuronError, match="no object known"):
        kc.swapped_control(own, {"r/1": "X"})


def test_shared_pool_and_refinement_by_hand():
    own = hand_set()
    pool = kc.shared_pool_control(own, min_facts=3)
    assert units_of(pool) == {
        "r/1": {(A, 0, 0), (A, 3, 1)},
        "r/2": {(A, 0, 0), (A, 3, 1)},
        "r/3": {(A, 0, 0), (A, 3, 1)},
        "r/4": {(A, 0, 0)},
        "q/1": {(A, 0, 0)},
    }
    by_count = kc.refine_shared(own, max_facts=3)
    assert units_of(by_count) == {
        "r/1": {(A, 2, 5)},
        "r/3": {(A, 2, 6)},
        "r/4": {(A, 2, 6), (A, 1, 2)},
        "q/1": {(A, 3, 9)},
    }
    assert by_count.header["knowledge_neurons"]["refined"]["facts_left_without_neurons"] == ["r/2"]
    # (3,1) is in r/1..r/3 but of 2 objects (X, Y): kept at max_objects=3; (0,0): 4 objects
    by_objects = kc.refine_shared(own, OBJECTS, max_objects=3)
    assert (A, 3, 1) in units_of(by_objects)["r/2"]
    assert all((A, 0, 0) not in u for u in units_of(by_objects).values())
    assert by_objects.header["knowledge_neurons"]["statistics"]["units_shared"] == 0
    for bad in (dict(max_facts=1), dict(max_objects=True), {}):
        with pytest.raises(RelNeuronError):
            kc.refine_shared(own, OBJECTS, **bad)
    with pytest.raises(RelNeuronError, match="objects"):
        kc.refine_shared(own, max_objects=2)


def test_discovery_drops_shared_units_before_selection():
    size = 16

    def result(fact, units):
        ids = np.asarray(sorted(layer * size + i for layer, i in units), dtype=np.int64)
        return FactResult(
            fact,
            fact.split("/")[0],
            "",
            [0, 1, 2, 3],
            size,
            ids,
            np.ones((1, len(ids)), np.float32),
            np.ones(1, np.float32),
            np.ones(1, np.float32),
        )

    results = [result(f, u) for f, u in FACTS.items()]
    refined = [np.ones(len(r.units), dtype=bool) for r in results]
    select = SelectConfig(drop_shared=3)
    validate_select(select)
    assert drop_shared_units(results, refined, select, OBJECTS) == 2
    kept = {r.fact_id: set(r.units[m].tolist()) for r, m in zip(results, refined, strict=True)}
    assert kept["r/2"] == set() and kept["r/1"] == {2 * size + 5}
    assert drop_shared_units(results, refined, SelectConfig(), OBJECTS) is None
    with pytest.raises(RelNeuronError, match="drop_objects"):
        validate_select(SelectConfig(drop_objects=1))


def test_from_set_command_writes_controls_of_the_shipped_facts(tmp_path, capsys):
    # real fact ids, so the objects come from the relation data
    from relneuron_eval.data.facts import load_relation

    facts = [f for f in load_relation("city_in_country").facts if f.split == "test"]
    by_object: dict[str, list[str]] = {}
    for f in facts:
        by_object.setdefault(f.object, []).append(f.fact_id)
    a, b = [ids[0] for ids in list(by_object.values())[:2]]
    path = tmp_path / "kn.jsonl"
    hand_set({a: [(0, 0), (3, 1)], b: [(0, 0), (2, 4)]}, relations=()).save(path)
    out = tmp_path / "swapped.jsonl"
    argv = ["find", "knowledge-neurons", "--from-set", str(path), "--out", str(out)]
    assert main([*argv, "--control", "swapped"]) == 0
    swapped = load(out)
    assert swapped.header["control"]["donors"] == {a: b, b: a}
    assert units_of(swapped)[a] == {(A, 0, 0), (A, 2, 4)}
    assert "after:" in capsys.readouterr().out
    assert main([*argv, "--force", "--drop-shared", "2"]) == 0
    assert Counter(n.group for n in load(out).neurons) == {a: 1, b: 1}
    assert main([*argv, "--force"]) == 2
    assert "nothing to do" in capsys.readouterr().err
    # discovery's default refinement is not applied to an existing set; 0 still means none
    assert main([*argv, "--force", "--drop-objects", "0"]) == 2
    assert "nothing to do" in capsys.readouterr().err


def test_discovery_refines_by_objects_unless_told_not_to():
    """The default chosen by docs/report-kn-v2's rule; 0 keeps every unit."""
    from relneuron_eval.discovery.cli import KN_DROP_OBJECTS_DEFAULT, discovery_drop_objects

    assert KN_DROP_OBJECTS_DEFAULT == 3
    assert discovery_drop_objects(None) == 3
    assert discovery_drop_objects(0) is None and discovery_drop_objects(5) == 5


def test_bad_refinement_options_fail_before_the_model_loads(tmp_path, capsys):
    out = str(tmp_path / "kn.jsonl")
    assert main(["find", "knowledge-neurons", "--out", out, "--drop-shared", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "drop_shared must be an integer >= 2" in err
    assert main(["find", "knowledge-neurons", "--out", out, "--control", "swapped"]) == 2
    assert "--control needs --from-set" in capsys.readouterr().err
    assert not (tmp_path / "kn.jsonl").exists()
