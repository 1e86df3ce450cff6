"""Knowledge neurons: IG against a hand-written loop, completeness, fast paths against the
full forward, selection against hand computation, shard/merge/resume, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_gpt2, tiny_llama

from relneuron_eval.core.architectures import site_module
from relneuron_eval.core.neuron_set import NeuronSet
from relneuron_eval.discovery import ig_kernels, kn_checkpoint
from relneuron_eval.discovery import knowledge_neurons as kn
from relneuron_eval.discovery.knowledge_neurons import (
    FactResult,
    IGConfig,
    KnowledgeFact,
    SelectConfig,
)
from relneuron_eval.errors import RelNeuronError

PROMPT = [3, 7, 9, 11, 5, 2, 17]


def sharp_llama(seed: int = 0, **overrides):
    """A tiny Llama with large weights, so P(y*) responds non-linearly to the MLP units."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    args = dict(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        initializer_range=0.3,
    )
    args.update(overrides)
    return LlamaForCausalLM(LlamaConfig(**args)).eval()


def top_token(model, ids) -> int:
    with torch.no_grad():
        return int(model(torch.tensor([ids])).logits[0, -1].argmax())


def hand_ig(model, ids, answer, steps, layer):
    """Reference: one forward/backward per step, the last position's unit vector scaled."""
    module, _ = site_module(model, "mlp.act", layer)
    seq = ids + answer[:-1]
    pos = len(ids) - 1
    captured = {}
    h = module.register_forward_pre_hook(lambda m, a: captured.setdefault("x", a[0][0, pos]))
    with torch.no_grad():
        model(torch.tensor([seq]))
    h.remove()
    w_hat = captured["x"].detach().clone()
    total = torch.zeros_like(w_hat)
    for k in range(1, steps + 1):
        w = (k / steps * w_hat).requires_grad_(True)

        def hook(m, args, w=w):
            x = args[0].clone()
            x[0, pos] = w
            return (x,)

        h = module.register_forward_pre_hook(hook)
        logits = model(torch.tensor([seq])).logits[0]
        h.remove()
        logp = sum(torch.log_softmax(logits[pos + j], -1)[tok] for j, tok in enumerate(answer))
        (grad,) = torch.autograd.grad(logp.exp(), w)
        total += grad
    return (w_hat * total / steps).numpy()


def prob_with_scale(model, ids, answer, layer, alpha):
    module, _ = site_module(model, "mlp.act", layer)

    def hook(m, args):
        x = args[0].clone()
        x[:, len(ids) - 1] *= alpha
        return (x,)

    h = module.register_forward_pre_hook(hook)
    with torch.no_grad():
        logits = model(torch.tensor([ids + answer[:-1]])).logits[0]
    h.remove()
    return float(
        sum(torch.log_softmax(logits[len(ids) - 1 + j], -1)[t] for j, t in enumerate(answer)).exp()
    )


# ------------------------------------------------------------------- IG itself
@pytest.mark.parametrize("method", ["batched", "cached", "suffix", "plain", "auto"])
def test_ig_equals_hand_written_loop_llama(method):
    model = sharp_llama()
    answer = [top_token(model, PROMPT)]
    got = kn.prompt_attributions(model, PROMPT, answer, IGConfig(steps=6, method=method))
    assert got.method == ("suffix" if method == "auto" else method)
    for layer in range(3):
        ref = hand_ig(model, PROMPT, answer, 6, layer)
        np.testing.assert_allclose(got.attr[layer], ref, rtol=1e-4, atol=1e-6 * abs(ref).max())
    assert np.abs(got.attr).max() > 1e-3  # not trivially zero


@pytest.mark.parametrize("method", ["batched", "cached"])
def test_ig_multi_token_answer_and_gpt2(method):
    model = tiny_gpt2()
    answer = [5, 40, 12]
    cfg = IGConfig(steps=5, method=method, answer_tokens="all")
    got = kn.prompt_attributions(model, PROMPT, answer, cfg)
    for layer in range(3):
        ref = hand_ig(model, PROMPT, answer, 5, layer)
        np.testing.assert_allclose(got.attr[layer], ref, rtol=1e-4, atol=1e-6 * abs(ref).max())
    assert kn.prompt_attributions(model, PROMPT, answer, IGConfig(steps=2)).method == "cached"


