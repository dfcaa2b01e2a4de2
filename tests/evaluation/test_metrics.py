"""Ranking metrics: hand-computed cases, the tie rule, and agreement with ranx."""

from __future__ import annotations

import math

import numpy as np
import pytest

from funnelrec.evaluation.metrics import (
    catalogue_coverage,
    ideal_dcg,
    next_item_metrics,
    ranks_of,
    user_metrics,
)


def test_ranks_conservative_and_optimistic_ties():
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]])
    # target item 0 ties with items 2 and 3, one item above
    assert ranks_of(scores, [0], [0], "conservative")[0] == 4
    assert ranks_of(scores, [0], [0], "optimistic")[0] == 2
    assert ranks_of(scores, [0], [1])[0] == 1
    assert ranks_of(scores, [0], [4])[0] == 5


def test_constant_model_gets_no_free_hits():
    scores = np.zeros((3, 100), dtype=np.float32)
    ranks = ranks_of(scores, [0, 1, 2], [0, 50, 99], max_rank=20)
    assert (ranks > 20).all()


def test_max_rank_matches_exact_ranks_inside_cutoff():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 30, size=(40, 200)).astype(np.float32)  # many ties
    rows = np.repeat(np.arange(40), 5)
    cols = rng.integers(0, 200, size=len(rows))
    exact = ranks_of(scores, rows, cols)
    capped = ranks_of(scores, rows, cols, max_rank=20)
    assert np.array_equal(np.minimum(exact, 21), capped)
    # brute force definition
    brute = np.array([(scores[r] >= scores[r, c]).sum() for r, c in zip(rows, cols, strict=True)])
    assert np.array_equal(exact, brute)


def test_masked_target_is_never_a_hit():
    scores = np.array([[-np.inf, -np.inf, 1.0]])
    assert ranks_of(scores, [0], [0], max_rank=2)[0] == 3


def test_user_metrics_hand_computed():
    # user 0: relevant {a, b}; a at rank 1, b at rank 3. user 1: one relevant at rank 7.
    ranks = np.array([1, 3, 7])
    user_of = np.array([0, 0, 1])
    n_relevant = np.array([2, 1])
    m = user_metrics(ranks, user_of, 2, n_relevant, [2, 5], cutoff=5)
    assert m["precision@2"].tolist() == [0.5, 0.0]
    assert m["recall@2"].tolist() == [0.5, 0.0]
    assert m["precision@5"].tolist() == [0.4, 0.0]
    assert m["recall@5"].tolist() == [1.0, 0.0]
    idcg2 = 1 + 1 / math.log2(3)
    assert m["ndcg@2"][0] == pytest.approx(1 / idcg2)
    assert m["ndcg@5"][0] == pytest.approx((1 + 1 / math.log2(4)) / idcg2)
    assert m["hit_rate@2"].tolist() == [1.0, 0.0]
    assert m["mrr"].tolist() == [1.0, 0.0]
    assert m["hit_rate"].tolist() == [1.0, 0.0]


def test_unrankable_relevant_item_counts_in_recall_denominator():
    # two relevant items, one of them unknown to the model (rank beyond any cutoff)
    m = user_metrics(np.array([1, 10**9]), np.array([0, 0]), 1, np.array([2]), [5], cutoff=5)
    assert m["recall@5"][0] == 0.5


def test_ideal_dcg():
    assert ideal_dcg(np.array([0, 1, 3]), 2).tolist() == pytest.approx([0.0, 1.0, 1 + 1 / math.log2(3)])


def test_next_item_metrics():
    m = next_item_metrics(np.array([1, 4, 30]), [5, 20])
    assert m["recall@5"].tolist() == [1, 1, 0]
    assert m["mrr@20"].tolist() == pytest.approx([1.0, 0.25, 0.0])
    assert m["ndcg@5"].tolist() == pytest.approx([1.0, 1 / math.log2(5), 0.0])


def test_coverage():
    assert catalogue_coverage(np.array([[0, 1], [1, -1]]), 10) == 0.2


def test_agrees_with_ranx_on_random_rankings():
    ranx = pytest.importorskip("ranx")
    rng = np.random.default_rng(7)
    n_users, n_items, ks = 60, 80, [1, 5, 10, 20]
    scores = rng.random((n_users, n_items))  # continuous: no ties, so tie rules agree
    relevant = [rng.choice(n_items, size=rng.integers(1, 6), replace=False) for _ in range(n_users)]
    user_of = np.concatenate([[u] * len(r) for u, r in enumerate(relevant)])
    cols = np.concatenate(relevant)
    ranks = ranks_of(scores, user_of, cols)
    ours = user_metrics(ranks, user_of, n_users, np.array([len(r) for r in relevant]), ks, cutoff=n_items)
    qrels = ranx.Qrels({f"u{u}": {f"i{i}": 1 for i in r} for u, r in enumerate(relevant)})
    run = ranx.Run({f"u{u}": {f"i{i}": float(scores[u, i]) for i in range(n_items)} for u in range(n_users)})
    names = [f"{m}@{k}" for k in ks for m in ("precision", "recall", "ndcg", "hit_rate")] + ["mrr"]
    theirs = ranx.evaluate(qrels, run, names)
    for name in names:
        assert ours[name].mean() == pytest.approx(theirs[name], abs=1e-9), name
