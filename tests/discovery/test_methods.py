"""The leaderboard's discovery methods: attribution patching, DiffMean, activation
magnitude and the activation-matched random control.

By hand where it can be: the attribution of a unit is the derivative of the gold
answer's log-probability with respect to the unit's scale (checked by finite
differences on a float64 tiny Llama), DiffMean and magnitude scores are recomputed with
numpy from a store of known numbers, matched units are closer in their statistics than
a size-matched random draw. One CLI run per method on a tiny Llama with the real
tokenizer checks that the three store methods share one activation pass and resume.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from relneuron_eval.core.architectures import model_shape, site_module
from relneuron_eval.core.neuron_set import ModelShape, Neuron, NeuronSet, make_header
from relneuron_eval.data.relation import Prompt
from relneuron_eval.discovery.activations import ActivationStore, Layout
from relneuron_eval.discovery.attribution import GradTimesActivation, batch_attributions
from relneuron_eval.discovery.matched_random import matched_set
from relneuron_eval.discovery.simple_methods import PassConfig, find_simple, relation_stats

SITES = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
PAIRS = [([1, 2, 3, 4, 5], [6, 7]), ([8, 9], [10]), ([11, 12, 13], [14, 15, 16])]


def _log_prob(model, pairs, scale=None):
    """Sum of the gold answers' log-probs, each pair alone; ``scale``: (site, layer, i, a)."""
    handle = None
    if scale is not None:
        site, layer, index, alpha = scale
        module, spec = site_module(model, site, layer)
        col = spec.offset_halves * model_shape(model).intermediate_size + index

        def hook(m, args, out):
            out = out.clone()
            out[..., col] *= alpha
            return out

        handle = module.register_forward_hook(hook)
    total = 0.0
    with torch.no_grad():
        for prompt, answer in pairs:
            logp = torch.log_softmax(model(torch.tensor([prompt + answer])).logits[0], -1)
            total += sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(answer))
    if handle is not None:
        handle.remove()
    return total


def test_attribution_is_the_derivative_of_the_answer_log_prob_in_the_units_scale(llama):
    """sum_t a_t dL/da_t = dL(alpha * a)/dalpha at alpha = 1, for a batch with padding."""
    model = llama.double()
    layout = Layout.for_shape(model_shape(model), SITES)
    hooks = GradTimesActivation(model, layout)
    got = batch_attributions(model, hooks, PAIRS, pad=0)
    hooks.remove()
    offsets = layout.offsets()
    rng = random.Random(0)
    for site in SITES:
        size = layout.sizes[layout.sites.index(site)]
        for layer, index in [(rng.randrange(3), rng.randrange(size)) for _ in range(2)]:
            eps = 1e-2  # float32 inside the model (norms) makes a smaller step noisy
            up = _log_prob(model, PAIRS, (site, layer, index, 1 + eps))
            down = _log_prob(model, PAIRS, (site, layer, index, 1 - eps))
            expected = (up - down) / (2 * eps)
            value = float(got[layer][:, offsets[site] + index].sum())
            assert value == pytest.approx(expected, rel=2e-2, abs=2e-6), (site, layer, index)


def _prompts(relations):
    return [Prompt(r, f"{r}-{i}", f"text {i}", "o", ("o",), 0) for i, r in enumerate(relations)]


def _store(tmp_path, values, layout):
    store = ActivationStore.open(tmp_path / "s", layout, values.shape[0], {"t": 1})
    upl = layout.units_per_layer
    per_layer = {layer: values[:, layer * upl : (layer + 1) * upl] for layer in range(2)}
    store.write_batch(list(range(values.shape[0])), per_layer, [False] * values.shape[0])
    return store


def test_diffmean_and_magnitude_scores_by_hand(tmp_path):
    shape = ModelShape(num_layers=2, intermediate_size=4, hidden_size=3)
    layout = Layout.for_shape(shape, SITES)  # 4 + 4 + 3 = 11 units per layer
    rng = np.random.default_rng(0)
    relations = ["a", "a", "b", "b", "b", "c"]
    values = rng.normal(size=(6, 22)).astype(np.float32)
    store = _store(tmp_path, values, layout)
    prompts = _prompts(relations)
    card = {"id": "t", "architecture": "x", "num_layers": 2, "intermediate_size": 4}
    card["hidden_size"] = 3
    config = PassConfig(top_k=5, sites=SITES)
    labels = np.array(relations)
    for method in ("diffmean", "activation-magnitude"):
        found = find_simple(method, store, prompts, config, card, {})
        for rel in ("a", "b", "c"):
            mine = values[labels == rel]
            if method == "diffmean":
                expected = np.abs(mine.mean(0) - values[labels != rel].mean(0))
            else:
                expected = np.abs(mine).mean(0)
            best = np.argsort(-expected, kind="stable")[:5]
            got = [n for n in found.neurons if n.group == rel]
            assert [n.score for n in got] == pytest.approx(expected[best].tolist(), rel=1e-5)
            uids = [n.layer * 11 + layout.offsets()[n.site] + n.index for n in got]
            assert uids == best.tolist()
    stats = relation_stats(store, relations)
    assert stats.all_std == pytest.approx(values.std(0), rel=1e-5)


