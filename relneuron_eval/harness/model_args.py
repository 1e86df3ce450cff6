"""``relneuron-hf``'s arguments checked before the model loads: seconds, not a minute.

Two newcomer mistakes used to surface only after the model load (50 s on a CPU): a typo
in an argument (``neuronset=``, ``group=``) became a 44-line transformers ``TypeError``,
and a neuron set made for another model was refused after the load, naming the
de-quantised cache folder. Both are decided here from the arguments and the model's
config (``AutoConfig``, or the embedded model's cached ``config.json``).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from relneuron_eval.core.architectures import config_shape
from relneuron_eval.core.neuron_set import NeuronSet
from relneuron_eval.core.spec import SETTING_NAMES
from relneuron_eval.errors import RelNeuronError, clip

log = logging.getLogger(__name__)

OWN_ARGUMENTS = ("pretrained", *SETTING_NAMES, "prefix_cache", "context_cache")


@functools.cache
def hf_arguments() -> frozenset[str]:
    """The named arguments of lm-eval's ``hf`` model (HFLM)."""
    from lm_eval.models.huggingface import HFLM

    params = inspect.signature(HFLM.__init__).parameters
    return frozenset(n for n, p in params.items() if n != "self" and p.kind != p.VAR_KEYWORD)


@functools.cache
def transformers_arguments() -> frozenset[str]:
    """Options HFLM passes on to ``from_pretrained`` and transformers takes (best effort:
    its signature plus the ``kwargs.pop("...")`` names of its source)."""
    from transformers import PreTrainedModel

    method = PreTrainedModel.from_pretrained
    names = set(inspect.signature(method).parameters)
    try:
        names |= set(re.findall(r'kwargs\.pop\(\s*"(\w+)"', inspect.getsource(method)))
    except (OSError, TypeError):
        pass
    return frozenset(names)


def check_arguments(given: Iterable[str], config: Any | None) -> None:
    """Refuse an argument that neither ``relneuron-hf``, ``hf``, transformers'
    ``from_pretrained`` nor the model's config knows, with the closest names.

    Without a config (it could not be read early) only near-misses of our and ``hf``'s
    own names are refused: anything else may still be a transformers option.
    """
    ours = set(OWN_ARGUMENTS) | hf_arguments()
    known = ours | transformers_arguments()
    unknown, hints = [], []
    for key in given:
        if key in known or (config is not None and hasattr(config, key)):
            continue
        close = difflib.get_close_matches(key, sorted(ours), n=3, cutoff=0.7)
        if close or config is not None:
            unknown.append(f"{clip(key)}=")
        if close:
            hints.append(f"{clip(key)}= -> " + " or ".join(f"{c}=" for c in close))
    if unknown:
        raise RelNeuronError(
            f"unknown model argument(s) {', '.join(unknown[:10])}: not arguments of "
            "relneuron-hf, of lm-eval's hf model, or of transformers' from_pretrained",
            path="--model_args",
            hint="did you mean " + "; ".join(hints[:10]) + "?"
            if hints
            else "see the README's `relneuron-hf` model arguments table",
        )


def early_config(pretrained: Any, kwargs: Mapping[str, Any]) -> Any | None:
    """The model's config without its weights, or None if it cannot be read cheaply.

    A model object gives its own; the embedded model's is read from its de-quantised
    cache (before its first load there is none); a folder or cached hub id through
    ``AutoConfig``. Anything that fails is left to HFLM, which reports it as before.
    """
    if not isinstance(pretrained, str):
        return getattr(pretrained, "config", None)
    from relneuron_eval.core.embedded import cached_dir
    from relneuron_eval.core.models import find

    embedded = find(pretrained)
    try:
        from transformers import AutoConfig

        if embedded is not None:
            folder = cached_dir(model=embedded)
            if not (folder / "config.json").is_file():
                return None
            return AutoConfig.from_pretrained(str(folder))
        return AutoConfig.from_pretrained(
            pretrained,
            revision=kwargs.get("revision") or "main",
            subfolder=kwargs.get("subfolder") or "",
            trust_remote_code=bool(kwargs.get("trust_remote_code", False)),
        )
    except Exception as exc:  # HFLM's own load reports it properly
        log.debug("relneuron-hf: no early config for %r: %s", pretrained, exc)
        return None


def check_set_fits(selection: NeuronSet, config: Any | None, model_name: str) -> None:
    """The neuron set must fit the model's shape: checked on the config, before the load."""
    shape = None if config is None else config_shape(config)
    if shape is not None:
        selection.check_shape(shape, model_name=repr(model_name))
