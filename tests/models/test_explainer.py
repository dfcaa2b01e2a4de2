"""RecommendationExplainer: exact facts on a hand-built frame, funnel order, and faithfulness.

The faithfulness checks recompute every fact an explanation states directly from the training
frame with pandas / Python sets, independently of the explainer's sparse matrices.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelrec.data.features.user_features import UserFeatureExtractor
from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.schema import to_canonical
from funnelrec.models.base import NotFittedError
from funnelrec.models.explainable.explainer import (
    STAGE_PRIORITY,
    Explanation,
    ReasonType,
    RecommendationExplainer,
    cooccurrence,
    pair_counts,
)

T0 = 1_430_000_000_000
MINUTE = 60_000
DAY = 86_400_000
PERSONAL_KINDS = {"in_cart", "co_purchase", "view_then_buy", "co_view", "category_match"}
PAIR_VERBS = {"co_view": ("viewed", "viewed"), "co_purchase": ("bought", "bought"),
              "view_then_buy": ("viewed", "bought")}


def make_events(rows: list[tuple[int, int, str, int]], categories: dict[int, int]) -> pd.DataFrame:
    """``(visitor, item, event, minute)`` rows -> a canonical, sessionised frame."""
    frame = pd.DataFrame(rows, columns=["visitor_id", "item_id", "event", "minute"])
    frame["timestamp"] = T0 + frame["minute"] * MINUTE
    frame["category_id"] = frame["item_id"].map(categories)
    is_txn = frame["event"] == "transaction"
    frame["transaction_id"] = pd.array(np.where(is_txn, np.arange(len(frame)), -1), dtype="Int64")
    frame.loc[~is_txn, "transaction_id"] = pd.NA
    frame = frame.drop(columns="minute")
    return SessionBuilder().build_sessions(to_canonical(frame))


def fit_explainer(train: pd.DataFrame, **params) -> RecommendationExplainer:
    extractor = UserFeatureExtractor().fit(train)
    popularity = train["item_id"].value_counts().to_dict()
    return RecommendationExplainer(
        user_feature_extractor=extractor, item_popularity=popularity, **params
    ).fit(train)


# --------------------------------------------------------------------------- the hand-built frame
CAT_ITEMS = list(range(40, 52))  # twelve items of category 2
CATEGORIES = {10: 1, 20: 2, 30: 2, 60: 3, **{i: 2 for i in CAT_ITEMS}}
CARTED, BROWSER, BUYER = 100, 200, 300


def hand_rows(extra_view_buyers: int = 0) -> list[tuple[int, int, str, int]]:
    rows = []
    for v in (1, 2, 3):  # viewed 10, then viewed and bought 20
        rows += [(v, 10, "view", 0), (v, 20, "view", 1), (v, 20, "transaction", 2)]
    for v in (4, 5):  # bought 20 and 30 together
        rows += [(v, 20, "view", 0), (v, 30, "view", 1), (v, 20, "transaction", 2),
                 (v, 30, "transaction", 3)]
    for k in range(extra_view_buyers):
        rows += [(1000 + k, 10, "view", 0), (1000 + k, 20, "transaction", 1)]
    rows += [(CARTED, 10, "view", 0), (CARTED, 10, "addtocart", 1)]
    rows += [(CARTED, i, "view", 2 + n) for n, i in enumerate(CAT_ITEMS)]
    rows += [(BROWSER, 10, "view", 0)]
    rows += [(BROWSER, i, "view", 1 + n) for n, i in enumerate(CAT_ITEMS)]
    rows += [(BUYER, 30, "view", 0), (BUYER, 30, "transaction", 1), (BUYER, 60, "view", 2)]
    return rows


@pytest.fixture(scope="module")
def hand():
    train = make_events(hand_rows(), CATEGORIES)
    return train, fit_explainer(train)


def evidence_of(explanation: Explanation, kind: str) -> list[dict]:
    return [r.evidence for r in explanation.reasons if r.evidence["kind"] == kind]


def test_stages_of_the_hand_built_visitors(hand):
    _, explainer = hand
    assert [explainer.stages_.get_stage(v) for v in (CARTED, BROWSER, BUYER)] == [
        "considerer", "browser", "buyer"
    ]


def test_cart_complement_states_exact_counts(hand):
    _, explainer = hand
    exp = explainer.explain(CARTED, 20, 0.9, "sasrec")
    top = exp.reasons[0]
    assert top.type == ReasonType.INTENT
    assert top.text == (
        "Goes with item 10, which you added to your cart: "
        "3 other visitors who viewed item 10 also bought item 20."
    )
    assert top.evidence == {"kind": "view_then_buy", "source": "cart", "item_id": 20,
                            "source_item_id": 10, "count": 3}
    assert exp.get_summary() == "Ranked by SASRec (self-attention sequence model). " + top.text
    content = evidence_of(exp, "category_match")
    assert content == [{"kind": "category_match", "source": "history", "item_id": 20,
                        "category_id": 2, "matching_item_ids": [40, 41, 42], "count": 12}]
    assert evidence_of(exp, "popularity") == [
        {"kind": "popularity", "item_id": 20, "count": 10, "rank": 1, "n_items": 4 + len(CAT_ITEMS)}
    ]
    # item 10 is cited once, as a cart item, never again as history or last session
    assert [r.evidence.get("source_item_id") for r in exp.reasons].count(10) == 1


def test_returning_buyer_hears_about_the_purchase(hand):
    _, explainer = hand
    exp = explainer.explain(BUYER, 20, 0.5, "als")
    texts = [r.text for r in exp.reasons]
    assert exp.reasons[0].type == ReasonType.INTENT
    assert texts[0] == "You bought item 30: 2 other visitors who bought item 30 also bought item 20."
    assert "Same category (2) as item 30, which you bought." in texts
    assert evidence_of(exp, "co_purchase")[0]["count"] == 2


def test_funnel_stage_changes_the_order(hand):
    _, explainer = hand
    carted = explainer.explain(CARTED, 20, 0.9, "sasrec")
    browser = explainer.explain(BROWSER, 20, 0.9, "sasrec")
    assert carted.funnel_stage == "considerer" and browser.funnel_stage == "browser"
    assert carted.reasons[0].type == ReasonType.INTENT
    assert browser.reasons[0].type == ReasonType.CONTENT
    # the browser's co-occurrence fact is the same numbers, told as the last visit, ranked lower
    assert "In your last visit you viewed item 10: 3 other visitors who viewed item 10 also bought item 20." in [
        r.text for r in browser.reasons
    ]
    # same visitor and evidence, only the stage differs: the table alone flips the order
    as_browser = explainer.explain(CARTED, 20, 0.9, "sasrec", funnel_stage="browser")
    assert [r.type for r in as_browser.reasons][:2] == [ReasonType.CONTENT, ReasonType.INTENT]
    assert {r.text for r in as_browser.reasons} - {r.text for r in carted.reasons} == {
        "Popular with other shoppers: 10 interactions, #1 of 16 items."
    }
    assert carted.confidence == pytest.approx(as_browser.confidence)


def test_the_visitor_is_not_counted_among_the_others(hand):
    _, explainer = hand
    exp = explainer.explain(1, 20, 0.2, "sasrec")  # visitor 1 viewed 10 and bought 20 themself
    assert evidence_of(exp, "view_then_buy") == [{"kind": "view_then_buy", "source": "last_session",
                                                  "item_id": 20, "source_item_id": 10, "count": 2}]
    assert "2 other visitors who viewed item 10 also bought item 20." in exp.reasons[0].text


def test_item_in_cart_is_an_intent_reason(hand):
    _, explainer = hand
    exp = explainer.explain(CARTED, 10, 0.1, "sasrec")
    assert exp.reasons[0].text == "You added item 10 to your cart and have not bought it yet."
    assert exp.reasons[0].evidence == {"kind": "in_cart", "source": "cart", "item_id": 10, "count": 1}


def test_stage_priority_table_is_complete():
    assert set(STAGE_PRIORITY) == {"new", "browser", "considerer", "buyer", "repeat_buyer"}
    for row in STAGE_PRIORITY.values():
        assert set(row) == set(ReasonType) and all(v > 0 for v in row.values())
    assert STAGE_PRIORITY["considerer"][ReasonType.INTENT] > STAGE_PRIORITY["browser"][ReasonType.INTENT]
    assert STAGE_PRIORITY["browser"][ReasonType.CONTENT] > STAGE_PRIORITY["considerer"][ReasonType.CONTENT]


def test_confidence_grows_with_evidence():
    confidences = []
    for extra in range(5):
        explainer = fit_explainer(make_events(hand_rows(extra), CATEGORIES))
        exp = explainer.explain(CARTED, 20, 0.9, "sasrec")
        assert exp.reasons[0].evidence["count"] == 3 + extra
        confidences.append(exp.confidence)
    assert all(0 < c < 1 for c in confidences)
    assert confidences == sorted(confidences) and len(set(confidences)) == len(confidences)


def test_unknown_item_is_new_to_the_catalogue(hand):
    _, explainer = hand
    exp = explainer.explain(CARTED, 999, 0.4, "sasrec", component_weights={"session": 1.0})
    assert len(exp.reasons) == 1 and exp.confidence == 0.0
    assert exp.reasons[0].text == "New to the catalogue: item 999 has no interactions yet."
    assert exp.reasons[0].evidence == {"kind": "new_item", "item_id": 999, "count": 0}


def test_unknown_visitor_without_session_gets_category_and_popularity(hand):
    _, explainer = hand
    exp = explainer.explain(123_456, 20, 0.4, "popular")
    assert exp.funnel_stage == "new" and exp.confidence == 0.0
    assert {r.evidence["kind"] for r in exp.reasons} == {"category_rank", "popularity"}
    assert "From category 2, where it ranks #1 of 14 items by interactions." in [r.text for r in exp.reasons]


def test_unknown_visitor_with_live_session(hand):
    _, explainer = hand
    exp = explainer.explain(123_456, 20, 0.4, "sknn", session_item_ids=[10, 30, 777])
    session = [r for r in exp.reasons if r.type == ReasonType.SESSION]
    assert session[0].text == "You just viewed item 10: 3 other visitors who viewed item 10 also bought item 20."
    assert exp.reasons[0] is session[0]
    match = evidence_of(exp, "category_match")[0]
    assert (match["source"], match["matching_item_ids"], match["count"]) == ("live_session", [30], 1)
    assert exp.confidence > 0


def component_text(exp: Explanation) -> str:
    return next(r.text for r in exp.reasons if r.evidence["kind"] == "component_weights")


def test_component_weights(hand):
    _, explainer = hand
    exp = explainer.explain(BROWSER, 20, 0.4, "hybrid", component_weights={"session": 7, "history": 3})
    reason = next(r for r in exp.reasons if r.evidence["kind"] == "component_weights")
    assert reason.type == ReasonType.SESSION
    assert reason.text == "Mostly from the session model on your earlier visits (70% of the weight in hybrid)."
    assert reason.evidence["component_weights"] == pytest.approx({"session": 0.7, "history": 0.3})
    blend = explainer.explain(BROWSER, 20, 0.4, "FunnelAwareHybrid",
                              component_weights={"session": 0.4, "history": 0.35, "popular": 0.25})
    assert component_text(blend) == (
        "A blend in the funnel-aware hybrid: the session model on your earlier visits 40%, "
        "the history model on your earlier visits 35%, what is popular 25%."
    )
    for bad in ({}, {"session": -1.0}, {"session": 0.0}, {"session": float("nan")}):
        with pytest.raises(ValueError, match="component_weights"):
            explainer.explain(BROWSER, 20, 0.4, "hybrid", component_weights=bad)


def all_text(exp: Explanation) -> str:
    return " ".join([exp.get_summary(), *(r.text for r in exp.reasons)])


def test_component_weights_say_only_what_the_request_had(hand):
    """The hybrid's 96% "session" weight without a live session is the session model reading the
    visitor's history: it must not read "your current session" (issue 18, item 2)."""
    _, explainer = hand
    weights = {"session": 0.96, "cf": 0.02, "popular": 0.02}
    model = "FunnelAwareHybrid"
    no_session = explainer.explain(BROWSER, 20, 0.4, model, component_weights=weights)
    assert component_text(no_session) == (
        "Mostly from the session model on your earlier visits (96% of the weight in the funnel-aware hybrid)."
    )
    assert "current session" not in all_text(no_session)
    live = explainer.explain(BROWSER, 20, 0.4, model, session_item_ids=[10], component_weights=weights)
    assert component_text(live).startswith("Mostly from the session model on your current session (96%")
    # a session of unknown items is no session to the model either
    unknown_items = explainer.explain(BROWSER, 20, 0.4, model, session_item_ids=[777], component_weights=weights)
    assert component_text(unknown_items) == component_text(no_session)
    assert "current session" not in all_text(unknown_items)
    # a visitor without history and without a session: the component is named, no input claimed
    stranger = explainer.explain(123_456, 20, 0.4, model, component_weights=weights)
    assert component_text(stranger) == (
        "Mostly from the session model (96% of the weight in the funnel-aware hybrid)."
    )
    # a component without input (weight 0) is not named; collaborative filtering reads history
    blend = explainer.explain(BROWSER, 20, 0.4, model, session_item_ids=[10],
                              component_weights={"session": 0.0, "cf": 0.45, "popular": 0.3, "content": 0.25})
    assert component_text(blend) == (
        "A blend in the funnel-aware hybrid: visitors like you 45%, what is popular 30%, "
        "the item-similarity model on your current session 25%."
    )
    assert next(r for r in blend.reasons if r.evidence["kind"] == "component_weights").evidence[
        "component_weights"] == pytest.approx({"session": 0.0, "cf": 0.45, "popular": 0.3, "content": 0.25})
    tiny_share = explainer.explain(BROWSER, 20, 0.4, model, component_weights={"cf": 0.498, "popular": 0.498,
                                                                                "session": 0.004})
    assert component_text(tiny_share).endswith("the session model on your earlier visits <1%.")


