"""Neuron-set files, format version 1: read with full validation, write atomically.

Split from ``neuron_set`` (the in-memory set); both stay pure Python, so a bad file is
refused before torch is imported. ``load`` keeps the last few parsed files (keyed by path
and the SHA-256 of their bytes): a report loads the same 90,000-line set for each of its
dozens of evaluations, 1.4 s of validation each.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import math
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from relneuron_eval.atomic import atomic_write
from relneuron_eval.core.arglists import MAX_LAYERS
from relneuron_eval.core.neuron_set import (
    FORMAT_HINT,
    FORMAT_NAME,
    FORMAT_VERSION,
    NEURON_FIELDS,
    REQUIRED_MODEL_FIELDS,
    SITES,
    ModelShape,
    Neuron,
    NeuronSet,
)
from relneuron_eval.errors import RelNeuronError, clip
from relneuron_eval.files import read_bytes
from relneuron_eval.jsonl import parse_value

_PARSED: OrderedDict[tuple[str, str], tuple[dict[str, Any], tuple[Neuron, ...]]] = OrderedDict()
_PARSED_KEEP = 4


def make_header(
    *,
    model: dict[str, Any],
    method: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """A version-1 header; ``model`` must hold the fields in ``REQUIRED_MODEL_FIELDS``."""
    from relneuron_eval import __version__

    method = {"package_version": __version__, **method}
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "model": model, "method": method}
    header.update(extra)
    _check_header(header, path=None)
    return header


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_header(header: Any, path: str | None) -> None:
    hint = FORMAT_HINT
    if not isinstance(header, dict):
        raise RelNeuronError("line 1 must be the header object", path=path, line=1, hint=hint)
    if header.get("format") != FORMAT_NAME:
        raise RelNeuronError(
            f'missing or wrong header: "format" must be "{FORMAT_NAME}", got {header.get("format")!r}',
            path=path,
            line=1,
            hint=hint,
        )
    version = header.get("version")
    if version != FORMAT_VERSION:
        raise RelNeuronError(
            f"unknown format version {version!r}; this relneuron-eval reads version {FORMAT_VERSION}",
            path=path,
            line=1,
            hint="upgrade relneuron-eval or re-save the set with this version",
        )
    model = header.get("model")
    if not isinstance(model, dict):
        raise RelNeuronError('header has no "model" object', path=path, line=1, hint=hint)
    missing = [f for f in REQUIRED_MODEL_FIELDS if f not in model]
    if missing:
        raise RelNeuronError(f"header model lacks {missing}", path=path, line=1, hint=hint)
    for name in ("num_layers", "intermediate_size", "hidden_size"):
        if not _is_int(model[name]) or model[name] < 1:
            raise RelNeuronError(
                f"header model.{name} must be a positive integer, got {clip(model[name])}",
                path=path,
                line=1,
            )
    if model["num_layers"] > MAX_LAYERS:  # layers=0-N would build a list that long
        raise RelNeuronError(
            f"header model.num_layers {clip(model['num_layers'])} is more than any model has "
            f"(at most {MAX_LAYERS:,})",
            path=path,
            line=1,
            hint="the header is damaged; re-create the set",
        )
    if not isinstance(header.get("method"), dict):
        raise RelNeuronError('header has no "method" object', path=path, line=1, hint=hint)


def _check_neuron(obj: Any, shape: ModelShape, path: str, line: int) -> Neuron:
    if not isinstance(obj, dict):
        raise RelNeuronError(
            "a neuron line must be a JSON object", path=path, line=line, hint=FORMAT_HINT
        )
    missing = [f for f in NEURON_FIELDS if f not in obj]
    if missing:
        raise RelNeuronError(
            f"neuron line lacks field(s) {missing}", path=path, line=line, hint=FORMAT_HINT
        )
    unknown = [f for f in obj if f not in NEURON_FIELDS]
    if unknown:
        raise RelNeuronError(
            f"unknown field(s) {unknown[:5]} in a neuron line",
            path=path,
            line=line,
            hint=f"a neuron line has exactly the fields {list(NEURON_FIELDS)}; "
            "put anything else in the header",
        )
    group, site, layer, index, score = (obj[f] for f in NEURON_FIELDS)
    if not isinstance(group, str) or not group:
        raise RelNeuronError(
            f"group must be a non-empty string, got {group!r}", path=path, line=line
        )
    if site not in SITES:
        raise RelNeuronError(
            f"unknown site {site!r}", path=path, line=line, hint=f"known sites: {list(SITES)}"
        )
    if not _is_int(layer):
        raise RelNeuronError(f"layer must be an integer, got {layer!r}", path=path, line=line)
    if not 0 <= layer < shape.num_layers:
        raise RelNeuronError(
            f"layer {layer} out of range [0, {shape.num_layers - 1}]", path=path, line=line
        )
    if not _is_int(index):
        raise RelNeuronError(f"index must be an integer, got {index!r}", path=path, line=line)
    size = shape.site_size(site)
    if not 0 <= index < size:
        raise RelNeuronError(
            f"index {index} out of range [0, {size - 1}] for {site}", path=path, line=line
        )
    if not _is_finite_number(score):
        shown = repr(score) if len(repr(score)) <= 40 else repr(score)[:37] + "..."
        raise RelNeuronError(f"score must be a finite number, got {shown}", path=path, line=line)
    return Neuron(group, site, layer, index, float(score))


def _is_finite_number(value: Any) -> bool:
    """A JSON number that is a finite float (a 400-digit integer is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _read_text(path: Path) -> tuple[str, str]:
    """The file's text (gunzipped when gzip) and the SHA-256 of its bytes."""
    raw = read_bytes(path, "neuron-set file", hint="check the neuron_set= path")
    digest = hashlib.sha256(raw).hexdigest()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise RelNeuronError(
                f"corrupt gzip data ({type(exc).__name__}: {exc})",
                path=path,
                hint="the file is damaged or truncated; copy or re-create it",
            ) from None
    try:
        return raw.decode("utf-8"), digest
    except UnicodeDecodeError as exc:
        raise RelNeuronError(
            f"not UTF-8 text (byte {exc.start})", path=path, hint="neuron sets are JSON Lines"
        ) from None


def load(path: str | Path) -> NeuronSet:
    """Load and fully validate a neuron set; any problem raises ``RelNeuronError``."""
    from relneuron_eval.resources import resolve_shipped

    path = resolve_shipped(path)
    if path.is_dir():
        raise RelNeuronError("is a folder, not a neuron-set file", path=path)
    text, digest = _read_text(path)
    where = str(path)
    if (where, digest) in _PARSED:  # the same bytes parsed before: validated already
        _PARSED.move_to_end((where, digest))
        header, kept = _PARSED[(where, digest)]
        return NeuronSet(copy.deepcopy(header), list(kept), source=where, file_sha256=digest)
    lines = text.split("\n")  # JSON Lines: not at U+2028 etc. inside a string (splitlines)
    first = next((i for i, s in enumerate(lines) if s.strip()), None)
    if first is None:
        raise RelNeuronError("empty file: missing header", path=where, line=1, hint=FORMAT_HINT)
    header = parse_value(lines[first], where, first + 1)
    _check_header(header, where)
    shape = ModelShape(
        header["model"]["num_layers"],
        header["model"]["intermediate_size"],
        header["model"]["hidden_size"],
    )
    neurons: list[Neuron] = []
    seen: dict[tuple[str, str, int, int], int] = {}
    for number, text_line in enumerate(lines[first + 1 :], start=first + 2):
        if not text_line.strip():
            continue
        neuron = _check_neuron(parse_value(text_line, where, number), shape, where, number)
        key = (neuron.group, neuron.site, neuron.layer, neuron.index)
        if key in seen:
            raise RelNeuronError(
                f"duplicate neuron {key} (first on line {seen[key]})",
                path=where,
                line=number,
                hint="each (group, site, layer, index) may appear once",
            )
        seen[key] = number
        neurons.append(neuron)
    _PARSED[(where, digest)] = (copy.deepcopy(header), tuple(neurons))
    while len(_PARSED) > _PARSED_KEEP:
        _PARSED.popitem(last=False)
    return NeuronSet(header=header, neurons=neurons, source=where, file_sha256=digest)


def dumps_lines(neuron_set: NeuronSet) -> Iterable[str]:
    yield json.dumps(neuron_set.header, ensure_ascii=False, sort_keys=False)
    for n in neuron_set.neurons:
        yield json.dumps(
            {
                "group": n.group,
                "site": n.site,
                "layer": n.layer,
                "index": n.index,
                "score": n.score,
            },
            ensure_ascii=False,
        )


def save(neuron_set: NeuronSet, path: str | Path) -> Path:
    """Validate and write atomically (gzip when the name ends in ``.gz``)."""
    path = Path(path)
    _check_header(neuron_set.header, str(path))
    shape = neuron_set.shape
    seen: set[tuple[str, str, int, int]] = set()
    for i, n in enumerate(neuron_set.neurons):
        _check_neuron(
            {
                "group": n.group,
                "site": n.site,
                "layer": n.layer,
                "index": n.index,
                "score": n.score,
            },
            shape,
            f"<neuron {i}>",
            i + 2,
        )
        key = (n.group, n.site, n.layer, n.index)
        if key in seen:
            raise RelNeuronError(f"duplicate neuron {key}", path=path, line=i + 2)
        seen.add(key)
    payload = ("\n".join(dumps_lines(neuron_set)) + "\n").encode("utf-8")
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    with atomic_write(path, "wb") as handle:
        handle.write(payload)
    return path
