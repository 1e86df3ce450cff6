"""The prefix and context caches on Gemma 3's hybrid cache (sliding-window + global layers).

Before: the prefix cache turned itself off on Gemma 3 ("the model's cache is not a plain
per-layer KV cache"), and so did the multiple-choice context cache. The tiny Gemma 3 here
has a 6-token window, far shorter than the few-shot prompts, so its sliding layer's
window decides the answers (checked: a wide window answers otherwise). The cached paths
must give the plain path's answers, with and without interventions, and per_doc rows
their own group's.
"""

# ruff: noqa: F811  (the fixtures come from test_prefix_cache)
from __future__ import annotations

from pathlib import Path

import pytest
from gemma_helpers import save_tiny_gemma3
from test_context_cache import _assert_same
from test_context_cache import _requests as _mc_requests
from test_per_doc_rows import _by_group, _ll_requests
from test_prefix_cache import GEN_KWARGS, VARIANTS, _both, _requests, neuron_file  # noqa: F401

from relneuron_eval.harness.lm_model import RelNeuronLM

WINDOW = 6


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory) -> Path:
    return save_tiny_gemma3(tmp_path_factory.mktemp("tiny-gemma3"), sliding_window=WINDOW)


@pytest.fixture(scope="module")
def plain_answers(gemma_dir) -> list[str]:
    lm = RelNeuronLM(pretrained=str(gemma_dir), device="cpu", batch_size=8, prefix_cache=False)
    return lm.generate_until(_requests(GEN_KWARGS))


def test_the_window_decides_the_answers(gemma_dir, plain_answers, tmp_path):
    """A test of the sliding layers: the same weights with a window wider than every prompt
    answer otherwise, and the few-shot prompts are longer than the window."""
    from transformers import AutoModelForCausalLM

    wide = AutoModelForCausalLM.from_pretrained(gemma_dir)
    wide.config.sliding_window = 4096
    lm = RelNeuronLM(pretrained=wide, tokenizer=str(gemma_dir), batch_size=8, prefix_cache=False)
    requests = _requests(GEN_KWARGS)
    assert lm.generate_until(requests) != plain_answers
    lengths = sorted(len(lm.tok_encode(r.args[0])) for r in requests)
    assert lengths[len(lengths) // 4] > 2 * WINDOW  # the few-shot prompts; a few loners are short


@pytest.mark.parametrize("variant", ["base", "last", "folded", "per_doc"])
def test_prefix_cache_gives_the_plain_answers(gemma_dir, neuron_file, plain_answers, variant):
    args = dict(VARIANTS[variant])
    if args:
        args["neuron_set"] = str(neuron_file)
    plain, cached = _both(gemma_dir, **args)
    requests = _requests(GEN_KWARGS)
    expected = plain_answers if not args else plain.generate_until(requests)
    assert cached.generate_until(requests) == expected
    stats = cached._rn_prefix.stats
    assert stats["prefix_forwards"] >= 3 and stats["cached_rows"] >= len(requests) // 2, stats
    if args:  # the intervention matters here, so an edit at a wrong position would show
        assert expected != plain_answers


def test_per_doc_rows_equal_their_own_groups_run(gemma_dir, neuron_file):
    requests = _ll_requests()[:48]
    lm = RelNeuronLM(
        pretrained=str(gemma_dir),
        device="cpu",
        batch_size=8,
        prefix_cache=False,
        neuron_set=str(neuron_file),
        per_doc="group",
    )
    got = lm.loglikelihood(requests)
    assert got == _by_group(gemma_dir, neuron_file, requests, "loglikelihood")


def test_context_cache_matches_hflm(gemma_dir):
    runs = {}
    for cache in (True, False):
        lm = RelNeuronLM(pretrained=str(gemma_dir), device="cpu", batch_size=8, context_cache=cache)
        runs[cache] = lm.loglikelihood(_mc_requests(), disable_tqdm=True)
        if cache:
            assert lm._rn_context_stats["cached_requests"] > len(runs[cache]) // 2
    _assert_same(runs[True], runs[False])
