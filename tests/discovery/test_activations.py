"""Activation collection on the embedded model against a plain per-prompt reference."""

from __future__ import annotations

import json

import pytest
import torch

from relneuron_eval.core.architectures import model_shape, site_module
from relneuron_eval.discovery.activations import (
    Layout,
    TokenMeanHooks,
    query_token_counts,
    run_batch,
)
from relneuron_eval.discovery.correct import prefix2_correct as answer_matches
from relneuron_eval.discovery.correct import prefix2_open as _undecided
from relneuron_eval.discovery.data import discovery_prompts, resolve_relations


@pytest.fixture(scope="module")
def smollm():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relneuron_eval.core.embedded import ensure_local

    path = ensure_local(verbose=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize(
    ("generated", "targets", "open_"),
    [
        (" Par", ["Paris"], True),  # a proper prefix: the next token decides
        (" Paris", ["Paris"], False),  # whole answer: right whatever follows
        (" Paris,", ["Paris"], False),
        (" Rome", ["Paris"], False),  # wrong whatever follows
        (" ", ["Paris"], True),  # nothing yet
        ("New", ["New York City", "NYC"], True),
    ],
)
def test_undecided(generated, targets, open_):
    assert _undecided(generated, targets) is open_


@torch.no_grad()
def test_run_batch_equals_plain_greedy_and_hand_token_means(smollm):
    model, tokenizer = smollm
    relations = resolve_relations("country_capital_city,landmark_on_continent")
    prompts = discovery_prompts(relations, fewshot=3, max_facts=2)[:6]
    texts = [p.text for p in prompts]
    layout = Layout.for_shape(model_shape(model), ("mlp.up_proj", "mlp.down_proj"))
    hooks = TokenMeanHooks(model, layout)
    query = query_token_counts(tokenizer, texts)
    try:
        per_layer, correct = run_batch(
            model,
            tokenizer,
            hooks,
            texts,
            [p.answers for p in prompts],
            criterion="prefix2",
            average_last=query,
        )
    finally:
        hooks.remove()
    # reference: each prompt alone, two greedy tokens by full forwards, no padding
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt.text)["input_ids"]
        first = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        second = int(model(torch.tensor([[*ids, first]])).logits[0, -1].argmax())
        assert correct[i] == answer_matches(tokenizer.decode([first, second]), prompt.answers)
    # reference token mean of one unit: up_proj output, layer 7, over the query tokens only
    module, _ = site_module(model, "mlp.up_proj", 7)
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, a, out: seen.append(out[0]))
    try:
        for text in texts[:3]:
            model(torch.tensor([tokenizer(text)["input_ids"]]))
    finally:
        handle.remove()
    for i in range(3):
        expected = seen[i][-query[i] :].mean(0)
        got = torch.from_numpy(per_layer[7][i, : layout.sizes[0]])
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
        whole = seen[i].mean(0)
        assert not torch.allclose(got, whole, atol=1e-3)  # demos really were left out


# ------------------------------------------------------------ checkpoint verification
def _store(root, notices):
    from relneuron_eval.core.neuron_set import ModelShape
    from relneuron_eval.discovery.activations import ActivationStore

    layout = Layout.for_shape(ModelShape(2, 6, 3), ("mlp.up_proj", "mlp.down_proj"))
    return ActivationStore.open(root, layout, 8, {"k": 1}, notice=notices.append)


def _filled(root):
    import numpy as np

    store = _store(root, [])
    rng = np.random.default_rng(0)
    values = {layer: rng.normal(size=(8, 9)).astype(np.float32) for layer in range(2)}
    store.write_batch([0, 1, 2, 3], {k: v[:4] for k, v in values.items()}, [1, 0, 1, 1], 4)
    store.close()
    return values


def test_resumed_store_is_verified_piece_by_piece_and_row_by_row(tmp_path):
    import numpy as np

    values = _filled(tmp_path / "s")
    notices: list[str] = []
    store = _store(tmp_path / "s", notices)  # intact: kept, silently
    assert notices == [] and list(np.asarray(store.done())) == [1] * 4 + [0] * 4
    np.testing.assert_array_equal(store.read_layer(1)[:4], values[1][:4])
    # a value changed in place (same size): only that row is computed again
    layer = np.load(tmp_path / "s" / "layer_001.npy", mmap_mode="r+")
    layer[2, 7] = 0.5
    layer.flush()
    del layer
    correct = np.load(tmp_path / "s" / "correct.npy", mmap_mode="r+")
    correct[1] = 1  # a flag flipped: caught by the same checksum
    correct.flush()
    del correct
    store = _store(tmp_path / "s", notices)
    assert notices == [
        f"checkpoint {tmp_path / 's'}: 2 of 4 finished prompts fail their checksum; computing them again"
    ]
    assert list(np.asarray(store.done())) == [1, 0, 0, 1, 0, 0, 0, 0]
    # damaged pieces: the store starts afresh with one notice naming the piece
    damages = {
        "layer_000.npy": lambda p: p.write_bytes(p.read_bytes()[:-7]),
        "done.npy": lambda p: p.write_bytes(b"junk"),
        "checksums.npy": lambda p: p.unlink(),
        "meta.json": lambda p: p.write_text('{"k": '),
    }
    for name, damage in damages.items():
        _filled(tmp_path / name)
        damage(tmp_path / name / name)
        notices.clear()
        store = _store(tmp_path / name, notices)
        assert len(notices) == 1 and name in notices[0] and "starting afresh" in notices[0]
        assert np.asarray(store.done()).sum() == 0
        assert json.loads((tmp_path / name / "meta.json").read_text())["k"] == 1