def test_completeness_sums_to_probability_change():
    model = sharp_llama()
    answer = [top_token(model, PROMPT)]
    fine = kn.prompt_attributions(model, PROMPT, answer, IGConfig(steps=64, riemann="midpoint"))
    coarse = kn.prompt_attributions(model, PROMPT, answer, IGConfig(steps=1))
    deltas = [
        prob_with_scale(model, PROMPT, answer, layer, 1.0)
        - prob_with_scale(model, PROMPT, answer, layer, 0.0)
        for layer in range(3)
    ]
    assert max(abs(d) for d in deltas) > 0.05
    for layer, delta in enumerate(deltas):
        assert abs(fine.attr[layer].sum() - delta) <= 1e-3 * abs(delta) + 2e-5
    # one step (gradient x input) is far off: the check above can fail
    assert max(abs(coarse.attr[i].sum() - d) for i, d in enumerate(deltas)) > 0.02
    right = kn.prompt_attributions(model, PROMPT, answer, IGConfig(steps=400))
    for layer, delta in enumerate(deltas):
        assert abs(right.attr[layer].sum() - delta) <= 0.05 * abs(delta) + 1e-4


# --------------------------------------------------------- fast paths agree
@pytest.mark.parametrize(
    "factory",
    [
        lambda: sharp_llama(seed=1),
        lambda: tiny_llama(seed=2),
        lambda: _qwen2(),
    ],
    ids=["llama-gqa", "llama", "qwen2"],
)
def test_suffix_equals_full_forward(factory):
    model = factory()
    ids = [*PROMPT, 21, 4, 33]
    answer = [top_token(model, ids)]
    cfg = dict(steps=5, layers=(2, 0))
    full = kn.prompt_attributions(model, ids, answer, IGConfig(method="batched", **cfg))
    for method in ("suffix", "cached"):
        fast = kn.prompt_attributions(model, ids, answer, IGConfig(method=method, **cfg))
        assert fast.layers == [2, 0] and abs(fast.prob - full.prob) < 1e-6
        np.testing.assert_allclose(
            fast.attr, full.attr, rtol=1e-4, atol=1e-5 * np.abs(full.attr).max()
        )


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(3)
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    return Qwen2ForCausalLM(config).eval()


def test_auto_falls_back_when_a_fast_path_is_wrong(monkeypatch):
    model = sharp_llama()
    answer = [top_token(model, PROMPT)]
    ref = kn.prompt_attributions(model, PROMPT, answer, IGConfig(steps=3, method="batched"))
    # break the suffix path: it now ignores the down projection's contribution
    monkeypatch.setattr(
        ig_kernels._Runner, "_suffix", lambda self, layer, w: self.probs("x", layer, 0 * w)
    )
    ig_kernels._WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = kn.prompt_attributions(model, PROMPT, answer, IGConfig(steps=3))
    assert got.method == "cached"
    assert any("falling back" in str(w.message) for w in caught)
    np.testing.assert_allclose(got.attr, ref.attr, rtol=1e-4, atol=1e-7)


def test_single_token_prompt_uses_full_forward():
    model = tiny_llama()
    got = kn.prompt_attributions(model, [5], [9], IGConfig(steps=2))
    assert got.method == "batched" and got.attr.shape == (3, 24)


def test_suffix_path_follows_the_architecture_table(monkeypatch):
    """Whether and where the suffix path runs comes from the row's ``suffix`` entry alone."""
    from dataclasses import replace

    from relneuron_eval.core import architectures

    model = tiny_llama()
    assert kn.suffix_supported(model)
    row = architectures.ARCHITECTURES["llama"]
    monkeypatch.setitem(architectures.ARCHITECTURES, "llama", replace(row, suffix=None))
    assert not kn.suffix_supported(model)
    assert kn.prompt_attributions(model, PROMPT, [9], IGConfig(steps=2)).method == "cached"
    moved = architectures.SuffixSpec(final_norm="model.final_norm")  # not in this model
    monkeypatch.setitem(architectures.ARCHITECTURES, "llama", replace(row, suffix=moved))
    assert not kn.suffix_supported(model)


