"""InterventionSpec: the one definition of an intervention's settings.

Every entry point (lm-eval model args, the Python API, ``relneuron export`` options, relcheck
files) must read a setting the same way and refuse a bad one with the same message.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import textwrap
from pathlib import Path

import pytest
import yaml
from lm_eval.utils import simple_parse_args_string

from relneuron_eval.core.spec import (
    DEFAULT_FACTOR,
    SETTING_NAMES,
    InterventionSpec,
    InvalidSetting,
    add_options,
)
from relneuron_eval.core.variant import variant_name_from_model_args
from relneuron_eval.errors import RelNeuronError

SET_BYTES = b'{"layer": 1, "index": 2, "group": "capital"}\n'


@pytest.fixture
def set_file(tmp_path: Path) -> Path:
    path = tmp_path / "myset.jsonl"
    path.write_bytes(SET_BYTES)
    return path


def _spec(text: str) -> InterventionSpec:
    """A spec from ``--model_args`` text, parsed as lm-eval parses it."""
    return InterventionSpec.from_model_args(simple_parse_args_string(text))


# ---------------------------------------------------------------- round trips
ROUND_TRIPS = [
    "",
    "groups=capital|language",
    "mode=enhance",
    "mode=enhance,factor=3.5",
    "mode=scale,factor=-0.5",
    "mode=set,value=1.5",
    "top_k=7",
    "fraction=0.25",
    "layers=0-3|10",
    "sites=mlp.act|mlp.up_proj",
    "positions=last",
    "control=random",
    "control=random,seed=4",
    "per_doc=hop1_fact",
    "strategy=hook",
    "name=my_run",
    "groups=a,mode=enhance,factor=4,top_k=2,layers=1,sites=mlp.act,positions=last,"
    "per_doc=d,strategy=fold",
]


@pytest.mark.parametrize("extra", ROUND_TRIPS)
def test_model_args_round_trip(set_file, extra):
    spec = _spec(f"pretrained=gpt2,dtype=float32,neuron_set={set_file},{extra}".rstrip(","))
    args = spec.to_model_args()
    assert "pretrained" not in args and "dtype" not in args  # not intervention settings
    assert InterventionSpec.from_model_args(args) == spec
    # the text form lm-eval reads gives the same spec again
    text = ",".join(f"{k}={v}" for k, v in args.items())
    assert _spec(text) == spec
    given = simple_parse_args_string(extra) if extra else {}
    assert set(args) == {"neuron_set", *given}


def test_defaults_spelled_out_are_not_model_args(set_file):
    spec = _spec(f"neuron_set={set_file},groups=*,mode=deactivate,positions=all,strategy=auto")
    assert spec.to_model_args() == {"neuron_set": str(set_file)}
    assert spec == InterventionSpec(neuron_set=str(set_file))
    assert InterventionSpec.from_model_args({"groups": "", "neuron_set": None}).is_base


def test_python_values_take_the_model_arg_form(set_file):
    spec = InterventionSpec.from_model_args(
        {"neuron_set": set_file, "groups": ["a", "b"], "layers": [0, 2], "sites": ("mlp.act",)}
    )
    assert (spec.neuron_set, spec.groups, spec.layers, spec.sites) == (
        str(set_file),
        "a|b",
        "0|2",
        "mlp.act",
    )
    assert spec == _spec(f"neuron_set={set_file},groups=a|b,layers=0|2,sites=mlp.act")


def test_argparse_options_read_as_model_args(set_file):
    parser = argparse.ArgumentParser()
    add_options(parser, required=("neuron_set",))
    ns = parser.parse_args(
        ["--neuron-set", str(set_file), "--mode", "scale", "--factor", "0.5", "--top-k", "3"]
    )
    from_cli = InterventionSpec.from_argparse(ns)
    assert from_cli == _spec(f"neuron_set={set_file},mode=scale,factor=0.5,top_k=3")
    assert from_cli.factor == 0.5 and from_cli.top_k == 3  # numbers, not the typed text
    with pytest.raises(SystemExit):
        parser.parse_args(["--strategy", "fold"])  # excluded unless asked for


# ---------------------------------------------------------------- refusals
# (settings, message): each refused identically by every entry point
BAD = [
    ({"factor": 3}, "factor only applies to mode enhance or scale, not deactivate"),
    ({"mode": "enhance", "value": 1}, "value only applies to mode set, not enhance"),
    ({"seed": 3}, "seed only applies to control=random"),
    ({"control": "random", "per_doc": "f"}, "control=random with per_doc= is not supported"),
    ({"top_k": 5, "fraction": 0.5}, "give either top_k or fraction, not both"),
    ({"mode": "ablate"}, "unknown mode 'ablate'"),
    ({"positions": "first"}, "unknown positions 'first'"),
    ({"control": "shuffled"}, "unknown control 'shuffled'"),
    ({"mode": "scale", "factor": float("nan")}, "factor must be a finite number, got nan"),
    ({"mode": "set", "value": float("inf")}, "value must be a finite number, got inf"),
    ({"top_k": 0}, "top_k must be a positive integer, got 0"),
    ({"fraction": 1.5}, r"fraction must be in (0, 1], got 1.5"),
    ({"control": "random", "seed": -1}, "seed must be an integer >= 0, got -1"),
    ({"layers": "5-3"}, "layers=5-3 is a reversed range"),
    ({"layers": "1-x"}, "layers must be integers separated by '|'"),
]
IDS = [next(iter(settings)) + "-" + message.split()[0] for settings, message in BAD]


@pytest.mark.parametrize(("settings", "message"), BAD, ids=IDS)
def test_model_args_and_python_api_refuse_alike(settings, message):
    from relneuron_eval.core.interventions import Intervention

    text = ",".join(f"{k}={v}" for k, v in settings.items())
    for entry in (
        lambda: _spec(f"neuron_set=x.jsonl,{text}"),
        lambda: InterventionSpec.from_model_args({"neuron_set": "x.jsonl", **settings}),
        lambda: InterventionSpec(neuron_set="x.jsonl", **_typed(settings)).validate(),
        lambda: Intervention.build("x.jsonl", **settings),  # before the set is read
    ):
        with pytest.raises(InvalidSetting) as info:
            entry()
        assert message in info.value.message


def _typed(settings: dict) -> dict:
    """The settings as the spec's fields would hold them (bad values stay bad)."""
    return {k: str(v) if k == "layers" else v for k, v in settings.items()}


