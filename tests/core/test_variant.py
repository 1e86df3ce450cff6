"""Variant names: one stable, distinct label per intervention in lm-eval's outputs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from relneuron_eval.core.variant import variant_name, variant_name_from_model_args

SET_BYTES = b'{"layer": 1, "index": 2, "group": "capital"}\n'


@pytest.fixture
def neuron_file(tmp_path: Path) -> Path:
    path = tmp_path / "myset.jsonl"
    path.write_bytes(SET_BYTES)
    return path


def _prefix(path: Path, data: bytes = SET_BYTES) -> str:
    """``gpt2__<stem>-<first 8 hex of the file's SHA-256>``, as the module docstring says."""
    return f"gpt2__myset-{hashlib.sha256(data).hexdigest()[:8]}"


def _name(args: str) -> str | None:
    return variant_name_from_model_args(args, "gpt2")


def test_plain_hf_runs_keep_lm_evals_name():
    assert _name("pretrained=gpt2") is None
    assert _name("pretrained=gpt2,neuron_set=") is None
    assert variant_name_from_model_args({"pretrained": "gpt2", "neuron_set": None}, "gpt2") is None
    assert variant_name_from_model_args(None, "gpt2") is None
    assert variant_name(base="gpt2", neuron_set=None) == "gpt2"


def test_default_intervention_name(neuron_file):
    assert _name(f"pretrained=gpt2,neuron_set={neuron_file}") == (
        _prefix(neuron_file) + "__all__deactivate"
    )


@pytest.mark.parametrize(
    ("extra", "suffix"),
    [
        ("mode=enhance", "all__enhancex2"),
        ("mode=enhance,factor=3", "all__enhancex3"),
        ("mode=scale,factor=0.5", "all__scalex0.5"),
        ("mode=set,value=1.5", "all__set1.5"),
        ("mode=set", "all__set0"),
        ("groups=capital|language", "capital+language__deactivate"),
        ("top_k=5", "all__deactivate__top5"),
        ("fraction=0.1", "all__deactivate__frac0.1"),
        ("layers=0-3|10", "all__deactivate__L0-3+10"),
        ("sites=mlp.act|mlp.up_proj", "all__deactivate__act+up_proj"),
        ("positions=last", "all__deactivate__last"),
        ("per_doc=facts.jsonl", "all__deactivate__perdoc-facts.jsonl"),
        ("control=random", "all__deactivate__random-s0"),
        ("control=random,seed=3", "all__deactivate__random-s3"),
    ],
)
def test_each_intervention_argument_shows_in_the_name(neuron_file, extra, suffix):
    args = f"pretrained=gpt2,neuron_set={neuron_file},{extra}"
    assert _name(args) == f"{_prefix(neuron_file)}__{suffix}"


def test_all_parts_in_their_documented_order(neuron_file):
    args = (
        f"pretrained=gpt2,neuron_set={neuron_file},groups=capital,mode=enhance,factor=4,"
        "top_k=2,fraction=0.5,layers=1,sites=mlp.act,positions=last,per_doc=d.jsonl,"
        "control=random,seed=9"
    )
    assert _name(args) == (
        f"{_prefix(neuron_file)}__capital__enhancex4__top2__frac0.5__L1__act__last"
        "__perdoc-d.jsonl__random-s9"
    )


def test_different_interventions_get_different_names(neuron_file):
    extras = [
        "",
        "groups=capital",
        "mode=enhance",
        "mode=enhance,factor=3",
        "mode=scale,factor=3",
        "mode=set,value=1",
        "top_k=5",
        "top_k=6",
        "fraction=0.1",
        "layers=1",
        "layers=2",
        "sites=mlp.act",
        "positions=last",
        "per_doc=a.jsonl",
        "control=random",
        "control=random,seed=1",
    ]
    names = [_name(f"pretrained=gpt2,neuron_set={neuron_file},{e}".rstrip(",")) for e in extras]
    assert len(set(names)) == len(extras)


