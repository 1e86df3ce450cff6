"""Names that identify an intervention variant in lm-eval's outputs and leaderboards.

lm-eval names output folders and result rows after ``pretrained=``. Two runs of the same
base model with different neuron sets would overwrite each other and be
indistinguishable, so the plugin renames ``relneuron-hf`` runs after the variant:
``<base>__<set-file-stem>-<content hash>__<groups>__<mode>[...]`` (or ``name=`` if given).
Pure string work: no torch import.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# The model args of relneuron-hf that define an intervention (relcheck validates against
# this list too). ``strategy`` changes how, not what, so it is not part of a name.
INTERVENTION_KEYS = (
    "neuron_set",
    "groups",
    "mode",
    "factor",
    "value",
    "top_k",
    "fraction",
    "positions",
    "control",
    "seed",
    "per_doc",
    "layers",
    "sites",
    "strategy",
)
_NAME_KEYS = (*(k for k in INTERVENTION_KEYS if k != "strategy"), "name")


def _clean(text: str, limit: int = 60) -> str:
    text = re.sub(r"[^A-Za-z0-9_.+=-]+", "-", text).strip("-")
    return text[:limit]


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def variant_name(
    *,
    base: str,
    neuron_set: str | None,
    groups: Any = "*",
    mode: str = "deactivate",
    factor: Any = None,
    value: Any = 0.0,
    top_k: Any = None,
    fraction: Any = None,
    positions: str = "all",
    control: Any = None,
    seed: Any = 0,
    per_doc: Any = None,
    layers: Any = None,
    sites: Any = None,
    name: Any = None,
) -> str:
    """The variant label; the same arguments and file contents always give the same name."""
    if name:
        return f"{base}__{_clean(str(name), 100)}"
    if not neuron_set:
        return base
    from relneuron_eval.core.neuron_set import file_hash

    try:
        digest = file_hash(neuron_set)
    except OSError:
        digest = "missing"
    groups_text = "all" if groups in (None, "", "*") else str(groups).replace("|", "+")
    parts = [base, f"{_stem(str(neuron_set))}-{digest}", _clean(groups_text, 48)]
    if mode in ("enhance", "scale"):
        parts.append(f"{mode}x{2.0 if factor is None else float(factor):g}")
    elif mode == "set":
        parts.append(f"set{float(value or 0.0):g}")
    else:
        parts.append(str(mode))
    if top_k not in (None, ""):
        parts.append(f"top{top_k}")
    if fraction not in (None, ""):
        parts.append(f"frac{fraction}")
    if layers not in (None, ""):
        parts.append(_clean(f"L{layers}".replace("|", "+"), 24))
    if sites not in (None, ""):
        parts.append(_clean(str(sites).replace("|", "+").replace("mlp.", ""), 40))
    if positions == "last":
        parts.append("last")
    if per_doc:
        parts.append(f"perdoc-{_clean(str(per_doc), 24)}")
    if control == "random":
        parts.append(f"random-s{seed}")
    return "__".join(parts)


def variant_name_from_model_args(model_args: Any, base: str | None) -> str | None:
    """Variant name for lm-eval's tracker, or None when these are not relneuron args."""
    if isinstance(model_args, str):
        from lm_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(model_args)
    elif isinstance(model_args, dict):
        args = model_args
    else:
        return None
    if not any(args.get(k) not in (None, "") for k in ("neuron_set", "name")):
        return None
    kwargs = {k: args.get(k) for k in _NAME_KEYS if k in args}
    kwargs.setdefault("neuron_set", None)  # `name=` alone labels a plain run
    kwargs.setdefault("groups", "*")
    kwargs.setdefault("mode", "deactivate")
    kwargs.setdefault("positions", "all")
    kwargs.setdefault("seed", 0)
    return variant_name(base=str(base or args.get("pretrained") or "model"), **kwargs)