def test_evidence_leads_a_considerers_explanation():
    """A considerer with weak evidence and a dominant component weight hears the evidence first."""
    rows = [(1, 1, "view", 0), (1, 1, "addtocart", 1), (1, 3, "view", 2),  # the considerer
            (2, 3, "view", 0), (2, 2, "view", 1),  # one other visitor viewed 3 and 2
            (3, 2, "view", 0), (4, 4, "view", 0), (5, 4, "view", 0)]
    train = make_events(rows, {1: 1, 2: 2, 3: 1, 4: 3})
    explainer = fit_explainer(train)
    assert explainer.stages_.get_stage(1) == "considerer"
    exp = explainer.explain(1, 2, 0.5, "funnel_hybrid", component_weights={"session": 0.96, "popular": 0.04})
    kinds = [r.evidence["kind"] for r in exp.reasons]
    assert kinds == ["co_view", "category_rank", "popularity", "component_weights"]
    assert exp.get_summary() == (
        "Ranked by the funnel-aware hybrid. "
        "In your last visit you viewed item 3: 1 other visitor who viewed item 3 also viewed item 2."
    )
    # the weights still say how strong each reason is: the evidence is not the strongest here
    assert exp.reasons[-1].weight > exp.reasons[0].weight


def test_explanations_name_the_model_that_ranked(tiny_split):
    from funnelrec.models import ALSRecommender, PopularItemsRecommender

    train = tiny_split[0]
    explainer = fit_explainer(train)
    visitor = int(train["visitor_id"].value_counts().index[0])
    als = ALSRecommender(factors=8, iterations=3, random_state=0).fit(train)
    popular = PopularItemsRecommender().fit(train)
    by_als = explainer.explain_batch(visitor, als.recommend(visitor, n_items=3), als.name)
    by_popular = explainer.explain_batch(visitor, popular.recommend(visitor, n_items=3), popular.name)
    for exp in by_als:
        assert exp.get_summary() == "Ranked by ALS (collaborative filtering). " + exp.reasons[0].text
    for exp in by_popular:
        assert exp.get_summary() == "Ranked by Popular (the most-interacted items). " + exp.reasons[0].text
    assert by_als[0].ranked_by != by_popular[0].ranked_by
    # a fallback list was ranked by popularity, whatever model answered; weights are not told for it
    cold = als.recommend(10**9, n_items=3)
    assert cold.is_fallback
    for exp in explainer.explain_batch(10**9, cold, als.name, component_weights={"cf": 1.0}):
        assert exp.get_summary().startswith(
            "Ranked by popularity, because ALS (collaborative filtering) had nothing to personalise from. "
        )
        assert "component_weights" not in {r.evidence["kind"] for r in exp.reasons}
    assert explainer.explain(10**9, int(cold.item_ids[0]), 1.0, "popular", is_fallback=True).get_summary().startswith(
        "Ranked by Popular (the most-interacted items). ")
    assert explainer.explain(visitor, int(cold.item_ids[0]), 1.0, "my_model").ranked_by == "Ranked by my_model."


