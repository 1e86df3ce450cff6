"""Streaming activation statistics: each unit's output averaged over a prompt's tokens.

The table ``[n_prompts, n_units]`` for a 7B model (835k units, thousands of prompts)
does not belong in RAM, so it lives in one ``.npy`` memory map per layer inside a work
folder. Batches are written as they finish and a ``done`` flag per prompt is flushed
after the data, which is what makes a killed run resumable. Batches are formed from
the whole prompt list before sharding, so every prompt sees exactly the same padding
(and hence the same floating-point result) whatever the number of processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from relneuron_eval.architectures import model_shape, site_module
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.neuron_set import SITES, ModelShape


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

    Also holds, per prompt, a ``done`` flag and whether the model answered correctly.
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
    ) -> ActivationStore:
        """Open the store at ``root``; a store made for other inputs is started afresh."""
        root = Path(root)
        meta = {
            **meta,
            "layout": [layout.num_layers, list(layout.sites), list(layout.sizes)],
            "n_prompts": n_prompts,
            "dtype": dtype,
        }
        meta_path = root / "meta.json"
        fresh = True
        if meta_path.exists():
            fresh = json.loads(meta_path.read_text()) != meta
        if fresh:
            if not create:
                raise RelNeuronError("no matching checkpoint", path=root)
            root.mkdir(parents=True, exist_ok=True)
            for old in root.glob("*.npy"):
                old.unlink()
            for layer in range(layout.num_layers):
                np.lib.format.open_memmap(
                    root / f"layer_{layer:03d}.npy",
                    mode="w+",
                    dtype=dtype,
                    shape=(n_prompts, layout.units_per_layer),
                ).flush()
            np.lib.format.open_memmap(
                root / "done.npy", mode="w+", dtype=np.int8, shape=(n_prompts,)
            ).flush()
            np.lib.format.open_memmap(
                root / "correct.npy", mode="w+", dtype=np.int8, shape=(n_prompts,)
            ).flush()
            meta_path.write_text(json.dumps(meta, sort_keys=True))
        return cls(root, layout, n_prompts, meta)

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

    def write_batch(
        self, rows: Sequence[int], per_layer: dict[int, np.ndarray], correct: Sequence[bool]
    ) -> None:
        """Write one batch: data first, then the ``done`` flags (so a crash never lies)."""
        rows = np.asarray(rows)
        for layer, values in per_layer.items():
            mm = self.layer(layer)
            mm[rows] = values
        for mm in list(self._layers.values()):
            mm.flush()
        corr = self.correct()
        corr[rows] = np.asarray(correct, dtype=np.int8)
        corr.flush()
        done = self.done()
        done[rows] = 1
        done.flush()

    def close(self) -> None:
        self._layers.clear()


# ---------------------------------------------------------------- model side
class TokenMeanHooks:
    """Forward hooks that add each site's token-mean to a per-batch buffer."""

    def __init__(self, model: Any, layout: Layout) -> None:
        self.layout = layout
        self.mask: torch.Tensor | None = None
        self.buffers: dict[int, torch.Tensor] = {}
        self.active = False
        self.handles = []
        offsets = layout.offsets()
        shape = model_shape(model)
        for layer in range(layout.num_layers):
            for site in layout.sites:
                module, spec = site_module(model, site, layer)
                start = spec.offset_halves * shape.intermediate_size
                size = shape.site_size(site)
                col = offsets[site]
                if spec.role == "input":
                    self.handles.append(
                        module.register_forward_pre_hook(self._pre(layer, col, start, size))
                    )
                else:
                    self.handles.append(
                        module.register_forward_hook(self._post(layer, col, start, size))
                    )

    def _record(self, layer: int, col: int, start: int, size: int, x: torch.Tensor) -> None:
        if not self.active:
            return
        mask = self.mask
        x = x[..., start : start + size].float()
        mean = (x * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        self.buffers[layer][:, col : col + size] = mean

    def _pre(self, layer: int, col: int, start: int, size: int) -> Callable:
        def hook(module, args):
            self._record(layer, col, start, size, args[0])

        return hook

    def _post(self, layer: int, col: int, start: int, size: int) -> Callable:
        def hook(module, args, output):
            self._record(layer, col, start, size, output)

        return hook

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


def answer_matches(generated: str, targets: Sequence[str]) -> bool:
    """Liu et al.'s criterion: the greedy first tokens are a prefix of the object.

    ``generated`` is the decoded first two tokens. A generation that runs past a short
    object (" Paris," for "Paris") also counts: its beginning is the whole object.
    """
    g = generated.strip()
    if not g:
        return False
    for t in targets:
        t = t.strip()
        if t and (t.startswith(g) or g.startswith(t)):
            return True
    return False


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


def _pad_right(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def _undecided(generated: str, targets: Sequence[str]) -> bool:
    """Whether more greedy tokens could change ``answer_matches`` for this generation.

    A generation that already contains a whole target stays right; one that is not a
    prefix of any target stays wrong; an empty one or a proper prefix of a target is
    open. This lets later tokens be computed only for the open rows.
    """
    g = generated.strip()
    if not g:
        return True
    ts = [t.strip() for t in targets if t.strip()]
    if any(g.startswith(t) for t in ts):
        return False
    return any(t.startswith(g) for t in ts)


def _next_tokens(model: Any, seqs: list[list[int]], pad: int) -> list[int]:
    """Greedy next token of each sequence (right-padded batch).

    The LM head runs only at each row's last real position, not over the whole padded
    batch: for a 49k vocabulary that is a sixth of a small model's forward pass.
    """
    ids, mask = _pad_right(seqs, pad)
    hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    last = hidden[torch.arange(len(seqs)), mask.sum(1) - 1]
    return model.get_output_embeddings()(last).argmax(-1).tolist()


@torch.no_grad()
def run_batch(
    model: Any,
    tokenizer: Any,
    hooks: TokenMeanHooks,
    texts: Sequence[str],
    targets: Sequence[Sequence[str]],
    new_tokens: int = 2,
    average_last: Sequence[int] | None = None,
) -> tuple[dict[int, np.ndarray], list[bool]]:
    """Token-means of one batch plus whether each greedy answer is right.

    ``average_last[i]`` limits row i's mean to its last that many tokens (the query of a
    few-shot prompt); None averages over every token. Right padding keeps default
    position ids correct and lets no real token see a pad. Later greedy tokens come
    from hook-free forwards, only for rows whose answer is still open.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    seqs = [tokenizer(t)["input_ids"] for t in texts]
    _, mask = _pad_right(seqs, pad)
    hooks.begin(_average_mask(mask, average_last))
    try:
        generated = [[t] for t in _next_tokens(model, seqs, pad)]
    finally:
        per_layer = hooks.end()
    for _ in range(new_tokens - 1):
        open_rows = [
            i for i, g in enumerate(generated) if _undecided(tokenizer.decode(g), targets[i])
        ]
        if not open_rows:
            break
        more = _next_tokens(model, [seqs[i] + generated[i] for i in open_rows], pad)
        for i, token in zip(open_rows, more, strict=True):
            generated[i].append(token)
    correct = [
        answer_matches(tokenizer.decode(g), tg) for g, tg in zip(generated, targets, strict=True)
    ]
    return per_layer, correct


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
) -> int:
    """Fill ``store`` with this process's shard of batches; skip batches already done.

    Returns the number of batches run. ``stop_after`` simulates an interruption (tests).
    ``average_last`` is passed per prompt to ``run_batch``.
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
                average_last=None if average_last is None else [average_last[i] for i in batch],
            )
            store.write_batch(batch, per_layer, correct)
            ran += 1
    finally:
        hooks.remove()
    return ran
