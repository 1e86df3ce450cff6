"""Gemma 3 (the second embedded model's architecture) on a tiny random-weight config.

Its gated GELU MLP, sandwich norms, scaled tied embeddings and sliding-window layers must
not change what an intervention does: folding and hooks match a hand-written MLP, the
weights come back bit for bit (the tied embedding still one tensor), ``positions=last``
edits only the last position, random controls draw as on Llama, and the exported PEFT
IA3 adapter and folded checkpoint compute what the run-time routes compute.
"""

from __future__ import annotations

import pytest
import torch
from conftest import random_set
from gemma_helpers import tiny_gemma3
from test_interventions import MODES, TOKENS, _assert_bit_identical, _reference_logits, _snapshot

from relneuron_eval.core.architectures import arch_spec, model_card, model_shape, site_module
from relneuron_eval.core.interventions import Intervention, apply_intervention
from relneuron_eval.core.neuron_set import SITES
from relneuron_eval.errors import RelNeuronError

# PEFT calls a transformers method deprecated in transformers 5; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")


@pytest.fixture
def gemma():
    return tiny_gemma3()


def _tied(model) -> bool:
    return model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_row_shape_and_card(gemma):
    """The ``gemma3_text`` row finds the layers and the gated MLP's four sites."""
    assert model_shape(gemma).num_layers == 2
    assert model_shape(gemma).intermediate_size == gemma.config.intermediate_size
    assert model_shape(gemma).hidden_size == gemma.config.hidden_size
    card = model_card(gemma, "tiny-gemma")
    assert (card["architecture"], card["model_type"]) == ("Gemma3ForCausalLM", "gemma3_text")
    layer = gemma.model.layers[1]
    assert site_module(gemma, "mlp.act", 1)[0] is layer.mlp.down_proj
    assert site_module(gemma, "mlp.gate_proj", 1)[0] is layer.mlp.gate_proj
    assert set(arch_spec(gemma).sites) == set(SITES)
    assert _tied(gemma) and gemma.config.layer_types == ["sliding_attention", "full_attention"]


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize(("mode", "factor", "value"), MODES)
@pytest.mark.parametrize("strategy", ["hook", "fold"])
def test_matches_reference_and_restores(gemma, site, mode, factor, value, strategy):
    selection = random_set(gemma, sites=[site]).select(["g1"])
    iv = Intervention.build(selection, "g1", mode=mode, factor=factor, value=value)
    before = _snapshot(gemma)
    if strategy == "fold" and mode == "set":
        with pytest.raises(RelNeuronError, match="cannot fold"):
            with apply_intervention(gemma, iv, strategy="fold"):
                pass
        _assert_bit_identical(gemma, before)
        return
    with torch.no_grad():
        base = gemma(TOKENS).logits
    expected = _reference_logits(gemma, selection, mode, factor or 2.0, value)
    with apply_intervention(gemma, iv, strategy=strategy), torch.no_grad():
        got = gemma(TOKENS).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, base), "the intervention changed nothing"
    _assert_bit_identical(gemma, before)
    assert _tied(gemma)


def test_all_sites_fold_equals_hook_and_restores_after_an_error(gemma):
    iv = Intervention.build(random_set(gemma, per_site=4), "g1|g2", mode="scale", factor=3.0)
    before = _snapshot(gemma)
    expected = _reference_logits(gemma, iv.selection, "scale", 3.0, 0.0)
    for strategy in ("fold", "hook"):
        with apply_intervention(gemma, iv, strategy=strategy), torch.no_grad():
            torch.testing.assert_close(gemma(TOKENS).logits, expected, rtol=1e-5, atol=1e-5)
        _assert_bit_identical(gemma, before)
        with pytest.raises(RuntimeError), apply_intervention(gemma, iv, strategy=strategy):
            raise RuntimeError("evaluation failed half-way")
        _assert_bit_identical(gemma, before)
        assert _tied(gemma)


def test_positions_last_edits_only_the_last_position(gemma):
    iv = Intervention.build(
        random_set(gemma, sites=["mlp.act", "mlp.gate_proj"]), "g1", positions="last"
    )
    expected = _reference_logits(gemma, iv.selection, "deactivate", 0.0, 0.0, last_only=True)
    with apply_intervention(gemma, iv), torch.no_grad():
        got = gemma(TOKENS).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        base = gemma(TOKENS).logits
    torch.testing.assert_close(got[:, :-1], base[:, :-1])
    assert not torch.allclose(got[:, -1], base[:, -1])


def test_random_control_draws_as_many_other_units(gemma):
    neuron_set = random_set(gemma, per_site=3)
    chosen = Intervention.build(neuron_set, "g1", top_k=10)
    control = Intervention.build(neuron_set, "g1", top_k=10, control="random", seed=7)
    count = lambda s: sorted((n.site, n.layer) for n in s)  # noqa: E731
    assert count(chosen.selection) == count(control.selection)
    assert not chosen.selection.units() & control.selection.units()
    with apply_intervention(gemma, control), torch.no_grad():
        assert not torch.equal(gemma(TOKENS).logits, tiny_gemma3()(TOKENS).logits)


@pytest.mark.parametrize("site", SITES)
def test_exported_adapter_and_checkpoint_compute_the_run_time_edit(tmp_path, site):
    """PEFT IA3 == hooks bit for bit; the folded checkpoint == folding bit for bit (tied
    embeddings saved once and loaded tied)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from relneuron_eval.export.command import export_checkpoint, export_peft

    model = tiny_gemma3()
    model.save_pretrained(tmp_path / "base")
    iv = Intervention.build(
        random_set(model, sites=[site], per_site=4), "*", mode="scale", factor=1.7
    )
    with torch.no_grad():
        base = model(TOKENS).logits
        with apply_intervention(model, iv, strategy="hook"):
            hooked = model(TOKENS).logits
        with apply_intervention(model, iv, strategy="fold"):
            folded = model(TOKENS).logits
        adapter = export_peft(tmp_path / "base", iv, tmp_path / "adapter")
        plain = AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
        peft = PeftModel.from_pretrained(plain, adapter).eval()(TOKENS).logits
        loaded = AutoModelForCausalLM.from_pretrained(
            export_checkpoint(tmp_path / "base", iv, tmp_path / "checkpoint")
        ).eval()
        checkpoint = loaded(TOKENS).logits
    assert (hooked - base).abs().max() > 1e-3, "the edit changes nothing"
    assert torch.equal(peft, hooked)
    assert torch.equal(checkpoint, folded)
    torch.testing.assert_close(folded, hooked, rtol=1e-5, atol=1e-5)
    assert _tied(loaded)
