"""relneuron-hf through the real, unmodified ``lm_eval`` CLI.

Fast checks use a tiny random-weight Llama saved with SmolLM2's tokenizer; the slow
ones use the embedded SmolLM2-135M itself.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO
from lm_eval_helpers import (
    load_results,
    load_samples,
    responses,
    run_lm_eval,
    run_lm_eval_in_one_process,
    save_tiny_llama,
    write_toy_task,
)

from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header, save

COUNTRIES = ["France", "Germany", "Italy", "Spain", "Japan", "Egypt", "Peru", "Chile"]
CAPITALS = ["Paris", "Berlin", "Rome", "Madrid", "Tokyo", "Cairo", "Lima", "Santiago"]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random Llama with the real SmolLM2 tokenizer, saved like any checkpoint."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    return save_tiny_llama(folder, hidden=32, intermediate=48, layers=2)


@pytest.fixture(scope="module")
def toy_tasks(tmp_path_factory) -> Path:
    docs = [
        {
            "question": f"The capital of {c} is",
            "answer": f" {k}",
            "choices": [f" {x}" for x in CAPITALS],
            "fact": f"capital/{i % 3}",
        }
        for i, (c, k) in enumerate(zip(COUNTRIES, CAPITALS, strict=True))
    ]
    return write_toy_task(tmp_path_factory.mktemp("toy-task"), docs)


def _neuron_set(path: Path, *, layers: int, intermediate: int, hidden: int, groups) -> Path:
    rng = random.Random(1)
    neurons = []
    for group in groups:
        for site in ("mlp.act", "mlp.up_proj"):
            for layer in range(layers):
                for index in rng.sample(range(intermediate), intermediate // 3):
                    neurons.append(Neuron(group, site, layer, index, rng.random()))
    model = {
        "id": "test",
        "architecture": "LlamaForCausalLM",
        "num_layers": layers,
        "intermediate_size": intermediate,
        "hidden_size": hidden,
    }
    save(NeuronSet(make_header(model=model, method={"name": "random-test"}), neurons), path)
    return path


def _common(tasks: Path, out: Path) -> list[str]:
    return [
        "--tasks",
        "toy_gen,toy_mc",
        "--include_path",
        str(tasks),
        "--device",
        "cpu",
        "--batch_size",
        "4",
        "--log_samples",
        "--output_path",
        str(out),
    ]


@pytest.fixture(scope="module")
def relneuron_base(tiny_model_dir, toy_tasks, tmp_path_factory) -> Path:
    """One ``--model relneuron-hf`` run without a neuron set: the output folder holding it."""
    out = tmp_path_factory.mktemp("relneuron-base")
    run_lm_eval(
        [
            "--model",
            "relneuron-hf",
            "--model_args",
            f"pretrained={tiny_model_dir}",
            *_common(toy_tasks, out),
        ]
    )
    return out


@pytest.mark.slow
def test_plain_cli_finds_model_and_equals_hf(tiny_model_dir, toy_tasks, relneuron_base, tmp_path):
    run_lm_eval(
        [
            "--model",
            "hf",
            "--model_args",
            f"pretrained={tiny_model_dir}",
            *_common(toy_tasks, tmp_path / "hf"),
        ]
    )
    for task in ("toy_gen", "toy_mc"):
        assert responses(load_samples(tmp_path / "hf", task)) == responses(
            load_samples(relneuron_base, task)
        )
    hf, rn = load_results(tmp_path / "hf"), load_results(relneuron_base)
    assert hf["results"] == rn["results"]
    assert "relneuron" not in rn["config"]


@pytest.mark.slow
def test_variant_changes_outputs_and_is_named(tiny_model_dir, toy_tasks, relneuron_base, tmp_path):
    neuron_set = _neuron_set(
        tmp_path / "set.jsonl", layers=2, intermediate=48, hidden=32, groups=["capital/0"]
    )
    out = tmp_path / "runs"
    shutil.copytree(relneuron_base, out)  # the base run's folder, as lm_eval wrote it there
    args = f"pretrained={tiny_model_dir},neuron_set={neuron_set},groups=capital/0,mode=deactivate"
    run_lm_eval(["--model", "relneuron-hf", "--model_args", args, *_common(toy_tasks, out)])
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == 2, folders  # base and variant never share a folder
    variant = next(out / f for f in folders if "__set-" in f)
    assert "capital-0__deactivate" in variant.name
    base = next(out / f for f in folders if "__set-" not in f)
    assert responses(load_samples(variant, "toy_mc")) != responses(load_samples(base, "toy_mc"))
    config = load_results(variant)["config"]
    assert config["relneuron"]["mode"] == "deactivate"
    assert config["relneuron"]["num_units"] == 2 * 2 * 16
    from lm_eval.utils import sanitize_model_name

    assert sanitize_model_name(load_results(variant)["model_name"]) == variant.name


def _same_responses(left: list, right: list) -> bool:
    """Equal responses; log-likelihoods may differ in the last float32 bits between kernels."""
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_same_responses, left, right))
    try:
        return math.isclose(float(left), float(right), rel_tol=1e-5, abs_tol=1e-6)
    except ValueError:
        return left == right


@pytest.mark.slow
def test_per_doc_equals_separate_runs(tiny_model_dir, toy_tasks, tmp_path):
    """Each document gets exactly its own group's neurons, even when batched together."""
    groups = ["capital/0", "capital/1", "capital/2"]
    neuron_set = _neuron_set(
        tmp_path / "facts.jsonl", layers=2, intermediate=48, hidden=32, groups=groups
    )
    base = f"pretrained={tiny_model_dir},neuron_set={neuron_set},mode=enhance,factor=3"
    alone = {group: tmp_path / group.replace("/", "_") for group in groups}
    runs = [["--model", "relneuron-hf", "--model_args", base + ",per_doc=fact",
             *_common(toy_tasks, tmp_path / "perdoc")]]  # fmt: skip
    for group, out in alone.items():
        args = base + f",groups={group},strategy=hook"
        runs.append(["--model", "relneuron-hf", "--model_args", args, *_common(toy_tasks, out)])
    run_lm_eval_in_one_process(runs)
    per_doc = {t: load_samples(tmp_path / "perdoc", t) for t in ("toy_gen", "toy_mc")}
    for group, out in alone.items():
        for task, rows in per_doc.items():
            for row, ref in zip(rows, load_samples(out, task), strict=True):
                if row["doc"]["fact"] == group:
                    assert _same_responses(row["resps"], ref["resps"]), (task, group, row["doc_id"])


