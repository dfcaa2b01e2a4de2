"""Popular, ALS and Item2Vec: conformance plus what each is for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conformance import RecommenderConformance

from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.schema import to_canonical
from funnelrec.models import ALSRecommender, Item2VecRecommender, PopularItemsRecommender


class TestPopular(RecommenderConformance):
    def make_model(self):
        return PopularItemsRecommender()


class TestALS(RecommenderConformance):
    def make_model(self):
        return ALSRecommender(factors=16, iterations=5, random_state=3)


class TestItem2Vec(RecommenderConformance):
    def make_model(self):
        return Item2VecRecommender(embedding_dim=16, epochs=3, seed=3)

    def test_refit_on_other_weights_forgets_the_old_popularity(self, tiny_split, known_visitor):
        train, _, _ = tiny_split
        as_purchases = train.assign(event=pd.Categorical(["transaction"] * len(train),
                                                         categories=train["event"].cat.categories))
        model = self.make_model().fit(train)
        model.recommend(known_visitor)  # caches the popularity prior of the first fit
        model.fit(as_purchases)  # same catalogue, other event weights
        fresh = self.make_model().fit(as_purchases)
        assert model.recommend(known_visitor, n_items=20) == fresh.recommend(known_visitor, n_items=20)


T0 = 1_430_000_000_000


def _events(rows):
    df = pd.DataFrame(rows, columns=["timestamp", "visitor_id", "event", "item_id"])
    return SessionBuilder().build_sessions(to_canonical(df))


def test_popular_weights_and_decay():
    rows = [(T0, 1, "view", 1), (T0 + 1, 2, "view", 1), (T0 + 2, 3, "transaction", 2)]
    model = PopularItemsRecommender().fit(_events(rows))
    # weights view 1, transaction 5: item 2 (5) beats item 1 (2)
    assert model.recommend(99, n_items=2) == [(2, 5.0), (1, 2.0)]
    day = 86_400_000
    rows = [(T0, 1, "view", 1), (T0 + 1, 2, "view", 1), (T0 + 30 * day, 3, "view", 2)]
    decayed = PopularItemsRecommender(half_life_days=7).fit(_events(rows))
    assert decayed.recommend(99, n_items=1).item_ids == [2]
    assert decayed.recommend(99, n_items=2)[1][1] == pytest.approx(2 * 0.5 ** (30 / 7), rel=1e-4)


def test_popular_session_categories_first():
    rows = [(T0 + i, i, "view", 1) for i in range(5)] + [(T0 + 10, 9, "view", 2)]
    frame = _events(rows)
    frame["category_id"] = pd.array(np.where(frame["item_id"] == 1, 100, 200), dtype="Int64")
    model = PopularItemsRecommender().fit(frame)
    assert model.recommend_by_item_ids([2], n_items=2, exclude_session_items=False).item_ids == [2, 1]
    assert PopularItemsRecommender(use_categories=False).fit(frame).recommend_by_item_ids(
        [2], 2, exclude_session_items=False).item_ids == [1, 2]


def test_als_checkerboard_recovers_block():
    # two groups of visitors, each liking one block of items; a held-out item of the own block
    # must outrank every item of the other block
    rows, t = [], T0
    for v in range(40):
        block = range(0, 10) if v < 20 else range(10, 20)
        for item in block:
            if not (v == 0 and item == 3):
                rows.append((t, v, "view", item))
                t += 3_600_000
    model = ALSRecommender(factors=4, iterations=15, random_state=0).fit(_events(rows))
    recs = model.recommend(0, n_items=1)
    assert recs.item_ids == [3]


def test_item2vec_learns_cooccurrence_and_is_reproducible():
    rng = np.random.default_rng(0)
    rows, t = [], T0
    for v in range(300):
        pair = rng.integers(0, 10)
        for item in (2 * pair, 2 * pair + 1, 2 * pair, 2 * pair + 1):
            rows.append((t, v, "view", int(item)))
            t += 1000
        t += 10**8
    events = _events(rows)
    a = Item2VecRecommender(embedding_dim=8, epochs=20, window=2, seed=1).fit(events)
    hits = [a.get_similar_items(2 * p, 1).item_ids == [2 * p + 1] for p in range(10)]
    assert np.mean(hits) >= 0.9
    b = Item2VecRecommender(embedding_dim=8, epochs=20, window=2, seed=1).fit(events)
    assert np.array_equal(a.item_vectors_, b.item_vectors_)


@pytest.mark.parametrize("cls,kwargs", [
    (ALSRecommender, {"factors": 0}), (ALSRecommender, {"alpha": 0}),
    (Item2VecRecommender, {"window": 0}), (Item2VecRecommender, {"recency_decay": 1.5}),
    (PopularItemsRecommender, {"half_life_days": -1}),
])
def test_bad_hyperparameters(cls, kwargs):
    with pytest.raises(ValueError):
        cls(**kwargs)
