"""``prefix_cache``: generations with shared few-shot prefixes cached equal the plain path's.

The tiny random Llama has the real SmolLM2 tokenizer, so prompts tokenize as in real
runs. Every comparison also checks that the cache was used (rows served from it), and
that the intervention changes the outputs, so a wrong edit position would show.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from lm_eval.api.instance import Instance
from lm_eval_helpers import save_tiny_lm, save_tiny_set, write_toy_task

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.harness.lm_model import RelNeuronLM
from relneuron_eval.harness.prefix_cache import parse_flag, shared_prefixes

DEMOS = {
    "capital": "The capital of France is Paris\nThe capital of Peru is Lima\nThe capital of "
    "Kenya is Nairobi\n",
    "currency": "In Japan, people pay with the Yen\nIn Mexico, people pay with the Peso\n"
    "In India, people pay with the Rupee\n",
    "hq": "Siemens has its headquarters in Munich\nToyota has its headquarters in Toyota City\n",
}
QUERIES = {
    "capital": "The capital of {} is",
    "currency": "In {}, people pay with the",
    "hq": "{} has its headquarters in",
}
NAMES = ["Chad", "Spain", "Bosnia and Herzegovina", "Ireland", "the Central African Republic",
         "Fiji", "New Zealand", "Papua New Guinea", "Oman"]  # fmt: skip


def _prompts() -> list[tuple[str, str]]:
    """(group, prompt): three demo groups, queries of varying length, a few loners."""
    out = [(g, DEMOS[g] + QUERIES[g].format(name)) for g in DEMOS for name in NAMES]
    out += [("g", "Once upon a time"), ("g", "Numbers: 1, 2, 3,"), ("g", DEMOS["hq"][:40])]
    out.append(out[0])  # a duplicate prompt
    random.Random(0).shuffle(out)
    return out


def _requests(gen_kwargs: list[dict]) -> list[Instance]:
    items = [(g, p, kw) for g, p in _prompts() for kw in gen_kwargs]
    return [
        Instance(
            request_type="generate_until",
            doc={"group": group},
            arguments=(prompt, dict(kwargs)),
            idx=0,
            metadata=("t", i, 1),
        )
        for i, (group, prompt, kwargs) in enumerate(items)
    ]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-llama-prefix"))


@pytest.fixture(scope="module")
def neuron_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sets") / "groups.jsonl"
    return save_tiny_set(path, ["capital", "currency", "hq"], ["mlp.act"], per_layer=24, seed=5)


# Greedy with a newline stop; and stop strings that fire mid-answer in most generations.
GEN_KWARGS = [
    {"until": ["\n"], "max_gen_toks": 5, "do_sample": False},
    {"until": ["a", "o", "\n"], "max_gen_toks": 9, "do_sample": False},
]


def _both(tiny_dir: Path, batch_size: int = 8, **args) -> tuple[RelNeuronLM, RelNeuronLM]:
    """The same model and arguments without and with the prefix cache."""
    common = {"pretrained": str(tiny_dir), "device": "cpu", "batch_size": batch_size, **args}
    plain = RelNeuronLM(**common, prefix_cache=False)
    cached = RelNeuronLM(**common)
    return plain, cached


VARIANTS = {
    "base": {},
    "last": {"groups": "capital|hq", "positions": "last"},
    "hooked": {"groups": "currency", "strategy": "hook"},
    "folded": {"groups": "capital", "strategy": "fold"},
    "per_doc": {"per_doc": "group"},
    "per_doc_last": {"per_doc": "group", "positions": "last"},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_generations_as_plain_path(tiny_dir, neuron_file, variant):
    args = dict(VARIANTS[variant])
    if args:
        args["neuron_set"] = str(neuron_file)
    plain, cached = _both(tiny_dir, **args)
    requests = _requests(GEN_KWARGS)
    expected = plain.generate_until(requests)
    got = cached.generate_until(requests)
    assert got == expected
    stats = cached._rn_prefix.stats
    assert stats["prefix_forwards"] >= 3 and stats["cached_rows"] >= len(requests) // 2, stats
    stopped = [t for t, r in zip(expected, requests, strict=True) if len(r.args[1]["until"]) > 1]
    assert sum(len(plain.tok_encode(t)) < 8 for t in stopped) > len(stopped) // 2  # stops fired
    if args:  # the intervention matters here, so an edit at a wrong position would show
        base = RelNeuronLM(pretrained=str(tiny_dir), device="cpu", batch_size=8)
        assert base.generate_until(requests) != got


def test_gpt2_learned_positions(tmp_path):
    """GPT-2 adds a learned embedding per position id: pads inside rows must not shift them."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from relneuron_eval.core.embedded import ensure_local

    tokenizer = AutoTokenizer.from_pretrained(ensure_local(verbose=False))
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    plain, cached = _both(tmp_path)
    requests = _requests(GEN_KWARGS)
    assert cached.generate_until(requests) == plain.generate_until(requests)
    assert cached._rn_prefix.stats["cached_rows"] >= len(requests) // 2


