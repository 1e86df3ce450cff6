"""``relneuron export``: the adapter and the checkpoint compute what relneuron-hf computes.

Four routes must agree on every site and multiplying mode: (a) run-time hooks, (b)
run-time folding, (c) the exported PEFT IA³ adapter loaded with ``PeftModel``, (d) the
exported checkpoint loaded with ``AutoModelForCausalLM``. The adapter multiplies the
same activations by the same vector as the hooks, so (c) == (a) bit for bit; the
checkpoint is the folded model saved losslessly in fp32, so (d) == (b) bit for bit;
folding reorders one multiplication per product, so (b) ~ (a) to rounding (observed
<= 5e-8 on the tiny models, asserted at 1e-5). Then one real intervention on the
embedded SmolLM2-135M, one pair of real ``lm_eval`` CLI runs, and the refusals.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import random_set, tiny_gpt2, tiny_llama

from relneuron_eval import cli
from relneuron_eval.core.interventions import Intervention, apply_intervention
from relneuron_eval.core.neuron_set import SITES, Neuron, NeuronSet, make_header
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.export.command import export_checkpoint, export_peft, read_manifest

# PEFT calls a transformers method deprecated in transformers 5; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
TOKENS = torch.tensor([[5, 9, 3, 17, 42, 8, 1], [1, 2, 3, 4, 5, 6, 7]])
MULTIPLYING = [("deactivate", None), ("enhance", 2.0), ("scale", 1.7)]
FOLD_TOL = {"atol": 1e-5, "rtol": 1e-5}


# ------------------------------------------------------------------ builders
def _strong_mlp(model):
    """Larger MLP weights than the default init, so that every edit moves the logits."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".mlp." in name and name.endswith("weight"):
                param.normal_(0.0, 0.3)
    return model


def tiny_phi3(seed: int = 0):
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(seed)
    config = Phi3Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return Phi3ForCausalLM(config).eval()


BUILDERS = {"llama": tiny_llama, "gpt2": tiny_gpt2, "phi3": tiny_phi3}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each tiny architecture saved once as a checkpoint: {name: (model, folder)}."""
    out = {}
    for name, build in BUILDERS.items():
        model = _strong_mlp(build())
        folder = tmp_path_factory.mktemp(f"tiny-{name}")
        model.save_pretrained(folder)
        out[name] = (model, folder)
    return out


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).logits


def _routes(model, folder: Path, iv: Intervention, tmp: Path, *, peft: bool = True):
    """Logits of the base model and of each route that computes ``iv``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = {"base": _logits(model)}
    with apply_intervention(model, iv, strategy="hook"):
        out["hook"] = _logits(model)
    with apply_intervention(model, iv, strategy="fold"):
        out["fold"] = _logits(model)
    if peft:
        adapter = export_peft(folder, iv, tmp / "adapter")
        base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        out["peft"] = _logits(PeftModel.from_pretrained(base, adapter).eval())
    checkpoint = export_checkpoint(folder, iv, tmp / "checkpoint")
    loaded = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    assert next(loaded.parameters()).dtype == torch.float32
    out["checkpoint"] = _logits(loaded)
    return out


def _assert_equivalent(logits: dict[str, torch.Tensor]) -> None:
    assert (logits["hook"] - logits["base"]).abs().max() > 1e-3, "the edit changes nothing"
    torch.testing.assert_close(logits["fold"], logits["hook"], **FOLD_TOL)
    if "peft" in logits:
        assert torch.equal(logits["peft"], logits["hook"]), (
            f"adapter vs hooks: max diff {(logits['peft'] - logits['hook']).abs().max()}"
        )
    assert torch.equal(logits["checkpoint"], logits["fold"]), (
        f"checkpoint vs fold: max diff {(logits['checkpoint'] - logits['fold']).abs().max()}"
    )


def _arch_sites(arch: str) -> list[str]:
    return [s for s in SITES if not (arch == "gpt2" and s == "mlp.gate_proj")]