def test_explanation_formatting_and_json(hand):
    _, explainer = hand
    exp = explainer.explain(CARTED, 20, np.float32(0.9), "sasrec", component_weights={"session": 0.6})
    lines = exp.get_full_explanation().splitlines()
    assert len(lines) == len(exp.reasons) >= 3
    assert all(line.startswith(f"{i}. ") for i, line in enumerate(lines, start=1))
    payload = exp.to_dict()
    assert json.loads(json.dumps(payload)) == payload
    assert payload["summary"] == exp.get_summary() and payload["funnel_stage"] == "considerer"
    assert [r["type"] for r in payload["reasons"]] == [r.type.value for r in exp.reasons]


def test_invalid_arguments(hand):
    train, explainer = hand
    with pytest.raises(NotFittedError):
        RecommendationExplainer().explain(1, 20, 0.1, "m")
    with pytest.raises(NotFittedError):
        RecommendationExplainer(user_feature_extractor=UserFeatureExtractor()).fit(train)
    with pytest.raises(ValueError, match="pairs"):
        explainer.explain_batch(user_id=1, recommendations=[20], model_name="m")
    with pytest.raises(TypeError, match="integers"):
        explainer.explain_batch(user_id=1, recommendations=[("a", 0.1)], model_name="m")
    with pytest.raises(ValueError, match="funnel_stage"):
        explainer.explain(1, 20, 0.1, "m", funnel_stage="lurker")
    with pytest.raises(ValueError, match="negative"):
        RecommendationExplainer(item_popularity={20: -1}).fit(train)
    assert explainer.explain_batch(user_id=1, recommendations=[], model_name="m") == []


