"""Shared-prefix KV caching for batched generation (``relneuron-hf``'s ``prefix_cache``).

Few-shot prompts of one task repeat the same demonstrations in front of every query,
and on a CPU the prefill of those demonstrations is most of a short-answer generation
run. Within one ``generate_until`` call this module finds the token prefixes that many
prompts share (no task names: sorted token sequences and their common prefixes), runs
each such prefix through the model once, and gives every batch a KV cache of its first
columns: each row's prefix tokens in those columns, from that prefix's cache. The batch
keeps lm-eval's own layout (rows left-padded, their tokens contiguous), so positions,
masks and sliding attention windows (Gemma 3's hybrid cache) are the plain path's::

    [pad pad prefix_a ...|... query_1]   the cache covers the columns left of |, i.e.
    [prefix_b ...........|. query_2 .]   all but the longest uncached tail of any row

HF's ``generate`` then prefills only the columns right of it. Rows whose tokens start with
no known prefix (left truncation, a tokenizer that adds BOS differently, prompts no
other prompt shares) run with an empty prefix in the same batch, and a batch that
would not get shorter runs on the plain path. The caches live for one call, i.e. one
intervention state; with ``per_doc`` rows a prefix's cache is computed once per group
(the row's group edits the prefix too). The prefix's forward runs without
``positions=last`` edits: its last token is not the prompt's last.

Greedy decoding on CPU runs here too (``_decode``): a row whose answer text is final
(a stop sequence in it, or EOS) leaves the batch, so its decoding steps are not spent.
HF's ``generate`` decodes every row until the whole batch has stopped; a CPU decoding
step costs a fixed part (reading the weights) plus a part per row. A row's logits are
the same bits in any batch of at least ``_exact_rows`` rows (probed once: MKL's fp32
GEMM takes other kernels for 1-3 rows), so the batch never shrinks below that; finished
rows ride along to fill it. On accelerators bits may depend on the batch size, so there
the batch stays whole (``plain``), as it does wherever lm-eval's answer is not decided
by the row's own text (thinking models, an EOT that ``generate`` does not stop at).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from itertools import pairwise
from typing import Any

import torch

from relneuron_eval.core.architectures import unwrap
from relneuron_eval.errors import RelNeuronError

log = logging.getLogger(__name__)

# A shared prefix shorter than this is not worth its own forward and cache assembly.
MIN_PREFIX_TOKENS = 8
# Prefix caches kept per call (least recently used dropped first).
MAX_ENTRIES = 64

Tokens = tuple[int, ...]
LayerKV = list[tuple[torch.Tensor, torch.Tensor]]
# (per_doc group row or None, prefix): a prefix's KV holds its group's edits
Key = tuple[int | None, Tokens]


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _runs(ordered: list[Tokens], links: list[int], threshold: int) -> list[tuple[int, int, int]]:
    """Maximal runs ``(start, stop, lcp)`` of sorted sequences linked by >= threshold tokens."""
    runs, start, shared = [], 0, len(ordered[0])
    for i, link in enumerate(links, start=1):
        if link >= threshold:
            shared = min(shared, link)
            continue
        runs.append((start, i, shared))
        start, shared = i, len(ordered[i])
    runs.append((start, len(ordered), shared))
    return runs


def _prefix(members: list[Tokens], shared: int) -> Tokens:
    """The run's common prefix, leaving every member at least one query token."""
    length = min(shared, min(len(m) for m in members) - 1)
    return members[0][:length]


def shared_prefixes(sequences: Sequence[Sequence[int]], min_tokens: int) -> set[Tokens]:
    """Prefixes (>= ``min_tokens``) shared by groups of at least two sequences.

    Sorted sequences sit next to those they share most with. One cut-off on the
    common-prefix length of neighbours splits them into groups; the cut-off chosen is
    the one that saves the most prefill tokens, (members - 1) x prefix length summed.
    """
    counts = Counter(tuple(s) for s in sequences)
    ordered = sorted(counts)
    if len(sequences) < 2 or not ordered:
        return set()
    links = [_lcp(a, b) for a, b in pairwise(ordered)]
    best: tuple[int, set[Tokens]] = (0, set())
    for threshold in sorted({max(link, min_tokens) for link in links} | {min_tokens}):
        found, saved = set(), 0
        for start, stop, shared in _runs(ordered, links, threshold):
            members = ordered[start:stop]
            rows = sum(counts[m] for m in members)
            prefix = _prefix(members, shared)
            if rows >= 2 and len(prefix) >= min_tokens:
                found.add(prefix)
                saved += (rows - 1) * len(prefix)
        if saved > best[0]:
            best = (saved, found)
    return best[1]


