"""The canonical events frame: column names, dtypes and the boundary check.

Everything after the loader speaks these names; this module is the one place that defines them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd

from funnelrec.errors import DataError

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
#: Id columns: never negative (-1 marks "no item" / "unknown" inside funnelrec).
ID_COLUMNS: tuple[str, ...] = (VISITOR_ID, ITEM_ID, TRANSACTION_ID, CATEGORY_ID)

# Raw RetailRocket column -> canonical column (renamed once, in the loader).
RAW_EVENT_COLUMNS: dict[str, str] = {
    "timestamp": TIMESTAMP,
    "visitorid": VISITOR_ID,
    "event": EVENT,
    "itemid": ITEM_ID,
    "transactionid": TRANSACTION_ID,
}

#: What each column of an events file is for: the keys of the loader's ``columns=`` mapping
#: (``columns={"visitor": "user_id"}``: the file's ``user_id`` column holds the visitor ids).
COLUMN_ROLES: dict[str, str] = {
    "timestamp": TIMESTAMP,
    "visitor": VISITOR_ID,
    "event": EVENT,
    "item": ITEM_ID,
    "transaction": TRANSACTION_ID,
}

INT_PATTERN = r"^[+-]?[0-9]{1,18}$"  # integer text; 18 digits always fit int64
_FIX = "cast the frame with funnelrec.data.schema.to_canonical(frame)"


class SchemaError(DataError):
    """An events frame does not follow the canonical schema."""


def _sample(values: pd.Series | np.ndarray, n: int = 5) -> list:
    return pd.unique(np.asarray(values))[:n].tolist()


# --------------------------------------------------------------------------- timestamp units

#: Integer timestamps count these units since 1970-01-01 UTC.
TIMESTAMP_UNITS: tuple[str, ...] = ("s", "ms", "us", "ns")
UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
# An e-commerce log lies in [1990-01-01, 2100-01-01). The window spans a factor of 6.5, less than
# the factor of 1,000 between units, so each value fits one unit at most: that is how a unit is
# detected, and a value outside the window is a wrong unit or garbage, never a real time.
PLAUSIBLE_FROM, PLAUSIBLE_TO = "1990-01-01", "2100-01-01"
_FROM_S, _TO_S = 631_152_000, 4_102_444_800


@dataclass(frozen=True)
class EpochCheck:
    """The unit of an integer timestamp column and the values that do not fit it."""

    unit: str
    """The unit read: detected (``detected``) or given."""
    detected: bool
    bad: np.ndarray
    """Mask of the values outside the plausible window in ``unit``."""
    fits: dict[str, int]
    """Among the bad values, how many fit each other unit (key ``"none"``: no unit)."""

    @property
    def ok(self) -> bool:
        return not self.bad.any()


def _in_window(values: np.ndarray, unit: str) -> np.ndarray:
    per = _PER_SECOND[unit]
    return (values >= _FROM_S * per) & (values < _TO_S * per)


def check_epoch(values: np.ndarray, unit: str = "auto") -> EpochCheck:
    """Detect (``unit="auto"``) or check the unit of int64 timestamps since the epoch.

    Detection picks the unit most values fit; every value outside the window of 1990-01-01 to
    2100-01-01 in that unit is ``bad`` (a column mixing units, or impossible times).
    """
    if unit != "auto" and unit not in TIMESTAMP_UNITS:
        raise ValueError(f"timestamp_unit must be 'auto' or one of {list(TIMESTAMP_UNITS)}, got {unit!r}")
    values = np.asarray(values, dtype=np.int64)
    fit = {u: _in_window(values, u) for u in TIMESTAMP_UNITS}
    detected = unit == "auto"
    if detected:
        counts = {u: int(mask.sum()) for u, mask in fit.items()}
        # ties (and an empty column) go to milliseconds, RetailRocket's unit
        unit = max(TIMESTAMP_UNITS, key=lambda u: (counts[u], u == "ms"))
    bad = ~fit[unit]
    fits = {u: int((bad & mask).sum()) for u, mask in fit.items() if u != unit}
    fits["none"] = int(bad.sum()) - sum(fits.values())
    return EpochCheck(unit=unit, detected=detected, bad=bad, fits=fits)


def epoch_to_ms(values: np.ndarray, unit: str) -> np.ndarray:
    """int64 timestamps in ``unit`` as int64 milliseconds (finer units are floored)."""
    values = np.asarray(values, dtype=np.int64)
    per = _PER_SECOND[unit]
    return values * (1_000 // per) if per <= 1_000 else values // (per // 1_000)


def epoch_problem(check: EpochCheck, column: str, examples: list[str]) -> str:
    """The text of a failed :func:`check_epoch`: counts, what the bad values look like, examples
    (e.g. ``"line 7: 1430624917"``) and how to fix it."""
    n_bad, n = int(check.bad.sum()), len(check.bad)
    name = UNIT_NAMES[check.unit]
    looks = [f"{k:,} look like {UNIT_NAMES[u]}" for u, k in check.fits.items() if u != "none" and k]
    if check.fits.get("none"):
        looks.append(f"{check.fits['none']:,} fit no unit")
    window = f"between {PLAUSIBLE_FROM} and {PLAUSIBLE_TO}"
    if check.detected:
        head = (
            f"column {column!r} mixes timestamp units or has impossible times: {n_bad:,} of {n:,} "
            f"values are not {name} since the epoch {window}, the unit of the other values"
        )
        fix = (
            "Fix or remove those rows; timestamp_unit='s', 'ms', 'us' or 'ns' "
            "(--timestamp-unit) reads the whole column in one unit"
        )
    else:
        head = (
            f"{n_bad:,} of {n:,} values of column {column!r} are not {name} since the epoch "
            f"{window} (timestamp_unit={check.unit!r})"
        )
        fix = "Give the unit of the file, or timestamp_unit='auto' (--timestamp-unit auto) to detect it"
    return f"{head} ({', '.join(looks)}), e.g. {'; '.join(examples)}. Expected {name}. {fix}."


# --------------------------------------------------------------------------- validation


def _negative(series: pd.Series) -> np.ndarray:
    return series.to_numpy(dtype=np.int64, na_value=0) < 0


def validate_events(
    events: pd.DataFrame, *, require: tuple[str, ...] = (), name: str = "events"
) -> pd.DataFrame:
    """Check that ``events`` follows the canonical schema and return it unchanged.

    Required columns are ``timestamp, visitor_id, event, item_id`` plus ``require``; optional
    canonical columns are checked when present; id columns must not be negative. Raises
    :class:`SchemaError` listing every offending column with the expected dtype (and a sample of
    offending values); a frame with the canonical names and ordinary dtypes (naive or text
    timestamps, text events, int32 ids) is fixed by :func:`to_canonical`, as the message says.
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
    problems: list[str] = []
    for column, dtype in CANONICAL_DTYPES.items():
        if column not in events.columns:
            continue
        actual = events[column].dtype
        if column == EVENT:
            if not isinstance(actual, pd.CategoricalDtype):
                problems.append(f"{name}[{column!r}] must be categorical {EVENT_TYPES}, got {actual}")
                continue
            unknown = set(actual.categories) - set(EVENT_TYPES)
            if unknown:
                problems.append(f"{name}[{column!r}] has unknown event types {sorted(unknown)}")
            elif list(actual.categories) != list(EVENT_TYPES):
                problems.append(
                    f"{name}[{column!r}] categories must be {list(EVENT_TYPES)} in funnel order, got "
                    f"{list(actual.categories)}"
                )
            elif events[column].isna().any():
                problems.append(f"{name}[{column!r}] has {int(events[column].isna().sum())} missing values")
        elif column == TIMESTAMP:
            if not isinstance(actual, pd.DatetimeTZDtype):
                problems.append(f"{name}[{column!r}] must be timezone-aware datetime (UTC), got {actual}")
        elif actual != dtype:
            problems.append(f"{name}[{column!r}] must have dtype {dtype}, got {actual}")
        elif column in ID_COLUMNS:
            negative = _negative(events[column])
            if negative.any():
                problems.append(
                    f"{name}[{column!r}] has {int(negative.sum()):,} negative ids, e.g. "
                    f"{_sample(events[column].to_numpy()[negative])}; ids must be >= 0 "
                    "(-1 marks a missing id inside funnelrec)"
                )
    if problems:
        raise SchemaError("; ".join(problems) + f". To fix the dtypes, {_FIX}.")
    return events