def test_without_extractor_or_popularity(hand):
    train, fitted = hand
    own = RecommendationExplainer().fit(train)
    for visitor in (CARTED, BROWSER, BUYER, 5):
        a = own.explain(visitor, 20, 0.5, "m").to_dict()
        b = fitted.explain(visitor, 20, 0.5, "m").to_dict()
        assert a == b


# --------------------------------------------------------------------------- co-occurrence
def test_cooccurrence_matches_dense_product_and_keeps_top_n():
    rng = np.random.default_rng(0)
    left = sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(np.int32))
    right = sp.csr_matrix((rng.random((40, 30)) < 0.2).astype(np.int32))
    dense = left.T.toarray() @ right.toarray()
    np.fill_diagonal(dense, 0)
    full = cooccurrence(left, right, top_n=30, block_size=7)
    np.testing.assert_array_equal(full.toarray(), dense)
    top = cooccurrence(left, right, top_n=3, block_size=7).toarray()
    assert (np.count_nonzero(top, axis=1) <= 3).all()
    kept = top > 0
    np.testing.assert_array_equal(top[kept], dense[kept])  # kept counts are exact
    for row in range(dense.shape[0]):  # and they are the row's largest
        if kept[row].any():
            assert top[row][kept[row]].min() >= np.max(dense[row][~kept[row]], initial=0)


