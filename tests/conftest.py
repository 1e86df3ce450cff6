"""Shared fixtures: offline hub settings, tiny random-weight models, neuron-set builders."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One torch thread per test process (and per lm_eval it starts): `make test` runs two
# pytest-xdist workers on the 2-core machine, and a second thread per process only
# fights the other worker for the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from relneuron_eval.core.neuron_set import SITES, Neuron, NeuronSet, make_header

REPO = Path(__file__).resolve().parents[1]

# `slow` enforced by measurement (CPU seconds per test): see slow_marker.py
from slow_marker import (  # noqa: E402, F401
    pytest_collection_modifyitems,
    pytest_runtest_makereport,
    pytest_runtest_setup,
    pytest_xdist_make_scheduler,
)


def tiny_llama(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def tiny_gpt2(seed: int = 0):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=64, n_embd=16, n_layer=3, n_head=2, n_inner=24, n_positions=64)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # GPT-2 initialises biases to zero; make them matter in the tests
        for layer in model.transformer.h:
            layer.mlp.c_fc.bias.normal_()
            layer.mlp.c_proj.bias.normal_()
    return model


def random_set(model, sites=SITES, per_site: int = 5, groups=("g1", "g2"), seed: int = 0):
    """A neuron set for ``model`` with ``per_site`` units per (group, site, layer)."""
    from relneuron_eval.core.architectures import arch_spec, model_card, model_shape

    rng = random.Random(seed)
    shape = model_shape(model)
    available = [s for s in sites if s in arch_spec(model).sites]
    neurons = []
    for group in groups:
        for site in available:
            for layer in range(shape.num_layers):
                for index in rng.sample(range(shape.site_size(site)), per_site):
                    neurons.append(Neuron(group, site, layer, index, rng.random()))
    header = make_header(model=model_card(model, "tiny"), method={"name": "random-test"})
    return NeuronSet(header, neurons)


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture
def gpt2():
    return tiny_gpt2()


@pytest.fixture
def memory_cap():
    """Cap this process's address space at its current size + 1 GiB during the test.

    For tests of inputs that used to allocate without bound (a layer range of a billion):
    a regression then fails fast with MemoryError instead of eating the machine.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        current = int(handle.read().split()[0]) * resource.getpagesize()
    cap = current + 2**30
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield cap
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