@pytest.mark.slow
def test_positions_last_runs_and_differs_from_all(tiny_model_dir, toy_tasks, tmp_path):
    neuron_set = _neuron_set(
        tmp_path / "set.jsonl", layers=2, intermediate=48, hidden=32, groups=["g"]
    )
    args = f"pretrained={tiny_model_dir},neuron_set={neuron_set},mode=deactivate,positions="
    run_lm_eval_in_one_process(
        [["--model", "relneuron-hf", "--model_args", args + positions,
          *_common(toy_tasks, tmp_path / positions)] for positions in ("all", "last")]
    )  # fmt: skip
    outputs = {p: responses(load_samples(tmp_path / p, "toy_mc")) for p in ("all", "last")}
    assert outputs["all"] != outputs["last"]


@pytest.mark.slow  # one lm_eval process (~10 CPU s)
@pytest.mark.parametrize(
    ("extra", "message"),
    # one bad argument through the real CLI: every other one takes the same path
    # (RelNeuronLM.create_from_arg_string, as lm-eval calls it), tested in-process in
    # tests/harness/test_lm_model.py::test_bad_model_args_are_refused_before_loading
    [("groups=nope", "not in the neuron set")],
)
def test_bad_model_args_fail_before_loading(tiny_model_dir, toy_tasks, tmp_path, extra, message):
    neuron_set = _neuron_set(
        tmp_path / "set.jsonl", layers=2, intermediate=48, hidden=32, groups=["g"]
    )
    args = f"pretrained={tiny_model_dir},neuron_set={neuron_set},{extra}"
    proc = run_lm_eval(
        ["--model", "relneuron-hf", "--model_args", args, *_common(toy_tasks, tmp_path / "o")],
        check=False,
    )
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # lm_eval / relneuron subprocesses: ~10 CPU s
def test_shape_mismatch_names_the_file(tiny_model_dir, toy_tasks, tmp_path):
    neuron_set = _neuron_set(
        tmp_path / "wrong.jsonl", layers=3, intermediate=48, hidden=32, groups=["g"]
    )
    args = f"pretrained={tiny_model_dir},neuron_set={neuron_set}"
    proc = run_lm_eval(
        ["--model", "relneuron-hf", "--model_args", args, *_common(toy_tasks, tmp_path / "o")],
        check=False,
    )
    assert proc.returncode != 0
    assert "another shape" in proc.stderr and "wrong.jsonl" in proc.stderr


