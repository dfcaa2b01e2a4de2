"""VectorIndex: exact FAISS equals the shared numpy ranker; approximate kinds recall; filtering."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from funnelrec.models.base import NotFittedError, mask_rows, top_k
from funnelrec.models.retrieval.index import VectorIndex


def _random(n, d, seed=0):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def _random_exclude(n_rows, n_cols, per_row, seed=1):
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(n_rows), per_row)
    cols = np.concatenate([rng.choice(n_cols, per_row, replace=False) for _ in range(n_rows)])
    return sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_rows, n_cols))


def _numpy_top_k(queries, vectors, k, exclude=None):
    scores = queries @ vectors.T
    if exclude is not None:
        mask_rows(scores, exclude)
    return top_k(scores, k)


def _clustered(n, d, n_clusters, seed):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    points = centres[rng.integers(0, n_clusters, n)] + 0.4 * rng.standard_normal((n, d)).astype(np.float32)
    return points.astype(np.float32)


@pytest.mark.parametrize("with_exclude", [False, True])
def test_exact_matches_numpy_top_k(with_exclude):
    vectors, queries = _random(2000, 32), _random(60, 32, seed=5)
    exclude = _random_exclude(60, 2000, 30) if with_exclude else None
    index = VectorIndex(kind="exact").build(vectors)
    idx, scores = index.search(queries, 20, exclude)
    ref_idx, ref_scores = _numpy_top_k(queries, vectors, 20, exclude)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    assert np.array_equal(idx, ref_idx)
    assert np.allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)
    if exclude is not None:
        for row in range(60):
            assert not set(idx[row]) & set(exclude[row].indices)


def test_cosine_normalises_both_sides():
    vectors = _random(500, 16) * np.random.default_rng(2).uniform(0.1, 10, (500, 1)).astype(np.float32)
    queries = _random(10, 16, seed=3) * 7.0
    idx, scores = VectorIndex(kind="exact", metric="cosine").build(vectors).search(queries, 10)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    q_unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    ref_idx, ref_scores = top_k(q_unit @ unit.T, 10)
    assert np.array_equal(idx, ref_idx)
    assert np.allclose(scores, ref_scores, atol=1e-5) and scores.max() <= 1 + 1e-5
    # inner product ranks long vectors first; cosine does not
    ip_idx, _ = VectorIndex(kind="exact", metric="ip").build(vectors).search(queries, 10)
    assert not np.array_equal(ip_idx, idx)


@pytest.fixture(scope="module")
def clustered():
    vectors = _clustered(20_000, 32, 200, seed=0)
    queries = _clustered(200, 32, 200, seed=1)
    exact_idx, _ = _numpy_top_k(queries, vectors, 20)
    return vectors, queries, exact_idx


@pytest.mark.parametrize("params", [
    {"kind": "hnsw", "metric": "cosine", "hnsw_m": 16, "ef_construction": 80, "ef_search": 256},
    {"kind": "ivf", "nlist": 128, "nprobe": 16},
])
def test_approximate_recall(clustered, params):
    vectors, queries, exact_idx = clustered
    if params.get("metric") == "cosine":  # HNSW is for normalised vectors (as the towers give)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        exact_idx, _ = _numpy_top_k(queries, vectors, 20)
    index = VectorIndex(**params).build(vectors)
    assert index.kind_ == params["kind"]
    idx, scores = index.search(queries, 20)
    recall = np.mean([len(set(a) & set(b)) / 20 for a, b in zip(idx, exact_idx, strict=True)])
    assert recall >= 0.9
    assert (idx >= 0).all() and (np.diff(scores, axis=1) <= 1e-6).all()


def test_auto_picks_exact_for_small_catalogues():
    assert VectorIndex().build(_random(100, 8)).kind_ == "exact"
    assert VectorIndex(exact_threshold=50).build(_random(100, 8)).kind_ == "hnsw"


@pytest.mark.parametrize("params", [
    {"kind": "exact", "max_overfetch": 3},  # over-fetch capped: rows fall back to exact numpy
    {"kind": "hnsw", "hnsw_m": 8, "ef_search": 8},
    {"kind": "ivf", "nlist": 16, "nprobe": 1},  # one list: -1 ids, then the fallback
])
def test_k_valid_items_even_when_most_are_excluded(params):
    vectors, queries = _random(800, 16), _random(5, 16, seed=9)
    exclude = _random_exclude(5, 800, 780, seed=4)
    idx, scores = VectorIndex(**params).build(vectors).search(queries, 15, exclude)
    ref_idx, ref_scores = _numpy_top_k(queries, vectors, 15, exclude)
    assert (idx >= 0).all()
    for row in range(5):
        assert not set(idx[row]) & set(exclude[row].indices)
        assert set(idx[row]) <= set(np.setdiff1d(np.arange(800), exclude[row].indices))
    if params["kind"] != "hnsw":
        assert np.array_equal(idx, ref_idx)


def test_fully_excluded_rows_get_empty_slots_like_top_k():
    vectors, queries = _random(30, 4), _random(2, 4, seed=1)
    exclude = sp.csr_matrix(np.vstack([np.ones(30), np.r_[np.ones(25), np.zeros(5)]]))
    idx, scores = VectorIndex(kind="exact").build(vectors).search(queries, 10, exclude)
    ref_idx, ref_scores = _numpy_top_k(queries, vectors, 10, exclude)
    assert (idx[0] == -1).all() and np.isneginf(scores[0]).all()
    assert (idx[1, :5] >= 0).all() and (idx[1, 5:] == -1).all()
    assert np.array_equal(idx, ref_idx) and np.allclose(scores[1, :5], ref_scores[1, :5])


def test_k_larger_than_catalogue_is_clipped():
    idx, _ = VectorIndex(kind="exact").build(_random(7, 4)).search(_random(2, 4), 100)
    assert idx.shape == (2, 7) and (np.sort(idx, axis=1) == np.arange(7)).all()


def test_float64_and_non_contiguous_inputs_are_converted():
    vectors, queries = _random(300, 16), _random(8, 16, seed=2)
    index = VectorIndex(kind="exact").build(vectors.astype(np.float64))
    ref = index.search(queries, 5)
    wide = np.zeros((8, 32), dtype=np.float64)
    wide[:, ::2] = queries  # a strided, non-contiguous float64 view
    view = wide[:, ::2]
    assert not view.flags.c_contiguous
    got = index.search(view, 5)
    assert np.array_equal(got[0], ref[0]) and np.allclose(got[1], ref[1])


def test_bad_inputs_raise_clear_errors():
    index = VectorIndex(kind="exact").build(_random(50, 16))
    with pytest.raises(ValueError, match="queries have dimension 8.*16-d"):
        index.search(_random(3, 8), 5)
    with pytest.raises(ValueError, match="2-D"):
        index.search(np.zeros(16, np.float32), 5)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 16), np.nan, np.float32), 5)
    with pytest.raises(ValueError, match="exclude"):
        index.search(_random(3, 16), 5, sp.csr_matrix((2, 50)))
    with pytest.raises(ValueError, match="k must"):
        index.search(_random(3, 16), 0)
    with pytest.raises(ValueError, match="dtype"):
        VectorIndex().build(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="empty"):
        VectorIndex().build(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="kind"):
        VectorIndex(kind="lsh")
    with pytest.raises(ValueError, match="metric"):
        VectorIndex(metric="l2")
    with pytest.raises(NotFittedError):
        VectorIndex().search(_random(1, 4), 1)


@pytest.mark.parametrize("params", [
    {"kind": "exact", "metric": "cosine"},
    {"kind": "hnsw", "hnsw_m": 8},
    {"kind": "ivf", "nlist": 8, "nprobe": 3},
])
def test_save_load_round_trip(tmp_path, params):
    vectors, queries = _random(1000, 16), _random(20, 16, seed=3)
    exclude = _random_exclude(20, 1000, 10)
    index = VectorIndex(**params).build(vectors)
    loaded = VectorIndex.load(index.save(tmp_path / "index"))
    assert loaded.get_params() == index.get_params() and loaded.kind_ == index.kind_
    assert loaded.n_vectors == 1000 and loaded.dim == 16
    a, b = index.search(queries, 10, exclude), loaded.search(queries, 10, exclude)
    assert np.array_equal(a[0], b[0]) and np.allclose(a[1], b[1])
    assert np.allclose(loaded.vectors_, index.vectors_)


def test_threads_setting_is_restored():
    import faiss

    before = faiss.omp_get_max_threads()
    index = VectorIndex(kind="exact", n_threads=1).build(_random(100, 8))
    index.search(_random(4, 8), 3)
    assert faiss.omp_get_max_threads() == before


def test_build_copies_the_callers_array():
    vectors = _random(100, 8)
    original = vectors.copy()
    index = VectorIndex(kind="exact").build(vectors)
    vectors[:] = 0.0  # the exact fallback must still see the indexed vectors
    assert np.array_equal(index.vectors_, original)


def test_top_k_orders_ties_by_column_and_never_picks_nan_or_masked():
    scores = np.array([[0.5, np.nan, 0.9, -np.inf, 0.5, 0.1]], dtype=np.float32)
    idx, top = top_k(scores, 3)
    assert idx.tolist() == [[2, 0, 4]] and top.tolist() == [[np.float32(0.9), 0.5, 0.5]]
    idx, _ = top_k(np.array([[1.0, -np.inf, -np.inf]], dtype=np.float32), 3)
    assert idx.tolist()[0][0] == 0 and -1 in idx.tolist()[0]
