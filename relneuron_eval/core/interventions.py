"""Run-time neuron interventions: fold into the weights when exact, else forward hooks.

An intervention multiplies the chosen units by a factor (``deactivate`` = 0,
``enhance``/``scale`` = ``factor``) or sets them to ``value`` (``set``). When it applies at
every position and the unit is an output row of a linear layer (bias included) or an
input column of the down projection, multiplying the weights gives the same function
at zero run-time cost, so ``strategy="auto"`` folds. Hooks are used for
``positions="last"``, per-document interventions, ``set`` without a bias to fold into,
and PEFT-wrapped models (a LoRA delta would escape a folded base weight).

Everything is undone when the ``apply_intervention`` context exits, also on an
exception: folded slices are written back from saved copies (bit-exact), hooks removed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from relneuron_eval.core.architectures import SiteSpec, model_shape, site_module, unwrap
from relneuron_eval.core.arglists import parse_layers, parse_names
from relneuron_eval.core.neuron_set import NeuronSet, load
from relneuron_eval.core.spec import (
    DEFAULT_FACTOR,
    DEFAULT_VALUE,
    MODES,
    POSITIONS,
    InterventionSpec,
    InvalidSetting,
    parse_setting,
)
from relneuron_eval.errors import RelNeuronError

__all__ = [  # MODES and POSITIONS are re-exported from core.spec
    "MODES",
    "POSITIONS",
    "HookState",
    "Intervention",
    "RowTable",
    "Strategy",
    "UnitEdit",
    "UnitKey",
    "apply_intervention",
    "can_fold",
    "check_model",
    "edits_for",
    "install_hooks",
    "multiplier_for",
    "prompt_only",
]

Strategy = Literal["auto", "fold", "hook"]
UnitKey = tuple[str, int]  # (site, layer)


@dataclass(frozen=True)
class UnitEdit:
    """What to do to some units of one site in one layer."""

    indices: tuple[int, ...]
    multiplier: float | None  # None means "set to value"
    value: float = 0.0


@dataclass
class Intervention:
    """A selected set of units plus what to do to them and where in the sequence."""

    selection: NeuronSet
    mode: str = "deactivate"
    factor: float = DEFAULT_FACTOR
    value: float = DEFAULT_VALUE
    positions: str = "all"
    description: dict[str, Any] = field(default_factory=dict)
    spec: InterventionSpec | None = None  # the settings it was built from

    @classmethod
    def build(
        cls, neuron_set: str | Path | NeuronSet, groups: Any = "*", **settings: Any
    ) -> Intervention:
        """The Python API: ``settings`` are :class:`InterventionSpec` fields (``mode=``,
        ``top_k=``, ``layers=[0, 2]`` or ``"0|2"``, ...), validated as model args are."""
        loaded = neuron_set if isinstance(neuron_set, NeuronSet) else None
        source = str(loaded.source or "(in memory)") if loaded is not None else neuron_set
        spec = InterventionSpec.from_model_args(
            {**settings, "neuron_set": source, "groups": groups}
        )
        return cls.from_spec(spec, loaded)

    @classmethod
    def from_spec(cls, spec: InterventionSpec, neuron_set: NeuronSet | None = None) -> Intervention:
        """Load and select the neurons of ``spec`` (validated first), draw the control.

        Every entry point comes through here. ``layers`` is checked against the set's
        layer count before any range is expanded. ``neuron_set``: the set, if already loaded.
        """
        spec.validate()
        if spec.is_base:
            raise InvalidSetting("neuron_set", "an intervention needs a neuron_set=")
        full = neuron_set if neuron_set is not None else load(str(spec.neuron_set))
        if len(full) == 0:
            raise RelNeuronError(
                "the neuron set has no neurons (only a header)",
                path=full.source,
                hint="the discovery that wrote it found none; re-run it or pick another set",
            )
        layer_list = parse_layers(spec.layers, num_layers=full.shape.num_layers)
        selection = full.select(
            spec.groups,
            top_k=spec.top_k,
            fraction=spec.fraction,
            layers=layer_list,
            sites=parse_names(spec.sites),
        )
        if len(selection) == 0:
            raise RelNeuronError(
                "the selection is empty: no neuron matches these groups/layers/sites",
                path=full.source,
                hint=f"layers with neurons of these groups: {_layers_of(full, spec.groups)}",
            )
        if spec.control:
            selection = selection.random_control(spec.effective_seed)
        enhance = spec.mode in ("enhance", "scale")
        return cls(
            selection=selection,
            mode=spec.mode,
            factor=spec.effective_factor,
            value=spec.effective_value,
            positions=spec.positions,
            spec=spec,
            description={
                "neuron_set": full.source,
                "groups": selection.header.get("selection", {}).get("groups"),
                "mode": spec.mode,
                "factor": spec.effective_factor if enhance else None,
                "value": spec.effective_value if spec.mode == "set" else None,
                "top_k": spec.top_k,
                "fraction": spec.fraction,
                "layers": layer_list,
                "positions": spec.positions,
                "control": spec.control,
                "seed": spec.effective_seed if spec.control else None,
                "num_units": len(selection.units()),
                "units_per_layer": selection.units_per_layer(),
                "neuron_set_sha256": full.file_sha256,  # of the file's bytes
            },
        )

    @property
    def multiplier(self) -> float | None:
        return multiplier_for(self.mode, self.factor)

    def units(self) -> dict[UnitKey, list[int]]:
        return self.selection.by_site_layer()

    def edits(self) -> dict[UnitKey, UnitEdit]:
        return edits_for(self.selection, self.mode, self.factor, self.value)


def _layers_of(neuron_set: NeuronSet, groups: Any) -> str:
    """Compact list of the layers that hold neurons of ``groups`` (for error hints)."""
    try:
        wanted = set(neuron_set._resolve_groups(groups))
    except RelNeuronError:
        return "?"
    layers = sorted({n.layer for n in neuron_set.neurons if n.group in wanted})
    return "none" if not layers else "|".join(map(str, layers))


def multiplier_for(mode: str, factor: float) -> float | None:
    parse_setting("mode", mode)
    return {"deactivate": 0.0, "enhance": factor, "scale": factor, "set": None}[mode]


def edits_for(
    selection: NeuronSet, mode: str, factor: float, value: float
) -> dict[UnitKey, UnitEdit]:
    mult = multiplier_for(mode, factor)
    return {
        key: UnitEdit(tuple(indices), mult, value)
        for key, indices in selection.by_site_layer().items()
    }


# =========================================================================== folding
def _param_slices(module: torch.nn.Module, spec: SiteSpec) -> list[tuple[torch.Tensor, int]]:
    """(parameter, dim) pairs whose slices along ``dim`` are the site's units."""
    weight = module.weight
    if spec.role == "output":
        slices = [(weight, 1 if spec.transposed else 0)]
        bias = getattr(module, "bias", None)
        if bias is not None:
            slices.append((bias, 0))
        return slices
    return [(weight, 0 if spec.transposed else 1)]


