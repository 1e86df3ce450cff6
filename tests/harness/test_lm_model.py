"""``RelNeuronLM`` in-process: its numbers against hand-made references.

The references apply the edit with a plain forward hook at explicitly chosen positions
on a separately loaded copy of the model, then score or decode by hand, so a wrong
position, a leaked hook or a PEFT mix-up in ``relneuron-hf`` shows up as a mismatch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval_helpers import save_tiny_lm, save_tiny_set

from relneuron_eval.core.architectures import site_module
from relneuron_eval.core.neuron_set import Neuron, NeuronSet
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.harness.lm_model import RelNeuronLM

PROMPTS = [
    "The capital of France is",
    "Tokyo is a city in the country of",
    "A very long prompt that goes on and on so that the batch needs padding, ends in",
]
CONTINUATIONS = [" Paris", " Japan and nothing else", " padding."]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-llama-lm"))


@pytest.fixture(scope="module")
def neuron_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sets") / "g.jsonl"
    return save_tiny_set(path, ["g"], ["mlp.act", "mlp.up_proj"], per_layer=16, seed=3)


def _requests(kind: str) -> list[Instance]:
    if kind == "loglikelihood":
        args = list(zip(PROMPTS, CONTINUATIONS, strict=True))
    else:
        args = [(p, {"until": ["\n"], "max_gen_toks": 6, "do_sample": False}) for p in PROMPTS]
    return [
        Instance(request_type=kind, doc={}, arguments=a, idx=i, metadata=("t", i, 1))
        for i, a in enumerate(args)
    ]


def _reference_model(tiny_dir: Path, neuron_file: Path, mode: str, factor: float):
    """A fresh copy of the model plus hooks that edit only the positions we set."""
    from transformers import AutoModelForCausalLM

    from relneuron_eval.core.neuron_set import load

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    units = load(neuron_file).by_site_layer()
    mult = 0.0 if mode == "deactivate" else factor
    where: dict[str, list[int] | None] = {"positions": None}  # None: edit nothing

    def edit(x: torch.Tensor, idx: list[int]) -> torch.Tensor:
        if not where["positions"]:
            return x
        x = x.clone()
        for pos in where["positions"]:
            if pos < x.shape[1]:
                x[0, pos, idx] = x[0, pos, idx] * mult
        return x

    for (site, layer), idx in units.items():
        module, spec = site_module(model, site, layer)
        if spec.role == "input":
            module.register_forward_pre_hook(lambda m, a, idx=idx: (edit(a[0], idx), *a[1:]))
        else:
            module.register_forward_hook(lambda m, a, out, idx=idx: edit(out, idx))
    return model, where


def _edit_positions(positions: str, prompt_len: int, seq_len: int) -> list[int]:
    return {"all": list(range(seq_len)), "last": [prompt_len - 1], "none": []}[positions]


def _ref_loglikelihood(model, where, tokenizer, ctx: str, cont: str, positions: str) -> float:
    ctx_ids = tokenizer(ctx, add_special_tokens=False)["input_ids"]
    cont_ids = tokenizer(cont, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx_ids + cont_ids])
    where["positions"] = _edit_positions(positions, len(ctx_ids), ids.shape[1])
    with torch.no_grad():
        logits = model(ids).logits.log_softmax(-1)[0]
    where["positions"] = None
    return float(sum(logits[len(ctx_ids) - 1 + i, t] for i, t in enumerate(cont_ids)))


@pytest.mark.parametrize("positions", ["all", "last"])
def test_loglikelihood_matches_reference(tiny_dir, neuron_file, positions):
    """Right-padded batches of different lengths, multi-token continuations."""
    lm = RelNeuronLM(
        pretrained=str(tiny_dir),
        device="cpu",
        batch_size=3,
        neuron_set=str(neuron_file),
        mode="enhance",
        factor=3.0,
        positions=positions,
    )
    got = [ll for ll, _ in lm.loglikelihood(_requests("loglikelihood"))]
    model, where = _reference_model(tiny_dir, neuron_file, "enhance", 3.0)

    def reference(where_to_edit: str) -> list[float]:
        return [
            _ref_loglikelihood(model, where, lm.tokenizer, c, k, where_to_edit)
            for c, k in zip(PROMPTS, CONTINUATIONS, strict=True)
        ]

    assert got == pytest.approx(reference(positions), rel=1e-4, abs=1e-4)
    assert reference("none") != pytest.approx(got, rel=1e-3, abs=1e-3)  # the edit matters


def _ref_greedy(model, where, tokenizer, prompt: str, steps: int, positions: str) -> str:
    """Greedy decoding without a cache; the edit sits at the prompt's last token only
    (``last``) or at every position (``all``), exactly like a cached run would see it."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    prompt_len = len(ids)
    out: list[int] = []
    for _ in range(steps):
        seq = ids + out
        where["positions"] = _edit_positions(positions, prompt_len, len(seq))
        with torch.no_grad():
            nxt = int(model(torch.tensor([seq])).logits[0, -1].argmax())
        where["positions"] = None
        out.append(nxt)
    text = tokenizer.decode(out)
    return text.split("\n")[0]


