"""Tiny random-weight Gemma 3 text models: the second embedded model's architecture, cheap.

Gemma 3 differs from the Llama family where our code could go wrong: a gated GELU MLP,
four norms per layer, scaled and tied embeddings, and sliding-window attention layers
next to global ones (a hybrid KV cache). The tiny config keeps all of that.
"""

from __future__ import annotations

from pathlib import Path

LAYER_TYPES = ["sliding_attention", "full_attention"]


def tiny_gemma3(
    seed: int = 0,
    *,
    vocab_size: int = 64,
    hidden: int = 16,
    intermediate: int = 24,
    sliding_window: int = 4,
    mlp_std: float | None = 0.3,
):
    """2 layers (one sliding, one global), tied embeddings."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=len(LAYER_TYPES),
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=hidden // 2,
        query_pre_attn_scalar=hidden // 2,
        max_position_embeddings=256,
        sliding_window=sliding_window,
        layer_types=list(LAYER_TYPES),
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = Gemma3ForCausalLM(config).eval()
    if mlp_std is not None:  # larger than the init, so that a few units move the logits
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
                    proj.weight.normal_(0.0, mlp_std)
    return model


def save_tiny_gemma3(folder: Path, *, sliding_window: int = 6) -> Path:
    """That tiny Gemma 3 with the real SmolLM2 tokenizer (so prompts tokenize as in real runs),
    saved like any checkpoint; the sizes of ``save_tiny_lm``'s Llama, so that its neuron sets
    (``save_tiny_set``) fit. The window is far shorter than the few-shot prompts."""
    from lm_eval_helpers import TINY_HIDDEN, TINY_INTERMEDIATE
    from transformers import AutoTokenizer

    from relneuron_eval.core.embedded import ensure_local

    tokenizer = AutoTokenizer.from_pretrained(ensure_local(verbose=False))
    model = tiny_gemma3(
        vocab_size=len(tokenizer),
        hidden=TINY_HIDDEN,
        intermediate=TINY_INTERMEDIATE,
        sliding_window=sliding_window,
        mlp_std=0.4,
    )
    model.config.bos_token_id = tokenizer.bos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
