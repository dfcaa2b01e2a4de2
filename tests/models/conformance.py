"""The conformance suite every Recommender's tests inherit (implicit's and LensKit's idea).

A test class sets ``make_model`` (a fresh, small, seeded model) and inherits these tests.
They run on the tiny synthetic split from ``conftest.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from funnelrec.models.base import NotFittedError, RecommendationList, Recommender


class RecommenderConformance:
    """Mix into a ``Test...`` class and define ``make_model(self) -> Recommender``."""

    def make_model(self) -> Recommender:  # pragma: no cover - overridden
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, tiny_split):
        train, _, _ = tiny_split
        return cls().make_model().fit(train)

    @pytest.fixture(scope="class")
    @classmethod
    def known_visitor(cls, tiny_split):
        train, _, _ = tiny_split
        counts = train["visitor_id"].value_counts()
        return int(counts.index[0])  # the visitor with the longest history

    # ------------------------------------------------------------------ basics
    def test_not_fitted_raises(self):
        with pytest.raises(NotFittedError):
            self.make_model().recommend(1)

    def test_name_and_registry(self, fitted):
        from funnelrec.models.base import get_model_class

        assert isinstance(fitted.name, str) and fitted.name
        assert get_model_class(fitted.registry_key) is type(fitted)

    def test_scores_sorted_descending(self, fitted, known_visitor):
        recs = fitted.recommend(known_visitor, n_items=20)
        scores = [s for _, s in recs]
        assert len(recs) == 20
        assert scores == sorted(scores, reverse=True)
        assert len({i for i, _ in recs}) == len(recs)
        assert isinstance(recs, RecommendationList) and not recs.is_fallback

    def test_seen_items_filtered(self, fitted, known_visitor, tiny_split):
        train, _, _ = tiny_split
        seen = set(train.loc[train.visitor_id == known_visitor, "item_id"])
        recs = fitted.recommend(known_visitor, n_items=50, exclude_seen=True)
        assert not seen & set(recs.item_ids)

    def test_unknown_visitor_gets_fallback(self, fitted):
        recs = fitted.recommend(-12345, n_items=5)
        assert recs.is_fallback and len(recs) == 5

    def test_unknown_visitor_with_session_gets_its_categories(self, fitted, tiny_split):
        train, _, _ = tiny_split
        item = int(train["item_id"].iloc[0])
        category = int(train["category_id"].iloc[0])
        recs = fitted.recommend(-12345, n_items=3, session_item_ids=[item])
        assert recs.is_fallback
        # any sequence of ids works, a generator included (read once)
        assert fitted.recommend(-12345, n_items=3, session_item_ids=np.array([item])).item_ids == recs.item_ids
        assert fitted.recommend(-12345, n_items=3, session_item_ids=(i for i in [item])).item_ids == recs.item_ids
        cats = dict(zip(train.item_id, train.category_id, strict=False))
        assert all(cats[i] == category for i in recs.item_ids)

    def test_known_visitor_with_live_session(self, fitted, known_visitor, tiny_split):
        train, _, test = tiny_split
        seen = set(train.loc[train.visitor_id == known_visitor, "item_id"])
        session = [i for i in test["item_id"].unique().tolist() if fitted.item_map_.to_idx([i])[0] >= 0][:3]
        # which source ranks is checked with the session's own items let in (their exclusion:
        # test_session_items_excluded_by_default)
        with_session = fitted.recommend(known_visitor, n_items=10, session_item_ids=session,
                                        exclude_session_items=False)
        assert len(with_session) == 10 and not with_session.is_fallback
        assert not seen & set(with_session.item_ids)  # the visitor's past items stay excluded
        model_class = type(fitted)
        if (model_class._score_visitor_in_session is not Recommender._score_visitor_in_session
                or model_class.recommend is not Recommender.recommend):
            return  # reads history and session together: checked in the model's own tests
        if fitted.sequential:  # the live session drives the answer, as for an anonymous visitor
            expected = fitted.recommend_by_item_ids(session, n_items=fitted.n_items, exclude_session_items=False)
            expected = [i for i in expected.item_ids if i not in seen][:10]
        else:  # a history model keeps ranking from the history
            expected = fitted.recommend(known_visitor, n_items=10).item_ids
        assert with_session.item_ids == expected
        # an empty or all-unknown session is no session
        assert fitted.recommend(known_visitor, n_items=10, session_item_ids=[-999]).item_ids == \
            fitted.recommend(known_visitor, n_items=10).item_ids

    def test_n_items_larger_than_catalogue(self, fitted):
        recs = fitted.recommend(-12345, n_items=10**6)
        assert len(recs) == fitted.n_items
        item_ids, scores = fitted.recommend_batch([-12345], n_items=10**6)
        assert item_ids.shape == (1, fitted.n_items)

    def test_bad_arguments_rejected(self, fitted, known_visitor):
        for bad in (0, -3, 2.5, "10", True):
            with pytest.raises(ValueError, match="n_items"):
                fitted.recommend(known_visitor, n_items=bad)
        with pytest.raises(ValueError):
            fitted.recommend_by_item_ids("abc")
        with pytest.raises(KeyError):
            fitted.get_similar_items(-777)

    # ------------------------------------------------------------------ batches and sessions
    def test_batch_matches_single(self, fitted, tiny_split):
        train, _, _ = tiny_split
        visitors = train["visitor_id"].drop_duplicates().to_numpy()[:7]
        visitors = np.append(visitors, -1)  # one unknown
        item_ids, scores = fitted.recommend_batch(visitors, n_items=5)
        assert item_ids.shape == scores.shape == (8, 5)
        for row, visitor in enumerate(visitors):
            single = fitted.recommend(int(visitor), n_items=5)
            assert single.item_ids == [i for i in item_ids[row].tolist() if i >= 0]
            assert np.allclose([s for _, s in single], scores[row][item_ids[row] >= 0], rtol=1e-5, atol=1e-6)

    def test_recommend_by_item_ids(self, fitted, tiny_split):
        train, _, _ = tiny_split
        session = train.groupby("session_id")["item_id"].agg(list)
        items = next(s for s in session if len(s) >= 3)
        recs = fitted.recommend_by_item_ids(items, n_items=10)
        assert len(recs) == 10 and not recs.is_fallback
        assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
        unknown = fitted.recommend_by_item_ids([-5, -6], n_items=4)
        assert unknown.is_fallback and len(unknown) == 4
        empty = fitted.recommend_by_item_ids([], n_items=4)
        assert empty.is_fallback
        # unknown items in a live session are ignored, not fatal
        mixed = fitted.recommend_by_item_ids([*items, -5], n_items=10)
        assert mixed.item_ids == recs.item_ids or len(mixed) == 10

    def test_session_items_excluded_by_default(self, fitted, tiny_split, known_visitor):
        train, _, _ = tiny_split
        # the most viewed items: every model ranks them high, so they would show if let in
        session = [int(i) for i in train["item_id"].value_counts().index[:3]]
        everything = fitted.recommend_by_item_ids(session, n_items=fitted.n_items, exclude_session_items=False)
        assert set(session) <= set(everything.item_ids)  # present when asked
        recs = fitted.recommend_by_item_ids(session, n_items=10)
        assert len(recs) == 10 and not set(session) & set(recs.item_ids)
        assert recs.item_ids == [i for i in everything.item_ids if i not in session][:10]
        single = fitted.recommend_by_item_ids(session[:1], n_items=3)  # the item on the page
        assert len(single) == 3 and session[0] not in single.item_ids
        # a known visitor in a live session, and an unknown one (the cold-start answer)
        for visitor in (known_visitor, -12345):
            recs = fitted.recommend(visitor, n_items=10, session_item_ids=session)
            assert len(recs) == 10 and not set(session) & set(recs.item_ids)
            kept = fitted.recommend(visitor, n_items=fitted.n_items, session_item_ids=session,
                                    exclude_seen=False, exclude_session_items=False)
            assert set(session) <= set(kept.item_ids)

    def test_similar_items(self, fitted, tiny_split):
        train, _, _ = tiny_split
        item = int(train["item_id"].value_counts().index[0])
        similar = fitted.get_similar_items(item, n_items=5)
        assert len(similar) == 5 and item not in similar.item_ids
        assert [s for _, s in similar] == sorted((s for _, s in similar), reverse=True)

    # ------------------------------------------------------------------ determinism, persistence
    def test_refit_equals_fresh_fit(self, fitted, tiny_split, known_visitor):
        train, _, _ = tiny_split
        again = self.make_model().fit(train)
        a = fitted.recommend(known_visitor, n_items=10)
        b = again.recommend(known_visitor, n_items=10)
        assert a.item_ids == b.item_ids
        assert np.allclose([s for _, s in a], [s for _, s in b], rtol=1e-4, atol=1e-5)

    def test_save_load_identical(self, fitted, tmp_path, tiny_split, known_visitor):
        train, _, _ = tiny_split
        path = fitted.save(tmp_path / "model")
        loaded = Recommender.load(path)
        assert type(loaded) is type(fitted) and loaded.name == fitted.name
        assert loaded.get_params() == fitted.get_params()
        visitors = train["visitor_id"].drop_duplicates().to_numpy()[:20]
        a_ids, a_scores = fitted.recommend_batch(visitors, n_items=10)
        b_ids, b_scores = loaded.recommend_batch(visitors, n_items=10)
        assert np.array_equal(a_ids, b_ids)
        assert np.allclose(a_scores, b_scores, rtol=1e-5, atol=1e-6)
        items = train["item_id"].iloc[:4].tolist()
        assert loaded.recommend_by_item_ids(items, 5) == fitted.recommend_by_item_ids(items, 5)

    def test_save_writes_no_pickle(self, fitted, tmp_path):
        path = fitted.save(tmp_path / "model")
        with np.load(path / "state.npz", allow_pickle=False) as npz:
            assert all(npz[k].dtype != object for k in npz.files)