# --------------------------------------------------------------- selection
def test_coarse_refine_scores_by_hand():
    attr = np.array(
        [
            [1.0, 0.3, 0.1, 0.25, -0.5, 0.0],
            [0.5, 2.0, 0.0, 0.5, 0.3, 0.1],
            [-1.0, -2.0, -0.5, -0.1, -3.0, -1.0],
        ],
        dtype=np.float32,
    )
    max_attr = attr.max(axis=1)
    mask = kn.coarse_mask(attr, max_attr, 0.2)
    expected = np.zeros_like(mask)
    expected[0, [0, 1, 3]] = True
    expected[1, [0, 1, 3]] = True  # 0.5 >= 0.4; the last prompt's max is negative: none
    np.testing.assert_array_equal(mask, expected)
    assert not kn.refine(mask, 0.7).any()  # 2 of 3 < 2.1
    assert np.flatnonzero(kn.refine(mask, 0.65)).tolist() == [0, 1, 3]  # 2 >= 1.95
    assert np.flatnonzero(kn.refine(mask, 0.6, min_shared=3)).tolist() == []
    result = FactResult(
        "r/1", "r", "", [0], 6, np.arange(6), attr, max_attr, np.ones(3, np.float32)
    )
    np.testing.assert_allclose(
        kn.fact_scores(result)[[0, 1, 3]], [1.25 / 3, 1.3 / 3, 0.5 / 3], rtol=1e-6
    )


def _masks_with_counts(counts, n_prompts):
    mask = np.zeros((n_prompts, len(counts)), dtype=bool)
    for unit, c in enumerate(counts):
        mask[:c, unit] = True
    return mask


def test_auto_p_follows_dai_et_al():
    cfg = SelectConfig()
    # 7 units reach p=0.7 (>= 14 of 20 prompts): too many, step up to 0.75 (>= 15): 5
    p, refined, evals = kn.auto_p([_masks_with_counts([20, 18, 16, 15, 15, 14, 14], 20)], cfg)
    assert (p, int(refined[0].sum()), evals) == (0.75, 5, 2)
    # too few: down by 0.05 until 2..5 on average over the facts of the scope
    masks = [_masks_with_counts([20, 13, 12, 3], 20), _masks_with_counts([12, 12, 1], 20)]
    p, refined, evals = kn.auto_p(masks, cfg)
    assert (p, [int(r.sum()) for r in refined], evals) == (0.6, [3, 2], 3)
    # never reachable: six evaluations, the last p evaluated is used (0.7 - 5 * 0.05)
    p, refined, evals = kn.auto_p([_masks_with_counts([1], 20)], cfg)
    assert (p, evals) == (0.45, 6)


def test_relation_units_by_hand():
    facts = [np.array([0, 1, 3]), np.array([3, 5]), np.array([], dtype=np.int64)]
    units, share = kn.relation_units(facts, 0.5)  # need 1.5 of 3 facts
    assert units.tolist() == [3] and share.tolist() == [2 / 3]
    units, _ = kn.relation_units(facts, 0.1)
    assert units.tolist() == [0, 1, 3, 5]


def _write_hand_checkpoint(root, facts, arrays):
    meta = {
        "format": kn.CHECKPOINT_FORMAT,
        "version": kn.CHECKPOINT_VERSION,
        "model": {
            "id": "hand",
            "architecture": "X",
            "num_layers": 2,
            "intermediate_size": 3,
            "hidden_size": 4,
        },
        "ig": IGConfig(store_fraction=None).as_dict(),
    }
    kn_checkpoint._open_checkpoint(root, meta)
    for fact, attr in zip(facts, arrays, strict=True):
        attr = np.asarray(attr, dtype=np.float32)
        FactResult(
            fact.fact_id,
            fact.relation,
            kn_checkpoint._fact_key(fact, meta),
            [0, 1],
            3,
            np.arange(6),
            attr,
            attr.max(axis=1),
            np.full(len(attr), 0.5, np.float32),
            ["suffix"] * len(attr),
            None,
        ).save(kn_checkpoint._fact_path(root, fact.fact_id))


