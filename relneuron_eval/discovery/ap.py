"""Vectorised average precision (AP) of many units at once.

Relation-specific neurons rank every unit by the AP of its per-prompt scores against
positive/negative labels. With ~835k units and a dozen relations, calling scikit-learn
per unit is hopeless, so this module computes AP for a block of units with a few array
ops: sort each unit's scores (numpy's SIMD quicksort along contiguous rows, several
times faster than a column sort), take cumulative true positives, done.

Ties follow scikit-learn's ``average_precision_score``: tied scores form one threshold
and every positive in a tie block gets the precision at the end of that block. Because
of that, the order *within* a tie block never matters, so an unstable sort is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _as_units_by_prompts(scores: Any) -> np.ndarray:
    """``[n_prompts, n_units]`` (torch or numpy) -> contiguous float32 ``[n_units, n_prompts]``."""
    if hasattr(scores, "detach"):
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [n_prompts, n_units], got {scores.shape}")
    return np.ascontiguousarray(scores.T, dtype=np.float32)


def _as_bool(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=bool)


class SortedBlock:
    """Unit scores sorted per unit, descending, with the end of every tie block.

    Build it from ``[n_prompts, n_units]`` scores, or from the transposed layout with
    ``units_first=True`` (what the relation-specific ranking passes, to avoid a copy).
    """

    def __init__(self, scores: Any, *, units_first: bool = False) -> None:
        if units_first:
            s = np.ascontiguousarray(scores, dtype=np.float32)
        else:
            s = _as_units_by_prompts(scores)
        self.n_units, self.n_prompts = s.shape
        self.order = np.argsort(-s, axis=1)
        ranked = np.take_along_axis(s, self.order, axis=1)
        same_as_next = ranked[:, :-1] == ranked[:, 1:]
        if not same_as_next.any():
            self.block_end: np.ndarray | None = None  # no ties: every position ends a block
        else:
            n = self.n_prompts
            marks = np.broadcast_to(np.arange(n, dtype=np.int64), s.shape).copy()
            marks[:, :-1][same_as_next] = n - 1
            # nearest tie-block end at or after each position (reverse running minimum)
            self.block_end = np.minimum.accumulate(marks[:, ::-1], axis=1)[:, ::-1]

    def _at_end(self, x: np.ndarray) -> np.ndarray:
        return x if self.block_end is None else np.take_along_axis(x, self.block_end, axis=1)

    def average_precision(self, positive: Any, include: Any | None = None) -> np.ndarray:
        """AP per unit for ``positive`` (bool ``[n_prompts]``) among ``include`` rows.

        Rows outside ``include`` are ignored, as if they had not been scored. A
        labelling without positives gives AP 0 for every unit.
        """
        positive = _as_bool(positive)
        if include is not None:
            include = _as_bool(include)
            positive = positive & include
        n_pos = int(positive.sum())
        if n_pos == 0:
            return np.zeros(self.n_units, dtype=np.float64)
        pos_sorted = positive.astype(np.float32)[self.order]
        tp = np.cumsum(pos_sorted, axis=1, dtype=np.float64)
        if include is None:
            seen = np.arange(1, self.n_prompts + 1, dtype=np.float64)[None, :]
            if self.block_end is not None:
                seen = self.block_end + 1.0
        else:
            seen = self._at_end(np.cumsum(include.astype(np.float32)[self.order], axis=1))
        precision = self._at_end(tp) / np.maximum(seen, 1.0)
        return (pos_sorted * precision).sum(axis=1) / n_pos


def average_precision(scores: Any, positive: Any, include: Any | None = None) -> np.ndarray:
    """AP of every column of ``scores`` (``[n, units]``) for bool labels ``positive``."""
    return SortedBlock(scores).average_precision(positive, include)


def average_precision_many(
    scores: Any,
    labellings: Sequence[tuple[Any, Any | None]],
    unit_chunk: int = 4096,
) -> np.ndarray:
    """AP ``[len(labellings), units]``, sorting each chunk of units once for all labellings."""
    arr = scores.detach().cpu().numpy() if hasattr(scores, "detach") else np.asarray(scores)
    out = np.empty((len(labellings), arr.shape[1]))
    for start in range(0, arr.shape[1], unit_chunk):
        block = SortedBlock(arr[:, start : start + unit_chunk])
        for i, (positive, include) in enumerate(labellings):
            out[i, start : start + block.n_units] = block.average_precision(positive, include)
    return out
