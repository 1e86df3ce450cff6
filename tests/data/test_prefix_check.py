"""Metrics on objects that share their first tokens (years, "University of ...", names).

With SmolLM2's tokenizer (numbers are split digit by digit): " 1911" is " ", "1", "9",
"1", "1"; " University of Oxford" is " University", " of", " Oxford"; " Johann Sebastian
Bach" is " Johann", " Sebastian", " Bach"; " New York City" is " New", " York", " City".
Every expectation below follows from these tokens and the metrics' definitions.
"""

from __future__ import annotations

import pytest

from relneuron_eval.data import prefix_check as pc
from relneuron_eval.data.relation import Fact, Relation
from relneuron_eval.discovery import correct as cr
from relneuron_eval.harness import task_metrics as tm


@pytest.fixture(scope="module")
def tokenizer():
    return pc.load_tokenizer("smollm2-135m")


def test_the_tokens_the_expectations_rest_on(tokenizer):
    def pieces(text: str) -> list[str]:
        return [tokenizer.decode([i]) for i in tokenizer.encode(text, add_special_tokens=False)]

    assert pieces(" 1911") == [" ", "1", "9", "1", "1"]
    assert pieces(" University of Oxford") == [" University", " of", " Oxford"]
    assert pieces(" Johann Sebastian Bach") == [" Johann", " Sebastian", " Bach"]
    assert pieces(" New York City") == [" New", " York", " City"]


# (generation, answers, acc_prefix2, acc_match) as the tasks score them
SHARED_PREFIX_CASES = [
    (" 1875", ["1911"], 1, 0),  # " ", "1" shared: the defect
    (" 1911", ["1911"], 1, 1),
    (" 2011", ["1911"], 0, 0),  # " ", "2"
    (" 1911 and 1912", ["1911"], 1, 1),
    (" University of Cambridge", ["University of Oxford"], 1, 0),  # the defect
    (" University of Oxford", ["University of Oxford"], 1, 1),
    (" Harvard University", ["University of Oxford"], 0, 0),
    (" Johann Strauss", ["Johann Sebastian Bach"], 0, 0),  # second token differs
    (" Johann Sebastian", ["Johann Sebastian Bach"], 1, 0),  # first 2 tokens only
    (" Johann Sebastian Bach", ["Johann Sebastian Bach"], 1, 1),
    (" New York", ["New York City"], 1, 0),
    (" New York City", ["New York"], 1, 1),  # the answer, then a word more
]


@pytest.mark.parametrize(("generation", "answers", "prefix2", "matched"), SHARED_PREFIX_CASES)
def test_task_metrics_on_shared_prefixes(tokenizer, generation, answers, prefix2, matched):
    doc = {"answers": answers, "delimiter": " "}
    scores = tm.process_generation(doc, [generation], tokenizer=tokenizer)
    assert scores == {"acc_prefix2": prefix2, "acc_match": matched}


# ------------------------------------------------------ discovery's criterion
@pytest.mark.parametrize(("generation", "answers", "prefix2", "matched"), SHARED_PREFIX_CASES)
def test_discovery_criteria_on_shared_prefixes(tokenizer, generation, answers, prefix2, matched):
    ids = tokenizer.encode(generation, add_special_tokens=False)
    first_two = tokenizer.decode(ids[:2])
    assert cr.is_correct("prefix2", first_two, answers) is bool(prefix2)
    assert cr.is_correct("match", generation + "\nQ: more", answers) is bool(matched)


@pytest.mark.parametrize(
    ("generated", "answers", "open_"),
    [
        (" 18", ["1809"], True),  # a year begun: could still be 1809
        (" 180", ["1809"], True),  # the last character is not trusted yet
        (" 1804", ["1809"], True),  # its last character is not trusted yet either
        (" 1804 and", ["1809"], False),  # diverged: no continuation matches
        (" 1809", ["1809"], True),  # "18090" would not match: wait for a boundary
        (" 1809 and", ["1809"], False),  # decided right
        (" 1809\n", ["1809"], False),  # the newline ends it
        (" University of Camb", ["University of Oxford"], False),
        (" University of", ["University of Oxford"], True),
        (" The", ["United States"], True),  # a lone article is dropped only later
        (" The Unit", ["United States"], True),
        ("", ["Paris"], True),
        (" Parisian food", ["Paris"], False),
        (" 中国的", ["中国"], False),  # CJK: any continuation, decided right
        (" 中", ["中国"], True),
    ],
)
def test_match_open(generated, answers, open_):
    assert cr.match_open(generated, answers) is open_


@pytest.mark.parametrize(
    "text", [" 1809", " 1809 and 1810", " University of Oxford", " The United States", " 中国的"]
)
def test_a_decided_row_keeps_its_verdict(text):
    """Closing a row early never changes the verdict of the whole continuation."""
    answers = ["1809", "University of Oxford", "United States", "中国"]
    for end in range(len(text) + 1):
        part = text[:end]
        if not cr.match_open(part, answers):
            assert cr.match_correct(part, answers) == cr.match_correct(text, answers), part