def test_merge_by_hand(tmp_path):
    facts = [
        KnowledgeFact("rel/1", ["a", "b"], "x"),
        KnowledgeFact("rel/2", ["c", "d"], "y"),
        KnowledgeFact("other/1", ["e", "f"], "z"),
    ]
    arrays = [
        [[1.0, 0.5, 0.0, 0.1, 0.0, 0.3], [0.2, 1.0, 0.0, 0.0, 0.0, 0.5]],  # units 0, 1, 5
        [[0.0, 2.0, 0.0, 0.0, 0.0, 0.1], [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]],  # unit 1
        [[0.0, 0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]],  # none shared
    ]
    _write_hand_checkpoint(tmp_path, facts, arrays)
    ns, summary = kn.merge(facts, tmp_path, SelectConfig(p=1.0, relation_fraction=1.0))
    got = {(n.group, n.layer, n.index): round(n.score, 6) for n in ns}
    assert got == {
        ("rel/1", 0, 0): 0.6,
        ("rel/1", 0, 1): 0.75,
        ("rel/1", 1, 2): 0.4,
        ("rel/2", 0, 1): 1.0,
        ("rel", 0, 1): 1.0,  # in both of rel's facts
    }
    assert ns.groups() == ["rel/1", "rel/2", "rel"]
    assert summary.facts_without_neurons == ["other/1"]
    assert ns.header["method"]["name"] == "knowledge-neurons"
    assert ns.header["method"]["params"]["p_used"] == {"*": 1.0}
    # the header says how shared the fact neurons are (unit (0, 1) is in both rel facts)
    stats = ns.header["knowledge_neurons"]["statistics"]
    assert stats["facts_with_neurons"] == 2 and stats["fact_neurons"] == 4
    assert stats["distinct_units"] == 3
    assert stats["top_unit"] == {"unit": ["mlp.act", 0, 1], "facts": 2}
    assert stats["facts_with_own_unit"] == 1 and stats["layers_units"] == {"0": 2, "1": 1}
    assert "sharing: 2 facts hold 4" in summary.text()

    def refined(**drop):
        return kn.merge(facts, tmp_path, SelectConfig(p=1.0, relation_fraction=None, **drop))[0]

    # --drop-shared 2: unit (0, 1) goes, before selection; rel/2 is left without neurons
    dropped = refined(drop_shared=2)
    assert {(n.group, n.layer, n.index) for n in dropped} == {("rel/1", 0, 0), ("rel/1", 1, 2)}
    assert dropped.header["knowledge_neurons"]["shared_units_dropped"] == 1
    # --drop-objects 2 drops it too (answers x and y), --drop-objects 3 keeps it
    assert len(refined(drop_objects=2)) == 2 and len(refined(drop_objects=3)) == 4
    top1, _ = kn.merge(facts, tmp_path, SelectConfig(p=1.0, top_k=1, relation_fraction=None))
    assert [(n.group, n.index) for n in top1] == [("rel/1", 1), ("rel/2", 1)]
    _, summary = kn.merge(facts, tmp_path, SelectConfig())
    assert summary.p_used == {"rel": 0.7, "other": 0.5}  # other: down to 2 shared units
    assert "neurons per fact" in summary.text()


# ------------------------------------------------- driver: shards, resume, errors
class CharTokenizer:
    """Character-level stand-in: id = 2 + code point mod 60, BOS = 1."""

    def __call__(self, text, add_special_tokens=True):
        ids = [2 + ord(c) % 60 for c in text]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}


FACTS = [
    KnowledgeFact(f"{rel}/{i}", [f"{s} of {rel[:3]}{i}", f"{rel[:2]}{i} is {s}", f"x{i}{s}"], a)
    for rel, s, a in (("capital", "the city", "Paris"), ("ceo", "head", "Ann"))
    for i in range(3)
]
IG = IGConfig(steps=3, store_fraction=0.05)
UNCHECKED = kn.AnswerCheck(None, tuple(f.fact_id for f in FACTS))  # correct=None's record


def _arrays(root):
    out = {}
    for path in sorted((root / "facts").glob("*.npz")):
        with np.load(path, allow_pickle=False) as data:
            out[path.name] = {k: data[k].copy() for k in data.files}
    return out


