"""Vectorised AP must agree with scikit-learn's average_precision_score, unit by unit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from relneuron_eval.discovery.ap import average_precision, average_precision_many


@pytest.mark.parametrize("seed", range(6))
def test_matches_sklearn_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, units = int(rng.integers(5, 80)), 37
    scores = rng.normal(size=(n, units)).astype(np.float32)
    if seed % 2:  # heavy ties: rounding to a coarse grid
        scores = np.round(scores * 2) / 2
    labels = rng.random(n) < 0.3
    labels[0] = True
    ours = average_precision(torch.from_numpy(scores), torch.from_numpy(labels))
    ref = np.array([average_precision_score(labels, scores[:, j]) for j in range(units)])
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_include_mask_equals_dropping_rows() -> None:
    rng = np.random.default_rng(7)
    scores = np.round(rng.normal(size=(60, 20)), 1).astype(np.float32)
    labels = rng.random(60) < 0.25
    include = rng.random(60) < 0.6
    labels[np.flatnonzero(include)[0]] = True
    ours = average_precision(
        torch.from_numpy(scores), torch.from_numpy(labels), torch.from_numpy(include)
    )
    ref = [average_precision_score(labels[include], scores[include, j]) for j in range(20)]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_hand_computed_small_case() -> None:
    # scores 0.9(+) 0.8(-) 0.7(+) 0.1(-): AP = (1/1 + 2/3) / 2
    scores = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
    labels = torch.tensor([True, False, True, False])
    assert float(average_precision(scores, labels)[0]) == pytest.approx((1 + 2 / 3) / 2)
    # a tie between a positive and a negative at the top: precision 1/2 for that block
    tied = torch.tensor([[0.5], [0.5], [0.1]])
    assert float(average_precision(tied, torch.tensor([True, False, False]))[0]) == 0.5


def test_many_labellings_and_chunks_agree_with_single() -> None:
    rng = np.random.default_rng(3)
    scores = torch.from_numpy(np.round(rng.normal(size=(50, 23)), 1).astype(np.float32))
    labellings = []
    for _ in range(3):
        pos = torch.from_numpy(rng.random(50) < 0.2)
        inc = torch.from_numpy(rng.random(50) < 0.7) | pos
        labellings.append((pos, inc))
    many = average_precision_many(scores, labellings, unit_chunk=5)
    for i, (pos, inc) in enumerate(labellings):
        np.testing.assert_allclose(many[i], average_precision(scores, pos, inc))


def test_no_ties_fast_path_matches_sklearn() -> None:
    rng = np.random.default_rng(11)
    scores = rng.normal(size=(40, 9))  # continuous: no ties, the fast path
    labels = rng.random(40) < 0.4
    ours = average_precision(scores, labels)
    ref = [average_precision_score(labels, scores[:, j].astype(np.float32)) for j in range(9)]
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
