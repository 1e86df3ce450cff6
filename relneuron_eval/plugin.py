"""Registration of relneuron-eval's model, tasks and output naming inside lm-eval.

Called by ``_hook`` right after the corresponding lm-eval module has executed, so
nothing here runs unless lm-eval is imported. Every function is idempotent.
"""

from __future__ import annotations

import functools
from types import ModuleType

MODEL_NAME = "relneuron-hf"
MODEL_TARGET = "relneuron_eval.lm_model:RelNeuronLM"


def register_model() -> None:
    """Register ``relneuron-hf`` as a lazy placeholder (the class is imported on use)."""
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_TARGET)


def on_models_loaded(module: ModuleType) -> None:
    register_model()


def on_task_manager_loaded(module: ModuleType) -> None:
    """Add our task folder to every TaskManager that includes lm-eval's defaults."""
    manager_cls = module.TaskManager
    if getattr(manager_cls.__init__, "_relneuron_wrapped", False):
        return
    original_init = manager_cls.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, include_path=None, include_defaults=True, **kwargs):
        if include_defaults:
            from relneuron_eval.resources import tasks_dir

            ours = str(tasks_dir())
            if include_path is None:
                include_path = [ours]
            elif isinstance(include_path, (list, tuple)):
                include_path = [ours, *include_path]
            else:
                include_path = [ours, include_path]
        original_init(
            self, *args, include_path=include_path, include_defaults=include_defaults, **kwargs
        )

    __init__._relneuron_wrapped = True  # type: ignore[attr-defined]
    manager_cls.__init__ = __init__


def on_evaluation_tracker_loaded(module: ModuleType) -> None:
    """Name output folders and leaderboard rows after the variant, not only the base model."""
    tracker_cls = module.GeneralConfigTracker
    original = tracker_cls._get_model_name
    if getattr(original, "_relneuron_wrapped", False):
        return

    def _get_model_name(model_args):
        from relneuron_eval.variant import variant_name_from_model_args

        base = original(model_args)
        name = variant_name_from_model_args(model_args, base)
        return name if name is not None else base

    _get_model_name._relneuron_wrapped = True  # type: ignore[attr-defined]
    tracker_cls._get_model_name = staticmethod(_get_model_name)


def on_huggingface_loaded(module: ModuleType) -> None:
    """Publish every HFLM's tokenizer to ``task_metrics`` (the relfacts prefix metric needs it).

    Covers ``--model hf`` and ``--model relneuron-hf`` (a subclass of HFLM).
    """
    model_cls = module.HFLM
    original_init = model_cls.__init__
    if getattr(original_init, "_relneuron_wrapped", False):
        return

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        from relneuron_eval import task_metrics

        task_metrics.set_tokenizer(getattr(self, "tokenizer", None))

    __init__._relneuron_wrapped = True  # type: ignore[attr-defined]
    model_cls.__init__ = __init__
