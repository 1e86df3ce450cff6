"""Folded and hooked interventions against a hand-written reference MLP, and exact restore."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
import torch
import torch.nn.functional as F
from conftest import random_set, tiny_gpt2, tiny_llama

from relneuron_eval.core.architectures import decoder_layers
from relneuron_eval.core.interventions import Intervention, apply_intervention
from relneuron_eval.core.neuron_set import SITES
from relneuron_eval.errors import RelNeuronError

# an argument a mode ignores is refused, so only the mode's own argument is given
MODES = [
    ("deactivate", None, None),
    ("enhance", 2.0, None),
    ("scale", -0.5, None),
    ("set", None, 1.5),
]
TOKENS = torch.tensor([[5, 9, 3, 17, 42, 8], [1, 2, 3, 4, 5, 6]])


def _edit(t: torch.Tensor, units: list[int], mode: str, factor, value, last_only: bool):
    t = t.clone()
    index = (slice(None), -1) if last_only else (Ellipsis,)
    sub = t[index]
    if mode == "set":
        sub[..., units] = value
    else:
        mult = 0.0 if mode == "deactivate" else factor
        sub[..., units] = sub[..., units] * mult
    t[index] = sub
    return t


def _reference_logits(model, selection, mode, factor, value, last_only=False):
    """Re-implement each MLP by hand from its weights, applying the edit where the site is."""
    units = selection.by_site_layer()
    is_gpt2 = model.config.model_type == "gpt2"
    originals = []
    for layer_idx, layer in enumerate(decoder_layers(model)):
        mlp = layer.mlp

        def edit(t, site, layer_idx=layer_idx):
            chosen = units.get((site, layer_idx))
            return t if not chosen else _edit(t, chosen, mode, factor, value, last_only)

        if is_gpt2:

            def forward(x, mlp=mlp, edit=edit):
                up = edit(x @ mlp.c_fc.weight + mlp.c_fc.bias, "mlp.up_proj")
                act = edit(mlp.act(up), "mlp.act")
                return edit(act @ mlp.c_proj.weight + mlp.c_proj.bias, "mlp.down_proj")
        else:

            def forward(x, mlp=mlp, edit=edit):
                gate = edit(F.linear(x, mlp.gate_proj.weight), "mlp.gate_proj")
                up = edit(F.linear(x, mlp.up_proj.weight), "mlp.up_proj")
                act = edit(mlp.act_fn(gate) * up, "mlp.act")
                return edit(F.linear(act, mlp.down_proj.weight), "mlp.down_proj")

        originals.append((mlp, mlp.forward))
        mlp.forward = forward
    try:
        with torch.no_grad():
            return model(TOKENS).logits
    finally:
        for mlp, original in originals:
            mlp.forward = original


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bit_identical(model, snapshot):
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshot[key]), f"{key} not restored bit-exactly"
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize(("mode", "factor", "value"), MODES)
@pytest.mark.parametrize("strategy", ["auto", "hook", "fold"])
def test_matches_reference_and_restores(arch, site, mode, factor, value, strategy):
    model = tiny_llama() if arch == "llama" else tiny_gpt2()
    if arch == "gpt2" and site == "mlp.gate_proj":
        # same shape as the tiny Llama, but GPT-2 has no gate projection
        iv = Intervention.build(random_set(tiny_llama(), sites=[site]), mode=mode)
        with pytest.raises(RelNeuronError, match="does not exist in architecture 'gpt2'"):
            with apply_intervention(model, iv):
                pass
        return
    selection = random_set(model, sites=[site]).select(["g1"])
    iv = Intervention.build(selection, "g1", mode=mode, factor=factor, value=value)
    before = _snapshot(model)
    with torch.no_grad():
        base = model(TOKENS).logits
    expected = _reference_logits(model, selection, mode, factor or 2.0, value)
    foldable = mode != "set" or (arch == "gpt2" and site != "mlp.act")
    if strategy == "fold" and not foldable:
        with pytest.raises(RelNeuronError, match="cannot fold"):
            with apply_intervention(model, iv, strategy="fold"):
                pass
        _assert_bit_identical(model, before)
        return
    with apply_intervention(model, iv, strategy=strategy), torch.no_grad():
        got = model(TOKENS).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, base), "the intervention changed nothing"
    _assert_bit_identical(model, before)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_all_sites_together_fold_equals_hook(arch):
    """Overlapping edits on one module (act columns and down rows) compose the same way."""
    model = tiny_llama() if arch == "llama" else tiny_gpt2()
    neuron_set = random_set(model, per_site=4)
    iv = Intervention.build(neuron_set, "g1|g2", mode="scale", factor=3.0)
    before = _snapshot(model)
    expected = _reference_logits(model, iv.selection, "scale", 3.0, 0.0)
    results = {}
    for strategy in ("fold", "hook"):
        with apply_intervention(model, iv, strategy=strategy), torch.no_grad():
            results[strategy] = model(TOKENS).logits
        _assert_bit_identical(model, before)
    torch.testing.assert_close(results["fold"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results["hook"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["deactivate", "enhance"])
def test_positions_last_matches_reference(llama, mode):
    neuron_set = random_set(llama, sites=["mlp.act", "mlp.up_proj"])
    iv = Intervention.build(neuron_set, "g1", mode=mode, positions="last")
    expected = _reference_logits(llama, iv.selection, mode, 2.0, 0.0, last_only=True)
    with apply_intervention(llama, iv), torch.no_grad():
        got = llama(TOKENS).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        base = llama(TOKENS).logits
    # Causal model: only the last position can change.
    torch.testing.assert_close(got[:, :-1], base[:, :-1])
    assert not torch.allclose(got[:, -1], base[:, -1])


@pytest.mark.parametrize("strategy", ["fold", "hook"])
def test_restored_after_exception(llama, strategy):
    iv = Intervention.build(random_set(llama), "*", mode="enhance")
    before = _snapshot(llama)
    with contextlib.suppress(RuntimeError), apply_intervention(llama, iv, strategy=strategy):
        with torch.no_grad():
            llama(TOKENS)
        raise RuntimeError("evaluation failed half-way")
    _assert_bit_identical(llama, before)


def test_bf16_weights_fold_restores_exactly():
    model = tiny_llama().to(torch.bfloat16)
    iv = Intervention.build(random_set(model), "*", mode="scale", factor=0.3)
    before = _snapshot(model)
    with apply_intervention(model, iv, strategy="fold"), torch.no_grad():
        out = model(TOKENS).logits
    assert out.dtype == torch.bfloat16
    _assert_bit_identical(model, before)


def test_shape_mismatch_is_refused(llama):
    from transformers import LlamaForCausalLM

    config = llama.config.to_dict()
    config.update(intermediate_size=32, num_hidden_layers=2)
    other = LlamaForCausalLM(type(llama.config)(**config))
    iv = Intervention.build(random_set(llama, sites=["mlp.act"]), "*")
    before = _snapshot(other)
    with pytest.raises(
        RelNeuronError, match=r"another shape: num_layers 3 .* vs 2.*intermediate_size 24"
    ):
        with apply_intervention(other, iv):
            pass
    _assert_bit_identical(other, before)


def test_random_control_matches_counts(llama):
    neuron_set = random_set(llama, per_site=3)
    chosen = Intervention.build(neuron_set, "g1", top_k=10)
    control = Intervention.build(neuron_set, "g1", top_k=10, control="random", seed=7)
    count = lambda s: sorted((n.site, n.layer) for n in s)  # noqa: E731
    assert count(chosen.selection) == count(control.selection)
    assert not chosen.selection.units() & control.selection.units()
    again = Intervention.build(neuron_set, "g1", top_k=10, control="random", seed=7)
    assert again.selection.units() == control.selection.units()


# ------------------------------------------------------------------ bad arguments
BAD_ARGUMENTS = [
    ({"mode": "enhance", "factor": float("nan")}, "factor must be a finite number, got nan"),
    ({"mode": "scale", "factor": float("inf")}, "factor must be a finite number, got inf"),
    ({"mode": "scale", "factor": -float("inf")}, "factor must be a finite number"),
    ({"mode": "scale", "factor": 10**400}, "factor must be a finite number"),
    ({"mode": "set", "value": float("nan")}, "value must be a finite number, got nan"),
    ({"mode": "enhance", "factor": "abc"}, "factor must be a number, got 'abc'"),
    ({"mode": "deactivate", "factor": 3.0}, "factor only applies to mode enhance or scale"),
    ({"mode": "enhance", "value": 1.0}, "value only applies to mode set"),
    ({"control": "random", "seed": "abc"}, "seed must be an integer >= 0, got 'abc'"),
    ({"control": "random", "seed": -1}, "seed must be an integer >= 0"),
    ({"control": "random", "seed": 1.5}, "seed must be an integer >= 0"),
    ({"seed": 3}, "seed only applies to control=random"),
    ({"top_k": 0}, "top_k must be a positive integer"),
    ({"top_k": -5}, "top_k must be a positive integer"),
    ({"fraction": float("nan")}, r"fraction must be in \(0, 1\]"),
    ({"fraction": 0.0}, r"fraction must be in \(0, 1\]"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_ARGUMENTS)
def test_bad_arguments_are_refused(llama, kwargs, message):
    """Non-finite numbers used to be accepted (every logit NaN); bad seeds a bare ValueError."""
    with pytest.raises(RelNeuronError, match=message):
        Intervention.build(random_set(llama), "*", **kwargs)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ("99", r"layers=99 is outside this model's layers 0-2"),
        (99, r"layers=99 is outside this model's layers 0-2"),
        ([0, 7], r"layers=7 is outside this model's layers 0-2"),
        ("-3", r"layers=-3 is outside this model's layers 0-2"),
        ("5-3", r"layers=5-3 is a reversed range.*3-5"),
        ("0-1000000000", r"layers=0-1000000000 is outside this model's layers 0-2"),
    ],
)
def test_layers_outside_the_model_name_its_range(llama, layers, message, memory_cap):
    """These used to say only "the selection is empty" (0-1000000000: MemoryError)."""
    with pytest.raises(RelNeuronError, match=message):
        Intervention.build(random_set(llama), "*", layers=layers)


def test_layers_text_and_list_select_the_same(llama):
    neuron_set = random_set(llama)
    by_text = Intervention.build(neuron_set, "*", layers="0|2")
    assert (
        by_text.selection.units() == Intervention.build(neuron_set, layers=[0, 2]).selection.units()
    )
    assert {layer for _s, layer, _i in by_text.selection.units()} == {0, 2}


def test_description_records_hashes_and_per_layer_counts(llama, tmp_path):
    path = random_set(llama, per_site=2).save(tmp_path / "set.jsonl.gz")
    iv = Intervention.build(path, "g1", layers="1-2")
    info = iv.description
    assert info["neuron_set_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["units_per_layer"] == {"1": 8, "2": 8}  # 4 sites x 2 units per layer
    assert sum(info["units_per_layer"].values()) == info["num_units"]


def test_layer_ranges_are_bounded_without_a_model(memory_cap):
    """``relneuron find --layers`` parses before a model is known; 0-1e9 was a MemoryError."""
    from relneuron_eval.core.arglists import parse_layers

    assert parse_layers("3|5|10-12", "--layers") == [3, 5, 10, 11, 12]
    with pytest.raises(RelNeuronError, match=r"--layers=0-1000000000 is outside 0-9999"):
        parse_layers("0-1000000000", "--layers")
    with pytest.raises(RelNeuronError, match=r"--layers=5-3 is a reversed range"):
        parse_layers("5-3", "--layers")