def parse_flag(name: str, value: Any) -> bool:
    """A boolean model argument: lm-eval passes ``true``/``false`` as bools already."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise RelNeuronError(
        f"{name}={value!r} is not a boolean", hint=f"use {name}=true or {name}=false"
    )


class PrefixCache:
    """Shared prompt prefixes of one ``generate_until`` call and their KV caches."""

    def __init__(self, enabled: bool = True, min_tokens: int = MIN_PREFIX_TOKENS) -> None:
        self.enabled = enabled
        self.early_exit = True  # finished rows leave greedy CPU batches (see _decode)
        self.min_tokens = min_tokens
        self._lengths: dict[int, set[Tokens]] = {}
        self._kv: OrderedDict[Key, LayerKV] = OrderedDict()
        self._kwarg: str | None = None
        self._counts: Counter[str] = Counter()  # this call's
        self.stats: Counter[str] = Counter()  # all calls': rows served from cache, ...

    @contextlib.contextmanager
    def session(self, lm: Any, requests: Sequence[Any]) -> Iterator[None]:
        """Find the shared prefixes of these requests' prompts; drop all caches afterwards."""
        self._counts = Counter()
        if self.enabled and getattr(lm, "backend", "causal") == "causal":
            self._kwarg = _cache_kwarg(lm.model)
            if self._kwarg is None:
                log.info("prefix cache: off, the model's forward takes no position_ids")
        if self._kwarg is not None:
            tokens = [lm.tok_encode(request.args[0]) for request in requests]
            for prefix in shared_prefixes(tokens, self.min_tokens):
                self._lengths.setdefault(len(prefix), set()).add(prefix)
        try:
            yield
        finally:
            if self._lengths:
                log.info("prefix cache: %s", dict(self._counts))
            self.stats.update(self._counts)
            self._lengths, self._kwarg = {}, None
            self._kv.clear()

    def _match(self, row: list[int]) -> Tokens:
        """The longest known prefix of ``row`` that leaves it a query token (or ())."""
        for length in sorted(self._lengths, reverse=True):
            if length < len(row) and tuple(row[:length]) in self._lengths[length]:
                return tuple(row[:length])
        return ()

    def _plan(self, context: torch.Tensor, mask: Any) -> tuple[list[list[int]], list[Tokens]]:
        """Each row's tokens and its cached prefix; no rows when the batch would not gain."""
        if not self._lengths or self._kwarg is None or mask is None:
            return [], []
        width = context.shape[1]
        if any(not m[width - int(m.sum()) :].all() for m in mask):
            return [], []  # a row not left-padded: its cached columns would not be its prefix
        rows = [r[m.bool()].tolist() for r, m in zip(context, mask, strict=True)]
        prefixes = [self._match(row) for row in rows]
        query = max(len(r) - len(p) for r, p in zip(rows, prefixes, strict=True))
        if not any(prefixes) or context.shape[1] - query < self.min_tokens:
            return [], []
        return rows, prefixes

    def generate(
        self,
        lm: Any,
        plain: Callable[..., torch.Tensor],
        context: torch.Tensor,
        max_length: int,
        stop: list[str],
        generation_kwargs: dict[str, Any],
        state: Any = None,
    ) -> torch.Tensor:
        """``plain(context, max_length, stop, **kwargs)``, with shared prefixes from cache.

        Returns what ``plain`` would: the context's columns, then the generated tokens
        (on the early-exit path, finished rows' tokens after their stop are pads, and
        the batch may end sooner: the answer texts are the same).
        ``state`` is the intervention's HookState, if any (``positions=last`` is kept off
        the prefix's forward).
        """
        rows, prefixes = self._plan(context, generation_kwargs.get("attention_mask"))
        keys = list(zip(_groups(state, len(prefixes)), prefixes, strict=True))
        kv = {k: self._prefix_kv(lm, k, state) for k in dict.fromkeys(keys) if k[1]}
        if not rows or self._kwarg is None:
            if self._lengths:
                self._counts["plain_rows"] += context.shape[0]
            return plain(context=context, max_length=max_length, stop=stop, **generation_kwargs)
        query = max(len(r) - len(p) for r, p in zip(rows, prefixes, strict=True))
        ids, mask = context, generation_kwargs["attention_mask"]
        kwargs = dict(generation_kwargs)
        starts = [context.shape[1] - len(r) for r in rows]
        kwargs[self._kwarg] = _batch_cache(kv, keys, context.shape[1] - query, starts)
        new_max = max_length
        if self.early_exit and _early_exit(lm, generation_kwargs, stop):
            out = _decode(
                lm,
                ids,
                (mask, kwargs[self._kwarg], self._kwarg),
                new_max - ids.shape[1],
                stop,
                state,
            )
            self._counts["early_exit_batches"] += 1
        else:
            out = plain(context=ids, max_length=new_max, stop=stop, **kwargs)
        self._counts["cached_rows"] += sum(1 for p in prefixes if p)
        self._counts["uncached_rows_in_cached_batches"] += sum(1 for p in prefixes if not p)
        return torch.cat([context, out[:, ids.shape[1] :]], dim=1)

    def _prefix_kv(self, lm: Any, key: Key, state: Any) -> LayerKV:
        """The prefix's per-layer keys and values (with its group's edits), once per call."""
        if key in self._kv:
            self._kv.move_to_end(key)
            return self._kv[key]
        group, prefix = key
        last_only = state is not None and getattr(state, "positions", "all") == "last"
        previous = getattr(state, "skip", False)
        rows = getattr(state, "row_groups", None)
        try:
            if last_only:
                state.skip = True  # the prefix's last token is not the prompt's last
            if group is not None:
                state.row_groups = torch.tensor([group])
            layers = prefix_kv(lm, prefix)
        finally:
            if last_only:
                state.skip = previous
            if group is not None:
                state.row_groups = rows
        if layers is None:
            log.warning("prefix cache: off, the model's cache is not a plain per-layer KV cache")
            self._kwarg = None
            return []
        self._counts["prefix_forwards"] += 1
        self._kv[key] = layers
        if len(self._kv) > MAX_ENTRIES:
            self._kv.popitem(last=False)
        return layers


