"""The funnel-aware hybrid: conformance, learned context-dependent weights, persistence."""

from __future__ import annotations

import numpy as np
import pytest
from conformance import RecommenderConformance

from funnelrec.models import (
    ALSRecommender,
    FunnelAwareHybridRecommender,
    Item2VecRecommender,
    PopularItemsRecommender,
    Recommender,
    SessionKNNRecommender,
)


def components(seed=0):
    return {
        "popular_model": PopularItemsRecommender(),
        "content_model": Item2VecRecommender(embedding_dim=16, epochs=3, seed=seed),
        "cf_model": ALSRecommender(factors=16, iterations=5, random_state=seed),
        "session_model": SessionKNNRecommender(),
    }


class TestHybrid(RecommenderConformance):
    def make_model(self):
        return FunnelAwareHybridRecommender(**components(), epochs=50, max_training_examples=800, seed=1)

    def test_unknown_visitor_with_session_gets_its_categories(self, fitted, tiny_split):
        # the hybrid does better than the popularity fallback: it fuses the live session
        train, _, _ = tiny_split
        recs = fitted.recommend(-12345, n_items=3, session_item_ids=train["item_id"].iloc[:2].tolist())
        assert not recs.is_fallback and len(recs) == 3
        assert sum(recs.component_weights.values()) == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def learned(small_split):
    train, val, _ = small_split
    return FunnelAwareHybridRecommender(**components(), seed=0).fit(train, val_events=val)


def test_weights_depend_on_context(learned, small_split):
    train, _, _ = small_split
    sessions_per_visitor = train.groupby("visitor_id")["session_id"].nunique()
    returning = sessions_per_visitor[sessions_per_visitor.between(2, 10)].index[:50]
    lengths = train["session_id"].value_counts()
    long_sessions = train[train.session_id.isin(lengths[lengths >= 4].index[:50])].groupby("session_id")["item_id"]
    history_only = [learned.explain_weights(int(v)) for v in returning]
    live_only = [learned.explain_weights(None, items.tolist()) for _, items in long_sessions]
    assert len(history_only) == len(live_only) == 50
    assert all(sum(w.values()) == pytest.approx(1.0, abs=1e-5) for w in history_only + live_only)

    def mean(weights, role):
        return float(np.mean([w[role] for w in weights]))

    # the session model counts more for a long live session than for a returning visitor with
    # none; which history model takes the rest depends on the data (on this small log popularity,
    # content and cf come out close and their order moved between machines), so it is not asserted
    assert mean(live_only, "session") > mean(history_only, "session") + 0.05


def test_weights_are_on_the_result(learned, small_split):
    train, _, _ = small_split
    visitor = int(train.visitor_id.iloc[0])
    recs = learned.recommend(visitor, n_items=5)
    assert set(recs.component_weights) == {"popular", "content", "cf", "session"}
    live = learned.recommend_by_item_ids(train.item_id.iloc[:3].tolist(), n_items=5)
    assert live.component_weights == learned.explain_weights(None, train.item_id.iloc[:3].tolist())


def test_recommend_with_visitor_and_session(learned, small_split):
    train, _, _ = small_split
    visitor = int(train.visitor_id.iloc[0])
    items = train.item_id.iloc[10:14].tolist()
    both = learned.recommend(visitor, n_items=10, session_item_ids=items)
    alone = learned.recommend(visitor, n_items=10)
    assert both.item_ids != alone.item_ids  # the live session changes the answer
    seen = set(train.loc[train.visitor_id == visitor, "item_id"])
    assert not seen & set(both.item_ids)


def test_any_component_may_be_missing(tiny_split):
    train, val, _ = tiny_split
    model = FunnelAwareHybridRecommender(cf_model=ALSRecommender(factors=8, iterations=3, random_state=0),
                                         epochs=20).fit(train, val_events=val)
    assert model.roles_ == ["cf"]
    assert len(model.recommend(int(train.visitor_id.iloc[0]), n_items=3)) == 3