# ----------------------------------------------------------------- embedded model
def _relfacts_tasks() -> list[str]:
    names = sorted(p.stem for p in (REPO / "tasks").rglob("relfacts_*.yaml"))
    return names


@pytest.mark.slow
def test_embedded_model_base_equals_hf_and_ablation_changes_outputs(tmp_path):
    from relneuron_eval.core.embedded import ensure_local

    tasks = [
        t
        for t in _relfacts_tasks()
        if t in ("relfacts_country_capital_city", "relfacts_mc_landmark_on_continent")
    ]
    if len(tasks) < 2:
        tasks = ["toy_mc"]
    common = [
        "--tasks",
        ",".join(tasks),
        "--device",
        "cpu",
        "--batch_size",
        "8",
        "--limit",
        "8",
        "--log_samples",
    ]
    if tasks == ["toy_mc"]:
        pytest.skip("relfacts tasks not generated yet")
    # a 3,000-unit deactivation of random units drawn for the real model's shape
    rng = random.Random(0)
    units = rng.sample([(layer, i) for layer in range(30) for i in range(1536)], 3000)
    neurons = [Neuron("random", "mlp.act", layer, i, 0.0) for layer, i in units]
    model = {
        "id": "smollm2-135m",
        "architecture": "LlamaForCausalLM",
        "num_layers": 30,
        "intermediate_size": 1536,
        "hidden_size": 576,
    }
    path = save(
        NeuronSet(make_header(model=model, method={"name": "random-test"}), neurons),
        tmp_path / "r.jsonl",
    )
    run_lm_eval_in_one_process(
        [
            ["--model", "hf", "--model_args", f"pretrained={ensure_local()}", *common,
             "--output_path", str(tmp_path / "hf")],
            ["--model", "relneuron-hf", "--model_args", "pretrained=smollm2-135m", *common,
             "--output_path", str(tmp_path / "rn")],
            ["--model", "relneuron-hf", "--model_args", f"pretrained=smollm2-135m,neuron_set={path}",
             *common, "--output_path", str(tmp_path / "var")],
        ]
    )  # fmt: skip
    for task in tasks:
        assert responses(load_samples(tmp_path / "hf", task)) == responses(
            load_samples(tmp_path / "rn", task)
        )
    changed = [
        responses(load_samples(tmp_path / "var", t)) != responses(load_samples(tmp_path / "rn", t))
        for t in tasks
    ]
    assert any(changed)
    assert (
        json.loads(next((tmp_path / "var").rglob("results_*.json")).read_text())["config"][
            "relneuron"
        ]["num_units"]
        == 3000
    )


