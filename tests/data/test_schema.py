"""The canonical events frame: validate_events, to_canonical and timestamp_ms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from funnelrec.data.schema import (
    CANONICAL_DTYPES,
    EVENT_DTYPE,
    EVENT_TYPES,
    REQUIRED_COLUMNS,
    TIMESTAMP_DTYPE,
    EventType,
    SchemaError,
    check_epoch,
    epoch_to_ms,
    timestamp_ms,
    to_canonical,
    validate_events,
)

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z in ms


def raw_events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": [T0, T0 + 1_000, T0 + 61_000, T0 + 3_600_000],
            "visitor_id": [1, 1, 2, 2],
            "event": ["view", "addtocart", "view", "transaction"],
            "item_id": [10, 10, 11, 11],
            "transaction_id": [None, None, None, 500],
            "category_id": [3, 3, None, None],
        }
    )


def canonical_events() -> pd.DataFrame:
    return to_canonical(raw_events())


def test_event_types_in_funnel_order() -> None:
    assert EVENT_TYPES == ("view", "addtocart", "transaction")
    assert [e.value for e in EventType] == list(EVENT_TYPES)
    assert list(EVENT_DTYPE.categories) == list(EVENT_TYPES)
    assert EVENT_DTYPE.ordered


def test_to_canonical_dtypes_and_values() -> None:
    raw = raw_events()
    out = to_canonical(raw)
    for column, dtype in CANONICAL_DTYPES.items():
        if column in out.columns:
            assert out[column].dtype == dtype, column
    assert out["timestamp"].iloc[0] == pd.Timestamp("2023-11-14T22:13:20", tz="UTC")
    assert out["timestamp"].iloc[3] == pd.Timestamp("2023-11-14T23:13:20", tz="UTC")
    assert out["event"].tolist() == ["view", "addtocart", "view", "transaction"]
    assert out["event"].cat.codes.tolist() == [0, 1, 0, 2]
    assert out["transaction_id"].isna().tolist() == [True, True, True, False]
    assert out["transaction_id"].iloc[3] == 500
    assert out["category_id"].isna().tolist() == [False, False, True, True]
    # the input is not modified
    pd.testing.assert_frame_equal(raw, raw_events())


def test_to_canonical_result_validates() -> None:
    events = canonical_events()
    assert validate_events(events) is events


def test_to_canonical_leaves_extra_columns() -> None:
    out = to_canonical(raw_events().assign(extra=["a", "b", "c", "d"]))
    assert out["extra"].tolist() == ["a", "b", "c", "d"]


def test_to_canonical_parses_datetime_strings() -> None:
    raw = raw_events().iloc[:2].assign(timestamp=["2020-01-01T00:00:00Z", "2020-01-01T01:00:00Z"])
    out = to_canonical(raw)
    assert out["timestamp"].dtype == TIMESTAMP_DTYPE
    assert out["timestamp"].tolist() == [
        pd.Timestamp("2020-01-01T00:00:00", tz="UTC"),
        pd.Timestamp("2020-01-01T01:00:00", tz="UTC"),
    ]


def test_to_canonical_rejects_unknown_events_naming_them() -> None:
    raw = raw_events().assign(event=["view", "click", "view", "purchase"])
    with pytest.raises(SchemaError, match="event") as info:
        to_canonical(raw)
    assert "click" in str(info.value)
    assert "purchase" in str(info.value)


def test_to_canonical_rejects_uncastable_column() -> None:
    raw = raw_events().assign(visitor_id=["a", "b", "c", "d"])
    with pytest.raises(SchemaError, match="visitor_id"):
        to_canonical(raw)


def test_schema_error_is_value_error() -> None:
    assert issubclass(SchemaError, ValueError)


@pytest.mark.parametrize("column", REQUIRED_COLUMNS)
def test_validate_rejects_missing_column(column: str) -> None:
    events = canonical_events().drop(columns=[column])
    with pytest.raises(SchemaError, match=f"missing column.*'{column}'"):
        validate_events(events)


def test_validate_require_extra_column() -> None:
    events = canonical_events()
    with pytest.raises(SchemaError, match="session_id"):
        validate_events(events, require=("session_id",))
    with_sessions = events.assign(session_id=np.arange(len(events), dtype=np.int64))
    assert validate_events(with_sessions, require=("session_id",)) is with_sessions


def test_validate_uses_name_in_message() -> None:
    with pytest.raises(SchemaError, match="^train is missing"):
        validate_events(canonical_events().drop(columns=["item_id"]), name="train")


def test_validate_rejects_non_frame() -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        validate_events({"timestamp": [1]})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("visitor_id", lambda s: s.astype("int32")),
        ("item_id", lambda s: s.astype("float64")),
        ("item_id", lambda s: s.astype("str")),
        ("transaction_id", lambda s: s.astype("float64")),
        ("category_id", lambda s: s.astype("float64")),
        ("session_id", lambda s: s.astype("int32")),
        ("timestamp", lambda s: s.dt.tz_localize(None)),  # naive
        ("timestamp", lambda s: pd.Series(timestamp_ms(s))),  # plain ints
        ("event", lambda s: s.astype("str")),  # not categorical
    ],
)
def test_validate_rejects_wrong_dtype(column: str, bad) -> None:
    events = canonical_events().assign(session_id=np.zeros(4, dtype=np.int64))
    validate_events(events)  # sanity: fine before
    events[column] = bad(events[column])
    with pytest.raises(SchemaError, match=column):
        validate_events(events)


def test_validate_accepts_other_timezones() -> None:
    events = canonical_events()
    events["timestamp"] = events["timestamp"].dt.tz_convert("Europe/Berlin")
    assert validate_events(events) is events


def test_validate_rejects_unknown_event_categories() -> None:
    events = canonical_events()
    events["event"] = pd.Categorical(
        ["view", "addtocart", "view", "transaction"],
        categories=["view", "addtocart", "transaction", "click"],
    )
    with pytest.raises(SchemaError, match="click"):
        validate_events(events)


def test_validate_rejects_missing_events() -> None:
    events = canonical_events()
    events["event"] = pd.Categorical(["view", None, "view", None], dtype=EVENT_DTYPE)
    with pytest.raises(SchemaError, match="2 missing"):
        validate_events(events)


def test_validate_rejects_event_categories_out_of_funnel_order() -> None:
    events = canonical_events()
    events["event"] = events["event"].astype("str").astype("category")
    assert list(events["event"].cat.categories) == ["addtocart", "transaction", "view"]
    with pytest.raises(SchemaError, match="event"):
        validate_events(events)


def test_timestamp_ms_round_trip() -> None:
    raw = raw_events()
    events = to_canonical(raw)
    ms = timestamp_ms(events)
    assert ms.dtype == np.int64
    np.testing.assert_array_equal(ms, raw["timestamp"].to_numpy())
    # a Series works too, and another timezone gives the same instants
    np.testing.assert_array_equal(timestamp_ms(events["timestamp"]), ms)
    berlin = events["timestamp"].dt.tz_convert("Europe/Berlin")
    np.testing.assert_array_equal(timestamp_ms(berlin), ms)
    # and back again
    again = to_canonical(raw.assign(timestamp=ms))
    pd.testing.assert_series_equal(again["timestamp"], events["timestamp"])


def test_timestamp_ms_keeps_milliseconds() -> None:
    raw = raw_events().assign(timestamp=[T0 + 1, T0 + 2, T0 + 999, T0 + 1_001])
    np.testing.assert_array_equal(timestamp_ms(to_canonical(raw)), raw["timestamp"].to_numpy())


# --------------------------------------------------------------------------- timestamp units


@pytest.mark.parametrize(("unit", "factor"), [("s", 1), ("ms", 1_000), ("us", 10**6), ("ns", 10**9)])
def test_check_epoch_detects_each_unit(unit: str, factor: int) -> None:
    seconds = np.array([631_152_000, 1_430_624_917, 4_102_444_799], dtype=np.int64)  # 1990 .. 2099
    check = check_epoch(seconds * factor)
    assert (check.unit, check.detected, check.ok) == (unit, True, True)
    np.testing.assert_array_equal(epoch_to_ms(seconds * factor, unit), seconds * 1_000)


def test_check_epoch_flags_values_outside_the_window_of_the_majority_unit() -> None:
    values = np.array([T0, T0 + 1, T0 // 1_000, 5, 631_151_999_999], dtype=np.int64)
    check = check_epoch(values)
    assert check.unit == "ms"
    assert check.bad.tolist() == [False, False, True, True, True]
    assert check.fits == {"s": 1, "us": 0, "ns": 0, "none": 2}
    given = check_epoch(values, "s")
    assert (given.unit, given.detected) == ("s", False)
    assert given.bad.tolist() == [True, True, False, True, True]


def test_check_epoch_empty_and_bad_unit() -> None:
    assert check_epoch(np.empty(0, np.int64)).unit == "ms"
    with pytest.raises(ValueError, match="timestamp_unit"):
        check_epoch(np.array([T0]), "minutes")


def test_epoch_to_ms_floors_finer_units() -> None:
    np.testing.assert_array_equal(epoch_to_ms(np.array([1_999, -1]), "us"), [1, -1])
    np.testing.assert_array_equal(epoch_to_ms(np.array([2_999_999]), "ns"), [2])
