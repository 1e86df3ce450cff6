"""Where each neuron site lives in each architecture: the ONE mapping table.

Like pyvene's model cards and TransformerLens's architecture adapters, every supported
``config.model_type`` gets one row that says where the decoder layers are and which
module (relative to a layer) produces or consumes each site's units. Adding an
architecture means adding a row here, nothing else.

Site semantics (see the README's neuron-set format):
- ``mlp.act``: FFN intermediate neuron = the *input* of the down projection.
- ``mlp.gate_proj`` / ``mlp.up_proj`` / ``mlp.down_proj``: single *output* units of those
  linear layers (for fused gate/up layers, an offset selects the half).

A row's optional ``suffix`` says where the modules live that the knowledge-neuron
``suffix`` path runs by hand (see ``SuffixSpec``); rows without one use the generic paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from relneuron_eval.core.neuron_set import ModelShape
from relneuron_eval.errors import RelNeuronError

if TYPE_CHECKING:
    import torch

Role = Literal["input", "output"]


@dataclass(frozen=True)
class SiteSpec:
    """A site = the ``role`` (input or output features) of the module at ``module``.

    ``offset_halves`` shifts the unit index by that many ``intermediate_size`` blocks (for
    fused gate/up projections). ``transposed`` marks GPT-2's Conv1D, whose weight is
    stored as [in, out] instead of nn.Linear's [out, in].
    """

    module: str
    role: Role
    offset_halves: int = 0
    transposed: bool = False


@dataclass(frozen=True)
class SuffixSpec:
    """Where the pieces live for running one token through decoder layers l+1..L-1 by hand.

    The knowledge-neuron ``suffix`` path (``discovery/ig_kernels.py``) needs a Llama-style
    pre-norm decoder: layers that take rotary ``position_embeddings`` and a key/value
    cache, a final norm, then the LM head. ``layers``, ``final_norm`` and ``rotary_emb``
    are paths from the model; ``mid_norm`` (whose input is the residual stream after
    attention) and ``down_proj`` are paths from one decoder layer.
    """

    layers: str = "model.layers"
    final_norm: str = "model.norm"
    rotary_emb: str = "model.rotary_emb"
    mid_norm: str = "post_attention_layernorm"
    down_proj: str = "mlp.down_proj"


@dataclass(frozen=True)
class ArchSpec:
    """One row of the table."""

    layers: tuple[str, ...]  # candidate paths to the ModuleList of decoder layers
    sites: dict[str, SiteSpec]
    suffix: SuffixSpec | None = None  # None: no knowledge-neuron suffix path


def _gated(mlp: str = "mlp") -> dict[str, SiteSpec]:
    return {
        "mlp.act": SiteSpec(f"{mlp}.down_proj", "input"),
        "mlp.gate_proj": SiteSpec(f"{mlp}.gate_proj", "output"),
        "mlp.up_proj": SiteSpec(f"{mlp}.up_proj", "output"),
        "mlp.down_proj": SiteSpec(f"{mlp}.down_proj", "output"),
    }


_DECODER = ("model.layers", "model.language_model.layers", "language_model.model.layers")
_LLAMA_SUFFIX = SuffixSpec()

ARCHITECTURES: dict[str, ArchSpec] = {
    # Llama family (Llama-2/3, SmolLM2) and other SwiGLU decoders with separate gate/up
    "llama": ArchSpec(_DECODER, _gated(), suffix=_LLAMA_SUFFIX),
    "mistral": ArchSpec(_DECODER, _gated(), suffix=_LLAMA_SUFFIX),
    "qwen2": ArchSpec(_DECODER, _gated(), suffix=_LLAMA_SUFFIX),
    "qwen3": ArchSpec(_DECODER, _gated(), suffix=_LLAMA_SUFFIX),
    "gemma": ArchSpec(_DECODER, _gated()),
    "gemma2": ArchSpec(_DECODER, _gated()),
    "gemma3": ArchSpec(_DECODER, _gated()),
    # Gemma 3 text (the embedded gemma3-270m): gated GELU-tanh MLP with the same four
    # sites, tied embeddings; no suffix path (its norms sit around attention and MLP)
    "gemma3_text": ArchSpec(_DECODER, _gated()),
    # Phi-3: fused gate_up_proj, first half gate, second half up
    "phi3": ArchSpec(
        _DECODER,
        {
            "mlp.act": SiteSpec("mlp.down_proj", "input"),
            "mlp.gate_proj": SiteSpec("mlp.gate_up_proj", "output", offset_halves=0),
            "mlp.up_proj": SiteSpec("mlp.gate_up_proj", "output", offset_halves=1),
            "mlp.down_proj": SiteSpec("mlp.down_proj", "output"),
        },
    ),
    # GPT-2: Conv1D layers; no gate, c_fc plays the up projection
    "gpt2": ArchSpec(
        ("transformer.h",),
        {
            "mlp.act": SiteSpec("mlp.c_proj", "input", transposed=True),
            "mlp.up_proj": SiteSpec("mlp.c_fc", "output", transposed=True),
            "mlp.down_proj": SiteSpec("mlp.c_proj", "output", transposed=True),
        },
    ),
    # GPT-NeoX / Pythia
    "gpt_neox": ArchSpec(
        ("gpt_neox.layers",),
        {
            "mlp.act": SiteSpec("mlp.dense_4h_to_h", "input"),
            "mlp.up_proj": SiteSpec("mlp.dense_h_to_4h", "output"),
            "mlp.down_proj": SiteSpec("mlp.dense_4h_to_h", "output"),
        },
    ),
    # OPT: fc1/fc2 sit directly on the decoder layer
    "opt": ArchSpec(
        ("model.decoder.layers", "decoder.layers"),
        {
            "mlp.act": SiteSpec("fc2", "input"),
            "mlp.up_proj": SiteSpec("fc1", "output"),
            "mlp.down_proj": SiteSpec("fc2", "output"),
        },
    ),
}


def unwrap(model: Any) -> Any:
    """The plain transformers model under a PEFT wrapper (or the model itself)."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def arch_spec(model: Any) -> ArchSpec:
    """The table row for ``model``'s ``config.model_type``, or a clear error."""
    model_type = getattr(getattr(unwrap(model), "config", None), "model_type", None)
    spec = ARCHITECTURES.get(model_type)
    if spec is None:
        raise RelNeuronError(
            f"architecture {model_type!r} is not in relneuron_eval.core.architectures.ARCHITECTURES",
            hint=f"supported: {sorted(ARCHITECTURES)}; add a row to that table for a new architecture",
        )
    return spec


