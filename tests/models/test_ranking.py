"""The shared top-k ranker: order, masked entries, and the tie rule at the cut."""

from __future__ import annotations

import numpy as np

from funnelrec.models.base import top_k


def test_best_first_and_masked_entries_empty():
    scores = np.array([[0.1, 0.9, -np.inf, 0.5]], dtype=np.float32)
    idx, top = top_k(scores, 4)
    assert idx.tolist() == [[1, 3, 0, -1]]
    assert top[0, :3].tolist() == [np.float32(0.9), np.float32(0.5), np.float32(0.1)]


def test_ties_at_the_cut_go_to_the_lowest_indices():
    # six items tied at 0.5 and one above: whatever k, the lowest-index tied items get in
    row = np.array([0.5, 0.5, 0.2, 0.5, 0.9, 0.5, 0.5, 0.5], dtype=np.float32)
    for k in range(1, 8):
        assert top_k(row[None], k)[0][0].tolist() == [4, 0, 1, 3, 5, 6, 7, 2][:k]


def test_top_k_is_a_prefix_of_a_longer_list_under_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 3000)).astype(np.float32)  # thousands of ties per row
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    full = np.lexsort((np.broadcast_to(np.arange(3000), scores.shape), -scores), axis=1)
    for k in (1, 7, 10, 100, 2999):
        idx, _ = top_k(scores, k)
        expected = full[:, :k].copy()
        expected[np.isneginf(np.take_along_axis(scores, expected, axis=1))] = -1  # masked: empty slots
        assert np.array_equal(idx, expected)