def test_pair_counts_is_the_dense_slice():
    rng = np.random.default_rng(1)
    matrix = cooccurrence(*(sp.csr_matrix((rng.random((30, 25)) < 0.3).astype(np.int32)) for _ in range(2)),
                          top_n=6, block_size=4)
    for rows, cols in (([3, 0, 3, 24], [5, 5, 0, 24, 1]), ([], [1, 2]), ([7], []), (list(range(25)), list(range(25)))):
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        expected = matrix.toarray()[rows][:, cols] if len(rows) and len(cols) else np.zeros((len(rows), len(cols)))
        np.testing.assert_array_equal(pair_counts(matrix, rows, cols), expected)


# --------------------------------------------------------------------------- faithfulness
class Truth:
    """Facts recomputed from the training frame with pandas and sets."""

    def __init__(self, train: pd.DataFrame) -> None:
        def sets(frame: pd.DataFrame, key: str, value: str) -> dict[int, set[int]]:
            return {int(k): set(map(int, g)) for k, g in frame.groupby(key)[value]}

        event = train["event"].astype(str)
        views, carts, buys = train[event == "view"], train[event == "addtocart"], train[event == "transaction"]
        self.viewers = sets(views, "item_id", "visitor_id")
        self.buyers = sets(buys, "item_id", "visitor_id")
        self.viewed = sets(views, "visitor_id", "item_id")
        self.bought = sets(buys, "visitor_id", "item_id")
        self.cart_adds = carts.groupby(["visitor_id", "item_id"]).size().to_dict()
        last = train.sort_values("timestamp", kind="stable").groupby("visitor_id")["session_id"].last()
        in_last = views["session_id"].to_numpy() == last.reindex(views["visitor_id"]).to_numpy()
        self.last_session = sets(views[in_last], "visitor_id", "item_id")
        self.category = train.dropna(subset=["category_id"]).groupby("item_id")["category_id"].last()
        self.popularity = train["item_id"].value_counts()
        self.visitors = set(map(int, train["visitor_id"]))

    def is_live(self, session: list[int] | None) -> bool:
        """The request has a live session the models could read (an item known to training)."""
        return any(i in self.popularity.index for i in session or ())

    def pair_count(self, kind: str, x: int, y: int, visitor: int) -> int:
        """Visitors other than ``visitor`` who did the two things."""
        left = self.buyers if kind == "co_purchase" else self.viewers
        right = self.viewers if kind == "co_view" else self.buyers
        return len((left.get(x, set()) & right.get(y, set())) - {visitor})

    def source_items(self, visitor: int, source: str, session: list[int] | None) -> set[int]:
        if source == "cart":
            return {i for (v, i) in self.cart_adds if v == visitor} - self.bought.get(visitor, set())
        if source == "purchases":
            return self.bought.get(visitor, set())
        if source == "history":
            return self.viewed.get(visitor, set())
        if source == "last_session":
            return self.last_session.get(visitor, set())
        assert source == "live_session" and self.is_live(session)
        return set(session or ())


