"""What a user sees from ``lm_eval`` with the plugin: one-line errors, no noise, start-up.

All through the real command line (the ``lm_eval``/``lm-eval`` scripts, ``python -m
lm_eval``, ``accelerate launch``) on a tiny random Llama, except the embedded model's
first load, which de-quantises SmolLM2-135M into a fresh cache.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval_helpers import save_tiny_llama

from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header, save

BIN = Path(sys.executable).parent
ENTRY_POINTS = {
    "lm_eval": [str(BIN / "lm_eval")],
    "lm-eval run": [str(BIN / "lm-eval"), "run"],
    "python -m lm_eval": [sys.executable, "-m", "lm_eval"],
}
TASK = "relfacts_country_capital_city"
ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny"), hidden=32, intermediate=48, layers=2)


@pytest.fixture(scope="module")
def good_set(tmp_path_factory) -> Path:
    model = {
        "id": "tiny",
        "architecture": "LlamaForCausalLM",
        "num_layers": 2,
        "intermediate_size": 48,
        "hidden_size": 32,
    }
    neurons = [Neuron("g", "mlp.act", layer, i, 1.0) for layer in (0, 1) for i in range(5)]
    path = tmp_path_factory.mktemp("set") / "set.jsonl"
    save(NeuronSet(make_header(model=model, method={"name": "test"}), neurons), path)
    return path


def _run(argv: list[str], *, extra_env: dict[str, str] | None = None, cwd: Path | None = None):
    env = {**os.environ, **ENV}
    for asks_for_tracebacks in ("RELNEURON_TRACEBACK", "LMEVAL_LOG_LEVEL"):
        env.pop(asks_for_tracebacks, None)
    env.update(extra_env or {})
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


def _error_lines(stderr: str) -> list[str]:
    """Our lines; lm-eval's own log lines start with a date, its bars with a label."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _malformed(folder: Path, good: Path) -> Path:
    path = folder / "broken.jsonl"
    header = good.read_text().splitlines()[0]
    path.write_text(header + '\n{"group": "g", "site": "mlp.act", "layer": 0, "index": "x"}\n')
    return path


