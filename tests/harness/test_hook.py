"""The start-up hook: a lazy meta-path watcher that plugs us into lm-eval once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from relneuron_eval import _hook

HEAVY = ("torch", "transformers", "lm_eval", "numpy", "datasets", "accelerate")

_WATCHERS = "sum(type(f).__name__ == '_LmEvalWatcher' for f in sys.meta_path)"


def _run(code: str, **env: str) -> dict:
    """Run ``python -c code`` in a clean interpreter; ``code`` prints one JSON object."""
    environ = {k: v for k, v in os.environ.items() if k != "RELNEURON_EVAL_NO_AUTOLOAD"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**environ, **env},
        cwd="/",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_start_up_installs_one_watcher_and_imports_nothing_heavy():
    out = _run(
        "import sys, json\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        f"before = {_WATCHERS}\n"
        "from relneuron_eval import _hook\n"
        "_hook.install(); _hook.install()\n"
        f"print(json.dumps({{'heavy': heavy, 'before': before, 'after': {_WATCHERS},"
        " 'first': type(sys.meta_path[0]).__name__}))"
    )
    assert out == {"heavy": [], "before": 1, "after": 1, "first": "_LmEvalWatcher"}


def test_no_autoload_switches_everything_off():
    out = _run(
        "import sys, json\n"
        "from relneuron_eval import _hook\n"
        "_hook.install()\n"
        "import lm_eval.models, lm_eval.tasks.manager as m\n"
        "from lm_eval.api.registry import model_registry\n"
        f"print(json.dumps({{'watchers': {_WATCHERS},"
        " 'registered': 'relneuron-hf' in model_registry,"
        " 'wrapped': getattr(m.TaskManager.__init__, '_relneuron_wrapped', False)}))",
        RELNEURON_EVAL_NO_AUTOLOAD="1",
    )
    assert out == {"watchers": 0, "registered": False, "wrapped": False}


# Counts every callback (then runs the real one), imports each watched module twice,
# then calls every plugin function a second time and reports whether anything changed.
_ONCE = """
import importlib, json, sys
from relneuron_eval.harness import plugin
calls = {}
def counting(name):
    real = getattr(plugin, name)
    def callback(module):
        calls.setdefault(name, []).append(module.__name__)
        real(module)
    setattr(plugin, name, callback)
for name in ("on_models_loaded", "on_task_manager_loaded",
             "on_evaluation_tracker_loaded", "on_cli_loaded"):
    counting(name)
watched = ("lm_eval.models", "lm_eval.tasks.manager",
           "lm_eval.loggers.evaluation_tracker", "lm_eval._cli.harness")
mods = [importlib.import_module(n) for n in watched + watched]
on_import = {k: list(v) for k, v in calls.items()}
import lm_eval.api.registry as registry
models, manager, tracker, harness = mods[:4]
G = tracker.GeneralConfigTracker
before = (manager.TaskManager.__init__, G._get_model_name, harness.HarnessCLI.execute,
          registry.model_registry.get("relneuron-hf"))
for _ in range(2):
    plugin.register_model()
    plugin.on_models_loaded(models)
    plugin.on_task_manager_loaded(manager)
    plugin.on_evaluation_tracker_loaded(tracker)
    plugin.on_cli_loaded(harness)
after = (manager.TaskManager.__init__, G._get_model_name, harness.HarnessCLI.execute,
         registry.model_registry.get("relneuron-hf"))
print(json.dumps({
    "calls": on_import,
    "registered": "relneuron-hf" in registry.model_registry,
    "unchanged": [a is b for a, b in zip(before, after)],
    "inner_unwrapped": not getattr(
        manager.TaskManager.__init__.__wrapped__, "_relneuron_wrapped", False),
    "plain": G._get_model_name("pretrained=gpt2"),
    "variant": G._get_model_name("pretrained=gpt2,neuron_set=/nonexistent/s.jsonl"),
}))
"""


def test_each_watched_module_calls_back_once_and_plugin_is_idempotent():
    out = _run(_ONCE)
    assert out["calls"] == {
        "on_models_loaded": ["lm_eval.models"],
        "on_task_manager_loaded": ["lm_eval.tasks.manager"],
        "on_evaluation_tracker_loaded": ["lm_eval.loggers.evaluation_tracker"],
        "on_cli_loaded": ["lm_eval._cli.harness"],
    }
    assert out["registered"] is True
    assert out["unchanged"] == [True, True, True, True]
    assert out["inner_unwrapped"] is True
    assert out["plain"] == "gpt2"
    assert out["variant"] == "gpt2__s-missing__all__deactivate"


def test_watcher_ignores_other_modules_and_wraps_watched_loaders():
    import lm_eval

    watcher = _hook._LmEvalWatcher()
    assert watcher.find_spec("json", None) is None
    assert watcher.find_spec("lm_eval.api.registry", lm_eval.__path__) is None
    spec = watcher.find_spec("lm_eval.models", lm_eval.__path__)
    assert spec is not None and spec.name == "lm_eval.models"
    assert isinstance(spec.loader, _hook._PostImportLoader)
    # Everything but exec_module passes through to the real loader.
    assert spec.loader.get_filename("lm_eval.models").endswith(
        os.path.join("lm_eval", "models", "__init__.py")
    )
    assert set(_hook._WATCHED) == {
        "lm_eval.models",
        "lm_eval.tasks.manager",
        "lm_eval.loggers.evaluation_tracker",
        "lm_eval._cli.harness",
        "accelerate.commands.launch",
    }