# ------------------------------------------------------------- equivalence
@pytest.mark.parametrize("mode,factor", MULTIPLYING)
@pytest.mark.parametrize(
    "arch,site", [(a, s) for a in ("llama", "gpt2", "phi3") for s in _arch_sites(a)]
)
def test_routes_agree_per_site(saved, tmp_path, arch, site, mode, factor):
    model, folder = saved[arch]
    iv = Intervention.build(
        random_set(model, sites=[site], per_site=4), "*", mode=mode, factor=factor
    )
    _assert_equivalent(_routes(model, folder, iv, tmp_path))


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_routes_agree_on_several_sites_at_once(saved, tmp_path, arch):
    """act + gate + up in every layer; on Phi-3 gate and up share one fused IA³ vector."""
    model, folder = saved[arch]
    sites = ["mlp.act", "mlp.gate_proj", "mlp.up_proj"]
    iv = Intervention.build(random_set(model, sites=sites), "g1", mode="scale", factor=-0.5)
    logits = _routes(model, folder, iv, tmp_path)
    _assert_equivalent(logits)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    if arch == "phi3":
        assert all("gate_up_proj" in m or "down_proj" in m for m in config["target_modules"])
        assert len(config["target_modules"]) == 2 * model.config.num_hidden_layers


def test_gpt2_set_folds_into_bias_sites(saved, tmp_path):
    """mode=set exports as a checkpoint where the output site has a bias (GPT-2 c_fc)."""
    model, folder = saved["gpt2"]
    selection = random_set(model, sites=["mlp.up_proj", "mlp.down_proj"], groups=("g1",))
    iv = Intervention.build(selection, "*", mode="set", value=1.5)
    _assert_equivalent(_routes(model, folder, iv, tmp_path, peft=False))


