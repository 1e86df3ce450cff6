"""Every row of the architecture table, on a tiny random model of that architecture.

A site is mapped right when zeroing ALL its units in a layer silences that layer's MLP
(the down projection then outputs only its bias, or nothing for ``mlp.down_proj``),
and when folding and hooking a partial selection agree and restore the weights.
"""

from __future__ import annotations

import random

import pytest
import torch

from relneuron_eval.core.architectures import ARCHITECTURES, model_shape, site_module
from relneuron_eval.core.interventions import Intervention, apply_intervention
from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header
from relneuron_eval.errors import RelNeuronError

HIDDEN, INTER, LAYERS = 16, 24, 2
TOKENS = torch.tensor([[3, 7, 1, 9, 4, 2], [5, 5, 8, 1, 0, 6]])


def _config(model_type: str):
    import transformers as tf

    attn = {"num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8}
    common = {
        "vocab_size": 32,
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "max_position_embeddings": 64,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if model_type == "gpt2":
        return tf.GPT2Config(vocab_size=32, n_embd=HIDDEN, n_inner=INTER, n_layer=LAYERS, n_head=2)
    if model_type == "gpt_neox":
        return tf.GPTNeoXConfig(**common, num_attention_heads=2)
    if model_type == "opt":
        return tf.OPTConfig(
            vocab_size=32,
            hidden_size=HIDDEN,
            ffn_dim=INTER,
            num_hidden_layers=LAYERS,
            num_attention_heads=2,
            word_embed_proj_dim=HIDDEN,
            max_position_embeddings=64,
            pad_token_id=0,
        )
    classes = {
        "llama": tf.LlamaConfig,
        "mistral": tf.MistralConfig,
        "qwen2": tf.Qwen2Config,
        "qwen3": tf.Qwen3Config,
        "gemma": tf.GemmaConfig,
        "gemma2": tf.Gemma2Config,
        "gemma3_text": tf.Gemma3TextConfig,
        "phi3": tf.Phi3Config,
    }
    return classes[model_type](**common, **attn)


def _model(model_type: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_config(model_type)).eval()
    with torch.no_grad():  # nonzero biases so that a bias handled wrongly shows up
        for p_name, param in model.named_parameters():
            if p_name.endswith("bias"):
                param.normal_()
    return model


def _set(model, model_type: str, units: dict[tuple[str, int], list[int]]) -> NeuronSet:
    from relneuron_eval.core.architectures import model_card

    neurons = [Neuron("g", s, layer, i, 1.0) for (s, layer), idx in units.items() for i in idx]
    return NeuronSet(
        make_header(model=model_card(model, model_type), method={"name": "t"}), neurons
    )


# gemma3 is registered as "gemma3" (multimodal) and "gemma3_text" (text-only) in the table
TABLE_TYPES = sorted(t for t in ARCHITECTURES if t != "gemma3")


def test_table_covers_the_required_families():
    required = {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3"}
    assert required | {"gpt2", "gpt_neox", "opt"} <= set(ARCHITECTURES)


@pytest.mark.parametrize("model_type", TABLE_TYPES)
def test_shape_is_read_off_the_modules(model_type):
    model = _model(model_type)
    assert model.config.model_type == model_type
    shape = model_shape(model)
    assert (shape.num_layers, shape.intermediate_size, shape.hidden_size) == (
        LAYERS,
        INTER,
        HIDDEN,
    )


@pytest.mark.parametrize("model_type", TABLE_TYPES)
def test_zeroing_a_whole_site_silences_the_mlp(model_type):
    model = _model(model_type)
    shape = model_shape(model)
    for site in ARCHITECTURES[model_type].sites:
        down, _ = site_module(model, "mlp.down_proj", 0)
        neuron_set = _set(model, model_type, {(site, 0): list(range(shape.site_size(site)))})
        for strategy in ("fold", "hook"):
            captured: list[torch.Tensor] = []
            with apply_intervention(model, Intervention.build(neuron_set), strategy=strategy):
                # registered after the intervention's own hooks, so it sees their result
                handle = down.register_forward_hook(
                    lambda m, a, o, captured=captured: captured.append(o.detach())
                )
                try:
                    model(TOKENS)
                finally:
                    handle.remove()
            bias = getattr(down, "bias", None)
            if site == "mlp.down_proj" or bias is None:
                expected = torch.zeros_like(captured[0])
            else:
                expected = bias.detach().expand_as(captured[0])
            torch.testing.assert_close(captured[0], expected, msg=f"{model_type} {site} {strategy}")


@pytest.mark.parametrize("model_type", TABLE_TYPES)
def test_partial_selection_fold_equals_hook_and_restores(model_type):
    model = _model(model_type)
    shape = model_shape(model)
    rng = random.Random(0)
    units = {
        (site, layer): rng.sample(range(shape.site_size(site)), 5)
        for site in ARCHITECTURES[model_type].sites
        for layer in range(LAYERS)
    }
    iv = Intervention.build(_set(model, model_type, units), mode="scale", factor=-1.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        base = model(TOKENS).logits
        out = {}
        for strategy in ("fold", "hook"):
            with apply_intervention(model, iv, strategy=strategy):
                out[strategy] = model(TOKENS).logits
    torch.testing.assert_close(out["fold"], out["hook"], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out["fold"], base, atol=1e-4)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_unknown_architecture_names_the_table():
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(
        BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(RelNeuronError, match=r"architectures\.ARCHITECTURES"):
        model_shape(model)


def test_site_missing_in_architecture_is_explained():
    model = _model("gpt2")
    with pytest.raises(RelNeuronError, match="does not exist in architecture 'gpt2'"):
        site_module(model, "mlp.gate_proj", 0)