def test_normalisations_and_bad_arguments(tiny_split):
    train, val, _ = tiny_split
    for how in ("zscore", "rank"):
        model = FunnelAwareHybridRecommender(popular_model=PopularItemsRecommender(),
                                             cf_model=ALSRecommender(factors=8, iterations=3, random_state=0),
                                             score_normalization=how, epochs=20).fit(train, val_events=val)
        scores = [s for _, s in model.recommend(int(train.visitor_id.iloc[0]), n_items=5)]
        assert scores == sorted(scores, reverse=True) and np.isfinite(scores).all()
    with pytest.raises(ValueError, match="score_normalization"):
        FunnelAwareHybridRecommender(popular_model=PopularItemsRecommender(), score_normalization="max")
    with pytest.raises(ValueError, match="at least one"):
        FunnelAwareHybridRecommender().fit(train)
    with pytest.raises(TypeError, match="cf_model"):
        FunnelAwareHybridRecommender(cf_model="als")
    for bad in ({"epochs": -1}, {"n_candidates": 0}, {"max_training_examples": 2.5},
                {"learning_rate": 0.0}, {"weight_decay": float("nan")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FunnelAwareHybridRecommender(popular_model=PopularItemsRecommender(), **bad)


def test_zero_epochs_keeps_uniform_weights(tiny_split):
    train, val, _ = tiny_split
    model = FunnelAwareHybridRecommender(popular_model=PopularItemsRecommender(),
                                         cf_model=ALSRecommender(factors=8, iterations=3, random_state=0),
                                         epochs=0).fit(train, val_events=val)
    assert model.explain_weights(int(train.visitor_id.iloc[0])) == {"popular": 0.5, "cf": 0.5}


def test_saved_hybrid_keeps_its_components(learned, tmp_path):
    path = learned.save(tmp_path / "hybrid")
    assert sorted(p.name for p in (path / "components").iterdir()) == ["cf", "content", "popular", "session"]
    loaded = Recommender.load(path)
    assert loaded.explain_weights(None, [int(learned.item_ids[0])]) == learned.explain_weights(
        None, [int(learned.item_ids[0])])


def test_exclude_seen_false_keeps_the_visitors_items(learned, small_split):
    train, _, _ = small_split
    visitor = int(train["visitor_id"].value_counts().index[0])
    seen = set(train.loc[train.visitor_id == visitor, "item_id"])
    kept = learned.recommend(visitor, n_items=50, exclude_seen=False)
    assert seen & set(kept.item_ids)  # components score a visitor's own items high: they stay in
    assert not seen & set(learned.recommend(visitor, n_items=50).item_ids)


class _Oracle(PopularItemsRecommender):
    """A component that knows the validation answers in one context and is noise in the other.

    ``knows="history"``: a visitor's scores put their validation-period items on top, sessions
    get noise. ``knows="session"``: a session's score puts the validation successor of its last
    item on top, visitors get noise. With one such component per context the attention has a
    planted answer to learn.
    """

    def __init__(self, val=None, knows: str = "history"):
        super().__init__()
        self.val, self.knows = val, knows
        if val is not None:  # the answers, looked up once
            self.items_of = val.groupby("visitor_id")["item_id"].apply(list).to_dict()
            ordered = val.sort_values(["session_id", "timestamp"])
            following = ordered.groupby("session_id")["item_id"].shift(-1)
            self.successor = {int(i): int(n) for i, n in zip(ordered["item_id"], following, strict=True)
                              if not np.isnan(n)}

    def _noise(self, n_rows: int) -> np.ndarray:
        return np.random.default_rng(n_rows).random((n_rows, self.n_items), dtype=np.float32)

    def _score_users(self, user_idx):
        scores = self._noise(len(user_idx))
        if self.knows == "history":
            for row, visitor in enumerate(self.visitor_map_.to_ids(user_idx)):
                idx = self.item_map_.to_idx(np.asarray(self.items_of.get(int(visitor), []), dtype=np.int64))
                scores[row, idx[idx >= 0]] += 10.0
        return scores

    def _score_sessions(self, sessions):
        scores = self._noise(len(sessions))
        if self.knows == "session":
            last = self.item_map_.to_ids(sessions.items[sessions.offsets[1:] - 1])
            nxt = np.array([self.successor.get(int(item), -1) for item in last], dtype=np.int64)
            idx = self.item_map_.to_idx(nxt)
            rows = np.flatnonzero((nxt >= 0) & (idx >= 0))
            scores[rows, idx[rows]] += 10.0
        return scores


def test_attention_learns_which_component_knows_each_context(small_split):
    train, val, _ = small_split
    history_oracle = _Oracle(val, "history").fit(train)
    session_oracle = _Oracle(val, "session").fit(train)
    model = FunnelAwareHybridRecommender(cf_model=history_oracle, session_model=session_oracle,
                                         seed=0).fit(train, val_events=val)
    returning = [int(v) for v in np.intersect1d(val.visitor_id.unique(), train.visitor_id.unique())[:20]]
    long_sessions = [g.tolist() for _, g in val.sort_values("timestamp").groupby("session_id")["item_id"]
                     if len(g) >= 4][:20]
    history_only = [model.explain_weights(v)["cf"] for v in returning]
    live_only = [model.explain_weights(None, s)["session"] for s in long_sessions]
    assert len(history_only) == len(live_only) == 20
    # a returning visitor without a session: the history component; a live session: the session
    # one (uniform would be 0.5 each)
    assert np.mean(history_only) > 0.7 and np.mean(live_only) > 0.7


def test_session_may_be_any_sequence_of_ids(learned, small_split):
    train, _, _ = small_split
    visitor = int(train.visitor_id.iloc[0])
    items = train.item_id.iloc[10:13].tolist()
    as_list = learned.recommend(visitor, n_items=5, session_item_ids=items)
    assert learned.recommend(visitor, n_items=5, session_item_ids=np.array(items)).item_ids == as_list.item_ids
    assert learned.recommend(visitor, n_items=5, session_item_ids=tuple(items)).item_ids == as_list.item_ids
    with pytest.raises(ValueError, match="item_ids"):
        learned.recommend(visitor, n_items=5, session_item_ids="123")


def test_single_and_batch_agree_with_and_without_seen_items(learned, small_split):
    train, _, _ = small_split
    visitor = int(train["visitor_id"].value_counts().index[0])
    for exclude_seen in (True, False):
        single = learned.recommend(visitor, n_items=20, exclude_seen=exclude_seen)
        batch_ids, _ = learned.recommend_batch([visitor], n_items=20, exclude_seen=exclude_seen)
        assert single.item_ids == batch_ids[0].tolist()


def test_unknown_visitor_or_items_with_an_array_or_generator_session(learned, small_split):
    train, _, _ = small_split
    items = train.item_id.iloc[:3].tolist()
    from_list = learned.recommend(-999, n_items=5, session_item_ids=items)
    assert learned.recommend(-999, n_items=5, session_item_ids=np.array(items)).item_ids == from_list.item_ids
    unknown = learned.recommend_by_item_ids(i for i in [-5, -6])  # a generator, read once
    assert unknown.is_fallback and len(unknown) == 10