#: What each hybrid component is (its words in the component reason), and which components read
#: the live session when there is one, else the visitor's history.
COMPONENT_NAMES = {"session": "the session model", "content": "the item-similarity model",
                   "history": "the history model", "cf": "visitors like you", "popular": "what is popular"}
READS_REQUEST, READS_HISTORY = {"session", "content"}, {"history"}
#: Phrases that presume a live session, or a history, the request may not have.
LIVE_PHRASES = ("current session", "just viewed")
HISTORY_PHRASES = ("earlier visits", "last visit", "you viewed", "you bought", "your cart", "you looked at",
                   "browsing history", "you added")


def check_component_reason(text: str, evidence: dict, truth: Truth, visitor: int, live: bool,
                           weights: dict[str, float], model: str) -> None:
    """The exact sentence: components that counted, each with what it read in this request."""
    total = sum(weights.values())
    shares = {k: v / total for k, v in weights.items()}
    assert evidence["component_weights"] == pytest.approx(shares)

    def words(name: str) -> str:
        if name in READS_REQUEST and live:
            return f"{COMPONENT_NAMES[name]} on your current session"
        if name in READS_REQUEST | READS_HISTORY and visitor in truth.visitors:
            return f"{COMPONENT_NAMES[name]} on your earlier visits"
        return COMPONENT_NAMES[name]

    def percent(share: float) -> str:
        return "<1%" if share < 0.005 else f"{share:.0%}"

    counted = sorted(((k, s) for k, s in shares.items() if s > 0), key=lambda kv: (-kv[1], kv[0]))
    top, share = counted[0]
    if share >= 0.5:
        assert text == f"Mostly from {words(top)} ({percent(share)} of the weight in {model})."
    else:
        assert text == f"A blend in {model}: " + ", ".join(f"{words(k)} {percent(s)}" for k, s in counted) + "."
    for name, share in shares.items():
        if share == 0:  # no input in this request (or it did not count): never named
            assert COMPONENT_NAMES[name] not in text


