"""Metric functions of the relfacts tasks, on tricky cases and with the real SmolLM2 tokenizer."""

from __future__ import annotations

import functools
import logging

import pytest

from relneuron_eval.data import answers as rules
from relneuron_eval.harness import task_metrics as tm


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from relneuron_eval.core.embedded import ensure_local

    return AutoTokenizer.from_pretrained(ensure_local(verbose=False))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  The Washington, D.C.!", "washington d c"),
        ("Bogotá", "bogota"),
        ("São Paulo", "sao paulo"),
        ("l'Italie", "italie"),
        ("The", "the"),  # a lone article is the answer, not dropped
        ("ＴＯＫＹＯ", "tokyo"),  # full-width forms
        ("ドル", "ドル"),  # kana keep their voicing mark
        ("Port-au-Prince", "port au prince"),
    ],
)
def test_normalize(text, expected):
    assert rules.normalize(text) == expected


@pytest.mark.parametrize(
    ("generation", "answers", "expected"),
    [
        (" Paris", ["Paris"], True),
        ("Paris", ["Paris"], True),  # no leading space
        ("   paris.", ["Paris"], True),  # spaces, case, punctuation
        (" Paris, the city of light", ["Paris"], True),
        (" Parisian food", ["Paris"], False),  # word boundary
        (" Bogota", ["Bogotá"], True),  # accents
        (" Washington", ["Washington D.C.", "Washington"], True),  # alias
        (" Washington", ["Washington D.C."], False),  # without the alias: too short
        (" the United States.", ["United States"], True),  # leading article
        (" Johann Sebastian Bach was", ["Johann Sebastian Bach"], True),  # multi-token
        (" Johann Strauss", ["Johann Sebastian Bach"], False),
        (" Johann", ["Johann Sebastian Bach"], False),  # partial object is not a match
        ("中国的首都", ["中国"], True),  # CJK: no word boundary needed
        (" 中国", ["中国"], True),
        ("中华", ["中国"], False),
        ("", ["Paris"], False),
        (" London", ["Paris", "Rome"], False),
    ],
)
def test_match(generation, answers, expected):
    assert rules.match(generation, answers) is expected


def test_mentions():
    text = "Ozumba is in Mexico. Mexico's capital is Mexico City."
    assert rules.mentions(text, ["Mexico"])
    assert not rules.mentions(text, ["Mex"])
    assert rules.mentions("它位于中国。", ["中国"])


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        (" X is in France. France's capital is Paris. So the answer is Paris.", "Paris."),
        (" The answer is: St. Louis. Then more text.", "St. Louis. Then more text."),
        (" So the answer is Lima. Again, the answer is Quito", "Quito"),
        (" No marker here", " No marker here"),
    ],
)
def test_final_answer(generation, expected):
    assert rules.final_answer(generation) == expected


@pytest.mark.parametrize(
    ("generation", "answers", "expected"),
    [
        (" Paris, France", ["Paris"], True),  # one-token object: 1 token compared
        ("Paris", ["Paris"], True),  # missing space replaced by the delimiter
        ("  Paris", ["Paris"], True),
        (" Par", ["Paris"], False),  # a different first token
        (" paris", ["Paris"], False),  # the paper's metric is case-sensitive
        (" Johann Sebastian", ["Johann Sebastian Bach"], True),  # 2 of 3 tokens
        (" Johann Strauss", ["Johann Sebastian Bach"], False),
        (" Johann", ["Johann Sebastian Bach"], False),
        (" Washington", ["Washington D.C."], False),  # 1 token of a multi-token object
        (" Washington", ["Washington D.C.", "Washington"], True),  # ... unless an alias
    ],
)
def test_prefix2_with_tokenizer(tokenizer, generation, answers, expected):
    assert rules.prefix2(generation, answers, " ", tokenizer=tokenizer) is expected


def test_prefix2_cjk_uses_empty_delimiter(tokenizer):
    assert rules.prefix2("北京是", ["北京"], "", tokenizer=tokenizer)
    assert not rules.prefix2("上海", ["北京"], "", tokenizer=tokenizer)


def test_prefix2_fallback_without_tokenizer_warns_once(caplog, monkeypatch):
    monkeypatch.setattr(rules, "_warned_no_tokenizer", False)
    with caplog.at_level(logging.WARNING, logger="relneuron_eval.data.answers"):
        assert rules.prefix2(" Johann Sebastian Bach", ["Johann Sebastian Bach"])
        assert rules.prefix2(" Paris, France", ["Paris"])
        assert not rules.prefix2(" Johann Strauss", ["Johann Sebastian Bach"])
    warnings = [r for r in caplog.records if "no Hugging Face tokenizer" in r.getMessage()]
    assert len(warnings) == 1


