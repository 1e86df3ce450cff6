"""Early exit in cached greedy decoding: finished rows leave the batch, answers unchanged.

The tiny random Llama has the real SmolLM2 tokenizer. Stop strings that fire at
different steps in different rows make rows finish early; the plain path (HF's
``generate``) decodes every row until the batch has stopped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lm_eval.api.instance import Instance
from lm_eval_helpers import save_tiny_lm

from relneuron_eval.harness.lm_model import RelNeuronLM
from relneuron_eval.harness.prefix_cache import _early_exit

DEMOS = "The capital of France is Paris\nThe capital of Peru is Lima\nThe capital of Kenya is "
NAMES = ["Chad", "Spain", "Bosnia and Herzegovina", "Ireland", "Fiji", "New Zealand", "Oman"]
# on this seeded model, "u" ends some answers after about 8 tokens; the others run to 12
STOPS = {"until": ["u", "\n"], "max_gen_toks": 12, "do_sample": False}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-llama-exit"))


def _requests(kwargs: dict) -> list[Instance]:
    prompts = [DEMOS + f"Nairobi\nThe capital of {n} is" for n in NAMES]
    return [
        Instance("generate_until", {}, (p, dict(kwargs)), idx=0, metadata=("t", i, 1))
        for i, p in enumerate(prompts)
    ]


def _decoded_rows(lm: RelNeuronLM, requests: list[Instance]) -> tuple[list[str], int]:
    """The answers, and the batch rows summed over single-token (decoding) forwards."""
    rows = [0]

    def count(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] == 1:
            rows[0] += ids.shape[0]

    handle = lm.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        return lm.generate_until(requests), rows[0]
    finally:
        handle.remove()


def test_finished_rows_leave_the_batch(tiny_dir):
    common = {"pretrained": str(tiny_dir), "device": "cpu", "batch_size": 8}
    plain = RelNeuronLM(**common, prefix_cache=False)
    cached = RelNeuronLM(**common)
    requests = _requests(STOPS)
    expected, plain_rows = _decoded_rows(plain, requests)
    got, cached_rows = _decoded_rows(cached, requests)
    assert got == expected
    assert cached._rn_prefix.stats["early_exit_batches"] == 1
    assert cached._rn_prefix.stats["cached_rows"] == len(requests)
    lengths = {len(plain.tok_encode(text)) for text in expected}
    assert len(lengths) > 1 and max(lengths) >= 10  # rows stop at different steps
    assert cached_rows < plain_rows


def test_only_plain_greedy_on_cpu_exits_early(tiny_dir):
    lm = RelNeuronLM(pretrained=str(tiny_dir), device="cpu", batch_size=8)
    assert _early_exit(lm, {"attention_mask": None, "do_sample": False})
    assert not _early_exit(lm, {"attention_mask": None, "do_sample": True, "temperature": 0.7})
    assert not _early_exit(lm, {"attention_mask": None, "do_sample": False, "num_beams": 2})
    lm.model.generation_config.repetition_penalty = 1.3
    assert not _early_exit(lm, {"attention_mask": None, "do_sample": False})