def _get_path(root: Any, dotted: str) -> Any:
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def decoder_layers(model: Any) -> Any:
    """The ModuleList of decoder layers."""
    base = unwrap(model)
    spec = arch_spec(base)
    for path in spec.layers:
        try:
            return _get_path(base, path)
        except AttributeError:
            continue
    raise RelNeuronError(
        f"cannot find decoder layers of {type(base).__name__} at any of {list(spec.layers)}",
        hint="fix the 'layers' paths of this architecture in relneuron_eval.core.architectures",
    )


def site_module(model: Any, site: str, layer: int) -> tuple[torch.nn.Module, SiteSpec]:
    """The module that holds ``site`` in ``layer`` and how to address its units."""
    spec = arch_spec(model)
    if site not in spec.sites:
        model_type = unwrap(model).config.model_type
        raise RelNeuronError(
            f"site {site!r} does not exist in architecture {model_type!r}",
            hint=f"sites of {model_type}: {sorted(spec.sites)}",
        )
    site_spec = spec.sites[site]
    return _get_path(decoder_layers(model)[layer], site_spec.module), site_spec


@dataclass(frozen=True)
class SuffixModules:
    """A row's ``SuffixSpec`` resolved on one model (what the suffix path runs)."""

    layers: Any  # the ModuleList of decoder layers
    final_norm: Any
    rotary_emb: Any
    lm_head: Any
    spec: SuffixSpec

    def mid_norm(self, layer: int) -> torch.nn.Module:
        """The norm whose input is ``layer``'s residual stream after attention."""
        return _get_path(self.layers[layer], self.spec.mid_norm)

    def down_proj(self, layer: int) -> torch.nn.Module:
        return _get_path(self.layers[layer], self.spec.down_proj)


def suffix_modules(model: Any) -> SuffixModules | None:
    """The modules of ``model``'s ``suffix`` row entry, or None where its row has no such
    entry (or no row) or the model lacks one of them: callers then use generic paths."""
    base = unwrap(model)
    row = ARCHITECTURES.get(getattr(getattr(base, "config", None), "model_type", None))
    if row is None or row.suffix is None:
        return None
    spec = row.suffix
    try:
        layers, norm, rotary = (
            _get_path(base, path) for path in (spec.layers, spec.final_norm, spec.rotary_emb)
        )
        for layer in layers:
            _get_path(layer, spec.mid_norm)
            _get_path(layer, spec.down_proj)
    except AttributeError:
        return None
    head = base.get_output_embeddings()
    if head is None:
        return None
    return SuffixModules(layers, norm, rotary, head, spec)


def _features(module: Any, role: Role, transposed: bool) -> int:
    weight = module.weight
    out_dim, in_dim = (1, 0) if transposed else (0, 1)
    return int(weight.shape[in_dim if role == "input" else out_dim])


def model_shape(model: Any) -> ModelShape:
    """Sizes read off the modules themselves (robust to config naming differences)."""
    layers = decoder_layers(model)
    act_module, act_spec = site_module(model, "mlp.act", 0)
    down_module, down_spec = site_module(model, "mlp.down_proj", 0)
    return ModelShape(
        num_layers=len(layers),
        intermediate_size=_features(act_module, "input", act_spec.transposed),
        hidden_size=_features(down_module, "output", down_spec.transposed),
    )


# config attribute of the FFN width per model type, where it is not ``intermediate_size``
_FFN_WIDTH = {"gpt2": "n_inner", "opt": "ffn_dim"}


def config_shape(config: Any) -> ModelShape | None:
    """The shape a model of ``config`` will have, read before any weight is loaded.

    None when the config does not say it plainly (an architecture outside the table):
    ``model_shape`` on the loaded model is then the only check.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    model_type = getattr(text, "model_type", None)
    if model_type not in ARCHITECTURES:
        return None
    layers = getattr(text, "num_hidden_layers", None)
    hidden = getattr(text, "hidden_size", None)
    width = getattr(text, _FFN_WIDTH.get(model_type, "intermediate_size"), None)
    if width is None and model_type == "gpt2" and isinstance(hidden, int):
        width = 4 * hidden  # GPT-2's default n_inner
    values = (layers, width, hidden)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        return None
    return ModelShape(num_layers=layers, intermediate_size=width, hidden_size=hidden)


def model_card(model: Any, model_id: str | None = None) -> dict[str, Any]:
    """The ``model`` object of a neuron-set header for this model."""
    base = unwrap(model)
    shape = model_shape(base)
    archs = getattr(base.config, "architectures", None) or [type(base).__name__]
    return {
        "id": model_id or getattr(base.config, "_name_or_path", None) or type(base).__name__,
        "architecture": archs[0],
        "model_type": base.config.model_type,
        "num_layers": shape.num_layers,
        "intermediate_size": shape.intermediate_size,
        "hidden_size": shape.hidden_size,
    }
