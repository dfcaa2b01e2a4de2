"""Vectorised ranking metrics over whole batches, with a stated tie rule.

Tie rule (conservative, the default everywhere in funnelrec): an item's rank is the number of
items scoring at least as high as it, itself included. A target tied with 99 other items is at
rank 100, never at rank 1; a model that outputs constants gets no free hits. ``"optimistic"``
(1 + number scoring strictly higher) is available for comparison with code that uses it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

TieRule = Literal["conservative", "optimistic"]


def ranks_of(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, ties: TieRule = "conservative",
             max_rank: int | None = None) -> np.ndarray:
    """Rank (1 = best) of ``scores[rows, cols]`` within its row of ``scores``.

    With ``max_rank``, ranks beyond it are returned as ``max_rank + 1`` (cheaper: exact counts
    are only computed for entries that can be inside the cutoff).
    """
    if ties not in ("conservative", "optimistic"):
        raise ValueError(f"ties must be 'conservative' or 'optimistic', got {ties!r}")
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    target = scores[rows, cols]
    ranks = np.full(len(rows), np.iinfo(np.int64).max if max_rank is None else max_rank + 1, np.int64)
    candidates = np.arange(len(rows))
    if max_rank is not None and max_rank < scores.shape[1]:
        # the max_rank-th best score of each row: anything below it is outside the cutoff
        kth = -np.partition(-scores, max_rank - 1, axis=1)[:, max_rank - 1]
        candidates = np.flatnonzero(target >= kth[rows])
    for lo in range(0, len(candidates), 256):
        chunk = candidates[lo : lo + 256]
        row_scores = scores[rows[chunk]]
        t = target[chunk][:, None]
        if ties == "conservative":
            counted = (row_scores >= t).sum(axis=1)
        else:
            counted = (row_scores > t).sum(axis=1) + 1
        ranks[chunk] = counted
    if max_rank is not None:
        ranks = np.minimum(ranks, max_rank + 1)
    # a masked target (-inf) is never a hit
    ranks[~np.isfinite(target) & (target < 0)] = np.iinfo(np.int64).max if max_rank is None else max_rank + 1
    return ranks


def ideal_dcg(n_relevant: np.ndarray, k: int) -> np.ndarray:
    """IDCG@k for users with ``n_relevant`` relevant items (binary relevance)."""
    discounts = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
    return discounts[np.minimum(n_relevant, k)]


def user_metrics(ranks: np.ndarray, user_of: np.ndarray, n_users: int, n_relevant: np.ndarray,
                 k_values: list[int], cutoff: int) -> dict[str, np.ndarray]:
    """Per-user precision/recall/ndcg/hit_rate at each k, and hit_rate/mrr at ``cutoff``.

    ``ranks[j]`` is the rank of relevant entry ``j`` of user ``user_of[j]``; ``n_relevant[u]``
    counts the user's relevant items (relevant items the model cannot rank count as misses).
    Recall divides by all relevant items.
    """
    out: dict[str, np.ndarray] = {}
    gains = 1.0 / np.log2(ranks.astype(np.float64) + 1.0)
    for k in k_values:
        hit = ranks <= k
        hits = np.bincount(user_of, weights=hit, minlength=n_users)
        dcg = np.bincount(user_of, weights=np.where(hit, gains, 0.0), minlength=n_users)
        out[f"precision@{k}"] = hits / k
        out[f"recall@{k}"] = hits / np.maximum(n_relevant, 1)
        out[f"ndcg@{k}"] = dcg / np.maximum(ideal_dcg(n_relevant, k), 1e-12)
        out[f"hit_rate@{k}"] = (hits > 0).astype(np.float64)
    best = np.full(n_users, np.inf)
    np.minimum.at(best, user_of, ranks.astype(np.float64))
    out["hit_rate"] = (best <= cutoff).astype(np.float64)
    out["mrr"] = np.where(best <= cutoff, 1.0 / best, 0.0)
    return out


def next_item_metrics(ranks: np.ndarray, k_values: list[int]) -> dict[str, np.ndarray]:
    """Per-event recall@k (= hit), mrr@k and ndcg@k for one target per event."""
    r = ranks.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for k in k_values:
        hit = r <= k
        out[f"recall@{k}"] = hit.astype(np.float64)
        out[f"mrr@{k}"] = np.where(hit, 1.0 / r, 0.0)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)
    return out


def catalogue_coverage(top_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one list (``-1`` slots ignored)."""
    shown = np.unique(top_items[top_items >= 0])
    return len(shown) / n_items if n_items else 0.0


def csr_entries(matrix: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """``(row, col)`` of every stored entry of a CSR matrix."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    return rows, matrix.indices.astype(np.int64)