@pytest.mark.parametrize("positions", ["all", "last"])
def test_generation_matches_reference(tiny_dir, neuron_file, positions):
    """Left-padded generation batches: ``last`` edits the prompt's last token only."""
    lm = RelNeuronLM(
        pretrained=str(tiny_dir),
        device="cpu",
        batch_size=3,
        neuron_set=str(neuron_file),
        mode="deactivate",
        positions=positions,
    )
    got = lm.generate_until(_requests("generate_until"))
    model, where = _reference_model(tiny_dir, neuron_file, "deactivate", 0.0)
    expected = [_ref_greedy(model, where, lm.tokenizer, p, 6, positions) for p in PROMPTS]
    assert got == expected
    assert got != [_ref_greedy(model, where, lm.tokenizer, p, 6, "none") for p in PROMPTS]


def test_peft_adapter_combines_with_intervention(tiny_dir, neuron_file, tmp_path):
    """A LoRA adapter plus a deactivation equals the PEFT model with the same hooks."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from relneuron_eval.core.interventions import Intervention, apply_intervention

    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    peft_model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["down_proj", "up_proj"], init_lora_weights=False)
    )
    peft_model.save_pretrained(tmp_path / "adapter")

    lm = RelNeuronLM(
        pretrained=str(tiny_dir),
        peft=str(tmp_path / "adapter"),
        device="cpu",
        batch_size=3,
        neuron_set=str(neuron_file),
        mode="deactivate",
    )
    got = [ll for ll, _ in lm.loglikelihood(_requests("loglikelihood"))]

    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32), tmp_path / "adapter"
    ).eval()
    iv = Intervention.build(str(neuron_file), "*", mode="deactivate")
    tok = lm.tokenizer

    def score(model) -> list[float]:
        out = []
        for ctx, cont in zip(PROMPTS, CONTINUATIONS, strict=True):
            c = tok(ctx, add_special_tokens=False)["input_ids"]
            k = tok(cont, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = model(torch.tensor([c + k])).logits.log_softmax(-1)[0]
            out.append(float(sum(logp[len(c) - 1 + i, t] for i, t in enumerate(k))))
        return out

    with apply_intervention(reference, iv):
        expected = score(reference)
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-4)
    without_adapter = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    with apply_intervention(without_adapter, iv):
        assert score(without_adapter) != pytest.approx(got, rel=1e-3, abs=1e-3)


def test_model_is_clean_after_each_request_type(tiny_dir, neuron_file):
    lm = RelNeuronLM(
        pretrained=str(tiny_dir),
        device="cpu",
        batch_size=3,
        neuron_set=str(neuron_file),
        mode="enhance",
    )
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    lm.loglikelihood(_requests("loglikelihood"))
    lm.generate_until(_requests("generate_until"))
    for key, value in lm.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in lm.model.modules())


# ------------------------------------------------------------------ model args
BAD_MODEL_ARGS = [
    ("groups=nope", "not in the neuron set"),
    ("mode=explode", "unknown mode 'explode'"),
    ("fraction=2", "fraction must be in"),
    ("positions=middle", "unknown positions"),
    # lm-eval turns "nan"/"inf" into floats; these used to run with every logit NaN
    ("mode=enhance,factor=nan", "factor must be a finite number, got nan"),
    ("mode=scale,factor=inf", "factor must be a finite number, got inf"),
    ("mode=scale,factor=-inf", "factor must be a finite number, got -inf"),
    ("mode=set,value=nan", "value must be a finite number, got nan"),
    # a bare ValueError from int("abc") before
    ("control=random,seed=abc", "seed must be an integer >= 0, got 'abc'"),
    # silently ignored before (a relcheck file refuses them)
    ("seed=abc", "seed only applies to control=random"),
    ("seed=3", "seed only applies to control=random"),
    ("factor=3", "factor only applies to mode enhance or scale, not deactivate"),
    ("mode=enhance,value=1", "value only applies to mode set"),
    ("top_k=0", "top_k must be a positive integer"),
    ("top_k=-5", "top_k must be a positive integer"),
    ("fraction=nan", r"fraction must be in \(0, 1\]"),
    # "the selection is empty" before (0-1000000000: MemoryError)
    ("layers=99", "layers=99 is outside this model's layers 0-1"),
    ("layers=5-3", "layers=5-3 is a reversed range"),
    ("layers=-3", "layers=-3 is outside this model's layers 0-1"),
    ("layers=0-1000000000", "layers=0-1000000000 is outside this model's layers 0-1"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_MODEL_ARGS)
def test_bad_model_args_are_refused_before_loading(
    tiny_dir, neuron_file, extra, message, memory_cap
):
    """Parsed exactly as ``lm_eval --model_args`` parses them (strings to numbers)."""
    args = f"pretrained={tiny_dir / 'missing'},neuron_set={neuron_file},{extra}"
    with pytest.raises(RelNeuronError, match=message):  # before the (missing) model is read
        RelNeuronLM.create_from_arg_string(args, {"device": "cpu"})


def test_intervention_args_without_a_neuron_set_are_refused(tiny_dir):
    with pytest.raises(RelNeuronError, match=r"factor=, seed= need\(s\) a neuron_set="):
        RelNeuronLM.create_from_arg_string(
            f"pretrained={tiny_dir},factor=3,seed=1", {"device": "cpu"}
        )


def test_per_doc_applies_top_k_per_group(tiny_dir, neuron_file, tmp_path):
    two = NeuronSet.load(neuron_file)
    neurons = [*two.neurons, *(Neuron("h", n.site, n.layer, n.index, 0.5) for n in two)]
    path = two.with_neurons(neurons).save(tmp_path / "two.jsonl")
    lm = RelNeuronLM(
        pretrained=str(tiny_dir), device="cpu", neuron_set=str(path), per_doc="fact", top_k=5
    )
    assert {g: len(s) for g, s in lm._rn_group_sets.items()} == {"g": 5, "h": 5}
    assert lm._rn.description["top_k"] == 5


@pytest.mark.slow
def test_lm_eval_results_record_file_hash_selection_hash_and_layer_counts(
    tiny_dir, neuron_file, tmp_path
):
    """The README promises file hash, units and per-layer counts in ``config.relneuron``."""
    import hashlib

    from lm_eval_helpers import load_results, run_lm_eval, write_toy_task

    tasks = write_toy_task(
        tmp_path / "task",
        [{"question": f"Q{i} is", "answer": " a", "choices": [" a", " b"]} for i in range(3)],
    )
    args = f"pretrained={tiny_dir},neuron_set={neuron_file},layers=1,top_k=7"
    out = tmp_path / "out"
    run_lm_eval(
        [
            *("--model", "relneuron-hf", "--model_args", args, "--tasks", "toy_mc"),
            *("--include_path", str(tasks), "--device", "cpu", "--limit", "2"),
            *("--output_path", str(out)),
        ]
    )
    info = load_results(out)["config"]["relneuron"]
    assert info["neuron_set_sha256"] == hashlib.sha256(neuron_file.read_bytes()).hexdigest()
    selection = NeuronSet.load(neuron_file).select("*", top_k=7, layers=[1])
    assert info["selection_sha256"] == selection.units_hash()
    assert info["units_per_layer"] == {"1": 7}
    assert info["num_units"] == 7
    assert "neuron_set_hash" not in info  # was the selection's hash under a file-like name


def test_a_model_loaded_from_the_embedded_cache_keeps_its_alias(tmp_path, monkeypatch):
    """The report and relcheck load the embedded model once from its cache folder; the
    variant names must still start with the alias users typed, not the cache path."""
    from types import SimpleNamespace

    from relneuron_eval.core.embedded import CACHE_ENV, alias_of
    from relneuron_eval.harness.lm_model import _base_name

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    cached = tmp_path / "smollm2-135m-0123456789abcdef"
    assert alias_of(cached) == "smollm2-135m"
    assert _base_name(SimpleNamespace(config=SimpleNamespace(_name_or_path=str(cached)))) == (
        "smollm2-135m"
    )
    elsewhere = tmp_path / "other" / "smollm2-135m-0123456789abcdef"
    assert alias_of(elsewhere) is None
    loaded = SimpleNamespace(config=SimpleNamespace(_name_or_path="/models/llama"))
    assert _base_name(loaded) == "/models/llama"
    assert _base_name("smollm2-135m") == "smollm2-135m"
