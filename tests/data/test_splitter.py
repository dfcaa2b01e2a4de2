"""TimeBasedSplitter: the invariants of a global-time split that keeps sessions whole."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.processors.splitter import TimeBasedSplitter
from funnelrec.data.schema import to_canonical

T0 = 1_700_000_000_000
MIN = 60_000
DAY = 24 * 60 * MIN


def random_events(
    n_events: int = 2_000, n_visitors: int = 300, n_items: int = 400, seed: int = 0
) -> pd.DataFrame:
    """Events with realistic gaps: mostly minutes inside a visit, sometimes hours or days."""
    rng = np.random.default_rng(seed)
    visitor = np.sort(rng.integers(0, n_visitors, n_events))
    kind = rng.choice(3, size=n_events, p=[0.75, 0.15, 0.10])
    gap = np.select(
        [kind == 0, kind == 1],
        [rng.exponential(3 * MIN, n_events), rng.exponential(4 * 60 * MIN, n_events)],
        default=rng.uniform(1, 10, n_events) * DAY,
    ).astype(np.int64)
    first = np.r_[True, visitor[1:] != visitor[:-1]]
    start = rng.integers(0, 60 * DAY, n_visitors)
    gap[first] = start[visitor[first]]
    # cumulative sum restarted at every visitor
    total = np.cumsum(gap)
    base = np.maximum.accumulate(np.where(first, total - gap, 0))
    ts = T0 + total - base
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.9
    item = rng.choice(n_items, size=n_events, p=weights / weights.sum()) + 1_000
    event = rng.choice(["view", "addtocart", "transaction"], size=n_events, p=[0.85, 0.1, 0.05])
    frame = pd.DataFrame(
        {"timestamp": ts, "visitor_id": visitor + 1, "event": event, "item_id": item}
    )
    frame["row"] = np.arange(n_events)  # a tag to follow every row through the split
    return to_canonical(frame.sample(frac=1.0, random_state=seed).reset_index(drop=True))


@pytest.fixture(scope="module")
def sessions() -> pd.DataFrame:
    out = SessionBuilder(timeout_minutes=30).build_sessions(random_events())
    n_sessions = out["session_id"].nunique()
    assert 300 < n_sessions < 2_000  # the generator gives multi-event sessions and many of them
    return out


def session_starts(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby("session_id")["timestamp"].min()


def test_parts_add_up_exactly(sessions: pd.DataFrame) -> None:
    before = sessions.copy()
    train, val, test = TimeBasedSplitter(0.8, 0.1, 0.1).split(sessions)
    assert len(train) + len(val) + len(test) == len(sessions)
    assert min(len(train), len(val), len(test)) > 0
    # as multisets of rows: every tagged row exactly once, with all its values intact
    together = pd.concat([train, val, test], ignore_index=True)
    assert together["row"].is_unique
    pd.testing.assert_frame_equal(
        together.sort_values("row").reset_index(drop=True),
        sessions.sort_values("row").reset_index(drop=True),
    )
    for part in (train, val, test):
        assert part.index.tolist() == list(range(len(part)))
    pd.testing.assert_frame_equal(sessions, before)  # input untouched


def test_no_session_in_two_parts(sessions: pd.DataFrame) -> None:
    train, val, test = TimeBasedSplitter(0.8, 0.1, 0.1).split(sessions)
    s_train, s_val, s_test = (set(p["session_id"]) for p in (train, val, test))
    assert not s_train & s_val
    assert not s_train & s_test
    assert not s_val & s_test
    assert s_train | s_val | s_test == set(sessions["session_id"])


@pytest.mark.parametrize(
    "ratios", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.5, 0.0), (0.9, 0.0, 0.1)]
)
def test_sessions_ordered_in_time(
    sessions: pd.DataFrame, ratios: tuple[float, float, float]
) -> None:
    train, val, test = TimeBasedSplitter(*ratios).split(sessions)
    st_train, st_val, st_test = (session_starts(p) for p in (train, val, test))
    if len(st_val):
        assert st_val.min() >= st_train.max()
    if len(st_test):
        assert st_test.min() >= max(st_train.max(), st_val.max() if len(st_val) else st_train.max())
    # a zero ratio leaves that part empty
    assert (len(val) == 0) == (ratios[1] == 0)
    assert (len(test) == 0) == (ratios[2] == 0)


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.7, 0.15, 0.15), (0.6, 0.2, 0.2)])
def test_ratios_approximately_honoured(
    sessions: pd.DataFrame, ratios: tuple[float, float, float]
) -> None:
    train, val, test = TimeBasedSplitter(*ratios).split(sessions)
    n = len(sessions)
    slack = sessions["session_id"].value_counts().max() / n + 1e-9  # at most one whole session
    assert len(train) / n <= ratios[0] + 1e-9
    assert abs(len(train) / n - ratios[0]) <= slack
    assert abs((len(train) + len(val)) / n - (ratios[0] + ratios[1])) <= slack
    assert abs(len(test) / n - ratios[2]) <= slack


def test_report(sessions: pd.DataFrame) -> None:
    splitter = TimeBasedSplitter(0.8, 0.1, 0.1)
    assert splitter.report_ is None
    train, val, test = splitter.split(sessions)
    report = splitter.report_
    assert (report.n_train, report.n_val, report.n_test) == (len(train), len(val), len(test))
    assert report.val_start == session_starts(val).min()
    assert report.test_start == session_starts(test).min()
    assert (report.dropped_unseen_val, report.dropped_unseen_test) == (0, 0)


def test_drop_unseen_items(sessions: pd.DataFrame) -> None:
    train, val, test = TimeBasedSplitter(0.8, 0.1, 0.1).split(sessions)
    seen = set(train["item_id"])
    expect_val = val[val["item_id"].isin(seen)].reset_index(drop=True)
    expect_test = test[test["item_id"].isin(seen)].reset_index(drop=True)
    n_unseen_val, n_unseen_test = len(val) - len(expect_val), len(test) - len(expect_test)
    assert n_unseen_val > 0 and n_unseen_test > 0  # the data has long-tail items to drop

    splitter = TimeBasedSplitter(0.8, 0.1, 0.1, drop_unseen_items=True)
    train2, val2, test2 = splitter.split(sessions)
    pd.testing.assert_frame_equal(train2, train)
    pd.testing.assert_frame_equal(val2, expect_val)
    pd.testing.assert_frame_equal(test2, expect_test)
    assert set(val2["item_id"]) <= seen and set(test2["item_id"]) <= seen
    report = splitter.report_
    assert report.dropped_unseen_val == n_unseen_val
    assert report.dropped_unseen_test == n_unseen_test
    assert (report.n_train, report.n_val, report.n_test) == (len(train2), len(val2), len(test2))
    assert len(train2) + len(val2) + len(test2) + n_unseen_val + n_unseen_test == len(sessions)


def test_builds_sessions_when_absent() -> None:
    events = random_events(n_events=500, n_visitors=80, seed=5)
    assert "session_id" not in events.columns
    train, val, test = TimeBasedSplitter(0.8, 0.1, 0.1).split(events)
    assert "session_id" in train.columns
    assert len(train) + len(val) + len(test) == len(events)
    # the same as building sessions first with the default timeout
    expected = TimeBasedSplitter(0.8, 0.1, 0.1).split(SessionBuilder().build_sessions(events))
    for got, want in zip((train, val, test), expected, strict=True):
        pd.testing.assert_frame_equal(got, want)
    assert "session_id" not in events.columns


def test_small_hand_case() -> None:
    # sessions start at minutes 0, 100, 200, 300, 400 with 4, 2, 2, 1, 1 events (10 in all)
    rows = [
        (0, 1, 10), (1, 1, 11), (2, 1, 12), (3, 1, 13),
        (100, 2, 10), (101, 2, 11),
        (200, 3, 10), (201, 3, 14),
        (300, 1, 15),
        (400, 4, 10),
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["minute", "visitor_id", "item_id"])
    frame.insert(0, "timestamp", T0 + frame.pop("minute") * MIN)
    frame.insert(2, "event", "view")
    events = SessionBuilder(30).build_sessions(to_canonical(frame))
    train, val, test = TimeBasedSplitter(0.6, 0.2, 0.2).split(events)
    # cumulative shares 0.4, 0.6 -> train; 0.8 -> val; 0.9, 1.0 -> test
    assert train["item_id"].tolist() == [10, 11, 12, 13, 10, 11]
    assert val["item_id"].tolist() == [10, 14]
    assert sorted(test["item_id"].tolist()) == [10, 15]
    splitter = TimeBasedSplitter(0.6, 0.2, 0.2, drop_unseen_items=True)
    _, val2, test2 = splitter.split(events)
    assert val2["item_id"].tolist() == [10]
    assert test2["item_id"].tolist() == [10]
    assert (splitter.report_.dropped_unseen_val, splitter.report_.dropped_unseen_test) == (1, 1)
    assert splitter.report_.val_start == pd.Timestamp(T0 + 200 * MIN, unit="ms", tz="UTC")
    assert splitter.report_.test_start == pd.Timestamp(T0 + 300 * MIN, unit="ms", tz="UTC")


def test_one_session_goes_to_train() -> None:
    frame = pd.DataFrame(
        {
            "timestamp": [T0, T0 + MIN],
            "visitor_id": [1, 1],
            "event": ["view", "view"],
            "item_id": [1, 2],
        }
    )
    train, val, test = TimeBasedSplitter(0.1, 0.45, 0.45).split(to_canonical(frame))
    assert (len(train), len(val), len(test)) == (2, 0, 0)


@pytest.mark.parametrize(
    ("ratios", "shown"),
    [
        ((0.5, 0.3, 0.3), "0.5 + 0.3 + 0.3"),
        ((0.7, 0.1, 0.1), "0.7 + 0.1 + 0.1"),
        ((0.0, 0.5, 0.5), "train_ratio > 0"),
        ((1.2, -0.1, -0.1), "ratios must be >= 0"),
    ],
)
def test_bad_ratios_raise_naming_them(ratios: tuple[float, float, float], shown: str) -> None:
    with pytest.raises(ValueError) as info:
        TimeBasedSplitter(*ratios)
    assert shown in str(info.value)


def test_empty_frame_raises(sessions: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="empty"):
        TimeBasedSplitter().split(sessions.iloc[:0])
    with pytest.raises(ValueError, match="empty"):
        TimeBasedSplitter().split(sessions.iloc[:0].drop(columns=["session_id"]))


def test_defaults_from_settings() -> None:
    from funnelrec.config import settings

    splitter = TimeBasedSplitter()
    assert (splitter.train_ratio, splitter.val_ratio, splitter.test_ratio) == (
        settings.train_ratio,
        settings.val_ratio,
        settings.test_ratio,
    )
    assert splitter.drop_unseen_items is False
