"""Two-Tower: conformance, FAISS ranking = numpy ranking, cold visitors, embeddings and their map."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from conformance import RecommenderConformance

from funnelrec.data.encoding import Sequences
from funnelrec.models.base import Recommender
from funnelrec.models.retrieval.two_tower import (
    TwoTowerRecommender,
    dedupe_consecutive,
    padded_windows,
)
from funnelrec.reporting.embeddings import plot_model_embeddings, top_level_categories

SMALL = {"embedding_dim": 16, "hidden_dims": (32,), "batch_size": 128, "learning_rate": 0.01, "seed": 3,
         "show_progress": False}


class TestTwoTower(RecommenderConformance):
    def make_model(self):
        return TwoTowerRecommender(epochs=2, **SMALL)


@pytest.fixture(scope="module")
def model(tiny_split):
    train, _, _ = tiny_split
    return TwoTowerRecommender(epochs=4, **SMALL).fit(train)


def test_faiss_and_numpy_rankers_agree(model, tiny_split):
    train, _, _ = tiny_split
    assert model.index_ is not None and model.index_.kind_ == "exact"
    visitors = train["visitor_id"].drop_duplicates().to_numpy()[:300]
    # the same weights ranked by the shared numpy ranker (what use_faiss=False does)
    numpy_model = copy.copy(model)
    numpy_model.use_faiss, numpy_model.index_ = False, None
    for exclude_seen in (True, False):
        a_ids, a_scores = model.recommend_batch(visitors, n_items=20, exclude_seen=exclude_seen)
        b_ids, b_scores = numpy_model.recommend_batch(visitors, n_items=20, exclude_seen=exclude_seen)
        assert np.array_equal(a_ids, b_ids)
        assert np.allclose(a_scores, b_scores, rtol=1e-5, atol=1e-6)


def test_cold_visitor_gets_a_tower_answer(model, tiny_split):
    train, _, test = tiny_split
    cold = test[~test["visitor_id"].isin(train["visitor_id"]) & test["item_id"].isin(model.item_ids)]
    sessions = cold.sort_values("timestamp").groupby("session_id")["item_id"].agg(list)
    first, second = [s for s in sessions if len(set(s)) >= 2][:2]
    recs = model.recommend_by_item_ids(first, n_items=10)
    assert not recs.is_fallback and len(recs) == 10
    # the answer is the visitor tower on the live session ("new visitor" features)
    user = model.get_user_embedding(None, first)
    scores = model.get_item_embeddings() @ user
    scores[np.isin(model.item_ids, first)] = -np.inf  # the session's own items are left out
    assert recs.item_ids == model.item_ids[np.argsort(-scores, kind="stable")[:10]].tolist()
    assert np.allclose([s for _, s in recs], np.sort(scores)[::-1][:10], atol=1e-5)
    # personalised: another session gets another list, and neither is the popularity list
    assert model.recommend_by_item_ids(second, n_items=10).item_ids != recs.item_ids
    assert recs.item_ids != model.recommend(-1, n_items=10).item_ids


def test_user_embedding_of_known_visitor_matches_ranking(model, tiny_split):
    train, _, _ = tiny_split
    visitor = int(train["visitor_id"].value_counts().index[0])
    user = model.get_user_embedding(visitor)
    assert user.shape == (16,) and np.isclose(np.linalg.norm(user), 1.0, atol=1e-5)
    recs = model.recommend(visitor, n_items=5, exclude_seen=False)
    scores = model.get_item_embeddings() @ user
    assert np.allclose([s for _, s in recs], np.sort(scores)[::-1][:5], atol=1e-5)
    # a live session changes the known visitor's embedding; an unknown id equals None
    assert not np.allclose(model.get_user_embedding(visitor, [int(model.item_ids[0])]), user)
    assert np.allclose(model.get_user_embedding(-999, [1, 2]), model.get_user_embedding(None, [1, 2]))


def test_known_visitor_with_live_session_reads_both(model, tiny_split):
    train, _, test = tiny_split
    visitor = int(train["visitor_id"].value_counts().index[0])
    session = [int(i) for i in test["item_id"].unique()[:3]]
    recs = model.recommend(visitor, n_items=10, session_item_ids=session)
    scores = model.get_item_embeddings() @ model.get_user_embedding(visitor, session)
    scores[np.isin(model.item_ids, train.loc[train.visitor_id == visitor, "item_id"])] = -np.inf
    scores[np.isin(model.item_ids, session)] = -np.inf  # and so are the session's own items
    assert recs.item_ids == model.item_ids[np.argsort(-scores, kind="stable")[:10]].tolist()
    assert recs.item_ids != model.recommend(visitor, n_items=10).item_ids


def test_item_embeddings_aligned_with_item_ids(model):
    emb = model.get_item_embeddings()
    assert emb.shape == (model.n_items, 16) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    emb[:] = 0  # a copy: the model is unchanged
    emb = model.get_item_embeddings()
    item = int(model.item_ids[7])
    similar = model.get_similar_items(item, n_items=3)
    expected = np.argsort(-(emb @ emb[7]), kind="stable")
    expected = expected[expected != 7][:3]
    assert similar.item_ids == model.item_ids[expected].tolist()


def test_items_of_a_category_cluster(model, tiny_data):
    emb = model.get_item_embeddings()
    categories = tiny_data.item_category(np.asarray(model.item_ids))
    cosine = emb @ emb.T
    same = categories[:, None] == categories[None, :]
    off_diagonal = ~np.eye(len(emb), dtype=bool)
    within = cosine[same & off_diagonal].mean()
    between = cosine[~same].mean()
    assert within > between + 0.1


def test_training_with_validation_and_history(tiny_split):
    train, val, _ = tiny_split
    m = TwoTowerRecommender(epochs=2, use_faiss=False, **SMALL).fit(train, val)
    assert m.index_ is None  # ranked by the shared numpy ranker
    assert len(m.history_) == 2 and all("val_mrr@20" in r for r in m.history_)
    assert m.history_[-1]["loss"] < m.history_[0]["loss"]
    assert not hasattr(m, "_ex_pos")  # training-only arrays are dropped


def test_saved_faiss_index_is_reused(model, tmp_path, tiny_split):
    train, _, _ = tiny_split
    path = model.save(tmp_path / "tt")
    assert (path / "faiss_index" / "index.faiss").is_file()
    loaded = Recommender.load(path)
    assert loaded.index_ is not None and loaded.index_.n_vectors == model.n_items
    assert np.array_equal(loaded.get_item_embeddings(), model.get_item_embeddings())
    visitors = train["visitor_id"].drop_duplicates().to_numpy()[:30]
    assert np.array_equal(loaded.recommend_batch(visitors, 10)[0], model.recommend_batch(visitors, 10)[0])


def test_sequence_helpers():
    seqs = Sequences(np.array([1, 1, 2, 2, 2, 3, 3, 5]), np.array([0, 3, 5, 8]), np.arange(3))
    deduped = dedupe_consecutive(seqs)
    assert deduped.to_lists() == [[1, 2], [2], [3, 5]]  # repeats collapse within a sequence only
    windows = padded_windows(np.array([10, 11, 12, 13]), np.array([0, 1]), np.array([3, 4]), 4, -1)
    assert windows.tolist() == [[-1, 10, 11, 12], [-1, 11, 12, 13]]


@pytest.mark.parametrize("kwargs", [
    {"embedding_dim": 0}, {"hidden_dims": [32, 0]}, {"hidden_dims": "64"}, {"dropout": 1.0},
    {"temperature": 0}, {"negative_samples": -1}, {"index_kind": "flat"}, {"new_visitor_rate": 2},
])
def test_bad_hyperparameters(kwargs):
    with pytest.raises(ValueError):
        TwoTowerRecommender(**kwargs)


def test_hidden_dims_round_trip_through_params():
    m = TwoTowerRecommender(hidden_dims=[32, 16])
    assert m.hidden_dims == (32, 16) and m.get_params()["hidden_dims"] == [32, 16]
    assert TwoTowerRecommender(**m.get_params()).get_params() == m.get_params()


# --------------------------------------------------------------------------- the t-SNE map
def test_top_level_categories_climbs_the_tree():
    tree = pd.DataFrame({"categoryid": [1, 2, 3, 4, 5], "parentid": pd.array([None, 1, 2, None, 4], "Int64")})
    roots = top_level_categories(np.array([3, 5, 2, 1, -1, 99]), tree)
    assert roots.tolist() == [1, 4, 1, 1, -1, 99]
    cyclic = pd.DataFrame({"categoryid": [1, 2], "parentid": pd.array([2, 1], "Int64")})
    assert len(top_level_categories(np.array([1]), cyclic)) == 1  # terminates
    with pytest.raises(ValueError, match="parentid"):
        top_level_categories(np.array([1]), pd.DataFrame({"a": [1]}))


def test_plot_model_embeddings_writes_a_png(model, tiny_data, tmp_path):
    path = plot_model_embeddings(model, tiny_data.category_tree, tmp_path / "plots" / "tt.png", n_sample=60)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    roots = top_level_categories(model.item_category_, tiny_data.category_tree)
    truth = tiny_data.items.set_index("item_id").loc[model.item_ids, "root_category_id"].to_numpy()
    assert np.array_equal(roots, truth)


def test_two_fits_with_one_seed_are_identical(tiny_split):
    # the same seed and thread count: bit-identical weights and item vectors, early stopping included
    train, val, _ = tiny_split
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the parallel reductions too
    try:
        fits = [TwoTowerRecommender(epochs=3, **SMALL).fit(train, val_events=val) for _ in range(2)]
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(fits[0].get_item_embeddings(), fits[1].get_item_embeddings())
    first, second = (f.net_.state_dict() for f in fits)
    assert all(torch.equal(first[name], second[name]) for name in first)
    visitors = train["visitor_id"].drop_duplicates().to_numpy()[:50]
    assert np.array_equal(fits[0].recommend_batch(visitors, 10)[0], fits[1].recommend_batch(visitors, 10)[0])
