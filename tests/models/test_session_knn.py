"""SessionKNNRecommender (V-SKNN): hand-computed scores, recency weighting and sampling, batching."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conformance import RecommenderConformance

from funnelrec.data.encoding import Sequences
from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.schema import to_canonical
from funnelrec.models.base import Recommender
from funnelrec.models.neighbors.session_knn import SessionKNNRecommender

A, B, C, D, E, F, G, P, Q, X = 1, 2, 3, 4, 5, 6, 7, 16, 17, 24
HOUR = 3_600_000


def make_events(sessions: list[list[int]], visitors: list[int] | None = None) -> pd.DataFrame:
    """One session per list, in time order (later lists are more recent); one minute per event."""
    visitors = visitors if visitors is not None else list(range(100, 100 + len(sessions)))
    rows = []
    for s, (items, visitor) in enumerate(zip(sessions, visitors, strict=True)):
        for pos, item in enumerate(items):
            rows.append((s * HOUR + pos * 60_000, visitor, "view", item))
    frame = pd.DataFrame(rows, columns=["timestamp", "visitor_id", "event", "item_id"])
    return SessionBuilder().build_sessions(to_canonical(frame))


def fit(sessions, visitors=None, **params) -> SessionKNNRecommender:
    return SessionKNNRecommender(**params).fit(make_events(sessions, visitors))


def scores_of(model: SessionKNNRecommender, session: list[int]) -> dict[int, float]:
    return dict(model.recommend_by_item_ids(session, n_items=model.n_items, exclude_session_items=False))


def as_sequences(model: Recommender, sessions: list[list[int]]) -> Sequences:
    items = model.item_map_.to_idx(np.concatenate([np.asarray(s) for s in sessions]))
    offsets = np.r_[0, np.cumsum([len(s) for s in sessions])].astype(np.int64)
    return Sequences(items, offsets, np.arange(len(sessions)))


class TestSessionKNNConformance(RecommenderConformance):
    def make_model(self):
        return SessionKNNRecommender()


# --------------------------------------------------------------------------- hand-computed case
TINY = [[A, B], [A, C], [B, C, D], [E]]  # s1 .. s4, oldest first
Q_NORM = math.sqrt(0.5**2 + 1.0**2)  # query [A, B]: A at 1/2, B at 2/2
SIM1 = 1.5 / (Q_NORM * math.sqrt(2))  # s1 shares A and B
SIM2 = 0.5 / (Q_NORM * math.sqrt(2))  # s2 shares A
SIM3 = 1.0 / (Q_NORM * math.sqrt(3))  # s3 shares B


def test_hand_computed_scores_all_neighbours():
    got = scores_of(fit(TINY), [A, B])
    expected = {A: SIM1 + SIM2, B: SIM1 + SIM3, C: SIM2 + SIM3, D: SIM3, E: 0.0}
    assert got == pytest.approx(expected, rel=1e-5)


def test_hand_computed_scores_top_k_neighbours():
    got = scores_of(fit(TINY, k=2), [A, B])  # SIM1 > SIM3 > SIM2: s2 drops out
    expected = {A: SIM1, B: SIM1 + SIM3, C: SIM3, D: SIM3, E: 0.0}
    assert got == pytest.approx(expected, rel=1e-5)


def test_hand_computed_scores_recent_sample():
    got = scores_of(fit(TINY, sample_size=2), [A, B])  # candidates s1..s3; s2, s3 are the newest
    expected = {A: SIM2, B: SIM3, C: SIM2 + SIM3, D: SIM3, E: 0.0}
    assert got == pytest.approx(expected, rel=1e-5)


def test_hand_computed_idf_and_dot():
    got = scores_of(fit(TINY, idf_weighting=True), [A, B])
    idf = {
        A: math.log(4 / 2),
        B: math.log(4 / 2),
        C: math.log(4 / 2),
        D: math.log(4),
        E: math.log(4),
    }
    base = {A: SIM1 + SIM2, B: SIM1 + SIM3, C: SIM2 + SIM3, D: SIM3, E: 0.0}
    assert got == pytest.approx({i: base[i] * (1 + idf[i]) for i in base}, rel=1e-5)
    got = scores_of(fit(TINY, similarity="dot"), [A, B])
    assert got == pytest.approx({A: 2.0, B: 2.5, C: 1.5, D: 1.0, E: 0.0}, rel=1e-6)


def test_repeated_query_item_keeps_latest_weight():
    model = fit(TINY)
    # [B, A, B]: B keeps its latest weight 3/3 (not 1/3 + 3/3), A weighs 2/3
    got = scores_of(model, [B, A, B])
    q_norm = math.sqrt((2 / 3) ** 2 + 1.0)
    sim1 = (2 / 3 + 1) / (q_norm * math.sqrt(2))
    sim2 = (2 / 3) / (q_norm * math.sqrt(2))
    sim3 = 1.0 / (q_norm * math.sqrt(3))
    assert got[A] == pytest.approx(sim1 + sim2, rel=1e-5)
    assert got[D] == pytest.approx(sim3, rel=1e-5)


# --------------------------------------------------------------------------- brute-force reference
def reference_neighbours(train, query, sample_size, priority, exclude=None):
    """V-SKNN by the book, one session at a time: ``{training row: cosine similarity}``."""
    weights = {item: (i + 1) / len(query) for i, item in enumerate(query)}  # latest position wins
    q_norm = math.sqrt(sum(w * w for w in weights.values()))
    candidates = [r for r, s in enumerate(train) if set(s) & set(weights) and r != exclude]
    if sample_size is not None:
        candidates = sorted(candidates, key=lambda r: -priority[r])[:sample_size]
    return {
        r: sum(weights.get(i, 0.0) for i in set(train[r]))
        / (q_norm * math.sqrt(len(set(train[r]))))
        for r in candidates
    }


def reference_scores(train, neighbours):
    scores = {}
    for r, sim in neighbours.items():
        for item in set(train[r]):
            scores[item] = scores.get(item, 0.0) + sim
    return scores


def random_sessions(seed, n_sessions=120, n_items=15, popular=(0, 1)):
    rng = np.random.default_rng(seed)
    sessions = []
    for _ in range(n_sessions):
        items = list(rng.integers(0, n_items, size=rng.integers(1, 6)))
        if rng.random() < 0.5:  # a few very popular items, so item postings get cut
            items.insert(int(rng.integers(0, len(items) + 1)), int(rng.choice(popular)))
        sessions.append([int(i) for i in items])
    return sessions


@pytest.mark.parametrize("sampling", ["recent", "random"])
@pytest.mark.parametrize("sample_size", [None, 1, 3, 10])
def test_matches_brute_force_reference(sampling, sample_size):
    train = random_sessions(3)
    model = fit(train, sample_size=sample_size, sampling=sampling, k=10_000)
    priority = model.session_priority_ if sampling == "random" else np.arange(len(train))
    rng = np.random.default_rng(4)
    queries = [
        [int(i) for i in rng.choice(model.item_ids, size=rng.integers(1, 5))] for _ in range(30)
    ]
    got = model.score_sessions(as_sequences(model, queries))
    for row, query in enumerate(queries):
        expected = reference_scores(
            train, reference_neighbours(train, query, sample_size, priority)
        )
        dense = np.zeros(model.n_items)
        dense[model.item_map_.to_idx(list(expected))] = list(expected.values())
        np.testing.assert_allclose(got[row], dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sample_size", [None, 2, 10])
def test_user_scores_leave_out_their_own_session(sample_size):
    train = random_sessions(5, n_sessions=60)
    visitors = list(range(len(train)))  # one session per visitor: it is also the last one
    model = fit(train, visitors=visitors, sample_size=sample_size, k=10_000)
    user_idx = model.visitor_map_.to_idx(visitors)
    got = model.score_users(user_idx)
    for row, query in enumerate(train):
        neighbours = reference_neighbours(
            train, query, sample_size, np.arange(len(train)), exclude=row
        )
        expected = reference_scores(train, neighbours)
        dense = np.zeros(model.n_items)
        dense[model.item_map_.to_idx(list(expected))] = list(expected.values())
        np.testing.assert_allclose(got[row], dense, rtol=1e-5, atol=1e-6)


def test_top_k_keeps_the_k_most_similar():
    train = random_sessions(6)
    model = fit(train, sample_size=None, k=3)
    rng = np.random.default_rng(7)
    queries = [
        [int(i) for i in rng.choice(model.item_ids, size=rng.integers(1, 5))] for _ in range(20)
    ]
    neighbours = model._neighbours(as_sequences(model, queries), None)
    for row, query in enumerate(queries):
        expected = sorted(reference_neighbours(train, query, None, None).values(), reverse=True)[:3]
        got = np.sort(neighbours[row].data)[::-1]
        np.testing.assert_allclose(got, expected, rtol=1e-5)


# --------------------------------------------------------------------------- behaviour
def test_cooccurring_items_rank_first():
    model = fit([[A, B, C]] * 20 + [[D, E]] * 20)
    ranked = model.recommend_by_item_ids([A], n_items=5, exclude_session_items=False).item_ids
    assert set(ranked[:3]) == {A, B, C}
    assert ranked.index(B) < ranked.index(D) and ranked.index(C) < ranked.index(E)
    scores = scores_of(model, [A])
    assert scores[D] == 0.0 and scores[E] == 0.0


def test_recency_weighting_of_the_query():
    model = fit([[X, P], [A, Q]] * 3)
    a_last = scores_of(model, [X, A])
    x_last = scores_of(model, [A, X])
    assert a_last[Q] > a_last[P]
    assert x_last[P] > x_last[Q]
    same = scores_of(
        SessionKNNRecommender(weighting="same").fit(make_events([[X, P], [A, Q]] * 3)), [X, A]
    )
    assert same[P] == pytest.approx(same[Q])


def test_sample_size_keeps_the_most_recent_sessions():
    sessions = [[A, P]] * 5 + [[A, Q]] * 2  # old sessions point to P, recent ones to Q
    assert (
        scores_of(fit(sessions, sample_size=None), [A])[P]
        > scores_of(fit(sessions, sample_size=None), [A])[Q]
    )
    recent = scores_of(fit(sessions, sample_size=2), [A])
    assert recent[Q] > 0 and recent[P] == 0.0
    random = scores_of(fit(sessions, sample_size=2, sampling="random"), [A])
    single = 1 / math.sqrt(2)  # cosine of [A] with any [A, *] session
    assert random[A] == pytest.approx(2 * single)  # exactly two neighbours survive the sample
    assert random[P] + random[Q] == pytest.approx(2 * single)


def test_batch_scores_equal_one_by_one():
    rng = np.random.default_rng(0)
    sessions = [list(rng.integers(0, 30, size=rng.integers(1, 6))) for _ in range(300)]
    for params in (
        {},
        {"k": 5, "sample_size": 20},
        {"sampling": "random", "sample_size": 10, "idf_weighting": True},
    ):
        model = fit(sessions, **params)
        queries = [list(rng.choice(model.item_ids, size=rng.integers(1, 8))) for _ in range(40)]
        batch = model.score_sessions(as_sequences(model, queries))
        single = np.vstack([model.score_sessions(as_sequences(model, [q])) for q in queries])
        np.testing.assert_allclose(batch, single, rtol=1e-6, atol=1e-7)


def test_batch_larger_than_one_chunk(monkeypatch):
    import funnelrec.models.neighbors.session_knn as module

    rng = np.random.default_rng(1)
    sessions = [list(rng.integers(0, 20, size=rng.integers(1, 5))) for _ in range(100)]
    model = fit(sessions, k=10)
    queries = [list(rng.choice(model.item_ids, size=3)) for _ in range(25)]
    whole = model.score_sessions(as_sequences(model, queries))
    monkeypatch.setattr(module, "QUERY_CHUNK", 4)
    np.testing.assert_array_equal(model.score_sessions(as_sequences(model, queries)), whole)


def test_max_session_length_uses_the_tail():
    model = fit(TINY, max_session_length=2)
    assert scores_of(model, [E, E, A, B]) == pytest.approx(scores_of(model, [A, B]))


def test_recommend_uses_the_visitors_last_session():
    # visitor 1: an old session [A, B], then [D, G]; G appears in no other session
    sessions = [[A, C], [A, B], [D, E], [D, E], [D, G]]
    model = fit(sessions, visitors=[2, 1, 3, 4, 1])
    recs = dict(model.recommend(1, n_items=model.n_items, exclude_seen=False))
    assert max(recs, key=recs.get) in (D, E)
    assert recs[E] > 0
    assert recs[G] == 0.0  # its own session is not its neighbour
    assert recs[C] == 0.0  # the older session is not the query
    assert model.recommend(1, n_items=1).item_ids == [E]
    # as a live session the same items do match the training session [D, G]
    live = scores_of(model, [D, G])
    assert live[G] > 0


def test_similar_items_cooccurrence():
    model = fit([[A, B]] * 3 + [[A, C]] + [[D, E]])
    similar = model.get_similar_items(A, n_items=4)
    assert similar.item_ids[0] == B
    assert dict(similar)[B] == pytest.approx(3 / math.sqrt(4 * 3))
    assert dict(similar).get(D, 0.0) == 0.0


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    sessions = [list(rng.integers(0, 25, size=rng.integers(1, 5))) for _ in range(80)]
    for params in ({}, {"sampling": "random", "sample_size": 5, "idf_weighting": True, "k": 7}):
        model = fit(sessions, **params)
        path = model.save(tmp_path / f"sknn-{len(params)}")
        loaded = Recommender.load(path)
        assert isinstance(loaded, SessionKNNRecommender)
        assert loaded.get_params() == model.get_params()
        for query in ([3, 5], [7], [1, 2, 3, 4, 9]):
            assert loaded.recommend_by_item_ids(query, n_items=10) == model.recommend_by_item_ids(
                query, n_items=10
            )
        visitors = model.visitor_map_.ids[:10]
        for got, want in zip(
            loaded.recommend_batch(visitors, 5), model.recommend_batch(visitors, 5), strict=True
        ):
            np.testing.assert_array_equal(got, want)
        assert loaded.get_similar_items(3) == model.get_similar_items(3)


def test_fit_without_session_ids_builds_sessions():
    events = make_events(TINY).drop(columns="session_id")
    model = SessionKNNRecommender().fit(events)
    assert scores_of(model, [A, B]) == pytest.approx(scores_of(fit(TINY), [A, B]))


@pytest.mark.parametrize(
    "params",
    [
        {"k": 0},
        {"k": 2.5},
        {"sample_size": 0},
        {"sampling": "oldest"},
        {"similarity": "jaccard"},
        {"weighting": "exp"},
        {"max_session_length": 0},
        {"idf_weighting": "yes"},
    ],
)
def test_invalid_parameters(params):
    with pytest.raises(ValueError, match=next(iter(params))):
        SessionKNNRecommender(**params)
