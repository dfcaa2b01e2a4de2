"""User and item features on a hand-made shop with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from funnelrec.data.features.item_features import ITEM_NUMERIC_FEATURES, ItemFeatureExtractor
from funnelrec.data.features.user_features import (
    FUNNEL_STAGES,
    NUMERIC_FEATURES,
    FunnelStage,
    UserFeatureExtractor,
)
from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.schema import to_canonical
from funnelrec.models.base import NotFittedError

T0 = 1_700_000_000_000
MIN = 60_000
DAY = 24 * 60 * MIN

# (day, minute, visitor, event, item, transaction_id, category_id)
SHOP = [
    # visitor 1, browser: one session of three views (items 10, 11, 10)
    (0, 0, 1, "view", 10, None, 1),
    (0, 1, 1, "view", 11, None, 2),
    (0, 2, 1, "view", 10, None, 1),
    # visitor 2, considerer: a cart in a first session, a view two days later
    (1, 0, 2, "view", 12, None, 2),
    (1, 1, 2, "addtocart", 12, None, 2),
    (1, 2, 2, "view", 10, None, 1),
    (3, 0, 2, "view", 12, None, 2),
    # visitor 3, buyer: view, cart, buy item 20 (transaction 100)
    (5, 0, 3, "view", 20, None, 3),
    (5, 1, 3, "addtocart", 20, None, 3),
    (5, 2, 3, "transaction", 20, 100, 3),
    # visitor 4, repeat buyer: transaction 200 on day 2, transaction 201 (two items) on day 10
    (2, 0, 4, "view", 20, None, 3),
    (2, 1, 4, "addtocart", 20, None, 3),
    (2, 2, 4, "transaction", 20, 200, 3),
    (10, 0, 4, "view", 21, None, 3),
    (10, 1, 4, "addtocart", 21, None, 3),
    (10, 2, 4, "addtocart", 22, None, 4),
    (10, 3, 4, "transaction", 21, 201, 3),
    (10, 3, 4, "transaction", 22, 201, 4),  # the last event: the end of training
]


def make_events(rows: list[tuple]) -> pd.DataFrame:
    columns = ["day", "minute", "visitor_id", "event", "item_id", "transaction_id", "category_id"]
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(0, "timestamp", T0 + frame.pop("day") * DAY + frame.pop("minute") * MIN)
    return to_canonical(frame)


@pytest.fixture(scope="module")
def shop() -> pd.DataFrame:
    return SessionBuilder(timeout_minutes=30).build_sessions(make_events(SHOP))


@pytest.fixture(scope="module")
def users(shop: pd.DataFrame) -> UserFeatureExtractor:
    return UserFeatureExtractor().fit(shop)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------- users

EXPECTED_USERS = {
    # visitor: stage, views, carts, txns, purchases, sessions, mean length, unique items,
    #          view->cart, cart->purchase, favourite categories
    1: ("browser", 3, 0, 0, 0, 1, 3.0, 2, 0.0, 0.0, (1, 2)),
    2: ("considerer", 3, 1, 0, 0, 2, 2.0, 2, 1 / 3, 0.0, (2, 1)),
    3: ("buyer", 1, 1, 1, 1, 1, 3.0, 1, 1.0, 1.0, (3,)),
    4: ("repeat_buyer", 2, 3, 3, 2, 2, 4.0, 3, 1.0, 1.0, (3, 4)),  # 3 carts / 2 views capped at 1
}


@pytest.mark.parametrize("visitor", sorted(EXPECTED_USERS))
def test_user_features_hand_case(users: UserFeatureExtractor, visitor: int) -> None:
    stage, views, carts, txns, purchases, sessions, mean_len, unique, v2c, c2p, fav = (
        EXPECTED_USERS[visitor]
    )
    f = users.get_features(visitor)
    assert f["visitor_id"] == visitor
    assert f["is_known"] is True
    assert f["funnel_stage"] == stage
    assert users.get_stage(visitor) == stage
    assert (f["n_views"], f["n_addtocarts"], f["n_transactions"]) == (views, carts, txns)
    assert f["n_purchases"] == purchases
    assert f["n_events"] == views + carts + txns
    assert f["n_sessions"] == sessions
    assert f["mean_session_length"] == pytest.approx(mean_len)
    assert f["n_unique_items"] == unique
    assert f["view_to_cart_rate"] == pytest.approx(v2c)
    assert f["cart_to_purchase_rate"] == pytest.approx(c2p)
    assert f["favourite_categories"] == fav


def test_recency_and_tenure_relative_to_end_of_training(users: UserFeatureExtractor) -> None:
    end = pd.Timestamp(T0 + 10 * DAY + 3 * MIN, unit="ms", tz="UTC")
    assert users.reference_time_ == end
    frame = users.transform([1, 2, 3, 4])
    minute = 1 / (24 * 60)
    np.testing.assert_allclose(
        frame["recency_days"].to_numpy(), [10 + minute, 7 + 3 * minute, 5 + minute, 0.0]
    )
    np.testing.assert_allclose(
        frame["tenure_days"].to_numpy(), [2 * minute, 2.0, 2 * minute, 8 + 3 * minute]
    )


def test_intent_score(users: UserFeatureExtractor) -> None:
    minute = 1 / (24 * 60)
    expected = [
        sigmoid(-2.0 - (10 + minute) / 14),
        sigmoid(-2.0 + 6.0 / 3 + 1.0 - (7 + 3 * minute) / 14),
        sigmoid(-2.0 + 6.0 + 1.0 + 1.0 - (5 + minute) / 14),
        sigmoid(-2.0 + 6.0 + 1.0 + 1.0),
    ]
    scores = users.transform([1, 2, 3, 4])["intent_score"].to_numpy()
    np.testing.assert_allclose(scores, expected)
    assert list(np.argsort(scores)) == [0, 1, 2, 3]  # further down the funnel, higher intent


def test_unknown_visitor_defaults(users: UserFeatureExtractor) -> None:
    f = users.get_features(999)
    assert f["visitor_id"] == 999
    assert f["is_known"] is False
    assert f["funnel_stage"] == FunnelStage.NEW == "new"
    assert users.get_stage(999) == "new"
    for count in (
        "n_events",
        "n_views",
        "n_addtocarts",
        "n_transactions",
        "n_purchases",
        "n_sessions",
        "n_unique_items",
    ):
        assert f[count] == 0, count
        assert isinstance(f[count], int), count
    assert f["mean_session_length"] == 0.0
    assert f["view_to_cart_rate"] == 0.0
    assert f["cart_to_purchase_rate"] == 0.0
    assert math.isnan(f["recency_days"])
    assert f["tenure_days"] == 0.0
    assert f["intent_score"] == 0.0
    assert f["favourite_categories"] == ()


def test_get_features_is_a_plain_dict(users: UserFeatureExtractor) -> None:
    f = users.get_features(3)
    assert type(f) is dict
    assert isinstance(f["n_views"], int)
    assert isinstance(f["recency_days"], float)
    assert isinstance(f["funnel_stage"], str)
    assert isinstance(f["is_known"], bool)


def test_transform_keeps_requested_order(users: UserFeatureExtractor) -> None:
    frame = users.transform([4, 999, 1, 3, 1])
    assert frame.index.tolist() == [4, 999, 1, 3, 1]
    assert frame.index.name == "visitor_id"
    assert frame["funnel_stage"].tolist() == ["repeat_buyer", "new", "browser", "buyer", "browser"]
    assert frame["is_known"].tolist() == [True, False, True, True, True]
    assert frame["n_views"].dtype == np.int64
    assert frame["is_known"].dtype == bool
    assert frame["favourite_categories"].tolist() == [(3, 4), (), (1, 2), (3,), (1, 2)]
    all_unknown = users.transform(np.array([997, 998]))
    assert all_unknown["funnel_stage"].tolist() == ["new", "new"]
    assert all_unknown["n_events"].tolist() == [0, 0]


def test_feature_matrix(users: UserFeatureExtractor) -> None:
    ids = [1, 2, 3, 4, 999]
    m = users.feature_matrix(ids)
    names = users.feature_names
    assert names == list(NUMERIC_FEATURES) + [f"stage_{s}" for s in FUNNEL_STAGES]
    assert m.shape == (len(ids), len(names)) == (5, 17)
    assert m.dtype == np.float32
    assert np.isfinite(m).all()
    col = {name: i for i, name in enumerate(names)}
    # one-hot stage, in requested order
    stages = m[:, col["stage_new"] :]
    np.testing.assert_array_equal(stages.sum(axis=1), 1.0)
    assert [FUNNEL_STAGES[i] for i in stages.argmax(axis=1)] == [
        "browser",
        "considerer",
        "buyer",
        "repeat_buyer",
        "new",
    ]
    # log1p counts and scaled recency: visitor 1 has 3 views; the unknown visitor 365 days
    assert m[0, col["n_views"]] == pytest.approx(np.log1p(3.0))
    assert m[3, col["n_addtocarts"]] == pytest.approx(np.log1p(3.0))
    assert m[0, col["recency_days"]] == pytest.approx((10 + 1 / 1440) / 30, rel=1e-5)
    assert m[4, col["recency_days"]] == pytest.approx(365 / 30)
    assert m[4, : col["recency_days"]].tolist() == [0.0] * col["recency_days"]
    assert users.feature_matrix([]).shape == (0, 17)


def test_favourite_categories_ties_and_limit(shop: pd.DataFrame) -> None:
    rows = [
        (0, 0, 8, "view", 1, None, 7),
        (0, 1, 8, "view", 2, None, 5),
        (0, 2, 8, "view", 3, None, 9),
        (0, 3, 8, "view", 4, None, 9),
        (0, 4, 8, "view", 5, None, None),
        (0, 5, 9, "view", 5, None, None),  # visitor 9: no known category
    ]
    events = make_events(rows)
    three = UserFeatureExtractor().fit(events)
    assert three.get_features(8)["favourite_categories"] == (9, 5, 7)  # ties by category id
    assert three.get_features(9)["favourite_categories"] == ()
    one = UserFeatureExtractor(n_favourite_categories=1).fit(events)
    assert one.get_features(8)["favourite_categories"] == (9,)
    no_categories = UserFeatureExtractor().fit(shop.drop(columns=["category_id"]))
    assert no_categories.get_features(1)["favourite_categories"] == ()


def test_sessions_default_to_one_without_session_id(shop: pd.DataFrame) -> None:
    users = UserFeatureExtractor().fit(shop.drop(columns=["session_id"]))
    assert users.get_features(4)["n_sessions"] == 1
    assert users.get_features(4)["mean_session_length"] == 8.0


def test_transactions_without_ids_count_as_a_purchase(shop: pd.DataFrame) -> None:
    users = UserFeatureExtractor().fit(shop.drop(columns=["transaction_id"]))
    assert users.get_features(3)["n_purchases"] == 1
    assert users.get_stage(3) == "buyer"
    assert users.get_stage(2) == "considerer"


def test_transactions_without_ids_counted_per_session(shop: pd.DataFrame) -> None:
    users = UserFeatureExtractor().fit(shop.drop(columns=["transaction_id"]))
    assert users.get_features(4)["n_purchases"] == 2  # transactions in two sessions
    assert users.get_stage(4) == "repeat_buyer"


def test_user_extractor_not_fitted() -> None:
    users = UserFeatureExtractor()
    for call in (
        lambda: users.transform([1]),
        lambda: users.get_features(1),
        lambda: users.get_stage(1),
        lambda: users.feature_matrix([1]),
    ):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()


def test_user_extractor_bad_input(shop: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="n_favourite_categories"):
        UserFeatureExtractor(n_favourite_categories=0)
    with pytest.raises(ValueError, match="empty"):
        UserFeatureExtractor().fit(shop.iloc[:0])
    with pytest.raises(ValueError, match="visitor_id"):
        UserFeatureExtractor().fit(shop.drop(columns=["visitor_id"]))


def test_user_fit_does_not_modify_events(shop: pd.DataFrame) -> None:
    before = shop.copy()
    UserFeatureExtractor().fit(shop)
    pd.testing.assert_frame_equal(shop, before)


# --------------------------------------------------------------------------- items

# totals over SHOP: 9 views, 5 carts, 4 transactions
P_CART, P_BUY, P_VBUY = 5 / 9, 4 / 5, 4 / 9
EXPECTED_ITEMS = {
    # item: views, carts, txns, visitors, popularity (1/3/5), category
    10: (3, 0, 0, 2, 3.0, 1),
    11: (1, 0, 0, 1, 1.0, 2),
    12: (2, 1, 0, 1, 5.0, 2),
    20: (2, 2, 2, 2, 18.0, 3),
    21: (1, 1, 1, 1, 9.0, 3),
    22: (0, 1, 1, 1, 8.0, 4),
}


@pytest.fixture(scope="module")
def items(shop: pd.DataFrame) -> ItemFeatureExtractor:
    return ItemFeatureExtractor(
        prior_strength=20.0, event_weights={"view": 1.0, "addtocart": 3.0, "transaction": 5.0}
    ).fit(shop)


def test_item_counts_and_category(items: ItemFeatureExtractor) -> None:
    frame = items.transform(sorted(EXPECTED_ITEMS))
    for item, (views, carts, txns, visitors, popularity, category) in EXPECTED_ITEMS.items():
        row = frame.loc[item]
        assert (row["n_views"], row["n_addtocarts"], row["n_transactions"]) == (views, carts, txns)
        assert row["n_visitors"] == visitors
        assert row["popularity"] == pytest.approx(popularity)
        assert row["category_id"] == category
        assert row["log_popularity"] == pytest.approx(np.log1p(popularity))
        assert row["log_n_visitors"] == pytest.approx(np.log1p(visitors))
    assert frame["n_views"].dtype == np.int64
    assert frame["category_id"].dtype == pd.Int64Dtype()
    assert items.item_categories().to_dict() == {i: v[5] for i, v in EXPECTED_ITEMS.items()}


def test_item_smoothed_rates(items: ItemFeatureExtractor) -> None:
    a = 20.0
    frame = items.transform([20, 10, 22])
    # item 20: 2 views, 2 carts, 2 buys
    assert frame.loc[20, "view_to_cart_rate"] == pytest.approx((2 + a * P_CART) / (2 + a))
    assert frame.loc[20, "cart_to_purchase_rate"] == pytest.approx((2 + a * P_BUY) / (2 + a))
    assert frame.loc[20, "view_to_purchase_rate"] == pytest.approx((2 + a * P_VBUY) / (2 + a))
    # item 10: 3 views and nothing else; item 22: a cart and a buy without a view
    assert frame.loc[10, "view_to_cart_rate"] == pytest.approx(a * P_CART / (3 + a))
    assert frame.loc[22, "view_to_cart_rate"] == pytest.approx((1 + a * P_CART) / a)


def test_item_rates_lie_between_raw_rate_and_prior(items: ItemFeatureExtractor) -> None:
    frame = items.features_
    pairs = [
        ("view_to_cart_rate", "n_addtocarts", "n_views", P_CART),
        ("cart_to_purchase_rate", "n_transactions", "n_addtocarts", P_BUY),
        ("view_to_purchase_rate", "n_transactions", "n_views", P_VBUY),
    ]
    checked = 0
    for rate, num, den, prior in pairs:
        ok = frame[den] > 0
        raw = frame.loc[ok, num] / frame.loc[ok, den]
        smoothed = frame.loc[ok, rate]
        lo, hi = np.minimum(raw, prior), np.maximum(raw, prior)
        assert ((smoothed >= lo - 1e-12) & (smoothed <= hi + 1e-12)).all(), rate
        # strictly inside when the raw rate differs from the prior
        differs = (raw - prior).abs() > 1e-9
        assert ((smoothed > lo) & (smoothed < hi))[differs].all(), rate
        checked += int(differs.sum())
    assert checked >= 10


def test_item_prior_strength_extremes(shop: pd.DataFrame) -> None:
    raw = ItemFeatureExtractor(prior_strength=0.0).fit(shop).transform([10, 12, 20])
    np.testing.assert_allclose(raw["view_to_cart_rate"], [0.0, 0.5, 1.0])
    np.testing.assert_allclose(raw["cart_to_purchase_rate"].loc[[12, 20]], [0.0, 1.0])
    strong = ItemFeatureExtractor(prior_strength=1e9).fit(shop).features_
    np.testing.assert_allclose(strong["view_to_cart_rate"], P_CART, rtol=1e-6)
    np.testing.assert_allclose(strong["cart_to_purchase_rate"], P_BUY, rtol=1e-6)


def test_item_popularity_uses_settings_weights(
    shop: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from funnelrec.config import EventWeights, settings

    monkeypatch.setattr(
        settings, "event_weights", EventWeights(view=1.0, addtocart=0.0, transaction=10.0)
    )
    frame = ItemFeatureExtractor().fit(shop).transform([20, 12])
    np.testing.assert_allclose(frame["popularity"], [2 + 20.0, 2.0])


def test_item_category_latest_and_missing() -> None:
    rows = [
        (0, 0, 1, "view", 5, None, 50),
        (0, 1, 1, "view", 5, None, 51),  # the later category wins
        (0, 2, 1, "view", 5, None, None),  # unknown here, not a change
        (0, 3, 1, "view", 6, None, None),
    ]
    items = ItemFeatureExtractor().fit(make_events(rows))
    cats = items.item_categories()
    assert cats.loc[5] == 51
    assert pd.isna(cats.loc[6])
    no_column = ItemFeatureExtractor().fit(make_events(rows).drop(columns=["category_id"]))
    assert no_column.item_categories().isna().all()
    assert no_column.item_categories().dtype == pd.Int64Dtype()


def test_item_feature_matrix(items: ItemFeatureExtractor) -> None:
    m = items.feature_matrix([20, 999, 10])
    assert m.shape == (3, len(ITEM_NUMERIC_FEATURES))
    assert m.dtype == np.float32
    assert np.isfinite(m).all()
    assert m[0, 0] == pytest.approx(np.log1p(18.0))
    assert m[1, 0] == 0.0 and m[1, 1] == 0.0  # unknown item: no popularity
    assert ((m[:, 2:] >= 0) & (m[:, 2:] <= 1)).all()


def test_item_transform_keeps_order_and_marks_unknown(items: ItemFeatureExtractor) -> None:
    frame = items.transform([22, 999, 10])
    assert frame.index.tolist() == [22, 999, 10]
    assert frame.index.name == "item_id"
    assert frame.loc[22, "n_transactions"] == 1


def test_item_transform_unknown_defaults(items: ItemFeatureExtractor) -> None:
    frame = items.transform([999, 20])
    assert frame.loc[999, "n_views"] == 0
    assert frame.loc[999, "n_transactions"] == 0
    assert frame["n_views"].dtype == np.int64
    for rate in ("view_to_cart_rate", "cart_to_purchase_rate", "view_to_purchase_rate"):
        assert 0.0 <= frame.loc[999, rate] <= 1.0


def test_item_extractor_not_fitted_and_bad_input(shop: pd.DataFrame) -> None:
    items = ItemFeatureExtractor()
    for call in (
        lambda: items.transform([1]),
        lambda: items.feature_matrix([1]),
        lambda: items.item_categories(),
    ):
        with pytest.raises(NotFittedError):
            call()
    with pytest.raises(ValueError, match="prior_strength"):
        ItemFeatureExtractor(prior_strength=-1.0)
    with pytest.raises(ValueError, match="empty"):
        ItemFeatureExtractor().fit(shop.iloc[:0])