def _unit_indices(model: Any, spec: SiteSpec, indices: tuple[int, ...]) -> list[int]:
    if spec.offset_halves:
        offset = spec.offset_halves * model_shape(model).intermediate_size
        return [i + offset for i in indices]
    return list(indices)


def can_fold(module: torch.nn.Module, spec: SiteSpec, edit: UnitEdit) -> bool:
    """Exact folding needs a multiplier, or for ``set`` a bias on an output site."""
    if edit.multiplier is not None:
        return True
    return spec.role == "output" and getattr(module, "bias", None) is not None


class _FoldRecord:
    """Saved slices, restored in reverse order so overlapping edits undo exactly."""

    def __init__(self) -> None:
        self._saved: list[tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def apply(self, param: torch.Tensor, dim: int, idx: list[int], edit: UnitEdit, is_bias: bool):
        index = torch.tensor(idx, dtype=torch.long, device=param.device)
        original = param.data.index_select(dim, index).clone()
        self._saved.append((param, dim, index, original))
        if edit.multiplier is not None:
            param.data.index_copy_(dim, index, original * edit.multiplier)
        elif is_bias:
            param.data.index_fill_(dim, index, edit.value)
        else:
            param.data.index_fill_(dim, index, 0.0)

    @torch.no_grad()
    def restore(self) -> None:
        while self._saved:
            param, dim, index, original = self._saved.pop()
            param.data.index_copy_(dim, index, original)


# ============================================================================= hooks
class HookState:
    """Mutable state the hooks read: which edits are active, and where "last" is.

    ``active`` maps (site, layer) to the edit to apply (missing key: leave the unit
    alone). Per-document interventions set ``group_edits`` instead: every group's edits
    at once, and before each forward ``row_groups``, each batch row's group, so one
    batch mixes documents of all groups (rows with no group get no edit).
    ``positions="last"`` means the last token of the *prompt*: the position whose output
    predicts the first answer token. ``last_positions`` is a per-row LongTensor of that
    position (right-padded loglikelihood batches), or None when it is the last column
    (left-padded generation prompts). ``skip`` is set during generation's decoding
    steps, which see only generated tokens.
    """

    def __init__(self, positions: str = "all") -> None:
        self.positions = positions
        self.active: dict[UnitKey, UnitEdit] = {}
        self.last_positions: torch.Tensor | None = None
        self.skip = False
        # per-row mode (per_doc): group_edits[g] is group g's edits (0: no group, no
        # edits) and row_groups each batch row's g; None rows: leave the batch alone
        self.group_edits: list[dict[UnitKey, UnitEdit]] | None = None
        self.row_groups: torch.Tensor | None = None
        self._tables: dict[tuple[Any, ...], RowTable | None] = {}
        # (edit, vector) by id(edit): the entry keeps the edit alive, so per_doc's freed
        # edits cannot hand their id (and vector) to the next bucket's edits
        self._vectors: dict[tuple[Any, ...], tuple[UnitEdit, torch.Tensor]] = {}

    def _scale_vector(self, key: UnitKey, edit: UnitEdit, x: torch.Tensor, offset: int):
        cache_key = (key, x.device, x.dtype, offset, id(edit))
        entry = self._vectors.get(cache_key)
        if entry is None or entry[0] is not edit:
            vec = torch.ones(x.shape[-1], dtype=x.dtype, device=x.device)
            idx = torch.tensor([i + offset for i in edit.indices], device=x.device)
            vec[idx] = edit.multiplier
            entry = self._vectors[cache_key] = (edit, vec)
        return entry[1]

    def transform(self, key: UnitKey, x: torch.Tensor, offset: int) -> torch.Tensor:
        if self.skip:
            return x
        if self.group_edits is not None:
            return self._transform_rows(key, x, offset)
        edit = self.active.get(key)
        if edit is None:
            return x
        return self._at_positions(x, lambda cells: self._edit(key, edit, cells, offset))

    def _at_positions(self, x: torch.Tensor, edit: Any) -> torch.Tensor:
        """``edit`` applied to every position, or to each row's last prompt position."""
        if self.positions == "all":
            return edit(x)
        out = x.clone()
        rows = torch.arange(x.shape[0], device=x.device)
        if self.last_positions is None:
            cols = torch.full_like(rows, x.shape[1] - 1)
        else:
            cols = self.last_positions.to(x.device)
        out[rows, cols] = edit(x[rows, cols])
        return out

    def _transform_rows(self, key: UnitKey, x: torch.Tensor, offset: int) -> torch.Tensor:
        """Per-row edits: row r gets group ``row_groups[r]``'s, all in one batch."""
        table = self._table(key, x, offset)
        if self.row_groups is None or table is None:
            return x
        groups = self.row_groups.to(x.device)
        if x.shape[0] != groups.shape[0]:
            if groups.shape[0] == 0 or x.shape[0] % groups.shape[0]:
                raise RelNeuronError(
                    f"per_doc: a batch of {x.shape[0]} rows for {groups.shape[0]} documents",
                    hint="report this: the row-to-document mapping lost track of the batch",
                )
            groups = groups.repeat_interleave(x.shape[0] // groups.shape[0])  # beams
        return self._at_positions(x, lambda cells: table.apply(cells, groups))

    def _table(self, key: UnitKey, x: torch.Tensor, offset: int) -> RowTable | None:
        cache_key = (key, x.device, x.dtype, x.shape[-1], offset)
        if cache_key not in self._tables:
            edits = [group.get(key) for group in self.group_edits or []]
            self._tables[cache_key] = RowTable.build(edits, x, offset)
        return self._tables[cache_key]

    def _edit(self, key: UnitKey, edit: UnitEdit, x: torch.Tensor, offset: int) -> torch.Tensor:
        if edit.multiplier is not None:
            return x * self._scale_vector(key, edit, x, offset)
        idx = torch.tensor([i + offset for i in edit.indices], device=x.device)
        return x.index_fill(-1, idx, edit.value)


@dataclass(frozen=True)
class RowTable:
    """One site's per-group multipliers (and ``set`` masks), row 0 the identity."""

    scale: torch.Tensor | None  # [groups, units]
    mask: torch.Tensor | None  # [groups, units] bool: units set to ``value``
    value: float

    @classmethod
    def build(cls, edits: list[UnitEdit | None], x: torch.Tensor, offset: int) -> RowTable | None:
        if not any(edits):
            return None
        scale = torch.ones(len(edits), x.shape[-1], dtype=x.dtype, device=x.device)
        mask = torch.zeros(len(edits), x.shape[-1], dtype=torch.bool, device=x.device)
        value = 0.0
        for g, edit in enumerate(edits):
            if edit is None:
                continue
            idx = torch.tensor([i + offset for i in edit.indices], device=x.device)
            if edit.multiplier is None:
                mask[g, idx], value = True, edit.value
            else:
                scale[g, idx] = edit.multiplier
        return cls(scale if bool((scale != 1).any()) else None, mask if mask.any() else None, value)

    def apply(self, x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """``x`` ([rows, ..., units]) edited row by row, bit-equal to one group's edit."""
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        if self.scale is not None:
            x = x * self.scale[groups].view(shape)
        if self.mask is not None:
            x = x.masked_fill(self.mask[groups].view(shape), self.value)
        return x


def _output_hook(state: HookState, key: UnitKey, offset: int):
    def hook(module, inputs, output):
        if isinstance(output, tuple):
            return (state.transform(key, output[0], offset), *output[1:])
        return state.transform(key, output, offset)

    return hook


def _input_hook(state: HookState, key: UnitKey, offset: int):
    def hook(module, args):
        if not args:
            return None
        return (state.transform(key, args[0], offset), *args[1:])

    return hook


def install_hooks(model: Any, keys: list[UnitKey], state: HookState) -> list[Any]:
    """Register one hook per (site, layer) in ``keys``; returns the removable handles."""
    handles = []
    shape = model_shape(model)
    try:
        for site, layer in keys:
            module, spec = site_module(model, site, layer)
            offset = spec.offset_halves * shape.intermediate_size
            if spec.role == "output":
                handles.append(
                    module.register_forward_hook(_output_hook(state, (site, layer), offset))
                )
            else:
                handles.append(
                    module.register_forward_pre_hook(_input_hook(state, (site, layer), offset))
                )
    except BaseException:
        for handle in handles:
            handle.remove()
        raise
    return handles


@contextlib.contextmanager
def prompt_only(model: Any, state: HookState) -> Iterator[None]:
    """Inside ``generate``: apply edits in the first forward (the prompt) only.

    Each decoding step is one more forward call of the model; a pre-hook on the model
    counts them and makes the site hooks skip every call after the first.
    """
    calls = 0

    def count(module, args, kwargs):
        nonlocal calls
        calls += 1
        state.skip = calls > 1

    handle = unwrap(model).register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
        state.skip = False


def _is_peft(model: Any) -> bool:
    return hasattr(model, "get_base_model") or hasattr(model, "peft_config")


def check_model(model: Any, selection: NeuronSet) -> None:
    """The set must match the model's shape and only name sites the architecture has."""
    from relneuron_eval.core.embedded import alias_of

    shape = model_shape(model)
    path = getattr(unwrap(model).config, "_name_or_path", None)
    name = repr(alias_of(path) or path) if path else "the model"  # not the cache folder
    selection.check_shape(shape, model_name=name)
    for site, layer in selection.by_site_layer():
        site_module(model, site, layer)


@contextlib.contextmanager
def apply_intervention(
    model: Any, intervention: Intervention, strategy: Strategy = "auto"
) -> Iterator[HookState]:
    """Apply ``intervention`` to ``model`` for the duration of the ``with`` block."""
    parse_setting("strategy", strategy)
    check_model(model, intervention.selection)
    edits = intervention.edits()
    state = HookState(intervention.positions)
    plan_fold: list[tuple[UnitKey, torch.nn.Module, SiteSpec, UnitEdit]] = []
    plan_hook: dict[UnitKey, UnitEdit] = {}
    for key, edit in edits.items():
        module, spec = site_module(model, *key)
        foldable = (
            intervention.positions == "all" and not _is_peft(model) and can_fold(module, spec, edit)
        )
        if strategy == "fold" and not foldable:
            raise RelNeuronError(
                f"cannot fold {intervention.mode} at {key[0]} (positions={intervention.positions})"
                " into the weights exactly",
                hint="use strategy=hook (or positions=all with a multiplying mode)",
            )
        if foldable and strategy != "hook":
            plan_fold.append((key, module, spec, edit))
        else:
            plan_hook[key] = edit
    record = _FoldRecord()
    handles: list[Any] = []
    try:
        for _key, module, spec, edit in plan_fold:
            idx = _unit_indices(model, spec, edit.indices)
            for param, dim in _param_slices(module, spec):
                record.apply(param, dim, idx, edit, is_bias=param.dim() == 1)
        if plan_hook:
            state.active = plan_hook
            handles = install_hooks(model, sorted(plan_hook), state)
        yield state
    finally:
        for handle in handles:
            handle.remove()
        record.restore()
