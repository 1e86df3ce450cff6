"""Early exit in cached greedy decoding: finished rows leave the batch, answers unchanged.

The tiny random Llama has the real SmolLM2 tokenizer. Stop strings that fire at
different steps in different rows make rows finish early; the plain path (HF's
``generate``) decodes every row until the batch has stopped.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval_helpers import save_tiny_lm

from relneuron_eval.harness.lm_model import RelNeuronLM
from relneuron_eval.harness.prefix_cache import _early_exit, _Ends, _exact_rows, _keep

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


@pytest.fixture
def one_thread():
    """How small a batch may get depends on the GEMM kernels, which follow the thread
    count (with 2 threads this CPU's fp32 bits differ below 12 rows): these tests check the
    mechanism at 1 thread, where rows can leave an 8-row batch."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_finished_rows_leave_the_batch(tiny_dir, one_thread):
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
    assert not _early_exit(lm, {"attention_mask": None, "do_sample": False}, ["Q:<|im_start|>"])
    lm.think_end_token = "</think>"  # lm-eval cuts at stops only after the thinking
    assert not _early_exit(lm, {"attention_mask": None, "do_sample": False})
    lm.think_end_token = None
    config = lm.model.generation_config
    eos, config.eos_token_id = config.eos_token_id, lm.eot_token_id + 1
    assert not _early_exit(lm, {"attention_mask": None, "do_sample": False})  # EOT is no EOS
    config.eos_token_id = [eos, lm.eot_token_id + 1]
    assert _early_exit(lm, {"attention_mask": None, "do_sample": False})
    config.eos_token_id = eos
    config.repetition_penalty = 1.3
    assert not _early_exit(lm, {"attention_mask": None, "do_sample": False})


def _generated(lm: RelNeuronLM, requests: list[Instance]) -> tuple[list[str], list, list]:
    """Answers, each batch's generated tokens (batch order) and every forward's last logits."""
    batches, logits = [], []
    inner = lm._model_generate

    def capture(context, max_length, stop, **kwargs):
        out = inner(context, max_length, stop, **kwargs)
        batches.append(out[:, context.shape[1] :].tolist())
        return out

    def hook(module, args, kwargs, output):
        logits.append(output.logits[:, -1].detach().clone())

    lm._model_generate = capture
    handle = lm.model.register_forward_hook(hook, with_kwargs=True)
    try:
        return lm.generate_until(requests), batches, logits
    finally:
        handle.remove()
        del lm._model_generate


def _one_long_row(lm: RelNeuronLM, rows: list[list[int]]) -> tuple[list[str], list[int]]:
    """Stop strings that end every row but one where it parts from that row (the text of
    its first token that differs, not in the long row's text), and each row's length."""
    for long in range(len(rows)):
        text, parts = lm.tok_decode(rows[long]), []
        for row in rows:
            part = next(
                (k for k, (a, b) in enumerate(zip(row, rows[long], strict=True)) if a != b), None
            )
            parts.append(part)
        stops = {lm.tok_decode([r[k]]) for r, k in zip(rows, parts, strict=True) if k is not None}
        if parts.count(None) == 1 and all(s and s not in text for s in stops):
            return sorted(stops), [len(rows[long]) if k is None else k + 1 for k in parts]
    raise AssertionError(f"no row parts from all others: {rows}")


def test_a_lone_long_row_keeps_its_bits(tiny_dir, one_thread):
    """The others stop early; the long row's tokens and logits are those of the whole batch."""
    common = {"pretrained": str(tiny_dir), "device": "cpu", "batch_size": 8}
    plain = RelNeuronLM(**common, prefix_cache=False)
    _, probe, _ = _generated(plain, _requests({"until": [], "max_gen_toks": 12}))
    stops, lengths = _one_long_row(plain, probe[0])
    requests = _requests({"until": stops, "max_gen_toks": 12})
    expected, plain_rows, _ = _generated(plain, requests)
    cached, whole = RelNeuronLM(**common), RelNeuronLM(**common)
    whole._rn_prefix.early_exit = False
    got, exit_rows, exit_logits = _generated(cached, requests)
    same, whole_rows, whole_logits = _generated(whole, requests)
    assert got == expected == same
    assert cached._rn_prefix.stats["early_exit_batches"] == 1
    pad = cached.tokenizer.pad_token_id
    assert [
        len(row) - next(i for i, t in enumerate(reversed(row)) if t != pad) for row in exit_rows[0]
    ] == lengths
    for n, mine, theirs, full in zip(
        lengths, exit_rows[0], plain_rows[0], whole_rows[0], strict=True
    ):
        assert mine[:n] == theirs[:n] == full[:n]
    long, last = lengths.index(12), max(n for n in lengths if n < 12)
    skip = cached._rn_prefix.stats["prefix_forwards"]
    assert skip == whole._rn_prefix.stats["prefix_forwards"] > 0
    steps = list(zip(exit_logits[skip:], whole_logits[skip:], strict=True))
    assert len(steps) == 12 and last < 11  # steps with one live row
    for step, (mine, full) in enumerate(steps):
        assert step < last or mine.shape[0] < full.shape[0]
        assert any(torch.equal(row, full[long]) for row in mine), f"step {step}: other bits"


def test_keep_tops_up_with_finished_rows():
    assert _keep([False, True, False, False], 2) == [0, 1]
    assert _keep([True, True, True, False], 2) == [0, 1, 2]
    assert _keep([False, True], 4) == [0, 1]
    assert _keep([False, True, True], 1) == [1, 2]
    assert _exact_rows(torch.float32, torch.get_num_threads()) >= 1


def _first_stop(seq: list[int], found) -> int | None:
    return next((t for t in range(1, len(seq) + 1) if found(seq[:t])), None)


def test_tail_window_finds_stops_where_full_decoding_does(tiny_dir):
    """Stops across token (and UTF-8 character) boundaries, and dropped special tokens."""
    lm = RelNeuronLM(pretrained=str(tiny_dir), device="cpu", batch_size=1)
    rng = random.Random(0)
    eos = _Ends(lm, []).eos
    special = sorted(set(lm.tokenizer.all_special_ids) - eos)
    texts = ["naïve café – 東京 🙂🙂 done\n\nnext", "Paris\nLima. Q: A: ok.\n", "ab" * 30]
    sequences = [lm.tok_encode(t) for t in texts]
    for _ in range(40):
        seq = [rng.randrange(len(lm.tokenizer)) for _ in range(30)]
        seq = [t for t in seq if t not in eos]
        for _ in range(3):
            seq.insert(rng.randrange(len(seq)), rng.choice(special))
        sequences.append(seq)
    checked, spanning, misses = 0, 0, 0
    for seq in sequences:
        full = lm.tok_decode(seq)
        for _ in range(6):
            start = rng.randrange(len(full))
            stop = full[start : start + rng.randint(1, 8)]
            if not stop or "\ufffd" in stop:
                continue
            ends = _Ends(lm, [stop])
            first = _first_stop(seq, lambda s, stop=stop: stop in lm.tok_decode(s))
            assert _first_stop(seq, ends.final) == first, (seq, stop)
            checked += 1
            spanning += first is not None and stop not in lm.tok_decode(seq[first - 1 : first])
            ends.window = 1  # too short: must miss some
            misses += _first_stop(seq, ends.final) != first
    assert checked > 150 and spanning > 50 and misses > 10, (checked, spanning, misses)