def test_batch_size_one_and_left_truncation(tiny_dir):
    """Single-row batches, and prompts cut from the left (their prefix no longer matches)."""
    plain, cached = _both(tiny_dir, batch_size=1, max_length=40)
    requests = _requests(GEN_KWARGS[:1])
    assert cached.generate_until(requests) == plain.generate_until(requests)
    assert any(len(plain.tok_encode(r.args[0])) > 40 - 5 for r in requests)  # some are cut
    assert cached._rn_prefix.stats["cached_rows"] > 0


def test_off_switch_runs_the_plain_path(tiny_dir):
    off = RelNeuronLM(pretrained=str(tiny_dir), device="cpu", batch_size=8, prefix_cache="false")
    off.generate_until(_requests(GEN_KWARGS[:1]))
    assert off._rn_prefix.stats["cached_rows"] == 0
    with pytest.raises(RelNeuronError, match="prefix_cache='maybe' is not a boolean"):
        RelNeuronLM(pretrained=str(tiny_dir), device="cpu", prefix_cache="maybe")


def _fixed_demo_task(folder: Path) -> tuple[Path, list[dict]]:
    """``toy_gen`` with 4 demos, the same for every document (but the demo documents')."""
    docs = [{"question": f"Q: {n} {i}?", "answer": n} for i, n in enumerate(NAMES * 3)]
    write_toy_task(folder, docs)
    yaml = (folder / "toy_gen.yaml").read_text()
    yaml += "fewshot_split: test\nnum_fewshot: 4\nfewshot_config:\n  sampler: first_n\n"
    (folder / "toy_gen.yaml").write_text(yaml)
    return folder, docs


def test_bench_prefix_on_tiny_llama(tiny_dir, tmp_path, capsys):
    """``relneuron bench prefix``: both arms run, answers compared, the cache used."""
    import torch

    from relneuron_eval.cli import main

    folder, docs = _fixed_demo_task(tmp_path / "tasks")
    out = tmp_path / "prefix.json"
    threads = torch.get_num_threads()
    argv = ["bench", "prefix", "--model", str(tiny_dir), "--tasks", "toy_gen", "--limit", "0"]
    argv += ["--include-path", str(folder), "--rounds", "1", "--batch-size", "4"]
    assert main([*argv, "--json", str(out)]) == 0
    assert torch.get_num_threads() == threads  # restored
    result = json.loads(out.read_text())
    assert result["requests"] == len(docs) and result["identical_answers"] == len(docs)
    assert result["cache_stats"]["cached_rows"] >= len(docs) * 2 // 3
    assert result["wall_speedup"] > 0 and result["cpu_speedup"] > 0
    assert all(len(v) == 1 and v[0] > 0 for v in result["cpu_seconds"].values())
    assert "identical answers: 27 of 27" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rounds", "0"], "--rounds 0 is out of range"),
        (["--limit", "-1"], "--limit -1 is out of range"),
        (["--tasks", "no_such_task"], "unknown task(s) ['no_such_task']"),
    ],
)
def test_bench_prefix_bad_input(argv, message, capsys):
    from relneuron_eval.cli import main

    assert main(["bench", "prefix", *argv]) == 2
    assert message in capsys.readouterr().err