def test_process_functions_read_the_right_answers(tokenizer):
    doc = {
        "answers": ["Mexico City", "Ciudad de Mexico"],
        "bridge_answers": ["Mexico"],
        "delimiter": " ",
    }
    gen = functools.partial(tm.process_generation, tokenizer=tokenizer)
    assert gen(doc, [" Mexico City\n"]) == {"acc_prefix2": 1, "acc_match": 1}
    # " Mexico City" is two tokens; a generation that stops after " Mexico" has one
    assert gen(doc, [" Mexico"]) == {"acc_prefix2": 0, "acc_match": 0}
    assert gen(doc, [" Mexico Ci"]) == {"acc_prefix2": 0, "acc_match": 0}
    assert tm.process_hop1(doc, [" Mexico."], tokenizer) == {"acc_prefix2": 1, "acc_match": 1}
    cot = " Ozumba is in Mexico. Mexico's capital is Mexico City. So the answer is Mexico City."
    assert tm.process_cot(doc, [cot]) == {"acc_match": 1, "bridge_recall": 1}
    wrong = " Ozumba is in Nigeria. So the answer is Abuja."
    assert tm.process_cot(doc, [wrong]) == {"acc_match": 0, "bridge_recall": 0}


# ------------------------------------------------- the evaluated model's tokenizer
def test_outside_an_evaluation_there_is_no_model_tokenizer(caplog, monkeypatch):
    monkeypatch.setattr(rules, "_warned_no_tokenizer", False)
    assert tm.model_tokenizer() is None
    doc = {"answers": ["Lima"], "delimiter": " "}
    with caplog.at_level(logging.WARNING, logger="relneuron_eval.data.answers"):
        assert tm.process_generation(doc, ["Lima, Peru"])["acc_prefix2"] == 1  # by words
    assert any("no Hugging Face tokenizer" in r.getMessage() for r in caplog.records)


def test_lm_eval_still_calls_metrics_from_evaluate_with_lm():
    """The lookup's contract with lm-eval: ``evaluate(lm, ...)`` runs ``process_results``."""
    import inspect

    import lm_eval.evaluator as ev

    assert (ev.__name__, ev.evaluate.__name__) == tm._EVALUATOR
    assert next(iter(inspect.signature(ev.evaluate).parameters)) == "lm"
    assert "task.process_results(" in inspect.getsource(ev.evaluate)


def test_two_models_in_one_process_each_scored_with_their_own_tokenizer(tmp_path, tokenizer):
    """Same generated text, two tokenizers, two verdicts, whichever model was built last.

    Both models write "LLLL..." for every prompt. The first answer is "Lima": with a
    character tokenizer the first two tokens (" ", "L") agree; with SmolLM2's BPE " LL..."
    is not " Lima". Both models are built before either is evaluated (the old global
    tokenizer, set by the last HFLM built, scored the character model with BPE).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval_helpers import char_tokenizer, save_constant_llama

    from relneuron_eval.harness.task_index import task_manager

    task = "relfacts_country_capital_city"
    chars = save_constant_llama(tmp_path / "chars", char_tokenizer("L"), "L")
    bpe = save_constant_llama(tmp_path / "bpe", tokenizer, "L")
    models = {
        name: HFLM(pretrained=str(path), device="cpu", batch_size=2)
        for name, path in (("chars", chars), ("bpe", bpe))
    }
    scores = {}
    for name, lm in models.items():
        out = lm_eval.simple_evaluate(
            model=lm, tasks=[task], limit=2, task_manager=task_manager([task]), log_samples=True
        )
        rows = sorted(out["samples"][task], key=lambda r: r["doc_id"])
        assert rows[0]["doc"]["answers"] == ["Lima"]
        for row in rows:
            generation = row["filtered_resps"][0]
            assert generation.startswith("LLLL"), generation
            own = rules.prefix2(generation, row["doc"]["answers"], " ", lm.tokenizer)
            assert row["acc_prefix2"] == int(own), (name, row["doc_id"])
        scores[name] = [row["acc_prefix2"] for row in rows]
    assert scores == {"chars": [1, 0], "bpe": [0, 0]}
