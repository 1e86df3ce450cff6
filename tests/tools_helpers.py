"""Shared fixtures-as-functions for the compare / export / relcheck tests (no tests here).

A tiny random-weight Llama with the real SmolLM2 tokenizer, a tiny self-made lm-eval
task, small neuron sets for it, and a runner for the real ``lm_eval`` CLI. Everything is
built once per test session (cached) because each ``lm_eval`` run costs ~10 s on 2 cores.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lm_eval_helpers import save_tiny_llama

TINY = {"num_layers": 2, "intermediate_size": 128, "hidden_size": 64}
WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "river", "stone"]


@functools.lru_cache(maxsize=1)
def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="relneuron-tools-tests-"))


def env() -> dict[str, str]:
    out = dict(os.environ)
    out.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        OMP_NUM_THREADS="2",
        MKL_NUM_THREADS="2",
        TOKENIZERS_PARALLELISM="false",
        HF_DATASETS_CACHE=str(workdir() / "hf-datasets"),
    )
    return out


@functools.lru_cache(maxsize=1)
def tiny_model() -> Path:
    """A 2-layer random Llama (seeded) saved with the SmolLM2 tokenizer."""
    out = workdir() / "tiny-llama"
    out.mkdir(parents=True, exist_ok=True)
    return save_tiny_llama(
        out,
        hidden=TINY["hidden_size"],
        intermediate=TINY["intermediate_size"],
        layers=TINY["num_layers"],
        mlp_std=0.3,
    )


@functools.lru_cache(maxsize=1)
def toy_tasks() -> Path:
    """Two 3-way multiple-choice tasks (20 docs each) and a group over them."""
    folder = workdir() / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for name in ("toy_a", "toy_b"):
        rows = []
        for i in range(20):
            choices = rng.sample(WORDS, 3)
            rows.append(
                {"q": f"Item {i} of {name}: pick", "choices": choices, "label": rng.randrange(3)}
            )
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\n"
            "dataset_path: json\n"
            "dataset_kwargs:\n  data_files:\n"
            f"    test: {folder / (name + '.jsonl')}\n"
            "test_split: test\n"
            "output_type: multiple_choice\n"
            'doc_to_text: "{{q}}"\n'
            'doc_to_choice: "{{choices}}"\n'
            "doc_to_target: label\n"
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "metadata:\n  version: 1.0\n"
        )
    (folder / "toy_group.yaml").write_text(
        "group: toy_group\ntask:\n  - toy_a\n  - toy_b\n"
        "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\n"
        "metadata:\n  version: 1\n"
    )
    return folder


def make_neuron_set(path: Path, groups: dict[str, int], seed: int = 1) -> Path:
    """A neuron set for the tiny model: ``groups`` maps group name -> number of units."""
    from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header

    header = make_header(
        model={"id": "tiny-llama", "architecture": "LlamaForCausalLM", **TINY},
        method={"name": "test-fixture"},
    )
    rng = random.Random(seed)
    neurons = []
    for group, count in groups.items():
        for unit in rng.sample(range(TINY["num_layers"] * TINY["intermediate_size"]), count):
            layer, index = divmod(unit, TINY["intermediate_size"])
            site = "mlp.act" if unit % 3 else "mlp.up_proj"
            neurons.append(Neuron(group, site, layer, index, rng.random()))
    NeuronSet(header, neurons).save(path)
    return path


def lm_eval_args(
    model: str,
    model_args: str,
    out: Path,
    tasks: str = "toy_group",
    limit: int = 15,
    extra: list[str] | None = None,
) -> list[str]:
    """The arguments of one ``lm_eval`` run on the toy tasks (without the program)."""
    args = ["--model", model, "--model_args", model_args, "--tasks", tasks]
    args += ["--include_path", str(toy_tasks()), "--output_path", str(out), "--log_samples"]
    args += ["--device", "cpu", "--batch_size", "8"]
    if limit:
        args += ["--limit", str(limit)]
    return args + (extra or [])


def run_lm_eval(
    model: str,
    model_args: str,
    out: Path,
    tasks: str = "toy_group",
    limit: int = 15,
    extra: list[str] | None = None,
) -> Path:
    """Run the real lm_eval CLI; return the results_*.json it wrote."""
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        *lm_eval_args(model, model_args, out, tasks, limit, extra),
    ]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"lm_eval failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return last_results(out)


def last_results(out: Path) -> Path:
    files = sorted(out.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    assert files, f"lm_eval wrote no results under {out}"
    return files[-1]


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
