"""``relneuron find`` end to end on the embedded SmolLM2-135M, plus the ranking by hand.

The CLI runs are small (a few discovery facts of two relations, 3-shot prompts) but
real: the real model answers, the real activations are ranked. An interrupted run
must leave no output and resume to the same file; two ``accelerate launch`` CPU
processes (gloo) must give the same file as one process.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from relneuron_eval.discovery.activations import ActivationStore, Layout
from relneuron_eval.discovery.relation_specific import make_labellings, rank_units, to_neurons
from relneuron_eval.neuron_set import ModelShape, load

RELNEURON = [sys.executable, "-m", "relneuron_eval.cli"]
RS_ARGS = [
    "find",
    "relation-specific",
    "--relations",
    "country_capital_city,landmark_on_continent",
    "--max-facts",
    "4",
    "--fewshot",
    "3",
    "--top-k",
    "40",
    "--min-positives",
    "2",
    "--batch-size",
    "4",
    "--no-progress",
]
KN_ARGS = [
    "find",
    "knowledge-neurons",
    "--relations",
    "country_capital_city",
    "--max-facts",
    "2",
    "--fewshot",
    "3",
    "--steps",
    "4",
    "--layers",
    "22-29",
    "--no-progress",
]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*RELNEURON, *args], env=_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"relneuron {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return proc


def _launch_two(args: list[str]) -> subprocess.CompletedProcess:
    from relneuron_eval.benchmarks.data_parallel import accelerate_prefix

    cmd = [
        *accelerate_prefix(2, module="relneuron_eval.cli"),
        *args,
        "--device",
        "cpu",
    ]
    env = {**_env(), "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
    return text.splitlines()


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rs") / "one.jsonl"
    proc = _run([*RS_ARGS, "--out", str(out)])
    assert "country_capital_city" in proc.stdout  # the summary table
    return out


def test_relation_specific_output(single_run):
    neuron_set = load(single_run)
    assert neuron_set.groups() == ["country_capital_city", "landmark_on_continent"]
    method = neuron_set.method
    assert method["name"] == "relation-specific"
    assert method["data"]["split"] == "discovery" and method["params"]["top_k"] == 40
    assert neuron_set.model["num_layers"] == 30 and neuron_set.model["intermediate_size"] == 1536
    for group in neuron_set.groups():
        members = [n for n in neuron_set if n.group == group]
        assert len(members) == 40
        assert {n.site for n in members} <= {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
        scores = [n.score for n in members]
        assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= 1
    assert not list(single_run.parent.glob(".*.work")), "work folder left behind"


def test_interrupted_run_leaves_nothing_and_resumes_to_the_same_file(single_run, tmp_path):
    out = tmp_path / "resumed.jsonl"
    proc = _run([*RS_ARGS, "--out", str(out), "--stop-after", "1"], check=False)
    assert proc.returncode != 0
    assert not out.exists()
    work = tmp_path / ".resumed.jsonl.work"
    done = np.load(work / "done.npy")
    assert 0 < done.sum() < len(done)  # some batches were kept for the resume
    _run([*RS_ARGS, "--out", str(out)])
    assert _lines(out) == _lines(single_run)
    assert not work.exists()


def test_two_processes_equal_one(single_run, tmp_path):
    out = tmp_path / "two.jsonl"
    _launch_two([*RS_ARGS, "--out", str(out)])
    assert _lines(out) == _lines(single_run)


def test_knowledge_neurons_two_processes_and_resume_equal_one(tmp_path):
    one, two, resumed = (tmp_path / f"{n}.jsonl.gz" for n in ("one", "two", "resumed"))
    proc = _run([*KN_ARGS, "--out", str(one)])
    assert "knowledge neurons:" in proc.stdout
    neuron_set = load(one)
    assert neuron_set.method["name"] == "knowledge-neurons"
    assert all(n.site == "mlp.act" for n in neuron_set)
    fact_groups = [g for g in neuron_set.groups() if "/" in g]
    assert fact_groups and all(g.startswith("country_capital_city/") for g in fact_groups)
    _launch_two([*KN_ARGS, "--out", str(two)])
    assert _lines(two) == _lines(one)
    assert _run([*KN_ARGS, "--out", str(resumed), "--stop-after", "1"], check=False).returncode
    assert not resumed.exists()
    _run([*KN_ARGS, "--out", str(resumed)])
    assert _lines(resumed) == _lines(one)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--relations", "no_such_relation"], "unknown relation(s) ['no_such_relation']"),
        (["--top-k", "200000"], "larger than the 109,440 units"),
        (["--sites", "mlp.nope"], "unknown or no site(s)"),
        (["--relations", "country_capital_city"], "at least 2 relations"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "x.jsonl"
    base = [a for a in RS_ARGS]
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[base.index(flag) + 1] = value
        else:
            base += [flag, value]
    proc = _run([*base, "--out", str(out)], check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_overwritten(tmp_path):
    out = tmp_path / "keep.jsonl"
    out.write_text("precious\n")
    proc = _run([*RS_ARGS, "--out", str(out)], check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert out.read_text() == "precious\n"


def test_ranking_matches_sklearn_by_hand(tmp_path):
    """Activations planted in a store; the driver's ranking must equal sklearn's AP."""
    shape = ModelShape(num_layers=2, intermediate_size=12, hidden_size=5)
    layout = Layout.for_shape(shape, ("mlp.up_proj", "mlp.down_proj"))
    rng = np.random.default_rng(0)
    relations = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    correct = rng.random(30) < 0.6
    store = ActivationStore.open(tmp_path / "store", layout, 30, {"test": 1})
    values = {layer: rng.normal(size=(30, layout.units_per_layer)) for layer in range(2)}
    values[1][:, 3] += np.array([r == "a" for r in relations]) * 2.0  # a planted unit for "a"
    store.write_batch(
        list(range(30)), {k: v.astype(np.float32) for k, v in values.items()}, correct
    )
    labellings = make_labellings(relations, correct, ["a", "b"], ratio=2, seed=1, min_positives=2)
    best = rank_units(store, labellings, top_k=5, progress=False)
    neurons = to_neurons(best, store)
    for rel, lab in labellings.items():
        every = np.concatenate([values[0][lab.rows], values[1][lab.rows]], axis=1)
        expected = [
            average_precision_score(lab.positive, every[:, j].astype(np.float32))
            for j in range(every.shape[1])
        ]
        order = sorted(range(len(expected)), key=lambda j: (-expected[j], j))[:5]
        got = [n for n in neurons if n.group == rel]
        assert [round(n.score, 4) for n in got] == [round(expected[j], 4) for j in order]
        for n, j in zip(got, order, strict=True):
            layer, col = divmod(j, layout.units_per_layer)
            assert (n.layer, *layout.unit_of(col)) == (n.layer, n.site, n.index)
            assert n.layer == layer
    top_a = next(n for n in neurons if n.group == "a")
    assert (top_a.layer, top_a.site, top_a.index) == (1, "mlp.up_proj", 3)
    # negatives: `ratio` times the positives, drawn only from the other relations
    for rel, lab in labellings.items():
        negatives = lab.rows[~lab.positive]
        assert all(relations[i] != rel for i in negatives)
        assert len(negatives) == min(20, 2 * int(lab.positive.sum()))
    assert json.dumps(store.meta)  # the store's metadata stays JSON
