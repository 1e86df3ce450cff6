"""Names that identify an intervention variant in lm-eval's outputs and leaderboards.

lm-eval names output folders and result rows after ``pretrained=``. Two runs of the same
base model with different neuron sets would overwrite each other and be
indistinguishable, so the plugin renames ``relneuron-hf`` runs after the variant:
``<base>__<set-file-stem>-<content hash>__<groups>__<mode>[...]`` (or ``name=`` if given).
The name itself is :meth:`InterventionSpec.label`; this module adapts lm-eval's model args.
Pure string work: no torch import.
"""

from __future__ import annotations

from typing import Any

from relneuron_eval.core.spec import INTERVENTION_KEYS, InterventionSpec

__all__ = ["INTERVENTION_KEYS", "variant_name", "variant_name_from_model_args"]


def variant_name(*, base: str, neuron_set: str | None, **settings: Any) -> str:
    """The variant label of these settings (``InterventionSpec`` fields), unvalidated."""
    spec = InterventionSpec.from_model_args({"neuron_set": neuron_set, **settings}, strict=False)
    return spec.label(base)


def variant_name_from_model_args(model_args: Any, base: str | None) -> str | None:
    """Variant name for lm-eval's tracker, or None when these are not relneuron args.

    Not validated: relneuron-hf refuses bad arguments itself, with its own message.
    """
    if isinstance(model_args, str):
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(model_args)
    elif isinstance(model_args, dict):
        args = model_args
    else:
        return None
    spec = InterventionSpec.from_model_args(args, strict=False)
    if spec.is_base and not spec.name:
        return None
    return spec.label(str(base or args.get("pretrained") or "model"))
