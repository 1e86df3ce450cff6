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
``--force`` replaces only a previous export; see :mod:`relneuron_eval.export.out`.
Planning (which module each edit lands on) is :mod:`relneuron_eval.export.plan`; the
``relneuron.json`` manifest and model card are :mod:`relneuron_eval.export.manifest`.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from relneuron_eval.core.spec import InterventionSpec, add_options
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.export.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_VERSION,
    build_manifest,
    finish_folder,
    read_manifest,
)
from relneuron_eval.export.out import FORCE_HELP, build_dir, check_out
from relneuron_eval.export.plan import IA3Module, SiteEdit, plan_fold, plan_ia3, site_edits

# Planning and the manifest live in export.plan / export.manifest; their public names stay
# importable from here.
__all__ = [
    "DTYPES",
    "FORMATS",
    "HELP",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "IA3Module",
    "SiteEdit",
    "add_arguments",
    "check_supported",
    "export",
    "export_checkpoint",
    "export_peft",
    "plan_fold",
    "plan_ia3",
    "read_manifest",
    "run",
    "site_edits",
]

if TYPE_CHECKING:
    import torch
    from typing_extensions import Unpack

    from relneuron_eval.core.interventions import Intervention

HELP = (
    "export a neuron intervention as a PEFT IA3 adapter (`peft`: load it with "
    "`lm_eval --model hf --model_args pretrained=BASE,peft=DIR`) or as a transformers "
    "checkpoint with the intervention folded into the weights (`model`: for vLLM, TGI, ...)"
)
FORMATS = ("peft", "model")
DTYPES = ("auto", "float32", "bfloat16", "float16")


# ====================================================================== CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=FORMATS, help="peft: IA3 adapter; model: checkpoint")
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="base model: local checkpoint folder, hub id in the local cache, or an "
        "embedded model (smollm2-135m, the default; gemma3-270m)",
    )
    add_options(
        parser,
        required=("neuron_set",),
        help={
            "neuron_set": "neuron-set file (.jsonl[.gz])",
            "value": "for mode=set, model only (0.0)",
            "positions": "only 'all' can be exported ('last' is refused with the reason)",
            "per_doc": "refused: a per-document intervention is not one fixed variant",
        },
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
    from relneuron_eval.core.interventions import Intervention

    spec = InterventionSpec.from_argparse(args)  # refused as model args refuse it
    if spec.per_doc:
        raise RelNeuronError(
            f"per_doc={spec.per_doc} cannot be exported: it applies a different set of units "
            "to each document, while an adapter or a checkpoint holds one fixed intervention",
            hint="export one variant per group with --groups NAME, or evaluate per-document "
            "interventions with --model relneuron-hf",
        )
    # layers are checked against the set's layer count by Intervention.from_spec
    iv = Intervention.from_spec(spec)
    out = export(args.format, args.model, iv, args.out, force=args.force, dtype=args.dtype)
    _print_usage(args.format, args.model, out)
    return 0


def _print_usage(fmt: str, model: str, out: Path) -> None:
    from relneuron_eval.core.models import find, model_path_command

    base = model_path_command(model) if find(model) else model
    print(f"wrote {out}")
    if fmt == "peft":
        print(f"evaluate: lm_eval --model hf --model_args pretrained={base},peft={out} ...")
    else:
        print(f"evaluate: lm_eval --model vllm --model_args pretrained={out} ...")
        print(f"      or: lm_eval --model hf --model_args pretrained={out} ...")


# ====================================================================== API
class ExportOptions(TypedDict, total=False):
    """The keyword options every export takes (see :func:`export`)."""

    force: bool
    dtype: str


def export(
    fmt: str,
    model: str | Path,
    intervention: Intervention,
    out: str | Path,
    *,
    force: bool = False,
    dtype: str = "auto",
) -> Path:
    """Export ``intervention`` on ``model`` in format ``fmt`` ("peft" or "model") to ``out``.

    ``force`` replaces a previous export there; ``dtype`` is that of the written weights
    ("auto": the model's own). Every check that can fail runs before anything is written.
    """
    if fmt not in FORMATS:
        raise RelNeuronError(f"unknown export format {fmt!r}", hint=f"use one of {list(FORMATS)}")
    check_supported(intervention, fmt)
    _check_dtype(dtype)
    out = check_out(out, force=force, model_path=model)
    path = _resolve_model(model)  # builds the embedded model's cache on first use
    check_out(out, force=force, model_path=path)
    meta = _meta_model(path, model)
    _check_model(meta, intervention)
    if fmt == "peft":
        plan = plan_ia3(meta, intervention)
        return _write_peft(meta, plan, intervention, model, path, out, dtype, force)
    _check_quantization(meta, model)
    edits = plan_fold(meta, intervention)
    return _write_checkpoint(path, edits, intervention, model, out, dtype, force)


def export_peft(
    model: str | Path, intervention: Intervention, out: str | Path, **options: Unpack[ExportOptions]
) -> Path:
    """Write ``intervention`` as a PEFT IA³ adapter for ``model``; returns the folder."""
    return export("peft", model, intervention, out, **options)


def export_checkpoint(
    model: str | Path, intervention: Intervention, out: str | Path, **options: Unpack[ExportOptions]
) -> Path:
    """Write ``model`` with ``intervention`` folded into its weights; returns the folder."""
    return export("model", model, intervention, out, **options)


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
    from relneuron_eval.core.embedded import resolve_pretrained

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
            "cache, or an embedded model (smollm2-135m, gemma3-270m)",
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
    from relneuron_eval.core.interventions import check_model

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
        manifest = build_manifest("peft-ia3", intervention, given, path, meta)
        manifest["dtype"] = str(vector_dtype).removeprefix("torch.")
        manifest["ia3_modules"] = [
            {"module": m.module, "on": m.role, "sites": list(m.sites), "units": len(m.scales)}
            for m in plan
        ]
        finish_folder(tmp, "peft", manifest)
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

    from relneuron_eval.core.embedded import is_embedded
    from relneuron_eval.core.interventions import apply_intervention

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
        manifest = build_manifest("checkpoint", intervention, given, path, model)
        manifest["dtype"] = str(next(model.parameters()).dtype).removeprefix("torch.")
        manifest["tokenizer"] = tokenizer is not None
        manifest["folded"] = [
            {"module": e.module, "site": e.site, "on": e.role, "units": len(e.indices)}
            for e in edits
        ]
        finish_folder(tmp, "model", manifest)
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
