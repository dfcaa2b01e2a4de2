"""Each baseline beats Popular on the protocol it is built for (small synthetic shop).

The demo-scale figures live in benchmarks/RESULTS.md; this is the same check at a size a test
can afford, with more returning visitors so the visitor-holdout protocol has enough of them.
"""

from __future__ import annotations

import pytest

from funnelrec.evaluation import Evaluator
from funnelrec.models import (
    ALSRecommender,
    Item2VecRecommender,
    PopularItemsRecommender,
    SessionKNNRecommender,
)

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def scores(small_split):
    train, _, test = small_split
    evaluator = Evaluator(k_values=[10, 20])
    out = {}
    for model in (
        PopularItemsRecommender(),
        ALSRecommender(factors=32, iterations=10, random_state=0),
        Item2VecRecommender(embedding_dim=32, epochs=10, seed=0),
        SessionKNNRecommender(),
    ):
        model.fit(train)
        holdout = evaluator.evaluate(model, train, test, n_items=20, max_users=2000)
        sessions = evaluator.evaluate_sessions(model, test, cutoff=20)
        out[model.name] = (holdout["ndcg@10"], sessions["mrr@20"], holdout["n_users"])
    return out


def test_enough_visitors_for_the_comparison(scores):
    assert scores["Popular"][2] >= 150


@pytest.mark.parametrize("name", ["ALS", "Item2Vec"])
def test_history_models_beat_popular_on_visitor_holdout(scores, name):
    assert scores[name][0] > scores["Popular"][0]


@pytest.mark.parametrize("name", ["SessionKNN", "Item2Vec"])
def test_session_models_beat_popular_on_next_item(scores, name):
    assert scores[name][1] > scores["Popular"][1]
