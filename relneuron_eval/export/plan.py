"""Where an exported intervention lands: (site, layer) edits located on named modules.

``relneuron export`` plans on a weightless (meta-device) model: :func:`plan_ia3` merges the
edits into one IA³ vector per module, :func:`plan_fold` checks that each edit folds into the
weights exactly. Both refuse what their format cannot express, before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from relneuron_eval.errors import RelNeuronError

if TYPE_CHECKING:
    from relneuron_eval.core.interventions import Intervention


@dataclass(frozen=True)
class SiteEdit:
    """One (site, layer) of the intervention, located on a named module."""

    site: str
    layer: int
    module: str  # dotted path from the model root
    role: str  # "input" or "output"
    indices: tuple[int, ...]  # unit indices in the module's features (offset applied)
    multiplier: float | None


def site_edits(model: Any, intervention: Intervention) -> list[SiteEdit]:
    """Where every (site, layer) of the intervention lives, by module name."""
    from relneuron_eval.core.architectures import model_shape, site_module

    names = {id(module): name for name, module in model.named_modules()}
    shape = model_shape(model)
    out = []
    for (site, layer), edit in sorted(intervention.edits().items()):
        module, spec = site_module(model, site, layer)
        offset = spec.offset_halves * shape.intermediate_size
        out.append(
            SiteEdit(
                site=site,
                layer=layer,
                module=names[id(module)],
                role=spec.role,
                indices=tuple(i + offset for i in edit.indices),
                multiplier=edit.multiplier,
            )
        )
    return out


@dataclass(frozen=True)
class IA3Module:
    """One IA³ vector: multiply ``role`` features of ``module`` by ``scales``."""

    module: str
    role: str
    size: int
    scales: dict[int, float]  # feature index -> multiplier (all others 1)
    sites: tuple[str, ...]
    transposed: bool  # GPT-2 Conv1D


def _features(module: Any, role: str, transposed: bool) -> int:
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    return int(module.weight.shape[in_dim if role == "input" else out_dim])


def plan_ia3(model: Any, intervention: Intervention) -> list[IA3Module]:
    """One IA³ vector per module; refuse a module edited at both its input and output."""
    from relneuron_eval.core.architectures import site_module

    by_module: dict[str, dict[str, Any]] = {}
    for edit in site_edits(model, intervention):
        assert edit.multiplier is not None  # check_supported refused mode=set
        module, spec = site_module(model, edit.site, edit.layer)
        entry = by_module.setdefault(
            edit.module,
            {
                "role": edit.role,
                "size": _features(module, edit.role, spec.transposed),
                "scales": {},
                "sites": [],
                "transposed": spec.transposed,
            },
        )
        if entry["role"] != edit.role:
            first = ", ".join(entry["sites"])
            raise RelNeuronError(
                f"layer {edit.layer}: {first} and {edit.site} both live on module "
                f"{edit.module} (one on its input, one on its output), and an IA3 adapter "
                "holds one vector per module, on its input or its output",
                hint="export this intervention with `relneuron export model` (folded weights), "
                "or export those sites separately (--sites / --layers)",
            )
        for index in edit.indices:
            # Overlapping sites on one module compose, as stacked hooks do.
            entry["scales"][index] = entry["scales"].get(index, 1.0) * edit.multiplier
        entry["sites"].append(edit.site)
    return [
        IA3Module(
            module=name,
            role=entry["role"],
            size=entry["size"],
            scales=dict(sorted(entry["scales"].items())),
            sites=tuple(entry["sites"]),
            transposed=entry["transposed"],
        )
        for name, entry in sorted(by_module.items())
    ]


def plan_fold(model: Any, intervention: Intervention) -> list[SiteEdit]:
    """The site edits, after checking that each folds into the weights exactly."""
    from relneuron_eval.core.architectures import site_module
    from relneuron_eval.core.interventions import can_fold

    edits = site_edits(model, intervention)
    raw = intervention.edits()
    for edit in edits:
        module, spec = site_module(model, edit.site, edit.layer)
        if not can_fold(module, spec, raw[(edit.site, edit.layer)]):
            raise RelNeuronError(
                f"mode=set at {edit.site} (layer {edit.layer}, module {edit.module}) cannot be "
                "folded into the weights: setting a unit to a constant needs a bias on the "
                "module whose output units are set, and this site has none",
                hint="use deactivate/enhance/scale, or evaluate it with --model relneuron-hf",
            )
    return edits
