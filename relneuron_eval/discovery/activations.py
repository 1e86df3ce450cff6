"""Streaming activation statistics: each unit's output averaged over a prompt's tokens.

The table ``[n_prompts, n_units]`` for a 7B model (835k units, thousands of prompts)
does not belong in RAM, so it lives in one ``.npy`` memory map per layer inside a work
folder. Batches are written as they finish and a ``done`` flag per prompt is flushed
after the data and a per-row checksum, which is what makes a killed run resumable; a
resumed store is verified first (see ``ActivationStore``). Batches are formed from
the whole prompt list before sharding, so every prompt sees exactly the same padding
(and hence the same floating-point result) whatever the number of processes. Another
batch size changes the padding and so the last bits (measured on a tiny Llama: up to
1e-5, same answers), so a resume may use another ``--batch-size``: each row keeps the
one it was computed with, and the neuron set's header lists them.
"""

from __future__ import annotations

import json
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relneuron_eval.atomic import atomic_write
from relneuron_eval.core.architectures import model_shape, site_module
from relneuron_eval.core.neuron_set import SITES, ModelShape
from relneuron_eval.errors import RelNeuronError


@dataclass(frozen=True)
class Layout:
    """Which sites are stored, in which order, and how many units each has per layer."""

    num_layers: int
    sites: tuple[str, ...]
    sizes: tuple[int, ...]

    @classmethod
    def for_shape(cls, shape: ModelShape, sites: Sequence[str]) -> Layout:
        unknown = [s for s in sites if s not in SITES]
        if unknown:
            raise RelNeuronError(f"unknown site(s) {unknown}", hint=f"known sites: {list(SITES)}")
        sites = tuple(dict.fromkeys(sites))
        return cls(shape.num_layers, sites, tuple(shape.site_size(s) for s in sites))

    @property
    def units_per_layer(self) -> int:
        return sum(self.sizes)

    @property
    def total_units(self) -> int:
        return self.units_per_layer * self.num_layers

    def offsets(self) -> dict[str, int]:
        out, start = {}, 0
        for site, size in zip(self.sites, self.sizes, strict=True):
            out[site] = start
            start += size
        return out

    def unit_of(self, column: int) -> tuple[str, int]:
        """(site, index) of a column within one layer's block."""
        for site, size in zip(self.sites, self.sizes, strict=True):
            if column < size:
                return site, column
            column -= size
        raise IndexError(column)