def check_faithful(exp: Explanation, truth: Truth, visitor: int, session: list[int] | None,
                   component_weights: dict[str, float] | None = None, is_fallback: bool = False) -> None:
    y = exp.item_id
    live = truth.is_live(session)
    assert 0.0 <= exp.confidence <= 1.0
    json.dumps(exp.to_dict())
    # every sentence is true of the request: nothing presumes a session or a history it lacks
    text = " ".join([exp.get_summary(), *(r.text for r in exp.reasons)]).lower()
    if not live:
        assert not [p for p in LIVE_PHRASES if p in text], text
    if visitor not in truth.visitors:
        assert not [p for p in HISTORY_PHRASES if p in text], text
    # what ranked the item, then the leading reason
    ranked_by = ("Ranked by popularity, because m had nothing to personalise from." if is_fallback
                 else "Ranked by m.")
    assert exp.ranked_by == ranked_by and exp.get_summary() == f"{ranked_by} {exp.reasons[0].text}"
    # evidence first: facts about the visitor, then about the item, then the model's weights;
    # strongest first within each group
    weights = [r.weight for r in exp.reasons]
    kinds = [r.evidence["kind"] for r in exp.reasons]
    groups = [0 if k in PERSONAL_KINDS else 2 if k == "component_weights" else 1 for k in kinds]
    assert groups == sorted(groups), kinds
    for group in set(groups):
        within = [w for w, g in zip(weights, groups, strict=True) if g == group]
        assert within == sorted(within, reverse=True)
    assert math.isclose(sum(weights), 1.0)
    told_weights = component_weights is not None and not is_fallback and y in truth.popularity.index
    assert ("component_weights" in kinds) == told_weights
    if not PERSONAL_KINDS & set(kinds):
        assert exp.confidence == 0.0
    else:
        assert exp.confidence > 0.0
    if y not in truth.popularity.index:
        assert kinds == ["new_item"] and exp.confidence == 0.0
        return
    assert "new_item" not in kinds
    cited = [r.evidence["source_item_id"] for r in exp.reasons if "source_item_id" in r.evidence]
    assert len(cited) == len(set(cited))  # no item is cited twice
    for reason in exp.reasons:
        ev = reason.evidence
        assert ev.get("item_id", y) == y
        kind = ev["kind"]
        if kind in PAIR_VERBS:
            x, n = ev["source_item_id"], ev["count"]
            assert x != y and n >= 1
            assert n == truth.pair_count(kind, x, y, visitor), (kind, x, y)
            assert x in truth.source_items(visitor, ev["source"], session)
            v1, v2 = PAIR_VERBS[kind]
            who = "other visitor" if n == 1 else "other visitors"
            assert f"{n} {who} who {v1} item {x} also {v2} item {y}." in reason.text
        elif kind == "in_cart":
            assert truth.cart_adds[(visitor, y)] == ev["count"]
            assert y not in truth.bought.get(visitor, set())
        elif kind == "category_match":
            cat = ev["category_id"]
            assert truth.category[y] == cat
            assert f"category {cat}" in reason.text or f"category ({cat})" in reason.text
            pool = truth.source_items(visitor, ev["source"], session) - {y}
            same = {i for i in pool if i in truth.category.index and truth.category[i] == cat}
            assert ev["count"] == len(same) and set(ev["matching_item_ids"]) <= same
            assert f"item {ev['matching_item_ids'][0]}" in reason.text
        elif kind == "category_rank":
            cat = ev["category_id"]
            assert truth.category[y] == cat
            members = truth.popularity[truth.category.index[truth.category == cat]]
            assert ev["n_items"] == len(members)
            assert ev["rank"] == 1 + int((members > truth.popularity[y]).sum())
            assert f"#{ev['rank']} of {ev['n_items']}" in reason.text
        elif kind == "popularity":
            assert ev["count"] == truth.popularity[y]
            assert ev["rank"] == 1 + int((truth.popularity > ev["count"]).sum())
            assert ev["n_items"] == len(truth.popularity)
            assert f"{ev['count']} interaction" in reason.text
        else:
            assert kind == "component_weights", kind
            check_component_reason(reason.text, ev, truth, visitor, live, component_weights, "m")


