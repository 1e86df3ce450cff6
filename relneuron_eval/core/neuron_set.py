"""Neuron-set file format, version 1: load, validate, save, select, combine, control.

A neuron set is JSON Lines (optionally gzip-compressed). Line 1 is a header::

    {"format": "relneuron-neuron-set", "version": 1,
     "model": {"id": ..., "architecture": ..., "num_layers": 30,
               "intermediate_size": 1536, "hidden_size": 576},
     "method": {"name": ..., "params": {...}, "data": ..., "package_version": ...}}

and every other line is one neuron::

    {"group": "company_hq", "site": "mlp.act", "layer": 12, "index": 734, "score": 0.91}

This module is pure Python + numpy-free on purpose: loading and validating a set never
imports torch, so the CLI can reject a bad file before any model is loaded.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relneuron_eval.core.arglists import parse_names
from relneuron_eval.errors import RelNeuronError, clip, clip_list

FORMAT_NAME = "relneuron-neuron-set"
FORMAT_VERSION = 1
SITES: tuple[str, ...] = ("mlp.act", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
REQUIRED_MODEL_FIELDS = ("id", "architecture", "num_layers", "intermediate_size", "hidden_size")
NEURON_FIELDS = ("group", "site", "layer", "index", "score")
FORMAT_HINT = "see 'Neuron-set format' in the README"


@dataclass(frozen=True, order=True)
class Neuron:
    """One unit of one group. ``(group, site, layer, index)`` is unique within a set."""

    group: str
    site: str
    layer: int
    index: int
    score: float = 0.0

    @property
    def unit(self) -> tuple[str, int, int]:
        """The model unit this neuron names, independent of its group."""
        return (self.site, self.layer, self.index)


@dataclass(frozen=True)
class ModelShape:
    """The sizes a neuron set must agree with."""

    num_layers: int
    intermediate_size: int
    hidden_size: int

    def site_size(self, site: str) -> int:
        """Number of units at ``site`` in one layer."""
        return self.hidden_size if site == "mlp.down_proj" else self.intermediate_size

    def units_per_layer(self, sites: Iterable[str] = SITES) -> int:
        return sum(self.site_size(s) for s in sites)


@dataclass
class NeuronSet:
    """An ordered collection of neurons with the header that says where they came from."""

    header: dict[str, Any]
    neurons: list[Neuron] = field(default_factory=list)
    source: str | None = None
    # SHA-256 of the file's bytes as read by ``load`` (None for sets built in memory or
    # derived by select/union/control: those are not that file).
    file_sha256: str | None = None

    @property
    def model(self) -> dict[str, Any]:
        return self.header.get("model", {})

    @property
    def method(self) -> dict[str, Any]:
        return self.header.get("method", {})

    @property
    def shape(self) -> ModelShape:
        m = self.model
        return ModelShape(int(m["num_layers"]), int(m["intermediate_size"]), int(m["hidden_size"]))

    def __len__(self) -> int:
        return len(self.neurons)

    def __iter__(self):
        return iter(self.neurons)

    def groups(self) -> list[str]:
        """Group names in order of first appearance."""
        return list(dict.fromkeys(n.group for n in self.neurons))

    def units(self) -> set[tuple[str, int, int]]:
        """Distinct model units, whatever group names them."""
        return {n.unit for n in self.neurons}

    def by_site_layer(self) -> dict[tuple[str, int], list[int]]:
        """Sorted, de-duplicated unit indices per ``(site, layer)``: what an intervention needs."""
        out: dict[tuple[str, int], set[int]] = defaultdict(set)
        for n in self.neurons:
            out[(n.site, n.layer)].add(n.index)
        return {k: sorted(v) for k, v in sorted(out.items())}

    def units_per_layer(self) -> dict[str, int]:
        """Distinct units per layer (string keys, as they appear in JSON results)."""
        counts = Counter(layer for _site, layer, _index in self.units())
        return {str(layer): counts[layer] for layer in sorted(counts)}

    def content_hash(self) -> str:
        """SHA-256 of the canonical content (header + neurons), stable across gzip/whitespace."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.header, sort_keys=True).encode())
        for n in self.neurons:
            digest.update(
                f"\n{n.group}\t{n.site}\t{n.layer}\t{n.index}\t{float(n.score)!r}".encode()
            )
        return digest.hexdigest()

    def units_hash(self, *, by_group: bool = False) -> str:
        """SHA-256 of the distinct units applied, whatever selected them.

        The same units give the same hash, whether a whole group or its ``top_k`` chose
        them (``content_hash`` also covers the header, which records how they were
        chosen). ``by_group``: per-document runs, where which group holds a unit matters.
        """
        keys = {(n.group if by_group else "", n.site, n.layer, n.index) for n in self.neurons}
        digest = hashlib.sha256(b"relneuron-units-v1")
        for group, site, layer, index in sorted(keys):
            digest.update(f"\n{group}\t{site}\t{layer}\t{index}".encode())
        return digest.hexdigest()

    def with_neurons(self, neurons: Iterable[Neuron], **header_updates: Any) -> NeuronSet:
        header = {**self.header, **header_updates}
        return NeuronSet(header=header, neurons=list(neurons), source=self.source)

    # --------------------------------------------------------------- selection
    def select(
        self,
        groups: str | Sequence[str] | None = None,
        *,
        top_k: int | None = None,
        fraction: float | None = None,
        layers: Iterable[int] | None = None,
        sites: Iterable[str] | None = None,
    ) -> NeuronSet:
        """Pick groups, then layers/sites, then the best ``top_k`` or ``fraction`` per group.

        ``groups`` is a list, a ``|``- or ``+``-separated string, ``"*"`` or None (all groups).
        Ties in score are broken by ``(layer, site, index)`` so selection is deterministic.
        """
        wanted = self._resolve_groups(groups)
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1
        ):
            raise RelNeuronError(
                f"top_k must be a positive integer, got {top_k!r}", hint="e.g. top_k=3000"
            )
        if fraction is not None and (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not 0.0 < float(fraction) <= 1.0
        ):
            raise RelNeuronError(
                f"fraction must be in (0, 1], got {fraction!r}", hint="e.g. fraction=0.1"
            )
        if top_k is not None and fraction is not None:
            raise RelNeuronError("give either top_k or fraction, not both")
        layer_set = None if layers is None else set(layers)
        site_set = None if sites is None else set(sites)
        if site_set is not None and not site_set <= set(SITES):
            raise RelNeuronError(
                f"unknown site(s) {sorted(site_set - set(SITES))}",
                hint=f"known sites: {list(SITES)}",
            )
        per_group: dict[str, list[Neuron]] = defaultdict(list)
        for n in self.neurons:
            if n.group not in wanted:
                continue
            if layer_set is not None and n.layer not in layer_set:
                continue
            if site_set is not None and n.site not in site_set:
                continue
            per_group[n.group].append(n)
        chosen: list[Neuron] = []
        for group in wanted:
            members = sorted(
                per_group.get(group, []), key=lambda n: (-n.score, n.layer, n.site, n.index)
            )
            if top_k is not None:
                members = members[:top_k]
            elif fraction is not None:
                members = (
                    members[: max(1, round(len(members) * float(fraction)))] if members else []
                )
            chosen.extend(members)
        return self.with_neurons(
            chosen,
            selection={
                "groups": list(wanted),
                "top_k": top_k,
                "fraction": fraction,
                "layers": None if layer_set is None else sorted(layer_set),
                "sites": None if site_set is None else sorted(site_set),
            },
        )

    def _resolve_groups(self, groups: str | Sequence[str] | None) -> list[str]:
        available = self.groups()
        if groups is None or groups == "*" or groups == ["*"]:
            return available
        if isinstance(groups, str):
            names = [groups] if groups in set(available) else parse_names(groups) or []
        else:
            names = [g for g in groups if g]
        if not names:
            raise RelNeuronError(
                "no group names given", hint="use groups=<name>|<name> or groups=*"
            )
        missing = [g for g in names if g not in set(available)]
        if missing:
            if not available:
                raise RelNeuronError(
                    "the neuron set has no neurons (only a header)", path=self.source
                )
            raise RelNeuronError(
                f"group(s) {[clip(g) for g in missing[:5]]}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                + " not in the neuron set",
                path=self.source,
                hint=f"groups in this file: {clip_list(available, 40, 60)}",
            )
        return list(dict.fromkeys(names))

    # ------------------------------------------------------------- combination
    def union(self, other: NeuronSet) -> NeuronSet:
        """All neurons of both sets; a neuron in both keeps the higher score."""
        best: dict[tuple[str, str, int, int], Neuron] = {}
        for n in [*self.neurons, *other.neurons]:
            key = (n.group, n.site, n.layer, n.index)
            if key not in best or n.score > best[key].score:
                best[key] = n
        return self.with_neurons(best.values())

    def intersection(self, other: NeuronSet) -> NeuronSet:
        """Neurons (by group and unit) present in both sets, with this set's scores."""
        keys = {(n.group, n.site, n.layer, n.index) for n in other.neurons}
        return self.with_neurons(
            n for n in self.neurons if (n.group, n.site, n.layer, n.index) in keys
        )

    def overlap_counts(self, groups: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """Number of shared units for every pair of groups (diagonal: the group's size)."""
        names = self._resolve_groups(groups)
        units = {g: set() for g in names}
        for n in self.neurons:
            if n.group in units:
                units[n.group].add(n.unit)
        return {a: {b: len(units[a] & units[b]) for b in names} for a in names}

    # ---------------------------------------------------------------- controls
    def random_control(self, seed: int = 0, *, shape: ModelShape | None = None) -> NeuronSet:
        """A seeded random set with the same number of units per (group, layer, site).

        Units of the original selection are excluded, so the control shares no unit with
        what it controls for. The control keeps the group names, so it is a drop-in
        replacement in any command that takes ``groups=``.
        """
        shape = shape or self.shape
        rng = random.Random(f"relneuron-control:{seed}")
        taken = self.units()
        counts: Counter[tuple[str, str, int]] = Counter()
        for n in self.neurons:
            counts[(n.group, n.site, n.layer)] += 1
        drawn: list[Neuron] = []
        used: dict[tuple[str, int], set[int]] = defaultdict(set)
        for site, layer, index in taken:
            used[(site, layer)].add(index)
        for (group, site, layer), count in sorted(counts.items()):
            pool = _FreeIndices(shape.site_size(site), used[(site, layer)])
            if count > len(pool):
                raise RelNeuronError(
                    f"cannot draw {count} random units at {site} layer {layer}: only {len(pool)} free",
                    hint="the selection covers almost the whole layer; use a smaller top_k",
                )
            for index in sorted(rng.sample(pool, count)):
                used[(site, layer)].add(index)
                drawn.append(Neuron(group, site, layer, index, 0.0))
        return self.with_neurons(
            drawn, control={"kind": "random", "seed": seed, "of": self.content_hash()[:12]}
        )

    def check_shape(self, shape: ModelShape, *, model_name: str = "the model") -> None:
        """Raise if this set was made for a model of another shape."""
        mine = self.shape
        problems = [
            f"{name} {getattr(mine, name)} in the file vs {getattr(shape, name)} in {model_name}"
            for name in ("num_layers", "intermediate_size", "hidden_size")
            if getattr(mine, name) != getattr(shape, name)
        ]
        if problems:
            raise RelNeuronError(
                "neuron set was made for a model of another shape: " + "; ".join(problems),
                path=self.source,
                line=1,
                hint=f"it was made for {self.model.get('id')!r}; use a set made for {model_name}",
            )

    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        return load(path)

    def save(self, path: str | Path) -> Path:
        return save(self, path)

    def save_unless_same(self, path: str | Path) -> str:
        """Write unless the same content is there (parallel writers); the content hash."""
        digest = self.content_hash()
        try:
            if Path(path).is_file() and load(path).content_hash() == digest:
                return digest
        except (RelNeuronError, OSError):
            pass
        save(self, path)
        return digest


class _FreeIndices(Sequence[int]):
    """``[i for i in range(size) if i not in taken]`` without building it.

    ``random.sample`` only needs ``len`` and indexing, and draws exactly what it would
    from the list, so controls stay identical while a header claiming a billion units
    per layer costs nothing (it is refused against the model afterwards).
    """

    def __init__(self, size: int, taken: set[int]) -> None:
        self._size = size
        taken_sorted = sorted(i for i in taken if 0 <= i < size)
        # the j-th free index is j + (number of taken indices t with t - rank(t) <= j)
        self._shifted = [t - rank for rank, t in enumerate(taken_sorted)]

    def __len__(self) -> int:
        return self._size - len(self._shifted)

    def __getitem__(self, j):  # type: ignore[override]
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(len(self)))]
        if j < 0:
            j += len(self)
        if not 0 <= j < len(self):
            raise IndexError(j)
        return j + bisect.bisect_right(self._shifted, j)


# the file format's functions live in neuron_set_io (it needs the classes above)
from relneuron_eval.core.neuron_set_io import (  # noqa: E402
    dumps_lines,
    load,
    make_header,
    save,
)

__all__ = [
    "FORMAT_HINT",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SITES",
    "ModelShape",
    "Neuron",
    "NeuronSet",
    "dumps_lines",
    "load",
    "make_header",
    "save",
]