class ActivationStore:
    """Per-layer memory maps ``layer_NNN.npy`` of shape ``[n_prompts, units_per_layer]``.

    Also holds, per prompt, a ``done`` flag, whether the model answered correctly, and
    a CRC-32 of the row's stored values in every layer plus its ``correct`` flag
    (``checksums.npy``). A resumed store is verified before it is trusted: a piece with
    the wrong size or header starts the store afresh, a finished row whose checksum no
    longer matches is computed again; each says so in one line on stderr.
    """

    def __init__(self, root: Path, layout: Layout, n_prompts: int, meta: dict[str, Any]):
        self.root, self.layout, self.n_prompts, self.meta = Path(root), layout, n_prompts, meta
        self._layers: dict[int, np.memmap] = {}

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        root: str | Path,
        layout: Layout,
        n_prompts: int,
        meta: dict[str, Any],
        dtype: str = "float32",
        create: bool = True,
        notice: Callable[[str], None] | None = None,
    ) -> ActivationStore:
        """Open the store at ``root``, verified; one made for other inputs starts afresh.

        ``create=False`` (the other processes of a launch, after rank 0 opened it)
        only checks that the store is the one for these inputs.
        """
        meta = {
            **meta,
            "layout": [layout.num_layers, list(layout.sites), list(layout.sizes)],
            "n_prompts": n_prompts,
            "dtype": dtype,
        }
        store = cls(Path(root), layout, n_prompts, meta)
        if not create:
            if read_json_object(store.root / "meta.json") != meta:
                raise RelNeuronError("no matching checkpoint", path=root)
            return store
        say = notice or notice_line
        reason = store._reuse_problem()
        if reason is not None:
            if reason:
                say(f"checkpoint {store.root}: {reason}")
            store._create()
            return store
        bad, finished = store.verify_rows()
        if bad:
            say(
                f"checkpoint {store.root}: {bad} of {finished} finished prompts fail their "
                "checksum; computing them again"
            )
        return store

    def _pieces(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """File name -> (shape, dtype) of every piece of the store."""
        n, dtype = self.n_prompts, self.meta["dtype"]
        pieces = {
            f"layer_{layer:03d}.npy": ((n, self.layout.units_per_layer), dtype)
            for layer in range(self.layout.num_layers)
        }
        pieces.update(
            {
                "done.npy": ((n,), "int8"),
                "correct.npy": ((n,), "int8"),
                "checksums.npy": ((n,), "uint32"),
                "batch_size.npy": ((n,), "int32"),
            }
        )
        return pieces

    def _reuse_problem(self) -> str | None:
        """None if the store can be resumed; else why not ('' for no store at all)."""
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            started = self.root.is_dir() and any(self.root.glob("*.npy"))
            return "incomplete (no meta.json); starting afresh" if started else ""
        old = read_json_object(meta_path)
        if old is None:
            return "meta.json is unreadable; starting afresh"
        if old != self.meta:
            keys = sorted(k for k in set(old) | set(self.meta) if old.get(k) != self.meta.get(k))
            return f"made for other inputs ({', '.join(keys)} differ); starting afresh"
        for name, (shape, dtype) in self._pieces().items():
            problem = _piece_problem(self.root / name, shape, dtype)
            if problem:
                return f"{name} is damaged ({problem}); starting afresh"
        return None

    def _create(self) -> None:
        """Empty pieces, then ``meta.json`` (atomically, last: it marks a usable store)."""
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "meta.json").unlink(missing_ok=True)
        for old in self.root.glob("*.npy"):
            old.unlink()
        for name, (shape, dtype) in self._pieces().items():
            np.lib.format.open_memmap(self.root / name, mode="w+", dtype=dtype, shape=shape).flush()
        with atomic_write(self.root / "meta.json") as handle:
            handle.write(json.dumps(self.meta, sort_keys=True))

    def verify_rows(self, chunk: int = 256) -> tuple[int, int]:
        """Clear the ``done`` flag of finished rows whose checksum fails: (failed, finished)."""
        done = self.done()
        rows = np.flatnonzero(np.asarray(done) != 0)
        if not len(rows):
            return 0, 0
        sums = np.zeros(len(rows), dtype=np.uint32)
        for layer in range(self.layout.num_layers):
            block = self.read_layer(layer)
            for start in range(0, len(rows), chunk):
                part = slice(start, start + chunk)
                _update_sums(sums[part], np.asarray(block[rows[part]]))
            del block
        _update_sums(sums, np.asarray(self.correct())[rows][:, None])
        bad = rows[sums != np.asarray(np.load(self.root / "checksums.npy"))[rows]]
        if len(bad):
            done[bad] = 0
            done.flush()
        return len(bad), len(rows)

    def layer(self, layer: int, mode: str = "r+") -> np.memmap:
        key = layer if mode == "r+" else -1 - layer
        if key not in self._layers:
            self._layers[key] = np.load(self.root / f"layer_{layer:03d}.npy", mmap_mode=mode)
        return self._layers[key]

    def read_layer(self, layer: int) -> np.memmap:
        """A fresh read-only map of one layer; drop it after use so its pages are released."""
        return np.load(self.root / f"layer_{layer:03d}.npy", mmap_mode="r")

    def done(self) -> np.ndarray:
        return np.load(self.root / "done.npy", mmap_mode="r+")

    def correct(self) -> np.ndarray:
        return np.load(self.root / "correct.npy", mmap_mode="r+")

    def batch_sizes(self) -> np.ndarray:
        """The ``--batch-size`` each row was computed with (0: not recorded)."""
        return np.load(self.root / "batch_size.npy", mmap_mode="r")

    def write_batch(
        self,
        rows: Sequence[int],
        per_layer: dict[int, np.ndarray],
        correct: Sequence[bool],
        batch_size: int = 0,
    ) -> None:
        """Write one batch: data and checksums first, then the ``done`` flags (so a crash
        never lies). ``per_layer`` must hold every layer. ``batch_size`` (the setting, not
        this batch's length) is kept per row: padding changes the last bits of a float."""
        rows = np.asarray(rows)
        flags = np.asarray(correct, dtype=np.int8)
        sums = np.zeros(len(rows), dtype=np.uint32)
        for layer in range(self.layout.num_layers):
            mm = self.layer(layer)
            values = np.ascontiguousarray(per_layer[layer], dtype=mm.dtype)
            mm[rows] = values
            _update_sums(sums, values)
        _update_sums(sums, flags[:, None])
        for mm in list(self._layers.values()):
            mm.flush()
        sizes = np.full(len(rows), batch_size, dtype=np.int32)
        for name, values in (
            ("correct.npy", flags),
            ("checksums.npy", sums),
            ("batch_size.npy", sizes),
        ):
            piece = np.load(self.root / name, mmap_mode="r+")
            piece[rows] = values
            piece.flush()
        done = self.done()
        done[rows] = 1
        done.flush()

    def close(self) -> None:
        self._layers.clear()