@pytest.mark.parametrize(("settings", "message"), BAD, ids=IDS)
def test_export_options_refuse_alike(settings, message, tmp_path):
    from relneuron_eval.export import command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    cli = [x for k, v in settings.items() for x in ("--" + k.replace("_", "-"), str(v))]
    out = tmp_path / "out"
    ns = parser.parse_args(["peft", "--neuron-set", "x.jsonl", *cli, "--out", str(out)])
    with pytest.raises(InvalidSetting) as info:
        command.run(ns)
    assert message in info.value.message
    assert not out.exists()


@pytest.mark.parametrize(("settings", "message"), BAD, ids=IDS)
def test_check_files_refuse_alike_at_the_settings_line(settings, message, tmp_path):
    from relneuron_eval.relcheck.parse import parse_check

    block = yaml.safe_dump(settings, default_flow_style=False).strip()
    text = textwrap.dedent(
        """\
        relcheck: 1
        neuron_set: x.jsonl
        tasks: [t1]
        interventions:
          iv:
        {block}
        expect:
          - drop: iv
            at_least: 0.1
        """
    ).format(block=textwrap.indent(block, " " * 4))
    path = tmp_path / "c.relcheck.yaml"
    path.write_text(text)
    with pytest.raises(RelNeuronError) as info:
        parse_check(path)
    error = info.value
    assert message in error.message and error.path == str(path)
    lines = text.splitlines()
    # the line of the setting the message is about (the last one for two-setting combos)
    assert lines[error.line - 1].strip().split(":")[0] in settings


def test_lm_eval_model_args_refuse_alike_before_loading(tmp_path):
    from relneuron_eval.harness.lm_model import RelNeuronLM

    for settings, message in BAD:
        text = ",".join(f"{k}={v}" for k, v in settings.items())
        args = f"pretrained={tmp_path / 'missing'},neuron_set=x.jsonl,{text}"
        with pytest.raises(InvalidSetting) as info:
            RelNeuronLM.create_from_arg_string(args, {"device": "cpu"})
        assert message in info.value.message, text


def test_settings_without_a_neuron_set_are_refused():
    with pytest.raises(InvalidSetting, match=r"top_k=, per_doc= need\(s\) a neuron_set=") as info:
        InterventionSpec.from_model_args({"top_k": 3, "per_doc": "f", "mode": "enhance"})
    assert info.value.setting == "top_k"
    base = InterventionSpec.from_model_args({"name": "baseline", "pretrained": "gpt2"})
    assert base.is_base and base.label("gpt2") == "gpt2__baseline"


def test_where_locates_the_error():
    with pytest.raises(InvalidSetting) as info:
        InterventionSpec.from_model_args({"neuron_set": "s", "seed": 1}, where="run.yaml:12")
    assert (info.value.path, info.value.line, info.value.setting) == ("run.yaml", 12, "seed")
    with pytest.raises(InvalidSetting, match=r"^--model_args: unknown mode 'x'"):
        InterventionSpec.from_model_args({"neuron_set": "s", "mode": "x"}, where="--model_args")


