"""The Evaluator's protocols, on a model whose scores the test controls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelrec.data.encoding import Sequences
from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.schema import to_canonical
from funnelrec.evaluation import Evaluator
from funnelrec.models.base import Recommender

T0 = 1_430_000_000_000
MIN = 60_000


class FixedScores(Recommender):
    """Scores every visitor with ``user_scores`` and every session with 'next item = last + 1'."""

    name = "Fixed"

    def __init__(self, user_scores: dict[int, list[float]] | None = None, constant: bool = False) -> None:
        self.user_scores = user_scores
        self.constant = constant

    def _fit(self, data, events, val_events):
        pass

    def _score_users(self, user_idx):
        ids = self.visitor_map_.to_ids(user_idx)
        if self.constant:
            return np.zeros((len(user_idx), self.n_items), np.float32)
        return np.array([self.user_scores[int(v)] for v in ids], dtype=np.float32)

    def _score_sessions(self, sessions: Sequences):
        scores = np.zeros((len(sessions), self.n_items), np.float32)
        if self.constant:
            return scores
        last = sessions.items[sessions.offsets[1:] - 1]
        scores[np.arange(len(sessions)), (last + 1) % self.n_items] = 1.0
        return scores


def frame(rows):
    df = pd.DataFrame(rows, columns=["timestamp", "visitor_id", "event", "item_id"])
    return SessionBuilder().build_sessions(to_canonical(df))


@pytest.fixture
def train():
    # items 10..14 exist; visitor 1 saw 10, visitor 2 saw 11, visitor 3 saw 12, 13, 14
    return frame([
        (T0, 1, "view", 10), (T0 + MIN, 2, "view", 11), (T0 + 2 * MIN, 3, "view", 12),
        (T0 + 3 * MIN, 3, "view", 13), (T0 + 4 * MIN, 3, "view", 14),
    ])


def test_evaluate_hand_computed(train):
    test = frame([
        (T0 + 10**8, 1, "view", 11), (T0 + 10**8 + MIN, 1, "addtocart", 12),
        (T0 + 10**8, 2, "view", 11),  # only a seen item: no truth left -> skipped
        (T0 + 10**8, 9, "view", 10),  # cold visitor: not evaluated
    ])
    # catalogue order is sorted ids 10..14
    model = FixedScores({1: [9, 5, 1, 3, 2], 2: [1, 1, 1, 1, 1], 3: [0, 0, 0, 0, 0]}).fit(train)
    result = Evaluator(k_values=[1, 2]).evaluate(model, train, test, n_items=3)
    # visitor 1: seen 10 masked; ranking 11 (5), 13 (3), 14 (2), 12 (1) -> truth {11, 12}: ranks 1, 4
    assert result["n_users"] == 1 and result["n_users_no_truth"] == 1 and result["n_users_warm"] == 2
    assert result["precision@1"] == 1.0
    assert result["recall@1"] == 0.5
    assert result["recall@2"] == 0.5
    assert result["mrr"] == 1.0
    assert result["model"] == "Fixed"
    assert result["coverage"] == pytest.approx(3 / 5)


def test_evaluate_keep_seen_and_purchase_truth(train):
    test = frame([(T0 + 10**8, 1, "view", 10), (T0 + 10**8 + MIN, 1, "addtocart", 12)])
    model = FixedScores({1: [9, 5, 1, 3, 2]}).fit(train)
    keep = Evaluator(k_values=[1], exclude_seen=False).evaluate(model, train, test, n_items=5)
    assert keep["recall@1"] == 0.5  # item 10 (seen, score 9) now counts and ranks first
    intent = Evaluator(k_values=[5], truth_events=["addtocart", "transaction"]).evaluate(model, train, test, 5)
    assert intent["recall@5"] == 1.0 and intent["mrr"] == pytest.approx(1 / 4)


def test_truth_item_unknown_to_model_is_a_counted_miss(train):
    test = frame([(T0 + 10**8, 1, "view", 11), (T0 + 10**8 + MIN, 1, "view", 999)])
    model = FixedScores({1: [9, 5, 1, 3, 2]}).fit(train)
    result = Evaluator(k_values=[5]).evaluate(model, train, test, n_items=5)
    assert result["n_truth_items_unknown"] == 1
    assert result["recall@5"] == 0.5


def test_constant_scores_earn_nothing(train):
    test = frame([(T0 + 10**8, 3, "view", 10)])
    model = FixedScores(constant=True).fit(train)
    result = Evaluator(k_values=[1]).evaluate(model, train, test, n_items=1)
    # 10 ties with 11 (both unseen, score 0): conservative rank 2, so no hit at 1
    assert result["hit_rate@1"] == 0.0
    optimistic = Evaluator(k_values=[1], ties="optimistic").evaluate(model, train, test, n_items=1)
    assert optimistic["hit_rate@1"] == 1.0


def test_max_users_samples_reproducibly():
    rows = [(T0 + v * MIN, v, "view", 10 + v % 5) for v in range(50)]
    rows += [(T0 + 10**8 + v, v, "view", 10 + (v + 1) % 5) for v in range(50)]
    events = frame(rows)
    train, test = events[events.timestamp < pd.Timestamp(T0 + 10**7, unit="ms", tz="UTC")], events
    test = test[test.timestamp >= pd.Timestamp(T0 + 10**7, unit="ms", tz="UTC")]
    model = FixedScores(constant=True).fit(train)
    a = Evaluator(seed=1).evaluate(model, train, test, max_users=10, return_details=True)
    b = Evaluator(seed=1).evaluate(model, train, test, max_users=10, return_details=True)
    assert a["n_users"] == 10 and a["n_users_warm"] == 50
    assert a.details.index.tolist() == b.details.index.tolist()
    assert len(a.details) == 10 and "ndcg@10" in a.details.columns


def test_evaluate_sessions_next_item(train):
    # sessions [10, 11, 12] and [13, 999, 14]: model predicts last+1
    test = frame([
        (T0, 7, "view", 10), (T0 + MIN, 7, "view", 11), (T0 + 2 * MIN, 7, "view", 12),
        (T0, 8, "view", 13), (T0 + MIN, 8, "view", 999), (T0 + 2 * MIN, 8, "view", 14),
    ])
    model = FixedScores({}).fit(train)
    result = Evaluator(k_values=[1]).evaluate_sessions(model, test, cutoff=1, return_details=True)
    # targets: 11 (hit), 12 (hit), 999 (unknown: miss), 14 (prefix [13] after dropping 999 -> hit)
    assert result["n_events"] == 4 and result["n_sessions"] == 2
    assert result["n_events_unknown_target"] == 1
    assert result["recall@1"] == pytest.approx(3 / 4)
    assert result["mrr@1"] == pytest.approx(3 / 4)
    assert result.details["rank"].tolist()[:2] == [1, 1]


def test_evaluate_sessions_ties_against_model(train):
    test = frame([(T0, 7, "view", 10), (T0 + MIN, 7, "view", 11)])
    model = FixedScores(constant=True).fit(train)
    result = Evaluator(k_values=[1, 5]).evaluate_sessions(model, test, cutoff=5)
    assert result["recall@1"] == 0.0 and result["recall@5"] == 1.0 and result["mrr@5"] == pytest.approx(0.2)


class RepeatLast(FixedScores):
    """Predicts that the visitor views the last item again."""

    def _score_sessions(self, sessions: Sequences):
        scores = np.zeros((len(sessions), self.n_items), np.float32)
        scores[np.arange(len(sessions)), sessions.items[sessions.offsets[1:] - 1]] = 1.0
        return scores


def test_evaluate_sessions_counts_repeat_views(train):
    # a shop page leaves the session's items out (recommend_by_item_ids' default), but the
    # next-item protocol keeps its rule: a repeat view is a real next item, ranked unfiltered
    test = frame([(T0, 7, "view", 12), (T0 + MIN, 7, "view", 12)])
    model = RepeatLast({}).fit(train)
    assert 12 not in model.recommend_by_item_ids([12], n_items=1).item_ids
    result = Evaluator(k_values=[1]).evaluate_sessions(model, test, cutoff=1)
    assert result["n_events"] == 1 and result["recall@1"] == 1.0


def test_bad_arguments(train):
    model = FixedScores(constant=True).fit(train)
    with pytest.raises(ValueError, match="k_values"):
        Evaluator(k_values=[0])
    with pytest.raises(ValueError, match="truth_events"):
        Evaluator(truth_events=["click"])
    with pytest.raises(ValueError, match="n_items"):
        Evaluator().evaluate(model, train, train, n_items=0)
    with pytest.raises(ValueError, match="session_id"):
        Evaluator().evaluate_sessions(model, train.drop(columns="session_id"))