def test_matched_units_are_closer_than_a_random_control():
    shape = ModelShape(num_layers=2, intermediate_size=64, hidden_size=16)
    layout = Layout.for_shape(shape, SITES)
    rng = np.random.default_rng(1)
    n = layout.total_units
    all_mean, all_std = rng.normal(size=n), np.exp(rng.normal(size=n))
    # the reference: each group's highest-variance units, as top-AP units tend to be
    neurons = []
    upl, offsets = layout.units_per_layer, layout.offsets()
    for g, group in enumerate(("r1", "r2")):
        ranked = np.argsort(-all_std)[g * 20 : g * 20 + 20]
        for rank, uid in enumerate(ranked.tolist()):
            layer, col = divmod(uid, upl)
            site, index = layout.unit_of(col)
            neurons.append(Neuron(group, site, layer, index, 100.0 - rank))
    card = {"id": "t", "architecture": "LlamaForCausalLM", "num_layers": 2}
    card.update(intermediate_size=64, hidden_size=16)
    reference = NeuronSet(make_header(model=card, method={"name": "ref"}), neurons)
    matched = matched_set(reference, layout, all_mean, all_std, top_k=None, seed=3, pool=3)
    again = matched_set(reference, layout, all_mean, all_std, top_k=None, seed=3, pool=3)
    assert matched.neurons == again.neurons  # seeded
    random_control = reference.random_control(seed=0)

    def log_std_gap(s):
        gaps = []
        by_group = {}
        for x in s.neurons:
            by_group.setdefault(x.group, []).append(x)
        for group, ours in by_group.items():
            ref = [x for x in reference.neurons if x.group == group]
            assert sorted((x.site, x.layer) for x in ours) == sorted((x.site, x.layer) for x in ref)
            assert not {x.unit for x in ours} & {x.unit for x in ref}
            uid = [x.layer * upl + offsets[x.site] + x.index for x in ours]
            gaps.append(np.log(all_std[uid]).mean())
        return float(np.mean(gaps))

    ref_level = float(np.log(all_std[np.argsort(-all_std)[:40]]).mean())
    assert abs(log_std_gap(matched) - ref_level) < abs(log_std_gap(random_control) - ref_level)
    assert len(matched) == len(reference)


# ============================================================ the CLI, tiny Llama
def test_find_subcommands_share_one_pass_and_resume(tmp_path):
    """diffmean is interrupted and resumed to the uninterrupted file; activation-magnitude
    and random-matched then reuse its store (``--stop-after 0`` would stop any pass)."""
    from tools_helpers import tiny_model

    from relneuron_eval import cli
    from relneuron_eval.core.neuron_set import load

    common = [
        "--model",
        str(tiny_model()),
        "--relations",
        "country_capital_city,landmark_on_continent",
        "--max-facts",
        "3",
        "--fewshot",
        "0",
        "--top-k",
        "20",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--no-progress",
    ]
    store = ["--workdir", str(tmp_path / "store"), "--keep-workdir"]
    once = tmp_path / "once.jsonl.gz"
    assert cli.main(["find", "diffmean", *common, "--out", str(once)]) == 0
    dm = tmp_path / "dm.jsonl.gz"
    argv = ["find", "diffmean", *common, *store, "--out", str(dm)]
    assert cli.main([*argv, "--stop-after", "1"]) == 130 and not dm.exists()
    assert cli.main(argv) == 0
    assert load(dm).neurons == load(once).neurons
    mag = tmp_path / "mag.jsonl.gz"
    assert cli.main(["find", "activation-magnitude", *common, *store, "--out", str(mag),
                     "--stop-after", "0"]) == 0  # fmt: skip
    rm = tmp_path / "rm.jsonl.gz"
    argv = ["find", "random-matched", *common, *store, "--out", str(rm), "--stop-after", "0"]
    assert cli.main([*argv, "--reference", str(dm)]) == 0
    matched, reference = load(rm), load(dm)
    assert len(matched) == len(reference) and matched.method["matched_to"]["method"] == "diffmean"
    assert load(mag).method["name"] == "activation-magnitude"
    assert cli.main(["find", "diffmean", *common, "--out", str(dm)]) == 2  # exists: --force
