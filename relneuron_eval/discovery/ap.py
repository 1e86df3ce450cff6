"""Vectorised average precision (AP) of many units at once.

Relation-specific neurons rank every unit by the AP of its per-prompt scores against
positive/negative labels. With ~835k units and a dozen relations, calling scikit-learn
per unit is hopeless, so this module computes AP for a whole block of units with a few
tensor ops, and sorts each block ONCE for all relations ("sort once, score many"):
a relation only picks which rows are included and which are positive.

Ties follow scikit-learn's ``average_precision_score``: tied scores form one threshold,
and every positive in a tie block gets the precision at the end of that block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class SortedBlock:
    """A block of unit scores ``[n_prompts, n_units]`` sorted per unit, descending."""

    def __init__(self, scores: torch.Tensor) -> None:
        if scores.dim() != 2:
            raise ValueError(f"scores must be [n_prompts, n_units], got {tuple(scores.shape)}")
        scores = scores.float()
        n = scores.shape[0]
        self.order = torch.argsort(scores, dim=0, descending=True, stable=True)
        ranked = torch.gather(scores, 0, self.order)
        is_end = torch.ones_like(ranked, dtype=torch.bool)
        is_end[:-1] = ranked[:-1] != ranked[1:]
        del ranked
        rows = torch.arange(n).unsqueeze(1).expand_as(self.order)
        marks = torch.where(is_end, rows, torch.full_like(rows, n - 1))
        # nearest tie-block end at or after each position (reverse cumulative minimum)
        self.block_end = torch.flip(torch.cummin(torch.flip(marks, [0]), 0).values, [0])
        self.n_prompts = n

    def average_precision(self, positive: torch.Tensor, include: torch.Tensor | None = None):
        """AP per unit for one labelling: ``positive`` (bool [n]) among ``include`` rows.

        Rows outside ``include`` are ignored entirely, as if they had not been scored.
        Units of a labelling with no positives get AP 0.
        """
        positive = positive.to(torch.bool)
        include = torch.ones_like(positive) if include is None else include.to(torch.bool)
        positive = positive & include
        n_pos = int(positive.sum())
        if n_pos == 0:
            return torch.zeros(self.order.shape[1])
        pos_sorted = positive.to(torch.float32)[self.order]
        tp = torch.cumsum(pos_sorted, 0)
        seen = torch.cumsum(include.to(torch.float32)[self.order], 0)
        precision_at_end = torch.gather(tp, 0, self.block_end) / torch.gather(
            seen, 0, self.block_end
        ).clamp(min=1.0)
        return (pos_sorted * precision_at_end).sum(0) / n_pos


def average_precision(
    scores: torch.Tensor, positive: torch.Tensor, include: torch.Tensor | None = None
) -> torch.Tensor:
    """AP of every column of ``scores`` ([n, units]) for bool labels ``positive`` ([n])."""
    return SortedBlock(scores).average_precision(positive, include)


def average_precision_many(
    scores: torch.Tensor,
    labellings: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    unit_chunk: int = 4096,
) -> torch.Tensor:
    """AP ``[len(labellings), units]``, sorting each chunk of units once for all labellings.

    ``unit_chunk`` bounds memory: about ``n_prompts * unit_chunk * 40`` bytes at a time.
    """
    out = torch.empty(len(labellings), scores.shape[1])
    for start in range(0, scores.shape[1], unit_chunk):
        block = SortedBlock(torch.as_tensor(scores[:, start : start + unit_chunk]))
        for i, (positive, include) in enumerate(labellings):
            out[i, start : start + block.order.shape[1]] = block.average_precision(
                positive, include
            )
        del block
    return out
