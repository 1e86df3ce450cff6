"""Mistakes a newcomer makes with ``lm_eval --model relneuron-hf`` (issue 18), in-process.

Each was a long traceback after a 50 s model load, or a silent wrong result. The model
folders here hold a config and, where a test proves "before loading", no weights at all:
reading the weights would fail, so the error must come from the config.
"""

from __future__ import annotations

import inspect
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval_helpers import save_tiny_lm, save_tiny_set

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.harness.lm_model import RelNeuronLM


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="module")
def config_only(tiny_dir, tmp_path_factory) -> Path:
    """The tiny model's config and nothing else: loading its weights fails."""
    folder = tmp_path_factory.mktemp("config-only")
    shutil.copy(tiny_dir / "config.json", folder / "config.json")
    return folder


@pytest.fixture(scope="module")
def neuron_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sets") / "g.jsonl"
    return save_tiny_set(path, ["g", "h"], ["mlp.act"], per_layer=8, seed=1)


def _create(args: str) -> RelNeuronLM:
    """As ``lm_eval --model_args`` does it (numbers parsed from strings)."""
    return RelNeuronLM.create_from_arg_string(args, {"device": "cpu"})


# ------------------------------------------------------------ typos in model arguments
@pytest.mark.parametrize(
    ("typo", "meant"),
    [("neuronset", "neuron_set"), ("group", "groups"), ("prefixcache", "prefix_cache")],
)
def test_a_typo_in_a_model_argument_is_one_line_before_loading(config_only, typo, meant):
    """Before: a 44-line transformers TypeError, exit 1, after the model load."""
    with pytest.raises(RelNeuronError, match=rf"unknown model argument\(s\) {typo}=.*did you"):
        _create(f"pretrained={config_only},{typo}=x")
    with pytest.raises(RelNeuronError) as caught:
        _create(f"pretrained={config_only},{typo}=x")
    assert f"{typo}= -> {meant}=" in str(caught.value) and "\n" not in str(caught.value)


def test_every_typo_is_in_the_one_line(config_only):
    with pytest.raises(RelNeuronError) as caught:
        _create(f"pretrained={config_only},neuronset=x.jsonl,group=a")
    line = str(caught.value)
    assert "neuronset=, group=" in line
    assert "neuronset= -> neuron_set=" in line and "group= -> groups=" in line


def test_unknown_argument_far_from_any_name_is_refused_when_the_config_knows_it_not(
    config_only, tiny_dir
):
    with pytest.raises(RelNeuronError, match=r"unknown model argument\(s\) zzz_option="):
        _create(f"pretrained={config_only},zzz_option=1")
    # transformers' own options and config fields still pass through to hf
    lm = _create(f"pretrained={tiny_dir},attn_implementation=eager,use_cache=True")
    assert lm.model.config._attn_implementation == "eager"


# ------------------------------------------------------------ a set for another model
def test_a_set_for_another_model_is_refused_from_the_config_naming_the_model(config_only, tmp_path):
    """Before: refused after the 52 s load, naming the de-quantised cache folder."""
    from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header

    model = {
        "id": "smollm2-135m",
        "architecture": "LlamaForCausalLM",
        "num_layers": 30,
        "intermediate_size": 1536,
        "hidden_size": 576,
    }
    header = make_header(model=model, method={"name": "hand"})
    other = NeuronSet(header, [Neuron("g", "mlp.act", 1, 2, 0.5)]).save(tmp_path / "o.jsonl")
    with pytest.raises(RelNeuronError) as caught:  # no weights in config_only: config only
        _create(f"pretrained={config_only},neuron_set={other}")
    line = str(caught.value)
    assert "another shape: num_layers 30 in the file vs" in line
    assert f"'{config_only}'" in line and "made for 'smollm2-135m'" in line


def test_a_loaded_embedded_model_is_named_by_its_alias_not_its_cache_folder(tmp_path, monkeypatch):
    from conftest import tiny_llama

    from relneuron_eval.core.embedded import CACHE_ENV
    from relneuron_eval.core.interventions import check_model
    from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    model = tiny_llama()
    model.config._name_or_path = str(tmp_path / "smollm2-135m-0123456789abcdef")
    model_card = {**_card(), "num_layers": 30}
    selection = NeuronSet(
        make_header(model=model_card, method={"name": "x"}), [Neuron("g", "mlp.act", 0, 1, 1.0)]
    )
    with pytest.raises(RelNeuronError) as caught:
        check_model(model, selection)
    assert "in 'smollm2-135m'" in str(caught.value) and "0123456789" not in str(caught.value)


def _card() -> dict:
    return {
        "id": "x",
        "architecture": "LlamaForCausalLM",
        "num_layers": 3,
        "intermediate_size": 24,
        "hidden_size": 16,
    }