CASES = {
    # name: (entry point, model_args after pretrained=, expected text of the error line)
    "missing file": ("lm_eval", "neuron_set=/nonexistent/set.jsonl", "neuron-set file not found"),
    "malformed file": ("python -m lm_eval", "neuron_set={broken}", "{broken}:2: "),
    "unknown group": ("lm-eval run", "neuron_set={good},groups=nope", "not in the neuron set"),
    "bogus mode": ("lm_eval", "neuron_set={good},mode=bogus", "unknown mode 'bogus'"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_exit_2(case, tiny, good_set, tmp_path):
    entry, model_args, expected = CASES[case]
    names = {"good": good_set, "broken": _malformed(tmp_path, good_set)}
    model_args, expected = model_args.format(**names), expected.format(**names)
    out = tmp_path / "out"
    argv = [*ENTRY_POINTS[entry], "--model", "relneuron-hf"]
    argv += ["--model_args", f"pretrained={tiny},{model_args}", "--tasks", TASK]
    proc = _run([*argv, "--limit", "2", "--device", "cpu", "--output_path", str(out)])
    errors = _error_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "extra_env", "extra_args"),
    [
        ("env", {"RELNEURON_TRACEBACK": "1"}, []),
        ("verbosity", {}, ["--verbosity", "DEBUG"]),
    ],
)
def test_traceback_only_when_asked(how, extra_env, extra_args, tiny, good_set):
    args = f"pretrained={tiny},neuron_set={good_set},mode=bogus"
    argv = [*ENTRY_POINTS["lm_eval"], "--model", "relneuron-hf", "--model_args", args]
    argv += ["--tasks", TASK, "--limit", "2", "--device", "cpu", *extra_args]
    proc = _run(argv, extra_env=extra_env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback (most recent call last)" in proc.stderr
    # the refusal's class: RelNeuronError or its InvalidSetting (a bad model arg)
    assert "relneuron_eval.core.spec.InvalidSetting" in proc.stderr
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("error: ") and "unknown mode 'bogus'" in last


@pytest.mark.slow
def test_other_errors_are_lm_evals_own(tiny):
    """Not bad input of ours: lm-eval's traceback and exit code stay as they were."""
    argv = [*ENTRY_POINTS["lm_eval"], "--model", "relneuron-hf", "--model_args"]
    argv += [f"pretrained={tiny}", "--tasks", "no_such_task_xyz", "--device", "cpu"]
    proc = _run(argv)
    assert proc.returncode == 1
    assert "Tasks not found" in proc.stderr and not _error_lines(proc.stderr)


@pytest.mark.slow
def test_accelerate_bad_input_exits_2_without_launcher_traceback(tiny, good_set):
    from relneuron_eval.benchmarks.data_parallel import accelerate_prefix

    args = f"pretrained={tiny},neuron_set={good_set},mode=bogus"
    argv = [*accelerate_prefix(2), "--model", "relneuron-hf", "--model_args", args]
    proc = _run(
        [*argv, "--tasks", TASK, "--limit", "2", "--device", "cpu"],
        extra_env={"ACCELERATE_USE_CPU": "1"},
    )
    errors = _error_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr[-4000:]
    assert errors and all(e == errors[0] for e in errors)  # one line per process
    assert "unknown mode 'bogus'" in errors[0]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr


TOY_LOADER = """
import datasets


def load(**kwargs):
    rows = [{"q": "The capital of France is", "a": " Paris"}] * 2
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
"""
TOY_TASK = """task: toy_custom
custom_dataset: !function toy_loader.load
test_split: test
output_type: generate_until
doc_to_text: "{{q}}"
doc_to_target: "{{a}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 2
metric_list:
  - metric: exact_match
"""


@pytest.mark.slow
def test_no_metadata_hint_for_relfacts_and_a_start_up_line(tiny, tmp_path):
    """lm-eval's "Custom kwargs ... --metadata" hint: gone for our tasks, kept for others."""
    (tmp_path / "toy_loader.py").write_text(TOY_LOADER)
    (tmp_path / "toy_custom.yaml").write_text(TOY_TASK)
    tasks = f"{TASK},relfacts_mc_country_language,relfacts_de_country_capital_city,toy_custom"
    argv = [*ENTRY_POINTS["lm_eval"], "--model", "relneuron-hf", "--model_args"]
    argv += [f"pretrained={tiny}", "--tasks", tasks, "--include_path", str(tmp_path)]
    proc = _run([*argv, "--limit", "2", "--device", "cpu"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    hints = [line for line in proc.stderr.splitlines() if "Custom kwargs can be passed" in line]
    assert len(hints) == 1 and "toy_custom:" in hints[0], hints
    start = proc.stderr.find("relneuron-eval: lm-eval is importing")
    assert -1 < start < proc.stderr.find("Selected Tasks")


def _bar_states(stderr: str) -> list[tuple[int, str]]:
    """(percent, step label) of every drawn state of our de-quantisation bar."""
    states = []
    for line in re.split(r"[\r\n]", stderr):
        match = re.match(r"relneuron-eval: de-quantising:\s+(\d+)%.*?(?:, (.+?))?\s*$", line)
        if match:
            states.append((int(match.group(1)), match.group(2) or ""))
    return states


@pytest.mark.slow
def test_first_embedded_load_says_so_under_one_bar_and_cached_load_is_quiet(tmp_path):
    from relneuron_eval.core.embedded import _SHARES, ensure_local

    cmd = [str(BIN / "relneuron"), "model-path"]
    first = _run(cmd, extra_env={"RELNEURON_CACHE": str(tmp_path)})
    assert first.returncode == 0, first.stderr[-3000:]
    path = Path(first.stdout.strip())  # stdout is the path alone: usable as $(...)
    assert path.parent == tmp_path and (path / "model.safetensors").is_file()
    said = [line for line in first.stderr.splitlines() if "de-quantising the embedded" in line]
    assert len(said) == 1 and str(path) in said[0]
    states = _bar_states(first.stderr)
    percents = [p for p, _ in states]
    assert percents[0] == 0 and percents[-1] == 100 and percents == sorted(percents)
    assert set(_SHARES) <= {label for _, label in states}
    assert "Converting and de-quantizing" not in first.stderr  # transformers' partial bar
    again = _run(cmd, extra_env={"RELNEURON_CACHE": str(tmp_path)})
    assert again.returncode == 0 and again.stdout == first.stdout and again.stderr == ""

    def digest(folder: Path) -> str:
        return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    assert digest(path) == digest(ensure_local(verbose=False))  # the same checkpoint


def test_progress_restores_transformers():
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    from relneuron_eval.core.embedded import _progress

    before = (gguf_utils.tqdm, gguf_utils.load_gguf_checkpoint)
    bars = hf_logging.is_progress_bar_enabled()
    with pytest.raises(RuntimeError), _progress(False):
        assert gguf_utils.tqdm is not before[0] and not hf_logging.is_progress_bar_enabled()
        raise RuntimeError("conversion failed")
    assert (gguf_utils.tqdm, gguf_utils.load_gguf_checkpoint) == before
    assert hf_logging.is_progress_bar_enabled() == bars


def test_cli_hooks_install_once():
    import accelerate.commands.launch as launch
    import lm_eval._cli.harness as harness

    from relneuron_eval.harness import plugin

    execute, launch_command = harness.HarnessCLI.execute, launch.launch_command
    assert getattr(execute, "_relneuron_wrapped", False)  # installed at import by _hook
    assert getattr(launch_command, "_relneuron_wrapped", False)
    plugin.on_cli_loaded(harness)
    plugin.on_accelerate_launch_loaded(launch)
    assert harness.HarnessCLI.execute is execute and launch.launch_command is launch_command


def test_error_is_found_behind_an_explicit_cause_only():
    from relneuron_eval.errors import RelNeuronError
    from relneuron_eval.harness.plugin import relneuron_error_in

    ours = RelNeuronError("bad", path="f.jsonl", line=3, hint="fix it")
    try:
        raise RuntimeError("wrapped") from ours
    except RuntimeError as exc:
        assert relneuron_error_in(exc) is ours
    try:
        try:
            raise ours
        except RelNeuronError:
            raise KeyError("a bug while handling it") from None
    except KeyError as exc:
        assert relneuron_error_in(exc) is None