def prefix_kv(lm: Any, prefix: Sequence[int]) -> LayerKV | None:
    """One forward of ``prefix`` (batch 1, the model's hooks as they are): its per-layer
    keys and values, or None when the model's cache is not a plain per-layer KV cache."""
    ids = torch.tensor([list(prefix)], dtype=torch.long, device=lm.device)
    kwargs = {"logits_to_keep": 1} if _keeps_logits(lm.model) else {}  # only the cache counts
    kwargs.update(_full_cache(lm.model))
    with torch.no_grad(), _autocast(lm):
        out = lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True, **kwargs)
    cache = getattr(out, "cache", None)
    return _layers(cache if cache is not None else getattr(out, "past_key_values", None))


def _full_cache(model: Any) -> dict[str, Any]:
    """For a model with sliding-window layers (Gemma 3: 5 of every 6), a cache argument that
    keeps every key and value: its own cache would drop those outside the window, which a
    later row's tokens may still see. The masks apply the window, from the config."""
    config = unwrap(model).config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    types = set(getattr(config, "layer_types", None) or ())
    kwarg = _cache_kwarg(model)
    if kwarg is None or "sliding_attention" not in types:
        return {}
    if not types <= {"full_attention", "sliding_attention"}:
        return {}  # other layer kinds (linear attention, ...): their own cache, refused later
    from transformers import DynamicCache

    return {kwarg: DynamicCache()}


def _keeps_logits(model: Any) -> bool:
    """Whether the model's forward can skip the logits of all but the last positions."""
    return "logits_to_keep" in inspect.signature(unwrap(model).forward).parameters


def _groups(state: Any, n: int) -> list[int | None]:
    """Each row's per_doc group when the prefix's forward is edited, else None."""
    rows = getattr(state, "row_groups", None)
    if rows is None or n == 0 or getattr(state, "positions", "all") == "last":
        return [None] * n
    return [int(g) for g in rows.tolist()]


def _autocast(lm: Any) -> Any:
    dtype = getattr(lm, "mixed_precision_dtype", None)
    return torch.autocast(device_type=lm.device.type, dtype=dtype, enabled=dtype is not None)


def _pad_id(lm: Any) -> int:
    pad = lm.tokenizer.pad_token_id
    return int(pad if pad is not None else lm.eot_token_id)


def _cache_kwarg(model: Any) -> str | None:
    """``cache`` in recent transformers, ``past_key_values`` before; None if the model's
    positions do not follow the attention mask (pads inside a row would shift them)."""
    params = inspect.signature(unwrap(model).forward).parameters
    if "position_ids" not in params:
        return None
    return "cache" if "cache" in params else "past_key_values"


def _layers(cache: Any) -> LayerKV | None:
    """Per-layer (keys, values) of a DynamicCache made only of full-attention layers."""
    if cache is None:
        return None
    for layer in getattr(cache, "layers", []):
        if type(layer).__name__ != "DynamicLayer":  # sliding windows, linear attention, ...
            return None
    out = []
    for item in cache:
        keys, values = item[0], item[1]
        if keys is None or keys.dim() != 4:
            return None
        out.append((keys, values))
    return out or None


