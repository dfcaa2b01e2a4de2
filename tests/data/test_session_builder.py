"""SessionBuilder: gaps, determinism, no mutation, and the session filters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelrec.config import settings
from funnelrec.data.processors.session_builder import SessionBuilder
from funnelrec.data.schema import SchemaError, to_canonical, validate_events

T0 = 1_700_000_000_000
MIN = 60_000


def make_events(rows: list[tuple], session: bool = False) -> pd.DataFrame:
    """rows: (minute, visitor_id, event, item_id[, session_id]); a ``row`` column tags each input row."""
    columns = ["minute", "visitor_id", "event", "item_id"] + (["session_id"] if session else [])
    frame = pd.DataFrame(rows, columns=columns)
    frame.insert(0, "timestamp", T0 + (frame.pop("minute") * MIN).astype("int64"))
    frame["row"] = np.arange(len(frame))
    return to_canonical(frame)


def session_of_row(out: pd.DataFrame) -> dict[int, int]:
    return dict(zip(out["row"].tolist(), out["session_id"].tolist(), strict=True))


# visitor 2 first in the file on purpose; visitor 1 has gaps 29 (stays), 31 (splits), 30 (stays)
GAP_ROWS = [
    (100, 2, "view", 50),  # row 0: visitor 2, same minutes as visitor 1's last session
    (0, 1, "view", 10),  # row 1
    (29, 1, "view", 11),  # row 2: +29 min -> same session
    (60, 1, "view", 12),  # row 3: +31 min -> new session
    (90, 1, "view", 13),  # row 4: +30 min exactly -> same session
    (101, 2, "view", 51),  # row 5: +1 min -> same session as row 0
    (30 * 24 * 60, 1, "view", 14),  # row 6: a month later -> new session
]


def test_gaps_and_visitors_split_sessions() -> None:
    out = SessionBuilder(timeout_minutes=30).build_sessions(make_events(GAP_ROWS))
    assert out["session_id"].dtype == np.int64
    # ids in (visitor_id, start time) order: visitor 1 gets 0, 1, 2 and visitor 2 gets 3
    assert session_of_row(out) == {1: 0, 2: 0, 3: 1, 4: 1, 6: 2, 0: 3, 5: 3}
    # rows sorted by session then time; index reset
    assert out["row"].tolist() == [1, 2, 3, 4, 6, 0, 5]
    assert out["session_id"].tolist() == [0, 0, 1, 1, 2, 3, 3]
    assert out.index.tolist() == list(range(7))
    validate_events(out, require=("session_id",))


def test_one_millisecond_over_the_timeout_splits() -> None:
    events = make_events([(0, 1, "view", 1), (0, 1, "view", 2)])
    events.loc[1, "timestamp"] = events.loc[0, "timestamp"] + pd.Timedelta(
        minutes=30, milliseconds=1
    )
    out = SessionBuilder(timeout_minutes=30).build_sessions(events)
    assert out["session_id"].tolist() == [0, 1]


def test_timeout_is_a_parameter() -> None:
    rows = [(0, 1, "view", 1), (10, 1, "view", 2), (26, 1, "view", 3)]  # gaps 10 and 16
    assert SessionBuilder(5).build_sessions(make_events(rows))["session_id"].tolist() == [0, 1, 2]
    assert SessionBuilder(15).build_sessions(make_events(rows))["session_id"].tolist() == [0, 0, 1]
    assert SessionBuilder(15.5).timeout_minutes == 15.5


def test_default_timeout_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SessionBuilder().timeout_minutes == settings.session_timeout_minutes
    monkeypatch.setattr(settings, "session_timeout_minutes", 5.0)
    assert SessionBuilder().timeout_minutes == 5.0


def test_funnel_order_within_equal_timestamps() -> None:
    rows = [(0, 1, "transaction", 7), (0, 1, "addtocart", 7), (0, 1, "view", 7)]
    out = SessionBuilder(30).build_sessions(make_events(rows))
    assert out["event"].tolist() == ["view", "addtocart", "transaction"]
    assert out["row"].tolist() == [2, 1, 0]


def test_deterministic_and_independent_of_row_order() -> None:
    rng = np.random.default_rng(0)
    n = 400
    rows = list(
        zip(
            np.cumsum(rng.integers(0, 50, n)).tolist(),
            rng.integers(1, 30, n).tolist(),
            rng.choice(["view", "view", "view", "addtocart", "transaction"], n).tolist(),
            rng.integers(1, 60, n).tolist(),
            strict=True,
        )
    )
    events = make_events(rows)
    builder = SessionBuilder(30)
    first = builder.build_sessions(events)
    second = builder.build_sessions(events)
    pd.testing.assert_frame_equal(first, second)

    shuffled = events.sample(frac=1.0, random_state=1)
    assert not shuffled["row"].is_monotonic_increasing
    from_shuffled = builder.build_sessions(shuffled)
    assert session_of_row(from_shuffled) == session_of_row(first)
    assert from_shuffled.index.tolist() == list(range(n))
    # same sessions in the same time order (exact ties keep file order, so items may swap)
    cols = ["session_id", "timestamp", "visitor_id"]
    pd.testing.assert_frame_equal(
        from_shuffled[cols].reset_index(drop=True), first[cols].reset_index(drop=True)
    )
    # ids are 0..n_sessions-1 and increase with (visitor, start)
    starts = first.groupby("session_id").agg(v=("visitor_id", "first"), t=("timestamp", "min"))
    assert starts.index.tolist() == list(range(len(starts)))
    assert starts.sort_values(["v", "t"]).index.tolist() == list(range(len(starts)))


def test_input_not_mutated() -> None:
    events = make_events(GAP_ROWS).sample(frac=1.0, random_state=3)
    before = events.copy()
    SessionBuilder(30).build_sessions(events)
    pd.testing.assert_frame_equal(events, before)
    assert "session_id" not in events.columns


def test_empty_frame() -> None:
    events = make_events(GAP_ROWS).iloc[:0]
    out = SessionBuilder(30).build_sessions(events)
    assert len(out) == 0
    assert out["session_id"].dtype == np.int64


def test_build_sessions_validates() -> None:
    with pytest.raises(SchemaError, match="visitor_id"):
        SessionBuilder(30).build_sessions(make_events(GAP_ROWS).drop(columns=["visitor_id"]))


@pytest.mark.parametrize("timeout", [0, -1, -0.5, float("nan")])
def test_invalid_timeout(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout_minutes"):
        SessionBuilder(timeout_minutes=timeout)


# --------------------------------------------------------------------------- filters


def sessions_frame(
    sessions: dict[int, list[int]], visitor_of: dict[int, int] | None = None
) -> pd.DataFrame:
    """One view per item, one minute apart, session ids as given."""
    rows = []
    minute = 0
    for sid, items in sessions.items():
        for item in items:
            visitor = (visitor_of or {}).get(sid, sid)
            rows.append((minute, visitor, "view", item, sid))
            minute += 1
        minute += 120
    return make_events(rows, session=True)


def as_lists(frame: pd.DataFrame) -> dict[int, list[int]]:
    ordered = frame.sort_values(["session_id", "timestamp"], kind="stable")
    return {int(s): g["item_id"].tolist() for s, g in ordered.groupby("session_id", sort=True)}


def test_filter_short_sessions() -> None:
    events = sessions_frame({0: [1], 1: [1, 2], 2: [3, 4, 5], 3: [6]})
    builder = SessionBuilder(30)
    before = events.copy()
    assert as_lists(builder.filter_short_sessions(events)) == {1: [1, 2], 2: [3, 4, 5]}
    assert as_lists(builder.filter_short_sessions(events, min_length=3)) == {2: [3, 4, 5]}
    assert len(builder.filter_short_sessions(events, min_length=1)) == len(events)
    assert builder.filter_short_sessions(events).index.tolist() == [0, 1, 2, 3, 4]
    pd.testing.assert_frame_equal(events, before)


def test_filter_short_sessions_arguments() -> None:
    builder = SessionBuilder(30)
    events = sessions_frame({0: [1, 2]})
    with pytest.raises(ValueError, match="min_length"):
        builder.filter_short_sessions(events, min_length=0)
    with pytest.raises(SchemaError, match="session_id"):
        builder.filter_short_sessions(events.drop(columns=["session_id"]))


# A cascade: item E (support 1) goes in round 1, which shortens S3 to [D] and drops it;
# D then has support 1 (round 2), which drops S2; then C (round 3), which drops S1; stable.
CASCADE = {0: [1, 2, 1], 1: [2, 3], 2: [3, 4], 3: [4, 5], 4: [1, 2]}  # A=1 B=2 C=3 D=4 E=5


def test_filter_iteratively_cascade() -> None:
    events = sessions_frame(CASCADE)
    before = events.copy()
    out = SessionBuilder(30).filter_iteratively(events, min_item_support=2, min_session_length=2)
    assert as_lists(out) == {0: [1, 2, 1], 4: [1, 2]}
    assert out.index.tolist() == list(range(5))
    pd.testing.assert_frame_equal(events, before)
    # a fixed point: every item has support >= 2 and every session length >= 2
    assert out["item_id"].value_counts().min() >= 2
    assert out["session_id"].value_counts().min() >= 2
    again = SessionBuilder(30).filter_iteratively(out, min_item_support=2, min_session_length=2)
    pd.testing.assert_frame_equal(again, out)


def test_filter_iteratively_needs_several_rounds() -> None:
    events = sessions_frame(CASCADE)
    one_round = SessionBuilder(30).filter_iteratively(
        events, min_item_support=2, min_session_length=2, max_rounds=1
    )
    # after one round only E and the session it shortened are gone: not yet a fixed point
    assert as_lists(one_round) == {0: [1, 2, 1], 1: [2, 3], 2: [3, 4], 4: [1, 2]}
    assert one_round["item_id"].value_counts().min() < 2


def test_filter_iteratively_can_empty_everything() -> None:
    events = sessions_frame({0: [1, 2], 1: [3, 4]})
    out = SessionBuilder(30).filter_iteratively(events, min_item_support=2, min_session_length=2)
    assert len(out) == 0


def test_filter_iteratively_with_consecutive_repeats() -> None:
    events = sessions_frame({0: [1, 1, 2], 1: [1, 2], 2: [3, 3]})
    builder = SessionBuilder(30)
    plain = builder.filter_iteratively(events, min_item_support=2, min_session_length=2)
    assert as_lists(plain) == {0: [1, 1, 2], 1: [1, 2], 2: [3, 3]}
    deduped = builder.filter_iteratively(
        events, min_item_support=2, min_session_length=2, drop_consecutive_repeats=True
    )
    # [3, 3] becomes [3]: too short, and item 3 then has support 1
    assert as_lists(deduped) == {0: [1, 2], 1: [1, 2]}


@pytest.mark.parametrize(
    "kwargs", [{"min_item_support": 0}, {"min_session_length": 0}, {"min_item_support": -3}]
)
def test_filter_iteratively_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="min_item_support and min_session_length"):
        SessionBuilder(30).filter_iteratively(sessions_frame(CASCADE), **kwargs)


def test_filter_iteratively_requires_sessions() -> None:
    with pytest.raises(SchemaError, match="session_id"):
        SessionBuilder(30).filter_iteratively(sessions_frame(CASCADE).drop(columns=["session_id"]))


def test_drop_consecutive_repeats() -> None:
    # session 0 ends with item 3 and session 1 starts with item 3: not a repeat (other session)
    events = sessions_frame({0: [1, 1, 2, 1, 3], 1: [3, 3, 3, 4]}, visitor_of={0: 1, 1: 1})
    before = events.copy()
    out = SessionBuilder(30).drop_consecutive_repeats(events)
    assert as_lists(out) == {0: [1, 2, 1, 3], 1: [3, 4]}
    assert out.index.tolist() == list(range(6))
    pd.testing.assert_frame_equal(events, before)


def test_drop_consecutive_repeats_orders_by_time_first() -> None:
    events = sessions_frame({0: [1, 2, 1]})
    shuffled = events.iloc[[2, 0, 1]]  # rows out of time order: a naive diff sees no repeats
    out = SessionBuilder(30).drop_consecutive_repeats(shuffled)
    assert out["item_id"].tolist() == [1, 2, 1]
    repeated = sessions_frame({0: [1, 1, 2]}).iloc[[2, 1, 0]]
    assert SessionBuilder(30).drop_consecutive_repeats(repeated)["item_id"].tolist() == [1, 2]


def test_build_then_filter_pipeline() -> None:
    out = SessionBuilder(30).build_sessions(make_events(GAP_ROWS))
    kept = SessionBuilder(30).filter_short_sessions(out, min_length=2)
    assert sorted(kept["row"].tolist()) == [0, 1, 2, 3, 4, 5]  # the lone month-later view goes