# --------------------------------------------------------------------------- casting


def _as_int64(series: pd.Series, column: str, nullable: bool) -> pd.Series:
    """Integer, integral float or integer-text values as (nullable) int64, checked."""
    if pd.api.types.is_bool_dtype(series):
        raise SchemaError(f"column {column!r} holds booleans; expected integer ids")
    if pd.api.types.is_integer_dtype(series):
        out = series.astype("Int64")
    elif pd.api.types.is_float_dtype(series):
        fractional = series.notna() & (series != np.floor(series))
        if fractional.any():
            raise SchemaError(
                f"column {column!r} has non-integer values, e.g. {_sample(series[fractional])}"
            )
        out = series.astype("Int64")
    else:
        text = series.astype("string").str.strip()
        integer = text.str.fullmatch(INT_PATTERN[1:-1]).fillna(False).astype(bool)
        blank = text.isna() | (text == "")
        bad = ~integer & ~blank
        if bad.any():
            raise SchemaError(
                f"column {column!r} has values that are not integers, e.g. {_sample(series[bad])}. "
                f"funnelrec needs int64 ids; for text ids, encode them first: "
                f"codes, ids = pd.factorize(frame[{column!r}], sort=True); frame[{column!r}] = codes "
                "(keep ids to translate recommendations back). For a CSV file, "
                "RetailRocketLoader(..., string_ids=[...]) does this."
            )
        out = text.where(~blank).astype("Int64")
    if not nullable and out.isna().any():
        raise SchemaError(
            f"column {column!r} has {int(out.isna().sum()):,} missing values, e.g. at rows "
            f"{out.index[out.isna().to_numpy()][:5].tolist()}"
        )
    if column in ID_COLUMNS:
        negative = _negative(out)
        if negative.any():
            raise SchemaError(
                f"column {column!r} has {int(negative.sum()):,} negative ids, e.g. "
                f"{_sample(out.to_numpy()[negative])}; ids must be >= 0"
            )
    return out if nullable else out.astype("int64")