def test_through_lm_eval_with_fixed_demos(tiny_dir, tmp_path):
    """simple_evaluate with a few-shot task whose demos are the same for every document."""
    from lm_eval import simple_evaluate

    from relneuron_eval.harness.task_index import task_manager

    folder, docs = _fixed_demo_task(tmp_path / "tasks")
    manager = task_manager(["toy_gen"], folder)  # not lm-eval's ~15k built-in tasks
    samples = {}
    for flag in (False, True):
        lm = RelNeuronLM(pretrained=str(tiny_dir), device="cpu", batch_size=4, prefix_cache=flag)
        out = simple_evaluate(model=lm, tasks=["toy_gen"], task_manager=manager, log_samples=True)
        samples[flag] = {s["doc_id"]: s["resps"] for s in out["samples"]["toy_gen"]}
    assert samples[True] == samples[False] and len(samples[True]) == len(docs)
    assert lm._rn_prefix.stats["cached_rows"] >= len(docs) * 2 // 3  # not: the demo docs


def test_shared_prefixes_groups_by_longest_common_prefix():
    a, b = list(range(100, 130)), list(range(200, 220))
    seqs = [[*a, 1, 2], [*a, 3], [*a, 4, 5, 6], [*b, 7], [*b, 8, 9], [1, 2, 3], [*a, 1, 2]]
    assert shared_prefixes(seqs, min_tokens=8) == {tuple(a), tuple(b)}
    # too short to pay off, or nobody to share with
    assert shared_prefixes([[1, 2, 3, 4], [1, 2, 3, 5]], min_tokens=8) == set()
    assert shared_prefixes([[*a, 1]], min_tokens=8) == set()
    # every member keeps at least one query token, duplicates included
    assert shared_prefixes([a, a], min_tokens=8) == {tuple(a[:-1])}
    # two groups that share their first 10 tokens stay two groups
    c = a[:10] + list(range(300, 320))
    found = shared_prefixes([[*a, 1], [*a, 2], [*c, 1], [*c, 2]], min_tokens=8)
    assert found == {tuple(a), tuple(c)}


def test_parse_flag():
    assert parse_flag("x", True) is True and parse_flag("x", "False") is False
    with pytest.raises(RelNeuronError):
        parse_flag("x", "2")


@pytest.mark.slow
def test_embedded_model_relfacts_task_same_responses():
    """The embedded model on a relfacts task (demos fixed per relation), through lm-eval."""
    from lm_eval import simple_evaluate

    responses, lms = {}, {}
    for flag in (False, True):
        lms[flag] = RelNeuronLM(device="cpu", batch_size=16, prefix_cache=flag)
        out = simple_evaluate(
            model=lms[flag], tasks=["relfacts_country_capital_city"], limit=40, log_samples=True
        )
        rows = out["samples"]["relfacts_country_capital_city"]
        responses[flag] = {s["doc_id"]: s["resps"] for s in rows}
    assert responses[True] == responses[False] and len(responses[True]) == 40
    assert lms[True]._rn_prefix.stats["cached_rows"] == 40
    assert lms[False]._rn_prefix.stats["cached_rows"] == 0


def test_hook_state_never_reuses_a_freed_edits_vector():
    """per_doc swaps edits per bucket: a freed edit's id() can come back for the next one,
    and a vector cached under that id would edit the previous group's units."""
    import torch

    from relneuron_eval.core.interventions import HookState, UnitEdit

    state = HookState("all")
    x = torch.ones(1, 2, 8)
    for i in range(40):
        state.active = {("mlp.act", 0): UnitEdit((i % 8,), 0.0)}
        out = state.transform(("mlp.act", 0), x, 0)
        assert out[0, 1].tolist() == [0.0 if j == i % 8 else 1.0 for j in range(8)], i
