"""The canonical events frame: column names, dtypes and the boundary check.

Everything after the loader speaks these names; this module is the one place that defines them.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np
import pandas as pd

TIMESTAMP = "timestamp"
VISITOR_ID = "visitor_id"
EVENT = "event"
ITEM_ID = "item_id"
TRANSACTION_ID = "transaction_id"
CATEGORY_ID = "category_id"
SESSION_ID = "session_id"


class EventType(StrEnum):
    """Funnel steps, in funnel order."""

    VIEW = "view"
    ADDTOCART = "addtocart"
    TRANSACTION = "transaction"


EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)
EVENT_DTYPE = pd.CategoricalDtype(categories=list(EVENT_TYPES), ordered=True)
TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="ms", tz="UTC")

REQUIRED_COLUMNS: tuple[str, ...] = (TIMESTAMP, VISITOR_ID, EVENT, ITEM_ID)
CANONICAL_DTYPES: dict[str, object] = {
    TIMESTAMP: TIMESTAMP_DTYPE,
    VISITOR_ID: np.dtype("int64"),
    EVENT: EVENT_DTYPE,
    ITEM_ID: np.dtype("int64"),
    TRANSACTION_ID: pd.Int64Dtype(),
    CATEGORY_ID: pd.Int64Dtype(),
    SESSION_ID: np.dtype("int64"),
}

# Raw RetailRocket column -> canonical column (renamed once, in the loader).
RAW_EVENT_COLUMNS: dict[str, str] = {
    "timestamp": TIMESTAMP,
    "visitorid": VISITOR_ID,
    "event": EVENT,
    "itemid": ITEM_ID,
    "transactionid": TRANSACTION_ID,
}


class SchemaError(ValueError):
    """An events frame does not follow the canonical schema."""


def _sample(values: pd.Series | np.ndarray, n: int = 5) -> list:
    return pd.unique(np.asarray(values))[:n].tolist()


def validate_events(
    events: pd.DataFrame, *, require: tuple[str, ...] = (), name: str = "events"
) -> pd.DataFrame:
    """Check that ``events`` follows the canonical schema and return it unchanged.

    Required columns are ``timestamp, visitor_id, event, item_id`` plus ``require``; optional
    canonical columns are checked when present. Raises :class:`SchemaError` naming the column,
    the expected dtype and a sample of offending values.
    """
    if not isinstance(events, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(events).__name__}")
    needed = tuple(dict.fromkeys(REQUIRED_COLUMNS + tuple(require)))
    missing = [c for c in needed if c not in events.columns]
    if missing:
        raise SchemaError(
            f"{name} is missing column(s) {missing}; it has {list(events.columns)}. "
            "Load data with RetailRocketLoader (or build sessions with SessionBuilder)."
        )
    for column, dtype in CANONICAL_DTYPES.items():
        if column not in events.columns:
            continue
        actual = events[column].dtype
        if column == EVENT:
            if not isinstance(actual, pd.CategoricalDtype):
                raise SchemaError(f"{name}[{column!r}] must be categorical {EVENT_TYPES}, got {actual}")
            unknown = set(actual.categories) - set(EVENT_TYPES)
            if unknown:
                raise SchemaError(f"{name}[{column!r}] has unknown event types {sorted(unknown)}")
            if list(actual.categories) != list(EVENT_TYPES):
                raise SchemaError(
                    f"{name}[{column!r}] categories must be {list(EVENT_TYPES)} in funnel order, got "
                    f"{list(actual.categories)}; cast with funnelrec.data.schema.to_canonical"
                )
            if events[column].isna().any():
                raise SchemaError(f"{name}[{column!r}] has {int(events[column].isna().sum())} missing values")
        elif column == TIMESTAMP:
            if not isinstance(actual, pd.DatetimeTZDtype):
                raise SchemaError(f"{name}[{column!r}] must be timezone-aware datetime (UTC), got {actual}")
        elif actual != dtype:
            raise SchemaError(f"{name}[{column!r}] must have dtype {dtype}, got {actual}")
    return events


def to_canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast a frame that already has canonical column names to the canonical dtypes.

    Integer timestamps are taken as milliseconds since the epoch. Raises :class:`SchemaError`
    when a column cannot be converted, naming it and a sample of bad values.
    """
    out = frame.copy()
    for column, dtype in CANONICAL_DTYPES.items():
        if column not in out.columns:
            continue
        series = out[column]
        try:
            if column == TIMESTAMP:
                if pd.api.types.is_numeric_dtype(series):
                    out[column] = pd.to_datetime(series.astype("int64"), unit="ms", utc=True)
                else:
                    out[column] = pd.to_datetime(series, utc=True)
                out[column] = out[column].astype(TIMESTAMP_DTYPE)
            elif column == EVENT:
                bad = ~series.astype("string").isin(EVENT_TYPES)
                if bad.any():
                    raise SchemaError(
                        f"column {column!r} has unknown event types, e.g. {_sample(series[bad])}"
                    )
                out[column] = series.astype("string").astype(EVENT_DTYPE)
            else:
                out[column] = series.astype(dtype)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, SchemaError):
                raise
            raise SchemaError(f"column {column!r} cannot be cast to {dtype}: {exc}") from exc
    return out


def timestamp_ms(events: pd.DataFrame | pd.Series) -> np.ndarray:
    """The timestamp column as int64 milliseconds since the epoch (vectorised, no copy of rows)."""
    series = events[TIMESTAMP] if isinstance(events, pd.DataFrame) else events
    values = series.dt.tz_convert("UTC").dt.tz_localize(None) if series.dt.tz is not None else series
    return values.to_numpy(dtype="datetime64[ms]").astype(np.int64)


def event_codes(events: pd.DataFrame) -> np.ndarray:
    """Funnel position of each event (0 view, 1 addtocart, 2 transaction), whatever the
    category order of the column (vectorised: one lookup per category, not per row)."""
    column = events[EVENT]
    if not isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype("string").astype(EVENT_DTYPE)
    position = {name: i for i, name in enumerate(EVENT_TYPES)}
    try:
        table = np.array([position[c] for c in column.cat.categories], dtype=np.int8)
    except KeyError as exc:
        raise SchemaError(f"unknown event type {exc.args[0]!r}; expected one of {EVENT_TYPES}") from None
    codes = column.cat.codes.to_numpy()
    if (codes < 0).any():
        raise SchemaError(f"{int((codes < 0).sum())} events have no event type")
    return table[codes]