def test_shards_and_resume_give_the_single_run(tmp_path):
    model, tok = sharp_llama(), CharTokenizer()
    single, _ = kn.find_knowledge_neurons(
        model, tok, FACTS, tmp_path / "one", tmp_path / "one.jsonl", IG, correct=None,
        progress=False,
    )  # fmt: skip
    assert NeuronSet.load(tmp_path / "one.jsonl").content_hash() == single.content_hash()
    assert len(single) > 0
    for rank in (1, 0):  # any order
        report = kn.compute_shard(
            model, tok, FACTS, tmp_path / "two", IG, rank=rank, world_size=2, progress=False
        )
        assert report.computed == 3
    merged, _ = kn.merge(FACTS, tmp_path / "two", answer_check=UNCHECKED)
    assert merged.content_hash() == single.content_hash()
    a, b = _arrays(tmp_path / "one"), _arrays(tmp_path / "two")
    assert a.keys() == b.keys()
    for name in a:
        for key in a[name]:
            np.testing.assert_array_equal(a[name][key], b[name][key])
    # interrupted after two facts, then resumed: only the rest is computed
    with pytest.raises(KeyboardInterrupt):
        kn.compute_shard(model, tok, FACTS, tmp_path / "re", IG, progress=False, stop_after=2)
    with pytest.raises(RelNeuronError, match="4 of 6 facts have no"):
        kn.merge(FACTS, tmp_path / "re")
    report = kn.compute_shard(model, tok, FACTS, tmp_path / "re", IG, progress=False)
    assert (report.computed, report.skipped) == (4, 2)
    assert (
        kn.merge(FACTS, tmp_path / "re", answer_check=UNCHECKED)[0].content_hash()
        == single.content_hash()
    )
    # other settings: refuse to mix them into this checkpoint
    with pytest.raises(RelNeuronError, match="other settings"):
        kn.compute_shard(model, tok, FACTS, tmp_path / "re", IGConfig(steps=4), progress=False)
    # a changed fact is recomputed, the others kept
    changed = [KnowledgeFact(FACTS[0].fact_id, ["new prompt"], "Paris"), *FACTS[1:]]
    report = kn.compute_shard(model, tok, changed, tmp_path / "re", IG, progress=False)
    assert (report.computed, report.skipped) == (1, 5)
    # a damaged file (e.g. copied half-way by hand) is redone, not trusted
    victim = kn_checkpoint._fact_path(tmp_path / "re", FACTS[1].fact_id)
    victim.write_bytes(victim.read_bytes()[:100])
    report = kn.compute_shard(model, tok, FACTS, tmp_path / "re", IG, progress=False)
    assert (report.computed, report.skipped) == (2, 4)  # the damaged one and FACTS[0] again
    assert (
        kn.merge(FACTS, tmp_path / "re", answer_check=UNCHECKED)[0].content_hash()
        == single.content_hash()
    )
    header = json.loads((tmp_path / "one.jsonl").read_text().splitlines()[0])
    assert header["method"]["params"]["steps"] == 3
    assert header["method"]["params"]["answer_tokens"] == "first"


def test_unreadable_run_json_is_rewritten_with_a_notice(tmp_path, capsys):
    model, tok = sharp_llama(), CharTokenizer()
    facts = FACTS[:2]
    kn.compute_shard(model, tok, facts, tmp_path / "ck", IG, progress=False)
    single = kn.merge(facts, tmp_path / "ck")[0].content_hash()
    run_json = tmp_path / "ck" / "run.json"
    run_json.write_text(run_json.read_text()[:30])  # e.g. a disk that filled up
    with pytest.raises(RelNeuronError, match=r"no readable run\.json"):
        kn.merge(facts, tmp_path / "ck")
    capsys.readouterr()
    report = kn.compute_shard(model, tok, facts, tmp_path / "ck", IG, progress=False)
    assert "run.json is unreadable; writing it again" in capsys.readouterr().err
    assert (report.computed, report.skipped) == (0, 2)  # the facts themselves were intact
    assert kn.merge(facts, tmp_path / "ck")[0].content_hash() == single
    victim = kn_checkpoint._fact_path(tmp_path / "ck", facts[1].fact_id)
    victim.write_bytes(victim.read_bytes()[:100])
    report = kn.compute_shard(model, tok, facts, tmp_path / "ck", IG, progress=False)
    assert f"{facts[1].fact_id}) is damaged; computing it again" in capsys.readouterr().err
    assert (report.computed, report.skipped) == (1, 1)