def _as_timestamps(series: pd.Series, unit: str) -> pd.Series:
    column = TIMESTAMP
    if pd.api.types.is_bool_dtype(series):
        raise SchemaError(f"column {column!r} holds booleans; expected times")
    if pd.api.types.is_numeric_dtype(series):
        values = _as_int64(series, column, nullable=False).to_numpy()
        if unit == "auto":
            check = check_epoch(values)
            if not check.ok:
                rows = series.index[check.bad][:5]
                examples = [f"row {r!r}: {v}" for r, v in zip(rows, values[check.bad][:5], strict=True)]
                raise SchemaError(epoch_problem(check, column, examples))
            unit = check.unit
        elif unit not in TIMESTAMP_UNITS:
            raise ValueError(f"timestamp_unit must be 'auto' or one of {list(TIMESTAMP_UNITS)}, got {unit!r}")
        out = pd.to_datetime(epoch_to_ms(values, unit), unit="ms", utc=True)
        out = pd.Series(out, index=series.index, name=series.name)
    else:
        out = pd.to_datetime(series, utc=True, errors="coerce")
        unparsed = out.isna() & series.notna()
        if unparsed.any():
            raise SchemaError(
                f"column {column!r} has values that are not times, e.g. {_sample(series[unparsed])}"
            )
    if out.isna().any():
        raise SchemaError(
            f"column {column!r} has {int(out.isna().sum()):,} missing values, e.g. at rows "
            f"{out.index[out.isna().to_numpy()][:5].tolist()}"
        )
    return out.astype(TIMESTAMP_DTYPE)


def to_canonical(frame: pd.DataFrame, *, timestamp_unit: str = "ms") -> pd.DataFrame:
    """Cast a frame that already has canonical column names to the canonical dtypes.

    - ``timestamp``: datetimes (naive ones are taken as UTC), text (parsed), or integers since
      the epoch in ``timestamp_unit`` (``"s"``, ``"ms"``, ``"us"``, ``"ns"``, or ``"auto"``:
      detected, refusing a column that mixes units or lies outside 1990-2100).
    - ``event``: ``view``, ``addtocart``, ``transaction`` (text or categorical).
    - ids: any integer dtype, integral floats, or integer text; never negative. Text ids
      (``"u123"``) must be encoded first; the error says how.

    Returns a new frame (other columns untouched). Raises :class:`SchemaError` when a column
    cannot be converted, naming it and a sample of bad values.
    """
    out = frame.copy()
    for column, dtype in CANONICAL_DTYPES.items():
        if column not in out.columns:
            continue
        series = out[column]
        try:
            if column == TIMESTAMP:
                out[column] = _as_timestamps(series, timestamp_unit)
            elif column == EVENT:
                bad = ~series.astype("string").isin(EVENT_TYPES)
                if bad.any():
                    raise SchemaError(
                        f"column {column!r} has unknown event types, e.g. {_sample(series[bad])}"
                    )
                out[column] = series.astype("string").astype(EVENT_DTYPE)
            else:
                out[column] = _as_int64(series, column, nullable=isinstance(dtype, pd.Int64Dtype))
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