def test_half_precision_exports(saved, tmp_path):
    """--dtype bfloat16: a bf16 checkpoint and adapter that match hooks on the bf16 model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, folder = saved["llama"]
    iv = Intervention.build(random_set(model, sites=["mlp.act", "mlp.up_proj"]), "*")
    checkpoint = export_checkpoint(folder, iv, tmp_path / "checkpoint", dtype="bfloat16")
    adapter = export_peft(folder, iv, tmp_path / "adapter", dtype="bfloat16")
    assert read_manifest(checkpoint)["dtype"] == "bfloat16"
    assert read_manifest(adapter)["dtype"] == "bfloat16"
    half = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    with apply_intervention(half, iv, strategy="hook"):
        hook = _logits(half)
    loaded = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert torch.equal(_logits(loaded), hook)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert torch.equal(_logits(PeftModel.from_pretrained(base, adapter).eval()), hook)


def test_adapter_files_describe_the_intervention(saved, tmp_path):
    model, folder = saved["llama"]
    selection = random_set(model, sites=["mlp.act", "mlp.up_proj"], seed=3)
    set_path = selection.save(tmp_path / "set.jsonl")
    iv = Intervention.build(set_path, "g2", mode="enhance", factor=3.0, top_k=4)
    out = export_peft(folder, iv, tmp_path / "adapter")
    config = json.loads((out / "adapter_config.json").read_text())
    layers = model.config.num_hidden_layers
    downs = [f"model.layers.{i}.mlp.down_proj" for i in range(layers)]
    ups = [f"model.layers.{i}.mlp.up_proj" for i in range(layers)]
    units = iv.units()
    expected = sorted(
        m
        for m, (site, i) in [
            *zip(downs, [("mlp.act", i) for i in range(layers)], strict=True),
            *zip(ups, [("mlp.up_proj", i) for i in range(layers)], strict=True),
        ]
        if (site, i) in units
    )
    assert config["peft_type"] == "IA3"
    assert config["target_modules"] == expected
    assert config["feedforward_modules"] == [m for m in expected if m.endswith("down_proj")]
    manifest = read_manifest(out)
    assert manifest["kind"] == "peft-ia3"
    assert manifest["intervention"]["mode"] == "enhance"
    assert manifest["intervention"]["factor"] == 3.0
    assert manifest["intervention"]["groups"] == ["g2"]
    assert (
        manifest["intervention"]["neuron_set_sha256"]
        == hashlib.sha256(set_path.read_bytes()).hexdigest()
    )
    assert manifest["intervention"]["selection_hash"] == iv.selection.content_hash()
    got = {(s, int(layer)): v for s, ls in manifest["units"].items() for layer, v in ls.items()}
    assert got == units
    assert "mode=enhance,factor=3.0,top_k=4" in manifest["relneuron_hf_model_args"]
    readme = (out / "README.md").read_text()
    assert "peft=DIR" in readme and manifest["variant"] in readme
    # Only the chosen units differ from 1 in the saved vectors, by the factor.
    from safetensors.torch import load_file

    tensors = load_file(out / "adapter_model.safetensors")
    changed = {}
    for key, vector in tensors.items():
        module = key.removeprefix("base_model.model.").removesuffix(".ia3_l")
        site = "mlp.act" if module.endswith("down_proj") else "mlp.up_proj"
        layer = int(module.split(".")[2])
        flat = vector.flatten()
        assert set(flat.unique().tolist()) <= {1.0, 3.0}
        changed[(site, layer)] = (flat == 3.0).nonzero().flatten().tolist()
    assert changed == units


def test_random_control_exports_the_drawn_units(saved, tmp_path):
    model, folder = saved["llama"]
    iv = Intervention.build(random_set(model, sites=["mlp.act"]), "g1", control="random", seed=7)
    out = export_peft(folder, iv, tmp_path / "adapter")
    manifest = read_manifest(out)
    assert manifest["intervention"]["control"] == "random"
    assert manifest["intervention"]["seed"] == 7
    got = {(s, int(layer)): v for s, ls in manifest["units"].items() for layer, v in ls.items()}
    assert got == iv.units()
    assert "control=random,seed=7" in manifest["relneuron_hf_model_args"]


def test_peft_model_plus_intervention_uses_hooks(saved, tmp_path):
    """relneuron-hf on top of a loaded adapter hooks (never folds) and composes with it."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, folder = saved["llama"]
    first = Intervention.build(
        random_set(model, sites=["mlp.act"], seed=1), "g1", mode="scale", factor=0.5
    )
    second = Intervention.build(
        random_set(model, sites=["mlp.up_proj"], seed=2), "g1", mode="deactivate"
    )
    adapter = export_peft(folder, first, tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(folder), adapter
    ).eval()
    before = {k: v.clone() for k, v in peft_model.state_dict().items()}
    with apply_intervention(peft_model, second, strategy="auto"):
        for key, value in peft_model.state_dict().items():
            assert torch.equal(value, before[key]), f"{key} was folded under PEFT"
        both = _logits(peft_model)
    with (
        apply_intervention(model, first, strategy="hook"),
        apply_intervention(model, second, strategy="hook"),
    ):
        reference = _logits(model)
    assert torch.equal(both, reference)
    with pytest.raises(RelNeuronError, match="cannot fold"):
        with apply_intervention(peft_model, second, strategy="fold"):
            pass


# ------------------------------------------------------------------ embedded
def _embedded_set(shape: dict[str, int], per_site: int = 150) -> NeuronSet:
    rng = random.Random(11)
    neurons = []
    for site in ("mlp.act", "mlp.up_proj"):
        for unit in rng.sample(range(shape["num_layers"] * shape["intermediate_size"]), per_site):
            layer, index = divmod(unit, shape["intermediate_size"])
            neurons.append(Neuron("rel", site, layer, index, rng.random()))
    header = make_header(
        model={"id": "smollm2-135m", "architecture": "LlamaForCausalLM", **shape},
        method={"name": "export-test"},
    )
    return NeuronSet(header, neurons)