def test_same_file_name_with_other_contents_is_another_variant(tmp_path, neuron_file):
    other = tmp_path / "other" / "myset.jsonl"
    other.parent.mkdir()
    other.write_bytes(SET_BYTES + b"\n")
    first, second = _name(f"neuron_set={neuron_file}"), _name(f"neuron_set={other}")
    assert first == _prefix(neuron_file) + "__all__deactivate"
    assert second == _prefix(other, SET_BYTES + b"\n") + "__all__deactivate"
    assert first != second


@pytest.mark.parametrize(
    "spelling",
    [
        "groups=*",
        "groups=",
        "mode=deactivate",
        "positions=all",
        "strategy=fold",  # how, not what: not part of the name
        "seed=5",  # a seed without control=random changes nothing
        "mode=deactivate,groups=*,positions=all",
    ],
)
def test_equivalent_spellings_give_the_same_name(neuron_file, spelling):
    plain = _name(f"pretrained=gpt2,neuron_set={neuron_file}")
    assert _name(f"pretrained=gpt2,neuron_set={neuron_file},{spelling}") == plain


def test_factor_spelling_and_dict_form_are_equivalent(neuron_file):
    text = _name(f"pretrained=gpt2,neuron_set={neuron_file},mode=enhance,factor=2")
    assert _name(f"pretrained=gpt2,neuron_set={neuron_file},mode=enhance,factor=2.0") == text
    assert _name(f"pretrained=gpt2,neuron_set={neuron_file},mode=enhance") == text
    as_dict = {"pretrained": "gpt2", "neuron_set": str(neuron_file), "mode": "enhance"}
    assert variant_name_from_model_args(as_dict, "gpt2") == text
    assert text == _prefix(neuron_file) + "__all__enhancex2"


def test_relative_and_absolute_paths_and_copies_are_one_variant(tmp_path, neuron_file, monkeypatch):
    copy = tmp_path / "elsewhere" / "myset.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(SET_BYTES)
    monkeypatch.chdir(tmp_path)
    expected = _prefix(neuron_file) + "__all__deactivate"
    assert _name("neuron_set=myset.jsonl") == expected
    assert _name(f"neuron_set={neuron_file}") == expected
    assert _name(f"neuron_set={copy}") == expected


def test_name_is_stable_across_calls(neuron_file):
    args = f"pretrained=gpt2,neuron_set={neuron_file},mode=enhance,groups=capital"
    assert _name(args) == _name(args) == f"{_prefix(neuron_file)}__capital__enhancex2"


def test_compressed_set_file_stem_drops_both_suffixes(tmp_path):
    path = tmp_path / "myset.jsonl.gz"
    path.write_bytes(b"zz")
    assert _name(f"neuron_set={path}") == _prefix(path, b"zz") + "__all__deactivate"


def test_missing_set_file_still_gets_a_name():
    assert _name("neuron_set=/nonexistent/dir/gone.jsonl") == "gpt2__gone-missing__all__deactivate"


def test_explicit_name_wins_and_is_cleaned(neuron_file):
    assert _name(f"neuron_set={neuron_file},name=my run!,mode=enhance") == "gpt2__my-run"
    assert _name(f"neuron_set={neuron_file},name=exp_1") == "gpt2__exp_1"
    assert variant_name(base="b", neuron_set=None, name="x" * 150) == "b__" + "x" * 100


def test_base_falls_back_to_pretrained_then_model(neuron_file):
    suffix = _prefix(neuron_file).removeprefix("gpt2") + "__all__deactivate"
    args = f"pretrained=org/small,neuron_set={neuron_file}"
    assert variant_name_from_model_args(args, None) == "org/small" + suffix
    assert variant_name_from_model_args(f"neuron_set={neuron_file}", None) == "model" + suffix


def test_name_alone_labels_a_plain_run_in_the_tracker():
    """``name=`` without ``neuron_set=`` is accepted by relneuron-hf, so lm-eval's tracker
    must name the run after it instead of crashing."""
    from lm_eval.loggers.evaluation_tracker import GeneralConfigTracker

    assert variant_name_from_model_args("pretrained=gpt2,name=baseline", "gpt2") == "gpt2__baseline"
    assert GeneralConfigTracker._get_model_name("pretrained=gpt2,name=baseline") == "gpt2__baseline"
