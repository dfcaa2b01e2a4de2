"""Sessions, split and features on 10k real RetailRocket views (skips without ../shared/data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelrec.data.features.item_features import ItemFeatureExtractor
from funnelrec.data.features.user_features import UserFeatureExtractor
from funnelrec.data.loaders.retailrocket import RetailRocketLoader
from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.processors.splitter import TimeBasedSplitter
from funnelrec.data.schema import validate_events

pytestmark = pytest.mark.realdata

N_EVENTS = 10_080  # the sample's README: 10,080 views, 2,496 visitors, 5,566 items
N_VISITORS = 2_496
N_ITEMS = 5_566
N_DUPLICATES = 17  # counted with `sort | uniq -d` on the file


@pytest.fixture(scope="module")
def loader(shared_data_dir: Path) -> RetailRocketLoader:
    folder = shared_data_dir / "retailrocket-views-10k"
    if not (folder / "events.csv").is_file():
        pytest.skip(f"{folder}/events.csv not found")
    return RetailRocketLoader(folder)


@pytest.fixture(scope="module")
def events(loader: RetailRocketLoader) -> pd.DataFrame:
    return loader.load_events()


@pytest.fixture(scope="module")
def sessions(events: pd.DataFrame) -> pd.DataFrame:
    return SessionBuilder(timeout_minutes=30).build_sessions(events)


@pytest.fixture(scope="module")
def parts(sessions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return TimeBasedSplitter(0.8, 0.1, 0.1).split(sessions)


def test_loaded_sample(loader: RetailRocketLoader, events: pd.DataFrame) -> None:
    validate_events(events)
    # the file has 17 exact duplicate lines, which the loader drops and reports
    assert loader.report.counts() == {"duplicate row": N_DUPLICATES}
    assert len(events) == N_EVENTS - N_DUPLICATES
    assert events["visitor_id"].nunique() == N_VISITORS
    assert events["item_id"].nunique() == N_ITEMS
    assert set(events["event"].astype(str)) == {"view"}


def test_sessions_on_real_timing(events: pd.DataFrame, sessions: pd.DataFrame) -> None:
    assert len(sessions) == len(events)
    ids = sessions["session_id"].to_numpy()
    n = len(np.unique(ids))
    np.testing.assert_array_equal(np.unique(ids), np.arange(n))
    assert (
        N_VISITORS <= n < len(events)
    )  # every visitor at least one session, most have several events
    # a session never spans visitors, and no gap inside a session exceeds 30 minutes
    assert (sessions.groupby("session_id")["visitor_id"].nunique() == 1).all()
    gaps = sessions.groupby("session_id")["timestamp"].diff().dropna()
    assert (gaps <= pd.Timedelta(minutes=30)).all()
    assert (gaps >= pd.Timedelta(0)).all()
    # the builder is deterministic on real data too
    pd.testing.assert_frame_equal(SessionBuilder(30).build_sessions(events), sessions)


def test_real_repeat_views_exist(sessions: pd.DataFrame) -> None:
    dup = sessions.duplicated(["session_id", "item_id"], keep=False)
    sessions_with_repeat = sessions.loc[dup, "session_id"].nunique()
    assert sessions_with_repeat > 0  # repeat views of an item inside a session are real
    # and some are consecutive (a reload / back-button), which drop_consecutive_repeats removes
    deduped = SessionBuilder(30).drop_consecutive_repeats(sessions)
    assert 0 < len(sessions) - len(deduped) < len(sessions)


def test_split_invariants(sessions: pd.DataFrame, parts) -> None:
    train, val, test = parts
    assert len(train) + len(val) + len(test) == len(sessions)
    together = pd.concat([train, val, test], ignore_index=True)
    key = ["session_id", "timestamp", "item_id"]
    pd.testing.assert_frame_equal(
        together.sort_values(key, kind="stable").reset_index(drop=True),
        sessions.sort_values(key, kind="stable").reset_index(drop=True),
    )
    s_train, s_val, s_test = (set(p["session_id"]) for p in parts)
    assert not (s_train & s_val or s_train & s_test or s_val & s_test)
    starts = [p.groupby("session_id")["timestamp"].min() for p in parts]
    assert starts[1].min() >= starts[0].max()
    assert starts[2].min() >= starts[1].max()
    n = len(sessions)
    slack = sessions["session_id"].value_counts().max() / n
    assert abs(len(train) / n - 0.8) <= slack
    assert abs(len(test) / n - 0.1) <= slack


def test_drop_unseen_on_real_data(sessions: pd.DataFrame, parts) -> None:
    train, val, test = parts
    splitter = TimeBasedSplitter(0.8, 0.1, 0.1, drop_unseen_items=True)
    _, val2, test2 = splitter.split(sessions)
    seen = set(train["item_id"])
    assert splitter.report_.dropped_unseen_val == int((~val["item_id"].isin(seen)).sum()) > 0
    assert splitter.report_.dropped_unseen_test == int((~test["item_id"].isin(seen)).sum()) > 0
    assert set(val2["item_id"]) <= seen and set(test2["item_id"]) <= seen


def test_user_features_on_real_data(parts) -> None:
    train, val, _ = parts
    users = UserFeatureExtractor().fit(train)
    visitors = np.sort(train["visitor_id"].unique())
    frame = users.transform(visitors)
    assert (frame["funnel_stage"] == "browser").all()  # views only
    assert frame["is_known"].all()
    assert frame["n_views"].sum() == len(train)
    assert (frame["n_addtocarts"] == 0).all() and (frame["n_purchases"] == 0).all()
    np.testing.assert_array_equal(
        frame["n_sessions"].to_numpy(),
        train.groupby("visitor_id")["session_id"].nunique().to_numpy(),
    )
    assert (frame["recency_days"] >= 0).all()
    assert frame["recency_days"].min() == 0.0
    assert frame["favourite_categories"].map(len).eq(0).all()  # no property files in the sample
    # val visitors never seen in train are "new"
    new = np.setdiff1d(val["visitor_id"].unique(), visitors)
    assert len(new) > 0
    assert (users.transform(new)["funnel_stage"] == "new").all()
    m = users.feature_matrix(np.r_[visitors, new])
    assert m.shape == (len(visitors) + len(new), len(users.feature_names))
    assert np.isfinite(m).all()


def test_item_features_on_real_data(parts) -> None:
    train, _, _ = parts
    items = ItemFeatureExtractor().fit(train)
    feats = items.features_
    assert len(feats) == train["item_id"].nunique()
    assert feats["n_views"].sum() == len(train)
    assert (feats["n_addtocarts"] == 0).all() and (feats["n_transactions"] == 0).all()
    # no carts anywhere: the prior is 0 and every smoothed rate is 0
    assert (feats["view_to_cart_rate"] == 0).all()
    assert feats["category_id"].isna().all()
    m = items.feature_matrix(feats.index.to_numpy())
    assert np.isfinite(m).all()
