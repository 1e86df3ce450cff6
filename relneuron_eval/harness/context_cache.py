"""Log-likelihoods of many continuations of one context, the context computed once.

A multiple-choice task asks lm-eval for log P(choice | prompt) once per choice: a
``relfacts_mc_country_currency`` document with 155 choices feeds the same ~45-token
few-shot prompt 155 times, and HFLM runs every ``(context + continuation)[:-1]`` in
full (it shares work only between one-token continuations). Here the requests are
grouped by context; each context's tokens but the last go through the model once, and
its KV cache, repeated per row, serves batches of short rows::

    cache: context[:-1]        rows: [context[-1], continuation[:-1]]   (right-padded)

whose logits score the continuations exactly as HFLM slices them. On the 135M model
this is ~2-4 tokens per row instead of ~50. The sums are the same up to float
reduction order (the cached path adds the prefix's attention in another order), so a
choice can change only where two choices tie to ~1e-6 in log-probability; tests compare
both paths. Requests that cannot use it (a context shared by no other request, left
truncation, a context shorter than ``MIN_PREFIX_TOKENS``) go through HFLM's path, as
do ``per_doc`` and ``positions=last`` interventions (their edits depend on the row).
It is opt-in (``context_cache=true``): without it ``relneuron-hf`` is ``hf`` to the bit.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from relneuron_eval.harness.prefix_cache import (
    MIN_PREFIX_TOKENS,
    _autocast,
    _batch_cache,
    _cache_kwarg,
    prefix_kv,
)

log = logging.getLogger(__name__)

Request = tuple[Any, list[int], list[int]]  # ((context, continuation) strings, ctx, cont)
Answer = tuple[float, bool]
# With batch_size=auto: at most this many rows, and at most this many context tokens in
# the rows' cache copies together (4,096 tokens of Llama-2-7B's KV in bf16: ~2 GB).
DEFAULT_ROWS = 64
AUTO_CACHED_TOKENS = 4096


def shared_context_groups(
    requests: Sequence[Request], max_length: int
) -> tuple[list[list[int]], list[int]]:
    """Indices grouped by shared context (2+ requests each), and the rest for HFLM."""
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i, (_, ctx, _) in enumerate(requests):
        by_context.setdefault(tuple(ctx), []).append(i)
    groups, rest = [], []
    for ctx, indices in by_context.items():
        fits = all(0 < len(requests[i][2]) <= max_length + 1 - len(ctx) for i in indices)
        if len(indices) > 1 and len(ctx) > MIN_PREFIX_TOKENS and fits:
            groups.append(indices)
        else:
            rest.extend(indices)
    return groups, rest


def loglikelihoods(
    lm: Any,
    requests: Sequence[Request],
    plain: Callable[[list[Request]], list[Answer]],
    disable_tqdm: bool = False,
    stats: Counter[str] | None = None,
) -> list[Answer]:
    """HFLM's ``_loglikelihood_tokens(requests)``, each shared context computed once;
    ``stats`` counts contexts, rows and requests served (and those left to HFLM)."""
    kwarg = _cache_kwarg(lm.model) if getattr(lm, "backend", "causal") == "causal" else None
    groups, rest = shared_context_groups(requests, lm.max_length)
    first = prefix_kv(lm, requests[groups[0][0]][1][:-1]) if kwarg and groups else None
    if first is None:  # no shared context, or a model whose cache is not plain KV
        return plain(list(requests))
    counts: Counter[str] = Counter(plain_requests=len(rest), contexts=len(groups))
    results: dict[int, Answer] = {}
    if rest:
        results.update(zip(rest, plain([requests[i] for i in rest]), strict=True))
    bar = tqdm(
        total=sum(len(g) for g in groups),
        disable=disable_tqdm or getattr(lm, "rank", 0) != 0,
        desc="Running loglikelihood requests (shared contexts)",
    )
    for n, indices in enumerate(groups):
        context = requests[indices[0]][1]
        kv = first if n == 0 else prefix_kv(lm, context[:-1])
        assert kv is not None  # the same model gave a plain cache for the first context
        # continuations that differ only in their last token share one input row
        rows: dict[tuple[int, ...], list[int]] = {}
        for i in indices:
            rows.setdefault(tuple(requests[i][2][:-1]), []).append(i)
        inputs = sorted(rows, key=len)  # similar widths together: less padding
        size = _rows_per_batch(lm, len(context))
        for start in range(0, len(inputs), size):
            chunk = inputs[start : start + size]
            logits = _row_logits(lm, kwarg, kv, context, chunk)
            counts["rows"] += len(chunk)
            for row, key in enumerate(chunk):
                for i in rows[key]:
                    results[i] = _score(logits[row], requests[i][2])
                    if requests[i][0] is not None:
                        lm.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
                bar.update(len(rows[key]))
    bar.close()
    counts["cached_requests"] = len(requests) - len(rest)
    log.info("context cache: %s", dict(counts))
    if stats is not None:
        stats.update(counts)
    return [results[i] for i in range(len(requests))]


def _rows_per_batch(lm: Any, context_tokens: int) -> int:
    """lm-eval's batch size; with ``auto``, rows whose copies of the context's KV cache
    hold at most ``AUTO_CACHED_TOKENS`` tokens in all (each row gets its own copy)."""
    size = lm.batch_size
    if isinstance(size, int) and size > 0:
        return size
    return max(1, min(DEFAULT_ROWS, AUTO_CACHED_TOKENS // max(1, context_tokens)))


def _row_logits(
    lm: Any,
    kwarg: str,
    kv: list[tuple[torch.Tensor, torch.Tensor]],
    context: list[int],
    inputs: list[tuple[int, ...]],
) -> torch.Tensor:
    """Log-probabilities after ``[context[-1], *input]`` for each row, the rest of the
    context from its cache: [rows, longest input + 1, vocab]."""
    prefix = tuple(context[:-1])
    width = 1 + max(len(r) for r in inputs)
    ids = torch.zeros((len(inputs), width), dtype=torch.long)
    mask = torch.zeros((len(inputs), len(prefix) + width), dtype=torch.long)
    mask[:, : len(prefix)] = 1
    for row, tokens in enumerate(inputs):
        ids[row, : 1 + len(tokens)] = torch.tensor([context[-1], *tokens])
        mask[row, len(prefix) : len(prefix) + 1 + len(tokens)] = 1
    positions = torch.arange(len(prefix), len(prefix) + width).expand(len(inputs), -1)
    cache = _batch_cache({(None, prefix): kv}, [(None, prefix)] * len(inputs), len(prefix))
    with torch.no_grad(), _autocast(lm):
        out = lm.model(
            input_ids=ids.to(lm.device),
            attention_mask=mask.to(lm.device),
            position_ids=positions.to(lm.device),
            use_cache=True,
            **{kwarg: cache},
        )
    return F.log_softmax(out.logits, dim=-1, dtype=lm.softmax_dtype)


def _score(logits: torch.Tensor, cont: list[int]) -> Answer:
    """(sum of the continuation's log-probabilities, whether greedy decoding gives it),
    as HFLM computes them from the same positions."""
    scores = logits[: len(cont)].unsqueeze(0)  # [1, cont, vocab]
    target = torch.tensor(cont, dtype=torch.long, device=scores.device).unsqueeze(0)
    greedy = bool((scores.argmax(dim=-1) == target).all())
    picked = torch.gather(scores, 2, target.unsqueeze(-1)).squeeze(-1)
    return (float(picked.sum()), greedy)