def test_unknown_criterion_is_one_clear_error():
    from relneuron_eval.errors import RelNeuronError

    with pytest.raises(RelNeuronError, match="unknown --correct 'prefix3'"):
        cr.check_criterion("prefix3")


# ------------------------------------------------------ discriminativeness
def _relation(name: str, objects: list[str]) -> Relation:
    facts = [
        Fact(name, f"{name}/{i}", f"subject {i}", obj, (obj,), "test")
        for i, obj in enumerate(objects)
    ]
    return Relation(name, facts, {"eval": ["{subject} is"]})


def test_years_are_ambiguous(tokenizer):
    # " 1911" and " 1875" share " ", "1"; " 2003" shares nothing, but all three begin with
    # digits only and have more tokens than two
    check = pc.check_relation(tokenizer, _relation("born_in", ["1911", "1875", "2003"]))
    assert (check.facts, check.shared, check.uninformative, check.ambiguous) == (3, 2, 3, 3)
    assert check.share == 1.0 and check.flagged
    assert "acc_prefix2 cannot tell 3 of 3 facts" in check.warning()


def test_university_of_is_ambiguous(tokenizer):
    rel = _relation("alma_mater", ["University of Oxford", "University of Cambridge", "Harvard"])
    check = pc.check_relation(tokenizer, rel)
    assert (check.shared, check.uninformative, check.ambiguous) == (2, 0, 2)
    assert check.examples == ("University of Oxford", "University of Cambridge")
    assert check.flagged


def test_names_only_where_two_tokens_cannot_tell(tokenizer):
    # Johann Sebastian Bach vs Johann Strauss differ in their second token; "New York" as
    # a generation is wrong for "New York City" (acc_match) but passes acc_prefix2; "New
    # York City" for "New York" passes both (the answer, then a word): not counted
    objects = [
        "Johann Sebastian Bach",
        "Johann Strauss",
        "Johann Sebastian Bach",
        "New York City",
        "New York",
    ]
    check = pc.check_relation(tokenizer, _relation("composer", objects))
    assert (check.shared, check.uninformative, check.ambiguous) == (1, 0, 1)
    assert check.examples == ("New York City",)
    assert check.share == 0.2 and not check.flagged  # the limit is "more than 20 %"


def test_an_alias_is_not_a_wrong_answer(tokenizer):
    facts = [
        Fact("r", "r/0", "a", "1911", ("1911", "1911 AD"), "test"),
        Fact("r", "r/1", "b", "Paris", ("Paris",), "test"),
    ]
    check = pc.check_relation(tokenizer, Relation("r", facts, {}))
    assert (check.shared, check.uninformative) == (0, 1)


def test_shared_count_is_the_metrics_own_verdict(tokenizer):
    """Brute force over every pair with task_metrics itself gives the same count."""
    objects = ["1911", "1875", "University of Oxford", "University of Cambridge", "New York"]
    objects += ["New York City", "Johann Strauss", "Johann Sebastian Bach", "7", "St. Louis"]
    rel = _relation("mixed", objects)
    brute = sum(
        any(
            tm.prefix2(other, fact.answers, " ", tokenizer) and not tm.match(other, fact.answers)
            for other in objects
        )
        for fact in rel.facts
    )
    assert pc.check_relation(tokenizer, rel).shared == brute == 5


def test_shipped_relations_measured(tokenizer):
    """The shipped English relations: which of them the 2-token criterion cannot judge."""
    from relneuron_eval.data.facts import load_relations

    checks = {c.relation: c for c in pc.check_relations(tokenizer, load_relations().values())}
    assert [r for r, c in checks.items() if c.flagged] == ["person_mother"]
    assert checks["company_hq"].ambiguous == 0
    assert 0.2 < checks["person_mother"].share < 0.3


def test_bad_tokenizer_is_one_clear_error(tmp_path):
    from relneuron_eval.errors import RelNeuronError

    with pytest.raises(RelNeuronError, match="cannot load the tokenizer") as info:
        pc.load_tokenizer(str(tmp_path / "nothing-here"))
    assert "--tokenizer none" in info.value.hint


# prompt, accepted answers, and the verdicts of (prefix2, match) on the embedded model's
# greedy answers, which are: " 1804", " University of Cambridge", " Johann Sebastian
# Bach" (twice) and " Madrid", each followed by a newline
DARWIN = (
    "Albert Einstein was born in 1879\nIsaac Newton was born in 1643\nCharles Darwin was born in"
)
HAWKING = (
    "Albert Einstein studied at the University of Zurich\nAlan Turing studied at the "
    "University of Cambridge\nStephen Hawking studied at the"
)
BACH = (
    "The Magic Flute was composed by Wolfgang Amadeus Mozart\nThe Four Seasons was "
    "composed by Antonio Vivaldi\nThe Brandenburg Concertos were composed by"
)
SPAIN = "The capital of France is Paris\nThe capital of Italy is Rome\nThe capital of Spain is"
MODEL_CASES = [
    (DARWIN, ["1809"], True, False),
    (HAWKING, ["University of Oxford"], True, False),
    (BACH, ["Johann Sebastian Bach"], True, True),
    (BACH, ["Johann Strauss"], False, False),
    (SPAIN, ["Madrid"], True, True),
]