def test_every_fact_is_true_on_the_tiny_split(tiny_split):
    train = tiny_split[0]
    explainer = fit_explainer(train, max_neighbors=20)
    truth = Truth(train)
    rng = np.random.default_rng(11)
    stages = explainer.stages_.features_["funnel_stage"]
    visitors = np.concatenate([
        stages.index[stages != "browser"].to_numpy()[:60],
        rng.choice(stages.index[stages == "browser"].to_numpy(), 60, replace=False),
        [10**9],
    ])
    all_items = np.sort(train["item_id"].unique())
    seen_kinds: set[str] = set()
    for n, visitor in enumerate(visitors.tolist()):
        mine = sorted(truth.viewed.get(visitor, set()) | truth.bought.get(visitor, set())
                      | {i for (v, i) in truth.cart_adds if v == visitor})
        idx = explainer.item_map_.to_idx(mine)
        near = set()
        for matrix in (explainer.co_view_, explainer.co_purchase_, explainer.view_buy_):
            near |= set(explainer.item_map_.ids[matrix[idx].indices].tolist())
        candidates = sorted(near)[:8] + rng.choice(all_items, 4).tolist() + mine[:2] + [10**9]
        session = rng.choice(all_items, 3).tolist() if n % 3 == 0 else None
        recs = [(int(i), float(s)) for i, s in zip(candidates, np.linspace(1, 0, len(candidates)), strict=True)]
        weights = [{"session": 0.6, "history": 0.4}, {"session": 0.96, "cf": 0.02, "popular": 0.02},
                   {"session": 0.0, "cf": 0.3, "content": 0.3, "popular": 0.4}, None][n % 4]
        for live in {None, None if session is None else tuple(session)}:
            live = None if live is None else list(live)
            for exp in explainer.explain_batch(user_id=visitor, recommendations=recs, model_name="m",
                                               session_item_ids=live, component_weights=weights):
                check_faithful(exp, truth, visitor, live, weights)
                seen_kinds |= {r.evidence["kind"] for r in exp.reasons}
    assert seen_kinds >= PERSONAL_KINDS | {"category_rank", "popularity", "new_item", "component_weights"}


EVENT_ROWS = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 7), st.sampled_from(["view", "view", "addtocart", "transaction"]),
              st.integers(0, 600)),
    min_size=1, max_size=40,
)


COMPONENT_WEIGHTS = st.none() | st.dictionaries(
    st.sampled_from(sorted(COMPONENT_NAMES)), st.just(0.0) | st.floats(0.0, 1.0), min_size=1
).filter(lambda w: sum(w.values()) > 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=EVENT_ROWS, top_n=st.integers(1, 4), session=st.none() | st.lists(st.integers(0, 9), max_size=4),
       weights=COMPONENT_WEIGHTS, fallback=st.booleans())
def test_every_fact_is_true_on_random_frames(rows, top_n, session, weights, fallback):
    """Known visitors with and without a live session, a session alone, an unknown visitor alone."""
    train = make_events(rows, {i: i % 3 for i in range(8)})
    explainer = fit_explainer(train, max_neighbors=top_n)
    truth = Truth(train)
    recs = [(i, 1.0 / (1 + i)) for i in range(10)]  # items 8 and 9 are never in training
    for visitor in [*range(6), 99]:  # 99 is never in training
        for live in (None, session):
            explanations = explainer.explain_batch(user_id=visitor, recommendations=recs, model_name="m",
                                                   session_item_ids=live, component_weights=weights,
                                                   is_fallback=fallback)
            assert [e.item_id for e in explanations] == [i for i, _ in recs]
            for exp in explanations:
                check_faithful(exp, truth, visitor, live, weights, fallback)


# --------------------------------------------------------------------------- the seed notebook
def test_seed_notebook_call_pattern(tiny_split):
    from funnelrec.models import PopularItemsRecommender

    train = tiny_split[0]
    user_feature_extractor = UserFeatureExtractor()
    user_feature_extractor.fit(train)
    item_popularity = train["item_id"].value_counts().to_dict()
    explainer = RecommendationExplainer(
        user_feature_extractor=user_feature_extractor, item_popularity=item_popularity
    )
    explainer.fit(train)
    sample_user = train["visitor_id"].iloc[0]
    recs = PopularItemsRecommender().fit(train).recommend(sample_user, n_items=5)
    explanations = explainer.explain_batch(user_id=sample_user, recommendations=recs, model_name="sasrec")
    assert [e.item_id for e in explanations] == recs.item_ids
    for exp in explanations:
        line = f"Item {exp.item_id} (score: {exp.score:.4f}) {exp.get_summary()} {exp.confidence:.2f}"
        assert exp.get_summary() in line and exp.model_name == "sasrec"
        assert len(exp.reasons) >= 1
        if len(exp.reasons) > 1:
            assert exp.get_full_explanation().count("\n") == len(exp.reasons) - 1