def _batch_cache(
    kv: dict[Key, LayerKV], keys: list[Key], split: int, starts: Sequence[int] | None = None
) -> Any:
    """A DynamicCache of the batch's first ``split`` columns: row i's tokens begin at column
    ``starts[i]`` (default: its prefix ends at ``split``), so its cached part is the first
    ``split - starts[i]`` tokens of its prefix, after zeros for the pad columns."""
    from transformers import DynamicCache

    if starts is None:
        starts = [split - len(k[1]) for k in keys]
    cache = DynamicCache()
    like = next(iter(kv.values()))
    for layer in range(len(like)):
        pair = []
        for part in (0, 1):
            rows = []
            for key, start in zip(keys, starts, strict=True):
                cached = max(0, split - start) if key[1] else 0
                assert cached <= len(key[1]), "a row's cached columns go past its prefix"
                row = kv[key][layer][part][:, :, :cached] if cached else like[layer][part][:, :, :0]
                rows.append(torch.nn.functional.pad(row, (0, 0, split - cached, 0)))
            pair.append(torch.cat(rows, dim=0))
        cache.update(pair[0], pair[1], layer)
    return cache


# Generation-config fields greedy decoding here honours (or that greedy ignores).
_GREEDY_CONFIG = {
    "use_cache", "output_attentions", "output_hidden_states", "pad_token_id", "bos_token_id",
    "eos_token_id", "_from_model_config", "transformers_version", "do_sample", "temperature",
    "top_p", "top_k", "max_length", "max_new_tokens", "decoder_start_token_id",
}  # fmt: skip


def _early_exit(lm: Any, kwargs: dict[str, Any], stop: Sequence[str] = ()) -> bool:
    """Greedy decoding on CPU with no logits processing, and an answer decided by the row's
    own text, so that a row may leave the batch.

    lm-eval keeps only the text after ``think_end_token`` before it cuts at a stop string,
    so a stop string in the thinking does not end the answer. ``generate`` goes on past a
    special token that is a stop string but no EOS (the tokenizer's EOT among them): the
    row's answer then depends on when the rest of the batch stops. After EOS, pads must
    decode to nothing: the batch ends at another step here.
    """
    extra = set(kwargs) - {"attention_mask", "do_sample", "temperature"}
    greedy = kwargs.get("do_sample") is False or kwargs.get("temperature") in (0, 0.0)
    if extra or kwargs.get("do_sample") or not greedy or lm.device.type != "cpu":
        return False
    if getattr(lm, "think_end_token", None) is not None:
        return False
    config = getattr(unwrap(lm.model), "generation_config", None)
    if config is None or not set(config.to_diff_dict()) <= _GREEDY_CONFIG:
        return False
    eos, skipped = _eos_ids(lm), _skipped_ids(lm.tokenizer)
    if lm.eot_token_id not in eos or _pad_id(lm) not in skipped:
        return False
    texts = {lm.tokenizer.convert_ids_to_tokens(i) for i in skipped - eos}
    return not any(t and t in s for s in stop for t in texts if isinstance(t, str))


def _eos_ids(lm: Any) -> set[int]:
    eos = unwrap(lm.model).generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [] if eos is None else [eos])


def _skipped_ids(tokenizer: Any) -> set[int]:
    """Token ids that decoding with ``skip_special_tokens`` drops."""
    added = getattr(tokenizer, "added_tokens_decoder", {})
    return set(tokenizer.all_special_ids) | {i for i, t in added.items() if t.special}


# Rows of the probe batch; a floor this high means a batch never shrinks.
PROBE_ROWS = 32


@functools.cache
def _exact_rows(dtype: torch.dtype, threads: int) -> int:
    """The fewest rows from which a row's matmul bits do not depend on the batch size.

    MKL's fp32 GEMM takes other kernels for 1-3 rows (AVX-512, MKL 2024.2: a row alone or
    in 2 gets other bits than in 4 or more); bf16 showed no such step. Probed, not assumed.
    """
    del threads  # part of the cache key: the split of the work may follow it
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(384, 256, generator=gen).to(dtype)
    x = torch.randn(PROBE_ROWS, 256, generator=gen).to(dtype)
    full = torch.nn.functional.linear(x, weight)
    floor = 1
    for rows in range(1, PROBE_ROWS):
        if not torch.equal(torch.nn.functional.linear(x[:rows], weight), full[:rows]):
            floor = rows + 1
    return floor