@pytest.mark.parametrize(
    ("ig", "select", "facts", "message"),
    [
        (IG, SelectConfig(top_k=73), FACTS, "larger than the number"),
        (IGConfig(steps=0), SelectConfig(), FACTS, "steps"),
        (IGConfig(layers=(0, 3)), SelectConfig(), FACTS, "out of range"),
        (IG, SelectConfig(p=1.5), FACTS, "p must be"),
        (IG, SelectConfig(threshold=0.01), FACTS, "store_fraction"),
        (IG, SelectConfig(), [FACTS[0], FACTS[0]], "duplicate fact"),
        (IG, SelectConfig(), [KnowledgeFact("r/1", ["ok", " "], "a")], "empty prompt"),
        (IG, SelectConfig(), [KnowledgeFact("r/1", ["ok"], "")], "empty answer"),
        (IG, SelectConfig(), [], "no facts"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, ig, select, facts, message):
    with pytest.raises(RelNeuronError, match=message):
        kn.find_knowledge_neurons(
            tiny_llama(), CharTokenizer(), facts, tmp_path / "ck", tmp_path / "out.jsonl",
            ig, select, progress=False,
        )  # fmt: skip
    assert not (tmp_path / "ck").exists() and not (tmp_path / "out.jsonl").exists()


def test_half_precision_model_runs_every_path():
    model = sharp_llama()
    answer = [top_token(model, PROMPT)]
    ref = kn.prompt_attributions(model, PROMPT, answer, IGConfig(steps=4)).attr
    model = model.to(torch.bfloat16)
    for method in ("auto", "suffix", "cached", "batched"):
        got = kn.prompt_attributions(model, PROMPT, answer, IGConfig(steps=4, method=method))
        assert got.attr.dtype == np.float32
        assert np.corrcoef(got.attr.ravel(), ref.ravel())[0, 1] > 0.95


# ------------------------------------------- the answer check before attribution
def _greedy(model, tokenizer, prompt: str, steps: int = 16) -> list[int]:
    """Reference greedy decoding (``generate``, not the check's own loop)."""
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=steps, do_sample=False, pad_token_id=0)
    return out[0, ids["input_ids"].shape[1] :].tolist()


@pytest.fixture(scope="module")
def answered():
    """A tiny random Llama (SmolLM2 tokenizer) and three facts built from its own answers.

    r/known: both prompts' greedy first two words are accepted answers (kept by every
    criterion). r/half: its second prompt's answer is not accepted (dropped: every prompt
    must be answered). r/prefix: the answer shares the greedy first 2 tokens, then differs
    (prefix2 is fooled, match is not).
    """
    from tools_helpers import tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relneuron_eval.data.answers import match
    from relneuron_eval.discovery.correct import first_line, prefix2_correct

    path = tiny_model()
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    p1, p2, p3 = "Paris is the capital of", "The home of Alpha item 3 is", "Water is made of"
    gen = {p: _greedy(model, tokenizer, p) for p in (p1, p2, p3)}
    text = {p: tokenizer.decode(g) for p, g in gen.items()}
    two_words = {p: " ".join(t.split()[:2]) for p, t in text.items()}
    shared = tokenizer.decode(gen[p2][:2]).strip() + "zq"
    facts = [
        KnowledgeFact("r/known", [p1, p2], two_words[p1], answers=(two_words[p1], two_words[p2])),
        KnowledgeFact("r/half", [p1, p3], two_words[p1]),
        KnowledgeFact("r/prefix", [p2], shared),
    ]
    reference = {
        "match": lambda p, answers: match(first_line(text[p]), answers),
        "prefix2": lambda p, answers: prefix2_correct(tokenizer.decode(gen[p][:2]), answers),
    }
    expected = {
        crit: [f.fact_id for f in facts if all(rule(p, f.answers) for p in f.prompts)]
        for crit, rule in reference.items()
    }
    # the facts do what they were built for, so the check below can fail
    assert expected == {"match": ["r/known"], "prefix2": ["r/known", "r/prefix"]}
    return model, tokenizer, facts, expected


@pytest.mark.parametrize("criterion", ["match", "prefix2"])
def test_answer_check_keeps_the_facts_answered_under_every_prompt(answered, criterion):
    model, tokenizer, facts, expected = answered
    kept, check = kn.check_answers(model, tokenizer, facts, criterion, progress=False)
    assert [f.fact_id for f in kept] == list(check.kept) == expected[criterion]
    assert set(check.dropped) == {f.fact_id for f in facts} - set(expected[criterion])
    assert f"{len(kept)} of 3 facts" in check.text() and "dropped" in check.text()
    everything, off = kn.check_answers(model, tokenizer, facts, None)
    assert everything == facts and off.params()["correct"] == "off"


def test_answer_check_is_recorded_and_only_kept_facts_are_attributed(answered, tmp_path, capsys):
    model, tokenizer, facts, _ = answered
    ig = IGConfig(steps=2)
    ns, summary = kn.find_knowledge_neurons(
        model, tokenizer, facts, tmp_path / "ck", tmp_path / "kn.jsonl", ig, progress=False
    )
    assert "answer check (--correct match): 1 of 3 facts" in capsys.readouterr().err
    assert summary.facts == 1 and "1 of 3 facts" in summary.text()
    assert len(list((tmp_path / "ck" / "facts").glob("*.npz"))) == 1  # no IG for the others
    method = NeuronSet.load(tmp_path / "kn.jsonl").method
    assert method["params"]["correct"] == "match"
    assert "every one of its prompts" in method["params"]["correct_rule"]
    assert method["data"]["facts_dropped"] == ["r/half", "r/prefix"]
    assert method["data"]["facts_checked"] == 3 and method["data"]["facts"] == 1
    assert kn.answer_check_of(method) == "match"
    assert {g for g in ns.groups() if "/" in g} <= {"r/known"}
    off, _ = kn.find_knowledge_neurons(
        model, tokenizer, facts, tmp_path / "ck-off", None, ig, correct=None, progress=False
    )
    assert off.method["data"]["facts"] == 3 and kn.answer_check_of(off.method) == "not checked"


def test_no_answered_fact_is_one_clear_error_before_any_attribution(answered, tmp_path):
    model, tokenizer, facts, _ = answered
    with pytest.raises(RelNeuronError, match="none of the 2 facts is answered") as caught:
        kn.find_knowledge_neurons(
            model, tokenizer, facts[1:], tmp_path / "ck", tmp_path / "kn.jsonl", progress=False
        )
    assert "--correct off" in str(caught.value.hint)
    assert not (tmp_path / "ck").exists() and not (tmp_path / "kn.jsonl").exists()
    with pytest.raises(RelNeuronError, match="unknown --correct"):
        kn.find_knowledge_neurons(model, tokenizer, facts, tmp_path / "ck", correct="exact")


def _two_ranks(models, tokenizer, facts, folder, **kwargs):
    """``find_knowledge_neurons`` as ranks 0 and 1 (threads, a real barrier): results
    and errors by rank."""
    import threading

    barrier = threading.Barrier(2, timeout=60)
    out: dict = {}

    def rank(r: int) -> None:
        try:
            out[r] = kn.find_knowledge_neurons(
                models[r], tokenizer, facts, folder, rank=r, world_size=2,
                barrier=barrier.wait, progress=False, **kwargs,
            )  # fmt: skip
        except Exception as exc:
            out[r] = exc

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_ranks_that_answer_differently_attribute_rank_0s_facts(answered, tmp_path):
    """Rank 1's model answers otherwise (another GPU, a tie): it still shards rank 0's
    kept facts, so the merge has all of them; rank 0's error reaches rank 1 too."""
    import copy

    model, tokenizer, facts, expected = answered
    other = copy.deepcopy(model)
    with torch.no_grad():  # negated logits: argmax becomes argmin
        other.lm_head.weight = torch.nn.Parameter(-model.lm_head.weight.detach().clone())
    try:  # rank 1 alone would keep other facts (here: none, an error)
        own = list(kn.check_answers(other, tokenizer, facts, "prefix2", progress=False)[1].kept)
    except RelNeuronError:
        own = []
    assert own != expected["prefix2"]
    got = _two_ranks(
        [model, other], tokenizer, facts, tmp_path / "ck", out=tmp_path / "kn.jsonl",
        ig=IGConfig(steps=2), correct="prefix2",
    )  # fmt: skip
    assert got[1] is None and not isinstance(got[0], Exception), got
    neuron_set, summary = got[0]
    assert summary.facts == len(expected["prefix2"]) == 2
    assert len(list((tmp_path / "ck" / "facts").glob("*.npz"))) == 2
    assert neuron_set.method["data"]["facts_dropped"] == ["r/half"]
    failed = _two_ranks([model, other], tokenizer, facts[1:2], tmp_path / "ck2", correct="match")
    assert "none of the 1 facts is answered" in str(failed[0])
    assert isinstance(failed[1], RelNeuronError) and "rank 0: none of" in str(failed[1])


def test_answer_check_of_old_and_shipped_headers():
    from relneuron_eval.resources import neuron_sets_dir

    # a header from before the check existed (the previous shipped set's), and --correct off
    assert kn.answer_check_of({"params": {"steps": 20}}) == "not checked"
    assert kn.answer_check_of({"params": {"correct": "off"}}) == "not checked"
    shipped = NeuronSet.load(neuron_sets_dir() / "smollm2-135m" / "knowledge_neurons.jsonl.gz")
    assert kn.answer_check_of(shipped.method) == "match"
    assert shipped.method["data"]["facts_dropped"]  # the header names the dropped facts
