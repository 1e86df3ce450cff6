"""Log-likelihoods with shared contexts computed once equal HFLM's full forwards.

The tiny random Llama has the real SmolLM2 tokenizer. Requests mimic a multiple-choice
task: few-shot contexts shared by many continuations (one-token ones, multi-token ones,
ones sharing their first tokens), plus requests the cache must leave to HFLM (a context
only one request has, a context too short to be worth it). Every comparison checks that
the cache served requests, and that the intervention changes the numbers.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_eval.api.instance import Instance
from lm_eval_helpers import save_tiny_lm, save_tiny_set

from relneuron_eval.harness.context_cache import (
    AUTO_CACHED_TOKENS,
    DEFAULT_ROWS,
    _rows_per_batch,
    shared_context_groups,
)
from relneuron_eval.harness.lm_model import RelNeuronLM

DEMOS = (
    "In Japan, people pay with the Yen\nIn Mexico, people pay with the Peso\n"
    "In India, people pay with the Rupee\n"
)
CHOICES = [" Euro", " Dollar", " East Caribbean Dollar", " Dollar of Fiji", " Yen", " Pound",
           " Swiss Franc", " CFA Franc", " Rupee", " New Zealand Dollar"]  # fmt: skip
COUNTRIES = ["Chad", "Spain", "Fiji", "Bosnia and Herzegovina"]
TOLERANCE = 1e-4  # summed fp32 log-probabilities: reduction order only


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-llama-cc"))


@pytest.fixture(scope="module")
def neuron_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sets") / "g.jsonl"
    return save_tiny_set(path, ["g"], ["mlp.act", "mlp.up_proj"], per_layer=16, seed=5)


def _requests(extra: tuple[tuple[str, str], ...] = ()) -> list[Instance]:
    pairs = [
        (DEMOS + f"In {country}, people pay with the", choice)
        for country in COUNTRIES
        for choice in CHOICES
    ]
    pairs += [(DEMOS + "In Oman, people pay with the", " Rial")]  # a context of its own
    pairs += [("Money:", " Euro"), ("Money:", " Yen")]  # shared, but too short to cache
    pairs += list(extra)
    return [
        Instance(
            request_type="loglikelihood",
            doc={"group": "g"},
            arguments=a,
            idx=0,
            metadata=("t", i, 1),
        )
        for i, a in enumerate(pairs)
    ]


def _run(
    tiny_dir: Path, cache: bool, extra: tuple = (), batch_size: int | str = 8, **args
) -> tuple[list[tuple[float, bool]], RelNeuronLM]:
    lm = RelNeuronLM(
        pretrained=str(tiny_dir), device="cpu", batch_size=batch_size, context_cache=cache, **args
    )
    return lm.loglikelihood(_requests(extra), disable_tqdm=True), lm


def _greedy_answers(tiny_dir: Path) -> tuple[tuple[str, str], ...]:
    """The model's own greedy one- and two-token answers to the first context."""
    import torch

    lm = RelNeuronLM(pretrained=str(tiny_dir), device="cpu", batch_size=8)
    context = _requests()[0].args[0]
    ids = lm.tok_encode(context)
    with torch.no_grad():
        first = int(lm.model(torch.tensor([ids])).logits[0, -1].argmax())
        second = int(lm.model(torch.tensor([[*ids, first]])).logits[0, -1].argmax())
    return ((context, lm.tok_decode([first])), (context, lm.tok_decode([first, second])))


def _assert_same(cached, plain) -> None:
    assert len(cached) == len(plain)
    for (a, greedy_a), (b, greedy_b) in zip(cached, plain, strict=True):
        assert a == pytest.approx(b, abs=TOLERANCE)
        assert greedy_a == greedy_b