def _compute_dtype(lm: Any) -> torch.dtype:
    dtype = getattr(lm, "mixed_precision_dtype", None)
    return dtype if dtype is not None else next(unwrap(lm.model).parameters()).dtype


class _Ends:
    """Whether a row's answer text is final: EOS, or a stop string in its decoded text.

    Only the last ``window`` kept tokens are decoded (lm-eval looks back the stop's token
    count + 2): a stop string that is new in this step's text ends in the newest token
    and spans at most its UTF-8 length in tokens (each kept token has a byte at least).
    Two tokens more cover a partial character or a dropped leading space at the window's
    start. Tokens that decoding drops do not count.
    """

    def __init__(self, lm: Any, stop: Sequence[str]) -> None:
        self.decode = lm.tok_decode
        self.eos = _eos_ids(lm)
        self.stop = [s for s in stop if s]
        self.skipped = _skipped_ids(lm.tokenizer)
        lengths = [max(len(s.encode()), len(lm.tok_encode(s))) for s in self.stop]
        self.window = max(lengths, default=0) + 2

    def tail(self, tokens: Sequence[int]) -> Sequence[int]:
        start, kept = len(tokens), 0
        while start > 0 and kept < self.window:
            start -= 1
            kept += tokens[start] not in self.skipped
        return tokens[start:]

    def final(self, tokens: Sequence[int]) -> bool:
        if tokens[-1] in self.eos:
            return True
        if not self.stop:
            return False
        text = self.decode(list(self.tail(tokens)))
        return any(s in text for s in self.stop)


def _keep(live: list[bool], floor: int) -> list[int]:
    """Batch rows to keep: the live ones, topped up with finished ones to ``floor`` rows."""
    kept = [i for i, alive in enumerate(live) if alive]
    riders = [i for i, alive in enumerate(live) if not alive]
    return sorted(kept + riders[: max(0, min(floor, len(live)) - len(kept))])


def _decode(
    lm: Any,
    ids: torch.Tensor,
    batch: tuple[torch.Tensor, Any, str],
    new_tokens: int,
    stop: list[str],
    state: Any,
) -> torch.Tensor:
    """Greedy decoding as HF's ``generate`` does it, each row leaving once its text is final.

    ``batch``: the attention mask, the prefix cache and its forward argument; positions follow
    the mask as in ``generate`` (pads at 1). Finished rows stay while fewer than
    ``_exact_rows`` would remain; their tokens are not kept. A per_doc state's row groups
    follow the rows that remain; ``positions=last`` edits apply to the first forward only.
    """
    from relneuron_eval.core.interventions import prompt_only

    mask, cache, cache_arg = batch
    ends, floor = _Ends(lm, stop), _exact_rows(_compute_dtype(lm), torch.get_num_threads())
    out = torch.full((ids.shape[0], max(new_tokens, 0)), _pad_id(lm), dtype=ids.dtype)
    made: list[list[int]] = [[] for _ in range(ids.shape[0])]
    active, live = list(range(ids.shape[0])), [True] * ids.shape[0]
    groups = getattr(state, "row_groups", None)
    tokens, done_at = ids[:, cache.get_seq_length() :], 0
    last = state is not None and getattr(state, "positions", "all") == "last"
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        stack.enter_context(_autocast(lm))
        if last:
            stack.enter_context(prompt_only(lm.model, state))
        try:
            for step in range(new_tokens):
                positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
                if groups is not None:
                    state.row_groups = groups[torch.tensor(active)]
                logits = lm.model(
                    input_ids=tokens,
                    attention_mask=mask,
                    position_ids=positions[:, -tokens.shape[1] :],
                    use_cache=True,
                    logits_to_keep=1,
                    **{cache_arg: cache},
                ).logits[:, -1]
                chosen = logits.float().argmax(-1)
                done_at = step + 1
                for i, (row, token) in enumerate(zip(active, chosen.tolist(), strict=True)):
                    if live[i]:
                        made[row].append(token)
                        out[row, step] = token
                        live[i] = not ends.final(made[row])
                if not any(live):
                    break
                keep = _keep(live, floor)
                if len(keep) < len(active):
                    rows = torch.tensor(keep, device=ids.device)
                    cache.batch_select_indices(rows)
                    chosen, mask = chosen[rows], mask[rows]
                    active, live = [active[i] for i in keep], [live[i] for i in keep]
                tokens = chosen[:, None]
                mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        finally:
            if groups is not None:
                state.row_groups = groups
    return torch.cat([ids, out[:, :done_at].to(ids.device)], dim=1)