@pytest.mark.slow
def test_embedded_model_three_routes(tmp_path):
    """300 mlp.act + mlp.up_proj units of the real SmolLM2-135M, enhanced x3."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relneuron_eval.core.architectures import model_shape
    from relneuron_eval.core.embedded import ensure_local

    local = ensure_local(verbose=False)
    tokenizer = AutoTokenizer.from_pretrained(local)
    model = AutoModelForCausalLM.from_pretrained(local, dtype=torch.float32).eval()
    shape = model_shape(model)
    set_path = _embedded_set(
        {
            "num_layers": shape.num_layers,
            "intermediate_size": shape.intermediate_size,
            "hidden_size": shape.hidden_size,
        }
    ).save(tmp_path / "smol.jsonl")
    iv = Intervention.build(set_path, "rel", mode="enhance", factor=3.0)
    batch = tokenizer(
        ["The capital of France is", "Tokyo is a city in the country of"],
        return_tensors="pt",
        padding=True,
    )

    def logits(m):
        with torch.no_grad():
            return m(**batch).logits

    base = logits(model)
    with apply_intervention(model, iv, strategy="hook"):
        hook = logits(model)
    with apply_intervention(model, iv, strategy="fold"):
        fold = logits(model)
    adapter = export_peft("smollm2-135m", iv, tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(local, dtype=torch.float32), adapter
    ).eval()
    peft_logits = logits(peft_model)
    del peft_model
    checkpoint = export_checkpoint("smollm2-135m", iv, tmp_path / "checkpoint")
    config = json.loads((checkpoint / "config.json").read_text())
    assert "quantization_config" not in config
    assert config.get("dtype", config.get("torch_dtype")) == "float32"
    assert (checkpoint / "tokenizer.json").is_file()
    ckpt_logits = logits(AutoModelForCausalLM.from_pretrained(checkpoint).eval())

    assert (hook - base).abs().max() > 0.1
    assert torch.equal(peft_logits, hook)
    torch.testing.assert_close(fold, hook, atol=2e-4, rtol=1e-5)  # observed 5.8e-5
    assert torch.equal(ckpt_logits, fold)
    manifest = read_manifest(checkpoint)
    assert manifest["intervention"]["num_units"] == 300
    assert manifest["base_model"]["pretrained"] == "smollm2-135m"


# --------------------------------------------------------------- lm_eval CLI
@pytest.mark.slow
def test_lm_eval_hf_with_adapter_matches_relneuron_hf(tmp_path):
    """`--model hf ... peft=DIR` and `--model relneuron-hf ...`: same per-sample results."""
    from tools_helpers import make_neuron_set, run_lm_eval, tiny_model

    from relneuron_eval.core.interventions import Intervention

    model_dir = tiny_model()
    set_path = make_neuron_set(tmp_path / "set.jsonl", {"a": 40, "b": 30})
    adapter = tmp_path / "adapter"
    code = cli.main(
        [
            "export",
            "peft",
            "--model",
            str(model_dir),
            "--neuron-set",
            str(set_path),
            "--groups",
            "a",
            "--out",
            str(adapter),
        ]
    )
    assert code == 0
    # The adapter really changes this model, so equal lm_eval results are not vacuous.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    plain = _logits(base)
    tuned = _logits(PeftModel.from_pretrained(base, adapter).eval())
    assert (tuned - plain).abs().max() > 1e-3
    assert Intervention.build(set_path, "a").description["num_units"] == 40

    # The two CLI runs are independent: run them side by side (each is mostly start-up).
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        peft_run = pool.submit(
            run_lm_eval, "hf", f"pretrained={model_dir},peft={adapter}", tmp_path / "peft", limit=10
        )
        plugin_run = pool.submit(
            run_lm_eval,
            "relneuron-hf",
            f"pretrained={model_dir},neuron_set={set_path},groups=a,mode=deactivate",
            tmp_path / "plugin",
            limit=10,
        )
        via_peft, via_plugin = peft_run.result(), plugin_run.result()
    compared = 0
    for task in ("toy_a", "toy_b"):
        rows = {}
        for label, results in (("peft", via_peft), ("plugin", via_plugin)):
            files = list(results.parent.glob(f"samples_{task}_*.jsonl"))
            assert len(files) == 1
            rows[label] = sorted(
                (json.loads(line) for line in files[0].read_text().splitlines() if line.strip()),
                key=lambda r: r["doc_id"],
            )
        assert len(rows["peft"]) == len(rows["plugin"]) == 10
        for a, b in zip(rows["peft"], rows["plugin"], strict=True):
            # Deactivation multiplies by exact zeros in both routes: identical numbers.
            assert (a["doc_id"], a["resps"], a["acc"]) == (b["doc_id"], b["resps"], b["acc"])
            compared += 1
    assert compared == 20
    a_res = json.loads(via_peft.read_text())["results"]
    b_res = json.loads(via_plugin.read_text())["results"]
    assert a_res["toy_group"]["acc,none"] == b_res["toy_group"]["acc,none"]


# ---------------------------------------------------------------- bad input
def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _export_cli(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["export", *args])
    return code, capsys.readouterr().err


@pytest.fixture
def llama_setup(saved, tmp_path):
    model, folder = saved["llama"]
    set_path = random_set(model, sites=SITES).save(tmp_path / "set.jsonl")
    return folder, set_path


def test_existing_model_folder_is_not_overwritten(llama_setup, tmp_path, capsys):
    folder, set_path = llama_setup
    out = tmp_path / "out"
    common = ["--model", str(folder), "--neuron-set", str(set_path), "--sites", "mlp.act"]
    assert _export_cli(capsys, "model", *common, "--out", str(out))[0] == 0
    before = _tree_bytes(out)
    for fmt in ("model", "peft"):
        code, err = _export_cli(capsys, fmt, *common, "--mode", "enhance", "--out", str(out))
        assert code == 2
        assert "already holds a model" in err and "--force" in err
        assert _tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # --force replaces it, as a whole, with the new export.
    code, _ = _export_cli(
        capsys, "peft", *common, "--mode", "enhance", "--out", str(out), "--force"
    )
    assert code == 0
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert read_manifest(out)["intervention"]["mode"] == "enhance"


def test_non_empty_folder_and_base_folder_are_refused(llama_setup, tmp_path, capsys):
    folder, set_path = llama_setup
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    common = ["--model", str(folder), "--neuron-set", str(set_path)]
    code, err = _export_cli(capsys, "peft", *common, "--out", str(other))
    assert code == 2 and "is not empty" in err
    assert (other / "notes.txt").read_text() == "mine"
    base_before = _tree_bytes(folder)
    for target in (folder, folder.parent):
        code, err = _export_cli(capsys, "model", *common, "--out", str(target), "--force")
        assert code == 2 and "base model's own folder" in err
    assert _tree_bytes(folder) == base_before
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _export_cli(capsys, "peft", *common, "--sites", "mlp.act", "--out", str(empty))[0] == 0
    assert (empty / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    "fmt,extra,message",
    [
        ("peft", ["--mode", "set", "--value", "1"], "mode=set cannot be exported as a PEFT"),
        ("model", ["--mode", "set", "--value", "1"], "cannot be folded into the weights"),
        ("peft", ["--positions", "last"], "positions=last cannot be exported"),
        ("model", ["--positions", "last"], "positions=last cannot be exported"),
        ("peft", ["--per-doc", "hop1_fact"], "per_doc=hop1_fact cannot be exported"),
        ("model", ["--groups", "nope|g1"], "group(s) ['nope'] not in the neuron set"),
        ("peft", ["--mode", "boost"], "unknown mode 'boost'"),
        ("peft", ["--top-k", "0"], "top_k must be a positive integer"),
        ("peft", ["--sites", "mlp.attn"], "unknown site(s) ['mlp.attn']"),
        ("peft", ["--layers", "1-x"], "layers must be integers"),
        # non-finite numbers wrote a checkpoint of NaN weights (exit 0)
        (
            "model",
            ["--mode", "scale", "--factor", "nan"],
            "factor must be a finite number, got nan",
        ),
        ("model", ["--mode", "enhance", "--factor", "inf"], "factor must be a finite number"),
        ("model", ["--mode", "set", "--value", "nan"], "value must be a finite number, got nan"),
        ("peft", ["--fraction", "nan"], "fraction must be in (0, 1]"),
        # ignored arguments are refused, as in a relcheck file
        ("peft", ["--factor", "3"], "factor only applies to mode enhance or scale"),
        ("peft", ["--seed", "3"], "seed only applies to control=random"),
        # "the selection is empty" (0-1000000000: MemoryError) before
        ("peft", ["--layers", "7"], "layers=7 is outside this model's layers 0-2"),
        ("peft", ["--layers", "0-1000000000"], "layers=0-1000000000 is outside this model's"),
        ("peft", ["--control", "shuffled"], "unknown control 'shuffled'"),
        ("peft", [], "both live on module model.layers.0.mlp.down_proj"),
    ],
)
def test_refusals(llama_setup, tmp_path, capsys, fmt, extra, message, memory_cap):
    folder, set_path = llama_setup
    out = tmp_path / "out"
    code, err = _export_cli(
        capsys,
        fmt,
        "--model",
        str(folder),
        "--neuron-set",
        str(set_path),
        *extra,
        "--out",
        str(out),
    )
    assert code == 2
    assert err.startswith("error: ") and message in err, err
    assert not out.exists()
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_input_is_validated_before_the_model_is_read(llama_setup, tmp_path, capsys):
    """A bad group is reported even when the model does not exist: nothing was loaded."""
    _, set_path = llama_setup
    missing = tmp_path / "no-such-model"
    code, err = _export_cli(
        capsys,
        "peft",
        "--model",
        str(missing),
        "--neuron-set",
        str(set_path),
        "--groups",
        "nope",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2 and "not in the neuron set" in err
    code, err = _export_cli(
        capsys,
        "peft",
        "--model",
        str(missing),
        "--neuron-set",
        str(set_path),
        "--sites",
        "mlp.act",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2 and "cannot read the model config" in err


def test_set_made_for_another_model_is_refused(saved, tmp_path):
    model, folder = saved["llama"]
    selection = random_set(model, sites=["mlp.act"])
    selection.header["model"]["num_layers"] = 30
    iv = Intervention.build(selection, "*")
    with pytest.raises(RelNeuronError, match="another shape: num_layers 30 in the file vs 3"):
        export_peft(folder, iv, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_act_and_down_proj_of_one_layer_export_as_checkpoint(saved, tmp_path):
    """What IA³ cannot hold (one module, input and output) still folds exactly."""
    model, folder = saved["gpt2"]
    iv = Intervention.build(random_set(model, sites=["mlp.act", "mlp.down_proj"]), "*")
    with pytest.raises(RelNeuronError, match=r"mlp.act and mlp.down_proj both live on module"):
        export_peft(folder, iv, tmp_path / "adapter")
    _assert_equivalent(_routes(model, folder, iv, tmp_path, peft=False))


# ------------------------------------------------- interrupted exports, --force
# Runs `relneuron export` in a child process that stops itself (``sig``) just before
# writing the model card, i.e. after every weight file is in the temporary folder.
_INTERRUPT = """
import os, signal, sys
def hook(event, args):
    if event == "open" and str(args[0]).endswith("README.md") and ".tmp" in str(args[0]):
        os.kill(os.getpid(), signal.{sig})