@pytest.mark.slow
def test_accelerate_data_parallel_equals_single_process(tiny_model_dir, toy_tasks, tmp_path):
    """`accelerate launch -m lm_eval --model relneuron-hf` with 2 CPU processes (gloo)."""
    import os
    import subprocess

    neuron_set = _neuron_set(
        tmp_path / "set.jsonl", layers=2, intermediate=48, hidden=32, groups=["g"]
    )
    args = f"pretrained={tiny_model_dir},neuron_set={neuron_set},mode=enhance,factor=3"
    run_lm_eval(
        ["--model", "relneuron-hf", "--model_args", args, *_common(toy_tasks, tmp_path / "one")]
    )
    from relneuron_eval.benchmarks.data_parallel import accelerate_prefix

    proc = subprocess.run(
        [
            *accelerate_prefix(2),
            "--model",
            "relneuron-hf",
            "--model_args",
            args,
            *_common(toy_tasks, tmp_path / "two"),
        ],
        env={
            **os.environ,
            "ACCELERATE_USE_CPU": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "on rank 1" in proc.stderr  # really two processes, each with its own shard
    for task in ("toy_gen", "toy_mc"):
        one, two = load_samples(tmp_path / "one", task), load_samples(tmp_path / "two", task)
        assert [r["doc_id"] for r in two] == [r["doc_id"] for r in one]
        assert [r["filtered_resps"] for r in two] == [r["filtered_resps"] for r in one]
    assert load_results(tmp_path / "two")["results"] == load_results(tmp_path / "one")["results"]


# ----------------------------------------------------------------- relfacts task suite
def _shipped_relfacts_tasks() -> set[str]:
    from relneuron_eval.data import taskgen

    return {
        line.split(": ", 1)[1]
        for text in taskgen.generate_shipped().values()
        for line in text.splitlines()
        if line.startswith("task: ")
    }


def _samples_by_task(output: Path) -> dict[str, list[dict]]:
    """Every samples file under ``output``, by task (a task's name is followed by a date)."""
    out: dict[str, list[dict]] = {}
    for path in sorted(output.rglob("samples_*.jsonl")):
        match = re.fullmatch(r"samples_(.+)_\d{4}-\d\d-\d\dT[\d.-]+\.jsonl", path.name)
        assert match, path.name
        assert match[1] not in out, f"two samples files for {match[1]}"
        out[match[1]] = [json.loads(line) for line in path.read_text().splitlines() if line]
    return out


@pytest.mark.slow
def test_relfacts_glob_runs_every_task_exactly_once(tmp_path):
    """The README's headline `--tasks 'relfacts_*'` (issue 9: a duplicate-task ValueError).

    Same command shape (relneuron-hf, a neuron set, one group deactivated), on the tiny
    model so that every relfacts task fits in the test.
    """
    from tools_helpers import make_neuron_set, tiny_model

    neuron_set = make_neuron_set(tmp_path / "set.jsonl", {"landmark_on_continent": 30})
    args = (
        f"pretrained={tiny_model()},neuron_set={neuron_set},"
        "groups=landmark_on_continent,mode=deactivate"
    )
    run_lm_eval(
        ["--model", "relneuron-hf", "--model_args", args, "--tasks", "relfacts_*",
         "--device", "cpu", "--limit", "1", "--batch_size", "16", "--log_samples",
         "--output_path", str(tmp_path / "out")]
    )  # fmt: skip
    expected = _shipped_relfacts_tasks()
    results = load_results(tmp_path / "out")
    assert set(results["results"]) == expected  # every task, and no group
    assert set(results["n-samples"]) == expected
    samples = _samples_by_task(tmp_path / "out")
    assert set(samples) == expected
    assert all(len(rows) == 1 for rows in samples.values())


# Few-shot tasks of every family: generation, multiple choice, multilingual, two-hop (CoT).
FEWSHOT_TASKS = (
    "relfacts_country_capital_city",
    "relfacts_mc_landmark_on_continent",
    "relfacts_de_country_capital_city",
    "relfacts_2hop_cot",
)


def _prompts(output: Path) -> dict[str, dict[str, str]]:
    """task -> document identity (fact or chain id) -> the exact requests sent to the model."""
    return {
        task: {
            row["doc"].get("fact_id") or row["doc"]["chain_id"]: json.dumps(row["arguments"])
            for row in rows
        }
        for task, rows in _samples_by_task(output).items()
    }


@pytest.mark.slow
def test_fewshot_prompts_do_not_depend_on_processes_limit_or_selection(tiny_model_dir, tmp_path):
    """Issue 11: lm-eval's default sampler gave other demos on 2 processes and per selection."""
    import os
    import subprocess

    from relneuron_eval.benchmarks.data_parallel import accelerate_prefix

    def common(out: str) -> list[str]:
        return ["--model", "relneuron-hf", "--model_args", f"pretrained={tiny_model_dir}",
                "--tasks", ",".join(FEWSHOT_TASKS), "--device", "cpu", "--batch_size", "8",
                "--log_samples", "--output_path", str(tmp_path / out)]  # fmt: skip

    run_lm_eval([*common("one"), "--limit", "6"])
    run_lm_eval([*common("short"), "--limit", "2"])
    picked = json.dumps({task: [5, 3] for task in FEWSHOT_TASKS})
    run_lm_eval([*common("picked"), "--samples", picked])
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [*accelerate_prefix(2), *common("two"), "--limit", "6"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "on rank 1" in proc.stderr  # really two processes, each with its own shard
    one = _prompts(tmp_path / "one")
    assert set(one) == set(FEWSHOT_TASKS) and all(len(docs) == 6 for docs in one.values())
    assert _prompts(tmp_path / "two") == one  # byte-identical at 1 and 2 processes
    for run, size in (("short", 2), ("picked", 2)):
        other = _prompts(tmp_path / run)
        for task, docs in other.items():
            assert len(docs) == size and all(one[task][key] == text for key, text in docs.items())
    # the same demos for every document of a relation: one shared prompt prefix per task
    for task, rows in _samples_by_task(tmp_path / "one").items():
        field = "prompt_cot" if task == "relfacts_2hop_cot" else "prompt"
        prefixes = set()
        for row in rows:
            prompt = row["arguments"]["gen_args_0"]["arg_0"]
            assert prompt.endswith(row["doc"][field]), task
            prefixes.add(prompt[: -len(row["doc"][field])])
        assert len(prefixes) == 1 and prefixes.pop().count("\n") >= 3, task