def notice_line(message: str) -> None:
    """One ``notice:`` line on stderr: something was repaired, the run goes on."""
    print(f"notice: {message}", file=sys.stderr, flush=True)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The store's metadata, or None when it is missing or unreadable."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _piece_problem(path: Path, shape: tuple[int, ...], dtype: str) -> str | None:
    """Why ``path`` is not an intact ``.npy`` of this shape and dtype (None if it is)."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            got_shape, fortran, got_dtype = read(handle)
            offset = handle.tell()
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as exc:
        return "unreadable header: " + " ".join(str(exc).split())
    if tuple(got_shape) != tuple(shape) or fortran or got_dtype != np.dtype(dtype):
        return f"shape {tuple(got_shape)} {got_dtype}, expected {tuple(shape)} {dtype}"
    size, expected = path.stat().st_size, offset + int(np.prod(shape)) * np.dtype(dtype).itemsize
    if size != expected:
        return f"{size:,} bytes, expected {expected:,}"
    return None


def _update_sums(sums: np.ndarray, values: np.ndarray) -> None:
    """Extend each row's running CRC-32 by that row's bytes (``values``: one row per sum)."""
    for j in range(len(sums)):
        sums[j] = zlib.crc32(np.ascontiguousarray(values[j]), int(sums[j]))


# ---------------------------------------------------------------- model side
def watch_sites(model: Any, layout: Layout, make: Callable[[int, int, int, int], Callable]) -> list:
    """A forward hook on every (layer, site) of ``layout`` that passes the site's tensor
    (the module's input or output, per the architecture table) to
    ``make(layer, column, first feature, features)``; the hook handles."""
    handles = []
    offsets = layout.offsets()
    shape = model_shape(model)
    for layer in range(layout.num_layers):
        for site in layout.sites:
            module, spec = site_module(model, site, layer)
            start = spec.offset_halves * shape.intermediate_size
            take = make(layer, offsets[site], start, shape.site_size(site))
            if spec.role == "input":
                handles.append(module.register_forward_pre_hook(lambda m, a, f=take: f(a[0])))
            else:
                handles.append(module.register_forward_hook(lambda m, a, o, f=take: f(o)))
    return handles


class TokenMeanHooks:
    """Forward hooks that add each site's token-mean to a per-batch buffer."""

    def __init__(self, model: Any, layout: Layout) -> None:
        self.layout = layout
        self.mask: torch.Tensor | None = None
        self.buffers: dict[int, torch.Tensor] = {}
        self.active = False
        self.handles = watch_sites(model, layout, self._recorder)

    def _recorder(self, layer: int, col: int, start: int, size: int) -> Callable:
        def record(x: torch.Tensor) -> None:
            if not self.active:
                return
            mask = self.mask
            x = x[..., start : start + size].float()
            mean = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            self.buffers[layer][:, col : col + size] = mean

        return record

    def begin(self, mask: torch.Tensor) -> None:
        self.mask = mask.float()
        b = mask.shape[0]
        self.buffers = {
            layer: torch.empty(b, self.layout.units_per_layer)
            for layer in range(self.layout.num_layers)
        }
        self.active = True

    def end(self) -> dict[int, np.ndarray]:
        self.active = False
        out = {layer: buf.numpy() for layer, buf in self.buffers.items()}
        self.buffers = {}
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def make_batches(tokenizer: Any, texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped into batches of similar length, independent of sharding."""
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _average_mask(mask: torch.Tensor, average_last: Sequence[int] | None) -> torch.Tensor:
    """The attention mask restricted to each row's last ``average_last[i]`` real tokens."""
    if average_last is None:
        return mask
    lengths = mask.sum(1)
    positions = torch.arange(mask.shape[1]).unsqueeze(0)
    last = torch.tensor([max(1, int(n)) for n in average_last]).unsqueeze(1)
    start = (lengths.unsqueeze(1) - last).clamp(min=0)
    return mask * (positions >= start)


def query_token_counts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """Tokens of each prompt's last line (the query after few-shot demos)."""
    counts = []
    for text in texts:
        total = len(tokenizer(text)["input_ids"])
        head, sep, _ = text.rpartition("\n")
        counts.append(total - len(tokenizer(head + sep)["input_ids"]) if sep else total)
    return counts


def pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of ``seqs`` padded on the right with ``pad_id``.

    Right padding keeps every row's real tokens at positions 0..n-1, so position ids and
    the last real position (``mask.sum(1) - 1``) need no shifting; the discovery pass and
    its benchmark batch prompts this way.
    """
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def _next_tokens(model: Any, seqs: list[list[int]], pad: int) -> list[int]:
    """Greedy next token of each sequence (right-padded batch).

    The LM head runs only at each row's last real position, not over the whole padded
    batch: for a 49k vocabulary that is a sixth of a small model's forward pass.
    """
    device = model.get_input_embeddings().weight.device  # knowledge neurons run on GPUs
    ids, mask = (t.to(device) for t in pad_right(seqs, pad))
    hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    last = hidden[torch.arange(len(seqs), device=device), mask.sum(1) - 1]
    return model.get_output_embeddings()(last).argmax(-1).tolist()


def _finish(
    model: Any,
    tokenizer: Any,
    seqs: list[list[int]],
    first: list[int],
    targets: Sequence[Sequence[str]],
    criterion: str,
) -> list[bool]:
    """Whether each greedy answer is right under ``criterion`` (``discovery.correct``).

    Later greedy tokens come from hook-free forwards, only for rows whose verdict is
    still open (``match``: until a newline, end of text or 16 tokens).
    """
    from relneuron_eval.discovery.correct import is_correct, is_open, max_new_tokens

    pad, eos = _pad_id(tokenizer), tokenizer.eos_token_id
    # prefix2 decodes as the shipped sets did; match reads the text the tasks score
    skip = criterion != "prefix2"
    generated = [[t] for t in first]

    def text(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=skip)

    for _ in range(max_new_tokens(criterion) - 1):
        open_rows = [
            i
            for i, g in enumerate(generated)
            if not (skip and eos in g) and is_open(criterion, text(g), targets[i])
        ]
        if not open_rows:
            break
        more = _next_tokens(model, [seqs[i] + generated[i] for i in open_rows], pad)
        for i, token in zip(open_rows, more, strict=True):
            generated[i].append(token)
    return [is_correct(criterion, text(g), tg) for g, tg in zip(generated, targets, strict=True)]


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


@torch.no_grad()
def answers_correct(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    targets: Sequence[Sequence[str]],
    criterion: str = "match",
) -> list[bool]:
    """Whether each greedy answer is right under ``criterion``, with no activations recorded.

    The cheap check that lets a run stop before its activation pass when a relation
    cannot get enough positives.
    """
    seqs = [tokenizer(t)["input_ids"] for t in texts]
    first = _next_tokens(model, seqs, _pad_id(tokenizer))
    return _finish(model, tokenizer, seqs, first, targets, criterion)


@torch.no_grad()
def run_batch(
    model: Any,
    tokenizer: Any,
    hooks: TokenMeanHooks,
    texts: Sequence[str],
    targets: Sequence[Sequence[str]],
    criterion: str = "match",
    average_last: Sequence[int] | None = None,
) -> tuple[dict[int, np.ndarray], list[bool]]:
    """Token-means of one batch plus whether each greedy answer is right.

    ``average_last[i]`` limits row i's mean to its last that many tokens (the query of a
    few-shot prompt); None averages over every token. Right padding keeps default
    position ids correct and lets no real token see a pad.
    """
    seqs = [tokenizer(t)["input_ids"] for t in texts]
    _, mask = pad_right(seqs, _pad_id(tokenizer))
    hooks.begin(_average_mask(mask, average_last))
    try:
        first = _next_tokens(model, seqs, _pad_id(tokenizer))
    finally:
        per_layer = hooks.end()
    return per_layer, _finish(model, tokenizer, seqs, first, targets, criterion)


def collect(
    model: Any,
    tokenizer: Any,
    store: ActivationStore,
    texts: Sequence[str],
    targets: Sequence[Sequence[str]],
    batch_size: int = 16,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    stop_after: int | None = None,
    average_last: Sequence[int] | None = None,
    criterion: str = "match",
) -> int:
    """Fill ``store`` with this process's shard of batches; skip batches already done.

    Returns the number of batches run. ``stop_after`` simulates an interruption (tests).
    ``average_last`` is passed per prompt to ``run_batch``; ``criterion`` decides the
    stored ``correct`` flags (``discovery.correct``).
    """
    from tqdm.auto import tqdm

    batches = make_batches(tokenizer, texts, batch_size)[rank::world_size]
    done = store.done()
    todo = [b for b in batches if not all(done[i] for i in b)]
    hooks = TokenMeanHooks(model, store.layout)
    ran = 0
    try:
        bar = tqdm(
            todo,
            desc=f"activations[{rank}]" if world_size > 1 else "activations",
            disable=not progress,
            unit="batch",
        )
        for batch in bar:
            if stop_after is not None and ran >= stop_after:
                raise KeyboardInterrupt("simulated interruption")
            per_layer, correct = run_batch(
                model,
                tokenizer,
                hooks,
                [texts[i] for i in batch],
                [targets[i] for i in batch],
                criterion=criterion,
                average_last=None if average_last is None else [average_last[i] for i in batch],
            )
            store.write_batch(batch, per_layer, correct, batch_size)
            ran += 1
    finally:
        hooks.remove()
    return ran