def test_groups_leave_loners_and_short_contexts_to_hflm(tiny_dir):
    lm = RelNeuronLM(pretrained=str(tiny_dir), device="cpu", batch_size=8)
    requests = [
        (None, lm.tok_encode(c), lm.tok_encode(x)) for c, x in (r.args for r in _requests())
    ]
    groups, rest = shared_context_groups(requests, lm.max_length)
    assert sorted(len(g) for g in groups) == [len(CHOICES)] * len(COUNTRIES)
    assert sorted(rest) == [len(requests) - 3, len(requests) - 2, len(requests) - 1]
    too_long = [(None, requests[0][1], [5] * lm.max_length), *requests[1:3]]
    groups, rest = shared_context_groups(too_long, lm.max_length)
    assert rest == [0, 1, 2] and groups == []  # left truncation: HFLM's path for the context


def test_base_model_matches_hflm(tiny_dir):
    cached, lm = _run(tiny_dir, True)
    plain, _ = _run(tiny_dir, False)
    _assert_same(cached, plain)
    served = lm._rn_context_stats
    assert served["contexts"] == len(COUNTRIES)
    assert served["cached_requests"] == len(COUNTRIES) * len(CHOICES)
    assert served["plain_requests"] == 3
    # " Dollar", " Yen", " Pound", ... end in their first token: one row serves them all
    assert served["rows"] < served["cached_requests"]


@pytest.mark.parametrize("strategy", ["hook", "fold"])
def test_intervention_matches_hflm(tiny_dir, neuron_file, strategy):
    args = {"neuron_set": str(neuron_file), "groups": "g", "strategy": strategy}
    cached, lm = _run(tiny_dir, True, **args)
    plain, _ = _run(tiny_dir, False, **args)
    base, _ = _run(tiny_dir, False)
    _assert_same(cached, plain)
    assert lm._rn_context_stats["cached_requests"] > 0
    assert max(abs(a[0] - b[0]) for a, b in zip(cached, base, strict=True)) > 100 * TOLERANCE


def test_last_position_edits_stay_on_hflms_path(tiny_dir, neuron_file):
    args = {"neuron_set": str(neuron_file), "groups": "g", "positions": "last"}
    cached, lm = _run(tiny_dir, True, **args)
    plain, _ = _run(tiny_dir, False, **args)
    assert cached == plain  # same path, same bits
    assert lm._rn_context_stats["cached_requests"] == 0


def test_off_by_default_and_then_hf_to_the_bit(tiny_dir):
    from lm_eval.models.huggingface import HFLM

    lm = RelNeuronLM(pretrained=str(tiny_dir), device="cpu", batch_size=8)
    default = lm.loglikelihood(_requests(), disable_tqdm=True)
    assert lm._rn_context_stats == {}
    hf = HFLM(pretrained=str(tiny_dir), device="cpu", batch_size=8)
    assert default == hf.loglikelihood(_requests(), disable_tqdm=True)


def test_greedy_flags_agree_when_a_choice_is_the_models_own_answer(tiny_dir):
    extra = _greedy_answers(tiny_dir)
    cached, lm = _run(tiny_dir, True, extra)
    plain, _ = _run(tiny_dir, False, extra)
    _assert_same(cached, plain)
    assert plain[-2][1] and plain[-1][1]  # the flags compared above include True ones
    assert lm._rn_context_stats["cached_requests"] == len(COUNTRIES) * len(CHOICES) + 2


def test_per_doc_stays_on_hflms_path(tiny_dir, neuron_file):
    args = {"neuron_set": str(neuron_file), "per_doc": "group"}
    cached, lm = _run(tiny_dir, True, **args)
    plain, _ = _run(tiny_dir, False, **args)
    assert cached == plain
    assert lm._rn_context_stats["cached_requests"] == 0


def test_auto_batch_size_bounds_the_cached_rows(tiny_dir):
    cached, lm = _run(tiny_dir, True, batch_size="auto")
    plain, _ = _run(tiny_dir, False)
    _assert_same(cached, plain)
    assert lm._rn_context_stats["cached_requests"] == len(COUNTRIES) * len(CHOICES)
    assert _rows_per_batch(lm, 10) == DEFAULT_ROWS
    assert _rows_per_batch(lm, AUTO_CACHED_TOKENS // 3) == 3
    assert _rows_per_batch(lm, 10 * AUTO_CACHED_TOKENS) == 1