@pytest.mark.slow  # lm_eval / relneuron subprocesses: ~10 CPU s
def test_discovery_check_on_the_embedded_model():
    """``answers_correct`` under both criteria; match agrees with plain greedy generation
    to the newline (so closing rows early changed nothing)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relneuron_eval.core.embedded import ensure_local
    from relneuron_eval.discovery.activations import answers_correct

    path = ensure_local(verbose=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [c[0] for c in MODEL_CASES]
    answers = [c[1] for c in MODEL_CASES]
    got = {
        name: answers_correct(model, tokenizer, texts, answers, criterion=name)
        for name in ("prefix2", "match")
    }
    assert got["prefix2"] == [c[2] for c in MODEL_CASES]
    assert got["match"] == [c[3] for c in MODEL_CASES]
    with torch.no_grad():
        for text, accepted, _, matched in MODEL_CASES:
            ids = tokenizer(text, return_tensors="pt")
            out = model.generate(**ids, max_new_tokens=16, do_sample=False)
            generated = tokenizer.decode(out[0, ids["input_ids"].shape[1] :])
            assert tm.match(generated.split("\n")[0], accepted) is matched


# ------------------------------------------------------------------ taskgen
def _year_spec(folder) -> str:
    import json

    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"subject": f"Person {i}", "object": str(1800 + 7 * i)} for i in range(24)]
    (folder / "born.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "years.yaml").write_text(
        "relations:\n"
        "  - name: born_in_year\n"
        "    facts: born.jsonl\n"
        "    templates:\n"
        '      discovery: ["{subject} was born in"]\n'
        '      eval: ["{subject} was born in the year", "The birth year of {subject} is"]\n'
    )
    return str(folder / "years.yaml")


def test_taskgen_warns_about_ambiguous_relations(tmp_path, capsys):
    from relneuron_eval.cli import main as cli_main

    spec, out = _year_spec(tmp_path / "spec"), tmp_path / "tasks"
    assert cli_main(["taskgen", "--spec", spec, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: relation born_in_year: acc_prefix2 cannot tell 24 of 24 facts" in err
    assert "read acc_match" in err and (out / "relfacts_born_in_year.yaml").is_file()
    assert cli_main(["taskgen", "--spec", spec, "--out", str(out), "--tokenizer", "none"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_taskgen_bad_tokenizer_writes_nothing(tmp_path, capsys):
    from relneuron_eval.cli import main as cli_main

    spec, out = _year_spec(tmp_path / "spec"), tmp_path / "tasks"
    args = ["taskgen", "--spec", spec, "--out", str(out), "--tokenizer", str(tmp_path / "no")]
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "cannot load the tokenizer" in err
    assert not out.exists()


# ------------------------------------------------------------------- report
def test_report_record_and_flag_sentence():
    from relneuron_eval.report.markdown import _prefix2_flags

    record = pc.report_record("smollm2-135m", ["person_mother", "company_hq", "no_such"])
    mother = record["relations"]["person_mother"]
    assert (mother["facts"], mother["ambiguous"], mother["flagged"]) == (994, 220, True)
    assert record["relations"]["company_hq"]["share"] == 0.0
    assert len(record["skipped"]) == 1 and record["skipped"][0].startswith("no_such:")
    results = {"meta": {"metric": "acc_prefix2"}, "prefix2_check": record}
    (sentence, _) = _prefix2_flags(results)
    assert "for person_mother (22% of its facts)" in sentence and "company_hq" not in sentence
    assert sentence.endswith("read acc_match for them.")
    results["meta"]["metric"] = "acc_match"
    assert _prefix2_flags(results)[0].endswith("acc_match, which is not affected.")
    unloadable = pc.report_record("/no/such/model", ["person_mother"])
    assert unloadable["relations"] == {} and "tokenizer" in unloadable["skipped"][0]


def test_the_criterion_keys_the_checkpoint_and_is_validated():
    """Stored ``correct`` flags depend on the criterion: another one must not resume them."""
    from relneuron_eval.discovery.relation_specific import (
        ACTIVATION_KEYS,
        RelationSpecificConfig,
        validate_config,
    )
    from relneuron_eval.errors import RelNeuronError

    assert "correct" in ACTIVATION_KEYS
    assert RelationSpecificConfig().correct == "match"
    with pytest.raises(RelNeuronError, match="unknown --correct"):
        validate_config(RelationSpecificConfig(correct="prefix3"))