def test_default_factor_is_the_one_the_intervention_uses(set_file, llama):
    from conftest import random_set

    from relneuron_eval.core.interventions import Intervention

    iv = Intervention.build(random_set(llama), "*", mode="enhance")
    assert iv.factor == DEFAULT_FACTOR == InterventionSpec(mode="enhance").effective_factor
    assert iv.multiplier == DEFAULT_FACTOR and iv.spec is not None


# ---------------------------------------------------------------- names
def _prefix(path: Path, data: bytes = SET_BYTES) -> str:
    return f"gpt2__{path.name.removesuffix('.jsonl')}-{hashlib.sha256(data).hexdigest()[:8]}"


@pytest.mark.parametrize(
    ("extra", "suffix"),
    [
        ("", "all__deactivate"),
        ("mode=enhance", "all__enhancex2"),
        ("mode=scale,factor=0.5,groups=a|b", "a+b__scalex0.5"),
        ("mode=set", "all__set0"),
        ("fraction=1", "all__deactivate__frac1"),
        ("layers=0-3|10,sites=mlp.act|mlp.up_proj", "all__deactivate__L0-3+10__act+up_proj"),
        ("positions=last,per_doc=hop1_fact", "all__deactivate__last__perdoc-hop1_fact"),
        ("control=random", "all__deactivate__random-s0"),
        ("top_k=3,control=random,seed=2,strategy=hook", "all__deactivate__top3__random-s2"),
    ],
)
def test_label_is_the_variant_name(set_file, extra, suffix):
    spec = _spec(f"neuron_set={set_file},{extra}".rstrip(","))
    assert spec.label("gpt2") == f"{_prefix(set_file)}__{suffix}"
    # what lm-eval's tracker names the run (unvalidated, as before)
    args = f"pretrained=gpt2,neuron_set={set_file},{extra}".rstrip(",")
    assert variant_name_from_model_args(args, "gpt2") == spec.label("gpt2")


# ---------------------------------------------------------------- keys
def test_key_follows_the_content_not_the_path(set_file, tmp_path):
    copy = tmp_path / "elsewhere" / "renamed.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(SET_BYTES)
    changed = tmp_path / "changed.jsonl"
    changed.write_bytes(SET_BYTES + b"\n")
    spec = InterventionSpec(neuron_set=str(set_file), groups="capital", top_k=5)
    moved = dataclasses.replace(spec, neuron_set=str(copy))
    assert spec.key() == moved.key()
    assert spec.key()["neuron_set_sha256"] == hashlib.sha256(SET_BYTES).hexdigest()
    assert dataclasses.replace(spec, neuron_set=str(changed)).key() != spec.key()
    assert spec.key("h1") == moved.key("h1") != spec.key("h2")
    assert "neuron_set" not in spec.key()


def test_key_ignores_how_and_spelling_but_not_what(set_file):
    plain = _spec(f"neuron_set={set_file},mode=enhance")
    same = [
        f"neuron_set={set_file},mode=enhance,factor={DEFAULT_FACTOR}",
        f"neuron_set={set_file},mode=enhance,strategy=hook,name=x",
        f"neuron_set={set_file},mode=enhance,groups=*,positions=all",
    ]
    assert all(_spec(text).key() == plain.key() for text in same)
    other = [
        f"neuron_set={set_file},mode=enhance,factor=3",
        f"neuron_set={set_file},mode=scale",
        f"neuron_set={set_file},mode=enhance,positions=last",
        f"neuron_set={set_file},mode=enhance,groups=capital",
        f"neuron_set={set_file},mode=enhance,control=random",
        f"neuron_set={set_file},mode=enhance,control=random,seed=1",
    ]
    keys = [plain.key(), *(_spec(text).key() for text in other)]
    assert len({repr(sorted(k.items())) for k in keys}) == len(keys)
    assert InterventionSpec().key() == {}


def test_key_keeps_the_report_cache_format():
    """Stored report runs are keyed by this dict: a change would recompute every run."""
    deact = InterventionSpec(neuron_set="/a/s.jsonl", groups="capital", top_k=10)
    assert deact.key("h") == {
        "groups": "capital",
        "mode": "deactivate",
        "top_k": 10,
        "neuron_set_sha256": "h",
    }
    control = dataclasses.replace(deact, control="random", seed=3)
    assert control.key("h") == {**deact.key("h"), "control": "random", "seed": 3}
    kn = InterventionSpec(neuron_set="/k.jsonl", per_doc="hop1_fact", mode="enhance", factor=2.0)
    assert kn.key("k") == {
        "groups": "*",
        "mode": "enhance",
        "factor": 2.0,
        "per_doc": "hop1_fact",
        "neuron_set_sha256": "k",
    }


def test_every_field_is_in_the_table():
    assert tuple(f.name for f in dataclasses.fields(InterventionSpec)) == SETTING_NAMES
