"""Discovery on a user's own relations (issue 18): what the set and the run say about them."""

from __future__ import annotations

import hashlib
import logging

import pytest

from relneuron_eval.data.relation import Prompt
from relneuron_eval.discovery.data import spec_record


def test_spec_record_names_the_spec_file_and_its_content(tmp_path, monkeypatch):
    spec = tmp_path / "mine.yaml"
    spec.write_text("relations: []\n")
    monkeypatch.chdir(tmp_path)
    record = spec_record("mine.yaml")["relation_spec"]
    assert record == {
        "path": str(spec.resolve()),
        "sha256": hashlib.sha256(spec.read_bytes()).hexdigest(),
    }
    assert spec_record("country_capital_city,company_hq") == {}  # shipped relations


def test_skipped_relations_are_named_by_the_answers_only_check_with_what_helps(tmp_path, caplog):
    """Before: the pre-check knew, but said nothing; the skip lines came after the whole
    activation pass (14 min on a user's 7 relations), with no options that help."""
    import torch
    from tools_helpers import tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relneuron_eval.core.architectures import model_shape
    from relneuron_eval.discovery.activations import ActivationStore, Layout, _next_tokens
    from relneuron_eval.discovery.relation_specific import (
        RelationSpecificConfig,
        check_answerable,
        too_few_hint,
    )

    path = tiny_model()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    texts = [f"Item {i} is called" for i in range(8)]
    prompts = []
    with torch.no_grad():
        for i, text in enumerate(texts):
            ids = tokenizer(text)["input_ids"]
            first = _next_tokens(model, [ids], 0)[0]
            second = _next_tokens(model, [[*ids, first]], 0)[0]
            own = tokenizer.decode([first, second]).strip()  # the model "knows" alpha
            relation, answer = ("alpha", own) if i < 4 else ("gamma", "zzzz qqqq")
            prompts.append(Prompt(relation, f"{relation}/{i}", text, answer, (answer,), 0))
    config = RelationSpecificConfig(
        min_positives=2, skip_unscorable=True, batch_size=4, correct="prefix2"
    )
    layout = Layout.for_shape(model_shape(model), config.sites)
    store = ActivationStore.open(tmp_path / "work", layout, len(prompts), {"k": 1})
    with caplog.at_level(logging.WARNING):
        check_answerable(
            model, tokenizer, prompts, store, config, hint=too_few_hint(config, 4), progress=False
        )
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "skipping gamma: 0 of 4 discovery prompts answered correctly, 2 needed"
    assert "1 relation(s) skipped before the activation pass" in lines[1]
    for option in ("--fewshot", "--min-positives", "--max-facts, now 4"):
        assert option in lines[1]
    assert "--skip-unscorable" not in lines[1]  # already given
    assert not any("alpha" in line for line in lines)
    assert int(sum(store.done())) == 0  # no activations were computed for this


@pytest.mark.parametrize("correct", ["match", "prefix2"])
def test_too_few_hint_offers_the_lenient_criterion_only_when_not_in_use(correct):
    from relneuron_eval.discovery.relation_specific import RelationSpecificConfig, too_few_hint

    hint = too_few_hint(RelationSpecificConfig(correct=correct), None)
    assert ("--correct prefix2" in hint) is (correct == "match")
    assert "--skip-unscorable" in hint
