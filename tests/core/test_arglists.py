"""``3|5|10-20`` lists: the one parser behind ``layers=``/``--layers`` and ``sites=``."""

from __future__ import annotations

import time

import pytest

from relneuron_eval.core.arglists import MAX_LAYERS, parse_layers, parse_named, parse_names
from relneuron_eval.errors import RelNeuronError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7", [7]),
        ("3|5|10-13", [3, 5, 10, 11, 12, 13]),
        ("3,5,10-11", [3, 5, 10, 11]),  # the relneuron command line also takes commas
        (" 3 | 5 ,10-11 ", [3, 5, 10, 11]),
        ("|3||5|", [3, 5]),
        ("4-4", [4]),
        ("0", [0]),
        (f"{MAX_LAYERS - 1}", [MAX_LAYERS - 1]),
    ],
)
def test_layers_text_expands_in_the_order_written(text, expected):
    assert parse_layers(text) == expected


def test_duplicates_are_kept_for_the_caller_to_judge():
    # parse_layers checks syntax and bounds only; discovery refuses repeated layers itself.
    assert parse_layers("3|3|2-4") == [3, 3, 2, 3, 4]


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_empty_layers_mean_no_restriction(empty):
    assert parse_layers(empty) is None


def test_lists_of_integers_are_taken_as_is():
    assert parse_layers([5, 0, 2]) == [5, 0, 2]
    assert parse_layers((1,)) == [1]
    assert parse_layers([]) == []


@pytest.mark.parametrize(
    "bad", ["a", "3|x", "1.5", "3-", "-", "2-b", "3--5", True, [1, "2"], [2.0], [True]]
)
def test_bad_tokens_are_one_relneuron_error(bad):
    with pytest.raises(RelNeuronError) as info:
        parse_layers(bad, "--layers")
    assert str(info.value).startswith("--layers")


def test_reversed_range_says_which_way_round():
    with pytest.raises(RelNeuronError) as info:
        parse_layers("1|20-10", "layers")
    assert str(info.value) == (
        "layers=20-10 is a reversed range (write the lower layer first: 10-20)"
    )


@pytest.mark.parametrize("text", ["-1", "-3-5", f"0-{MAX_LAYERS}", f"{MAX_LAYERS}"])
def test_layers_outside_any_model_are_refused(text):
    with pytest.raises(RelNeuronError, match=f"0-{MAX_LAYERS - 1}, the layers any model"):
        parse_layers(text)


def test_num_layers_bounds_the_range_and_is_named():
    assert parse_layers("0-3", num_layers=4) == [0, 1, 2, 3]
    with pytest.raises(RelNeuronError) as info:
        parse_layers("2-4", num_layers=4)
    assert str(info.value) == (
        "layers=2-4 is outside this model's layers 0-3 (layers count from 0; e.g. layers=0-3|10)"
    )
    with pytest.raises(RelNeuronError, match="this model's layers 0-3"):
        parse_layers([4], num_layers=4)


@pytest.mark.parametrize("num_layers", [None, 4])
def test_huge_ranges_are_refused_before_expansion(num_layers):
    # Expanding 10**18 layers would never finish; the bound check must come first.
    start = time.perf_counter()
    with pytest.raises(RelNeuronError, match="is outside"):
        parse_layers(f"0-{10**18}", num_layers=num_layers)
    with pytest.raises(RelNeuronError, match="is outside"):
        parse_layers(f"3|0-{10**18}|5", num_layers=num_layers)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mlp.act", ["mlp.act"]),
        ("mlp.act|mlp.up_proj", ["mlp.act", "mlp.up_proj"]),
        ("a,b", ["a", "b"]),
        (" a | b ,c ", ["a", "b", "c"]),
        ("a||b|", ["a", "b"]),
        ("a|a", ["a", "a"]),
        (7, ["7"]),
    ],
)
def test_names_split_on_bars_and_commas(text, expected):
    assert parse_names(text) == expected


@pytest.mark.parametrize("empty", [None, "", "  "])
def test_empty_names_are_none(empty):
    assert parse_names(empty) is None


def test_a_list_of_names_is_taken_as_is():
    assert parse_names(["mlp.act", " mlp.up_proj "]) == ["mlp.act", "mlp.up_proj"]
    assert parse_names(("mlp.act",)) == ["mlp.act"]
    assert parse_names([]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3--5", "--layers=3--5 has a '-' too many: a range is LOW-HIGH with one '-' (layers "
         "count from 0, never negative) (write 3-5)"),
        ("1|10---20", "--layers=10---20 has a '-' too many"),
        ("-3--5", "(write 3-5)"),
    ],
)  # fmt: skip
def test_double_dash_says_what_is_wrong_and_what_to_write(text, expected):
    with pytest.raises(RelNeuronError) as info:
        parse_layers(text, "--layers")
    assert expected in str(info.value)
    assert "reversed" not in str(info.value)  # what "3--5" used to be called (3 > -5)


def test_named_values_split_at_the_first_equals_and_refuse_empty_sides():
    assert parse_named(" Gemma 3 270M = out/gemma ", "--run") == ("Gemma 3 270M", "out/gemma")
    assert parse_named("a=b=c", "--run") == ("a", "b=c")  # the value keeps its own '='
    for spec in ("nofolder", "=out/x", "name=", " = "):
        with pytest.raises(RelNeuronError, match=r"--report: expected NAME=FOLDER, got"):
            parse_named(spec, "--report", "FOLDER")