sys.addaudithook(hook)
from relneuron_eval.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _interrupted_export(sig: str, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    code = _INTERRUPT.format(sig=sig)
    return subprocess.Popen(
        [sys.executable, "-c", code, "export", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _temporaries(parent: Path) -> list[Path]:
    return sorted(p for p in parent.glob(".out.*.tmp") if p.name != ".out.mine.tmp")


def _stopped(proc: subprocess.Popen) -> bool:
    stat = Path(f"/proc/{proc.pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] == "T"


@pytest.mark.slow  # lm_eval / relneuron subprocesses: ~10 CPU s
def test_killed_export_is_cleaned_up_by_the_next_one(llama_setup, tmp_path, capsys):
    """Before: every killed export left its hidden temporary folder behind for good."""
    folder, set_path = llama_setup
    out = tmp_path / "out"
    common = ["--model", str(folder), "--neuron-set", str(set_path), "--sites", "mlp.act"]
    # A writer that is still alive (stopped, not dead) keeps its folder.
    running = _interrupted_export("SIGSTOP", "model", *common, "--out", str(out))
    try:
        deadline = time.monotonic() + 300
        while not _stopped(running):
            assert time.monotonic() < deadline and running.poll() is None
            time.sleep(0.2)
        (alive,) = _temporaries(tmp_path)
        killed = _interrupted_export("SIGKILL", "model", *common, "--out", str(out))
        assert killed.wait(timeout=300) == -9
        (stale,) = [p for p in _temporaries(tmp_path) if p != alive]
        assert (stale / "model.safetensors").is_file() and not out.exists()
        mine = tmp_path / ".out.mine.tmp"  # not written by an export: never touched
        mine.mkdir()
        (mine / "keep.txt").write_text("mine")
        code, err = _export_cli(capsys, "model", *common, "--out", str(out))
        assert code == 0, err
        assert f"removed {stale}" in err and "interrupted export" in err
        assert _temporaries(tmp_path) == [alive] and (mine / "keep.txt").read_text() == "mine"
    finally:
        running.kill()
        running.wait(timeout=60)
    code, err = _export_cli(capsys, "peft", *common, "--out", str(out), "--force")
    assert code == 0 and f"removed {alive}" in err
    assert _temporaries(tmp_path) == [] and (mine / "keep.txt").read_text() == "mine"
    assert (out / "adapter_model.safetensors").is_file()


def test_force_replaces_only_what_a_previous_export_wrote(llama_setup, tmp_path, capsys):
    """Before: --force deleted the user's notes.txt and sub/data.csv along with the export."""
    folder, set_path = llama_setup
    out = tmp_path / "out"
    common = ["--model", str(folder), "--neuron-set", str(set_path), "--sites", "mlp.act"]
    assert _export_cli(capsys, "model", *common, "--out", str(out))[0] == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "data.csv").write_text("a,b\n")
    before = _tree_bytes(out)
    code, err = _export_cli(capsys, "peft", *common, "--out", str(out), "--force")
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "did not write (notes.txt, sub/data.csv)" in err and "nothing was written" in err
    assert _tree_bytes(out) == before
    assert read_manifest(out)["files"] == written  # what a later --force may replace
    # A model folder of the user's own (no relneuron.json) is refused as well.
    own = tmp_path / "own-model"
    own.mkdir()
    for path in folder.iterdir():
        (own / path.name).write_bytes(path.read_bytes())
    own_before = _tree_bytes(own)
    code, err = _export_cli(capsys, "peft", *common, "--out", str(own), "--force")
    assert code == 2 and "was not written by relneuron export" in err
    assert _tree_bytes(own) == own_before
    # Only the export's own files: replaced, also for a manifest without a file list.
    (out / "notes.txt").unlink()
    (out / "sub" / "data.csv").unlink()
    (out / "sub").rmdir()
    manifest = json.loads((out / "relneuron.json").read_text())
    del manifest["files"]
    (out / "relneuron.json").write_text(json.dumps(manifest))
    assert _export_cli(capsys, "peft", *common, "--out", str(out), "--force")[0] == 0
    assert read_manifest(out)["kind"] == "peft-ia3" and not (out / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "holds a previous `relneuron export` and nothing else" in help_text
    assert "refused, never deleted" in help_text


def test_random_control_checks_the_header_before_allocating(llama_setup, tmp_path):
    """A header claiming intermediate_size 1e9 made --control random grow past 6.6 GB.

    Run under a 2 GiB address-space limit (the export itself needs ~0.4 GB), so the old
    behaviour fails fast with MemoryError instead of eating the machine.
    """
    import resource
    import subprocess
    import sys

    folder, set_path = llama_setup
    lines = set_path.read_text().splitlines()
    header = json.loads(lines[0])
    header["model"]["intermediate_size"] = 10**9
    huge = tmp_path / "huge.jsonl"
    huge.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    limit = 2 * 2**30

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    out = tmp_path / "out"
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "relneuron_eval.cli", "export", "peft"),
            *("--model", str(folder), "--neuron-set", str(huge)),
            *("--sites", "mlp.act", "--control", "random", "--out", str(out)),
        ],
        preexec_fn=cap,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "another shape: intermediate_size 1000000000 in the file vs 24" in proc.stderr
    assert not out.exists()


def test_stale_temporary_of_an_out_with_brackets_is_removed(tmp_path, capsys):
    """Before: '[' or ']' in --out made the sweep's glob pattern a character class, so the
    temporary folder of a killed export to 'out[v1]' stayed forever."""
    import socket

    from relneuron_eval.export.out import WRITER, remove_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=60)  # its pid is now free: the writer of the folder below is gone
    out = tmp_path / "variants" / "hq[v1]"
    stale = out.parent / f".{out.name}.abc123.tmp"
    stale.mkdir(parents=True)
    (stale / WRITER).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert remove_stale(out) == [stale] and not stale.exists()
    assert "interrupted export" in capsys.readouterr().err
