"""Start-up hook that plugs relneuron-eval into lm-eval 0.4.13 without touching it.

lm-eval 0.4.13 has no plugin discovery, so ``relneuron_eval.pth`` imports this module
at interpreter start-up. It only installs a tiny ``sys.meta_path`` finder: nothing
else is imported until lm-eval itself is. When one of the watched lm-eval modules
finishes executing, ``relneuron_eval.harness.plugin`` registers the ``relneuron-hf`` model,
the task directory, the variant-aware output naming and the one-line errors of the
``lm_eval`` command (every entry point builds ``lm_eval._cli.harness.HarnessCLI``). Set
``RELNEURON_EVAL_NO_AUTOLOAD=1`` to switch this off.
"""

import os
import sys

# module name -> name of the function in relneuron_eval.harness.plugin to call after it loads
_WATCHED = {
    "lm_eval.models": "on_models_loaded",
    "lm_eval.tasks.manager": "on_task_manager_loaded",
    "lm_eval.loggers.evaluation_tracker": "on_evaluation_tracker_loaded",
    "lm_eval._cli.harness": "on_cli_loaded",
    "accelerate.commands.launch": "on_accelerate_launch_loaded",
}


class _PostImportLoader:
    """Wraps a module's real loader and runs our callback once the module has executed."""

    def __init__(self, loader, callback_name: str) -> None:
        self._loader = loader
        self._callback_name = callback_name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        from relneuron_eval.harness import plugin

        getattr(plugin, self._callback_name)(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _LmEvalWatcher:
    """A meta-path finder that only reacts to the few lm-eval modules we extend."""

    def find_spec(self, fullname, path, target=None):
        callback = _WATCHED.get(fullname)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PostImportLoader(spec.loader, callback)
                return spec
        return None


def install() -> None:
    """Install the watcher once (idempotent)."""
    if os.environ.get("RELNEURON_EVAL_NO_AUTOLOAD"):
        return
    if not any(isinstance(f, _LmEvalWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _LmEvalWatcher())


install()