# ------------------------------------------------------------ overflowing interventions
def test_a_factor_beyond_float32_is_refused(config_only, neuron_file):
    """Before: factor=1e308 was finite, accepted, and made every log-likelihood NaN."""
    with pytest.raises(RelNeuronError, match=r"factor=1e\+308 is beyond the range of float32"):
        _create(f"pretrained={config_only},neuron_set={neuron_file},mode=enhance,factor=1e308")


def test_non_finite_outputs_stop_the_run_with_one_error(tiny_dir, neuron_file):
    """Before: NaN log-likelihoods were scored as if choice 0 were always picked."""
    lm = _create(f"pretrained={tiny_dir},neuron_set={neuron_file},mode=set,value=3e38")
    requests = [
        Instance("loglikelihood", doc={}, arguments=("The capital is", " Paris"), idx=0),
        Instance("loglikelihood", doc={}, arguments=("The capital is", " Rome"), idx=1),
    ]
    with pytest.raises(RelNeuronError, match=r"mode=set,value=3e\+38\) made the model's outputs"):
        lm.loglikelihood(requests)
    finite = _create(f"pretrained={tiny_dir},neuron_set={neuron_file},mode=enhance,factor=3")
    assert all(torch.isfinite(torch.tensor(ll)) for ll, _ in finite.loglikelihood(requests))
    with pytest.raises(RelNeuronError, match="NaN or infinite"):  # per-document runs too
        bad = _create(
            f"pretrained={tiny_dir},neuron_set={neuron_file},mode=set,value=3e38,per_doc=g"
        )
        rows = [
            Instance("loglikelihood", doc={"g": "g"}, arguments=r.args, idx=0) for r in requests
        ]
        bad.loglikelihood(rows)


# ------------------------------------------------------------ wrong task names
def test_lm_eval_still_says_tasks_not_found_as_the_plugin_expects():
    from lm_eval.config.evaluate_config import EvaluatorConfig

    from relneuron_eval.harness.plugin import UNKNOWN_TASKS

    assert f'f"{UNKNOWN_TASKS}{{missing}}"' in inspect.getsource(EvaluatorConfig.process_tasks)


def test_a_wrong_task_name_gets_the_close_names_of_ours(capsys):
    """Before: lm-eval's traceback and no hint for relfacts_capital_city / relfacts_mc."""
    from relneuron_eval.harness import plugin

    class HarnessCLI:  # lm-eval's CLI class as far as the plugin sees it
        def execute(self, args):
            raise ValueError(f"{plugin.UNKNOWN_TASKS}relfacts_capital_city, relfacts_mc")

    plugin.on_cli_loaded(types.SimpleNamespace(HarnessCLI=HarnessCLI))
    args = types.SimpleNamespace(command="run", model="hf", tasks=["relfacts_capital_city"])
    with pytest.raises(SystemExit) as stopped:
        HarnessCLI().execute(args)
    assert stopped.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith("error: --tasks: task(s) not found: relfacts_capital_city")
    assert "relfacts_capital_city -> relfacts_country_capital_city" in line
    assert "relfacts_mc -> relfacts-mc" in line and "'relfacts_mc_*'" in line
    assert plugin.unknown_task_error(ValueError(f"{plugin.UNKNOWN_TASKS}hellaswg")) is None


# ------------------------------------------------------------ entry points (lm-eval main)
def _entry_points() -> dict[str, dict[str, str]]:
    from conftest import REPO

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    with open(REPO / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["entry-points"]


def test_model_entry_point_is_module_colon_class_as_in_lm_eval_4013():
    from importlib.metadata import EntryPoint

    ((name, value),) = _entry_points()["lm_eval.models"].items()
    assert name == "relneuron-hf" and ":" in value
    loaded = EntryPoint(name=name, value=value, group="lm_eval.models").load()
    assert loaded is RelNeuronLM


def test_tasks_entry_point_is_a_package_of_our_yamls_as_in_lm_eval_4015():
    """#4015 resolves the value, a dotted package, to its folder and scans it for YAML."""
    import importlib.util

    from relneuron_eval.resources import tasks_dir

    ((name, value),) = _entry_points()["lm_eval.tasks"].items()
    assert name == "relneuron" and ":" not in value
    spec = importlib.util.find_spec(value)
    assert spec is not None and spec.submodule_search_locations
    (folder,) = [Path(p).resolve() for p in spec.submodule_search_locations]
    assert folder == tasks_dir().resolve() and any(folder.rglob("relfacts*.yaml"))
    # lm-eval 0.4.13 reads neither: the .pth start-up hook stays
    assert "relneuron_eval._hook" in sys.modules
