"""Load RetailRocket-format files (Kaggle's, or your own events file) into canonical frames.

Files (each plain or ``.gz``; the plain file wins when both exist), in one folder:

- ``events.csv``: ``timestamp,visitorid,event,itemid,transactionid`` (ms since the epoch).
  Another file name (``events_file=``, or a path to the file as ``data_dir``) and other column
  names (``columns={"visitor": "user_id", ...}``) are accepted; ``transactionid`` may be absent.
- ``item_properties_part1.csv``, ``item_properties_part2.csv``: ``timestamp,itemid,property,value``
- ``category_tree.csv``: ``categoryid,parentid``

The format has no quoting: a ``"`` never changes where a field or a row ends (a field wrapped in
one pair of double quotes is read without them). Reading is done by ``pyarrow.csv``: a typed,
multi-threaded read first; only when that fails (a row with the wrong number of fields, a value
that is not an integer, a byte that is not UTF-8) is the file read again with every column as
text, single-threaded so that pyarrow knows the line number of every row it skips, and coerced
with vectorised operations to find the bad rows. Bad rows (also: negative ids, unknown event
types, missing values) are dropped, logged and listed in :attr:`RetailRocketLoader.report` with
file, line (the header is line 1), reason and raw text; ``strict=True`` raises instead. Exact
duplicate rows are dropped and counted. A file where more than ``max_dropped_share`` of the rows
are dropped, or an events file without a usable row, is refused with :class:`DataError`.

Integer timestamps may count seconds, milliseconds, microseconds or nanoseconds: the unit is
detected per file (``timestamp_unit="auto"``: the unit most values fit, as times between 1990
and 2100) or given. A detected column where another unit fits 2 values or more and 1% of them
mixes units and is refused, naming lines and values. Any other value that is no such time in
the unit (say a truncated ``143062``) drops its row as an "implausible timestamp", reported and
counted toward ``max_dropped_share``, so a file where many are implausible is refused too.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
from loguru import logger

from funnelrec.data.schema import (
    CATEGORY_ID,
    COLUMN_ROLES,
    EVENT_DTYPE,
    EVENT_TYPES,
    INT_PATTERN,
    ITEM_ID,
    RAW_EVENT_COLUMNS,
    TIMESTAMP,
    TIMESTAMP_DTYPE,
    TIMESTAMP_UNITS,
    TRANSACTION_ID,
    UNIT_NAMES,
    check_epoch,
    epoch_problem,
    epoch_to_ms,
    validate_events,
)
from funnelrec.errors import DataError

__all__ = [
    "DEFAULT_MAX_DROPPED_SHARE",
    "DataError",
    "FileLoad",
    "LoadReport",
    "RetailRocketLoader",
    "load_id_maps",
    "save_id_maps",
]

EVENTS_FILE = "events.csv"
PROPERTY_FILES = ("item_properties_part1.csv", "item_properties_part2.csv")
CATEGORY_TREE_FILE = "category_tree.csv"
KAGGLE_DATASET = "retailrocket/ecommerce-dataset"

PARENT_ID = "parent_id"
PROPERTY = "property"
VALUE = "value"
CATEGORY_PROPERTY = "categoryid"

#: RetailRocket's column for each role of :data:`~funnelrec.data.schema.COLUMN_ROLES`.
DEFAULT_COLUMNS: dict[str, str] = {
    role: raw for role in COLUMN_ROLES for raw, canonical in RAW_EVENT_COLUMNS.items()
    if canonical == COLUMN_ROLES[role]
}
#: Roles whose values may be text ids (``string_ids=``), encoded to dense int64 codes.
TEXT_ID_ROLES: tuple[str, ...] = ("visitor", "item", "transaction")
#: Unreadable rows tolerated per file before it is refused. Kaggle's RetailRocket files have
#: none, and scattered damage (a truncated line, a stray byte) costs a few rows; a tenth or more
#: of a file unreadable means a wrong format, column mapping, unit or encoding, whose rows would
#: otherwise vanish silently. Exact duplicates lose nothing and do not count.
DEFAULT_MAX_DROPPED_SHARE = 0.1

# Column kinds: a timestamp (integer since the epoch), a non-negative integer id (required or
# optional: empty -> <NA>), a text id (encoded later), text, a funnel event.
_TIME, _ID, _OPT_ID, _TEXT_ID, _OPT_TEXT_ID, _STR, _EVENT = (
    "time", "id", "id?", "text id", "text id?", "str", "event",
)  # fmt: skip
_INT_KINDS = (_TIME, _ID, _OPT_ID)
_ROLE_KINDS = {"timestamp": _TIME, "visitor": _ID, "event": _EVENT, "item": _ID, "transaction": _OPT_ID}
_AS_TEXT = {_ID: _TEXT_ID, _OPT_ID: _OPT_TEXT_ID}  # the kind of a role named in string_ids
_TEXT_ID_KINDS = (_TEXT_ID, _OPT_TEXT_ID)
_REQUIRED = (_TIME, _ID, _TEXT_ID)
_ARROW_TYPES = {
    _TIME: pa.int64(),
    _ID: pa.int64(),
    _OPT_ID: pa.int64(),
    _TEXT_ID: pa.string(),
    _OPT_TEXT_ID: pa.string(),
    _STR: pa.string(),
    _EVENT: pa.dictionary(pa.int32(), pa.string()),
}
_PROPERTIES_SPEC = {"timestamp": _TIME, "itemid": _ID, "property": _STR, "value": _STR}
_TREE_SPEC = {"categoryid": _ID, "parentid": _OPT_ID}

_DROP_COLUMNS = ["file", "line", "reason", "column", "value", "text"]
_DUPLICATE = "duplicate row"
_NOT_UTF8 = "not UTF-8"
_IMPLAUSIBLE_TIME = "implausible timestamp"
#: A detected timestamp unit is refused as mixed when another unit fits at least this many
#: values and this share of the column: one truncated or garbled value is a damaged row, a
#: steady share in another unit is a file concatenated from two exports.
_MIXED_MIN_VALUES = 2
_MIXED_SHARE = 0.01
_STRICT_SHOWN = 5
_SHOWN = 5  # offending values quoted in an error
_DECODE_CHUNK = 1 << 24  # bytes decoded at a time when looking for bytes that are not UTF-8
_REPLACEMENT_BYTES = tuple("\ufffd".encode())  # U+FFFD in UTF-8


# --------------------------------------------------------------------------- report


def _empty_drops() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "file": pd.Series(dtype="str"),
            "line": pd.Series(dtype="Int64"),
            "reason": pd.Series(dtype="str"),
            "column": pd.Series(dtype="str"),
            "value": pd.Series(dtype="str"),
            "text": pd.Series(dtype="str"),
        }
    )


@dataclass
class FileLoad:
    """What happened to one file: rows read, rows returned, and every dropped row."""

    path: str
    rows_read: int = 0
    """Data rows in the file (header excluded), the dropped ones included."""
    rows_returned: int = 0
    """Rows handed on; fewer than read minus dropped when only some rows were asked for."""
    note: str = ""
    dropped: pd.DataFrame = field(default_factory=_empty_drops)

    def counts(self) -> dict[str, int]:
        """Dropped rows per reason."""
        return {str(k): int(v) for k, v in self.dropped["reason"].value_counts(sort=True).items()}

    @property
    def n_unusable(self) -> int:
        """Rows dropped because they could not be used (every reason but exact duplicates)."""
        return int((self.dropped["reason"] != _DUPLICATE).sum())

    def summary(self, max_rows: int = 10) -> str:
        """Rows read, returned and dropped per reason, and the first dropped rows."""
        lines = [
            f"  {self.path}: {self.rows_read:,} rows read, {self.rows_returned:,} returned, "
            f"{len(self.dropped):,} dropped" + (f" ({self.note})" if self.note else "")
        ]
        for reason, n in self.counts().items():
            lines.append(f"    {reason}: {n:,}")
        shown = self.dropped.head(max_rows)
        for row in shown.itertuples(index=False):
            lines.append(f"      {_describe(row)}")
        if len(self.dropped) > len(shown):
            lines.append(f"      ... and {len(self.dropped) - len(shown):,} more (report.to_frame())")
        return "\n".join(lines)


@dataclass
class LoadReport:
    """Every row a :class:`RetailRocketLoader` dropped, per file.

    Entries accumulate per file over the loader's life; loading a file again replaces that
    file's entry, so the report always describes the latest read of each file.
    """

    files: dict[str, FileLoad] = field(default_factory=dict)

    @property
    def n_dropped(self) -> int:
        return sum(len(f.dropped) for f in self.files.values())

    def counts(self) -> dict[str, int]:
        """Dropped rows per reason, over all files."""
        total: dict[str, int] = {}
        for f in self.files.values():
            for reason, n in f.counts().items():
                total[reason] = total.get(reason, 0) + n
        return total

    def to_frame(self) -> pd.DataFrame:
        """One row per dropped row: file, line (header = 1), reason, column, value, text."""
        frames = [f.dropped for f in self.files.values() if len(f.dropped)]
        if not frames:
            return _empty_drops()
        return pd.concat(frames, ignore_index=True)

    def summary(self, max_rows: int = 10) -> str:
        """Readable text: per file the rows read, returned and dropped per reason, and examples."""
        if not self.files:
            return "No RetailRocket files loaded yet."
        return "\n".join(["RetailRocket load report", *(f.summary(max_rows) for f in self.files.values())])

    def __str__(self) -> str:
        return self.summary()


def _describe(row) -> str:
    where = f"line {row.line}" if not pd.isna(row.line) else "line ?"
    what = row.reason
    if isinstance(row.column, str) and row.column:
        what += f" [{row.column}={row.value!r}]"
    elif isinstance(row.value, str) and row.value:
        what += f" ({row.value})"
    return f"{where}: {what}: {row.text!r}"


# --------------------------------------------------------------------------- id maps

#: The file :func:`save_id_maps` writes into a run folder.
ID_MAPS_FILE = "id_maps.json"


def save_id_maps(id_maps: Mapping[str, pd.Index], path: str | Path) -> Path | None:
    """Write text-id maps (:attr:`RetailRocketLoader.id_maps`: role -> ids, code = position) as
    JSON to ``path`` (a file, or a folder that gets :data:`ID_MAPS_FILE`); nothing without maps."""
    if not id_maps:
        return None
    path = Path(path)
    if path.is_dir():
        path = path / ID_MAPS_FILE
    data = {"code": "position in ids", "roles": {role: ids.tolist() for role, ids in id_maps.items()}}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def load_id_maps(path: str | Path) -> dict[str, pd.Index]:
    """The maps :func:`save_id_maps` wrote: role -> text ids (code = position)."""
    path = Path(path)
    if path.is_dir():
        path = path / ID_MAPS_FILE
    try:
        roles = json.loads(path.read_text(encoding="utf-8"))["roles"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not an id-map file written by save_id_maps: {exc}") from exc
    return {role: pd.Index(ids, dtype="str", name=role) for role, ids in roles.items()}


# --------------------------------------------------------------------------- parsing helpers


@dataclass
class _Parsed:
    """A file read by pyarrow, before any row is dropped."""

    table: pa.Table  # typed columns, or every column as text (fallback)
    lines: np.ndarray | None  # line number of each table row; None means row i is line i + 2
    invalid: list[tuple[int | None, str, int, int]]  # (line, text, expected, actual) field counts
    typed: bool
    not_utf8: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # their lines

    def line_of(self, idx: np.ndarray) -> np.ndarray:
        return idx + 2 if self.lines is None else self.lines[idx]


def _read_header(path: Path) -> list[str]:
    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            head = b""
            while b"\n" not in head and len(head) < 1 << 20:
                chunk = stream.read(65536)
                if not chunk:
                    break
                head += chunk
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot be read as a (gzipped) CSV file: {exc}") from exc
    first = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").rstrip("\r")
    if not first.strip():
        raise DataError(f"{path}: the file is empty; expected a header line")
    return [name.strip().strip('"').strip() for name in first.split(",")]


def _replacement_lines(data: np.ndarray, newlines: np.ndarray) -> np.ndarray:
    """Line index (0 = first line of ``data``) of every U+FFFD in the UTF-8 bytes ``data``,
    ``newlines`` being the offsets of its ``\\n`` bytes."""
    if len(data) < 3:
        return np.empty(0, np.int64)
    lead = _REPLACEMENT_BYTES
    at = np.flatnonzero((data[:-2] == lead[0]) & (data[1:-1] == lead[1]) & (data[2:] == lead[2]))
    return np.searchsorted(newlines, at, side="left")


def _replace_invalid_utf8(raw: bytes) -> tuple[bytes, np.ndarray]:
    """``raw`` with each sequence that is not UTF-8 replaced by U+FFFD (shown in the report's
    text of the row), and the line numbers (the first line is 1) of the lines that had one.

    The file is decoded in chunks of whole lines, in C; a chunk that is not UTF-8 is decoded
    once more with ``errors="replace"``, and its bad lines are those holding more U+FFFD after
    that than before (a U+FFFD the file itself holds is valid text). Newlines are ASCII, which
    the decoder never takes into a bad sequence, so the lines stay where they were.
    """
    data = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(data == 0x0A)
    view, pieces, bad_lines = memoryview(raw), [], []
    pos, n, replaced = 0, len(raw), False
    while pos < n:
        # end the chunk after a newline: no sequence, and no line, is cut in two
        cut = np.searchsorted(newlines, min(pos + _DECODE_CHUNK, n) - 1, side="left")
        end = int(newlines[cut]) + 1 if cut < len(newlines) else n
        chunk = view[pos:end]
        try:
            codecs.utf_8_decode(chunk, "strict", True)
        except UnicodeDecodeError:
            fixed = codecs.utf_8_decode(chunk, "replace", True)[0].encode("utf-8")
            fixed_data = np.frombuffer(fixed, dtype=np.uint8)
            lo, hi = np.searchsorted(newlines, [pos, end])  # the chunk's newlines
            n_lines = int(hi - lo) + 1
            before = np.bincount(_replacement_lines(data[pos:end], newlines[lo:hi] - pos), minlength=n_lines)
            after_fix = np.bincount(_replacement_lines(fixed_data, np.flatnonzero(fixed_data == 0x0A)),
                                    minlength=n_lines)
            bad_lines.append(np.flatnonzero(after_fix > before) + lo + 1)  # lo lines come before
            chunk, replaced = fixed, True
        pieces.append(chunk)
        pos = end
    if not replaced:
        return raw, np.empty(0, np.int64)
    return b"".join(pieces), np.concatenate(bad_lines).astype(np.int64)


def _as_text(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Values as strings, nulls as empty strings."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    return pc.fill_null(pc.cast(arr, pa.string()), "")


def _unquote(text: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Trimmed values, without one pair of enclosing double quotes (``"42"`` -> ``42``)."""
    text = pc.utf8_trim_whitespace(text)
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(text, r'^"(.*)"$', r"\1"))


def _join_text(table: pa.Table, idx: np.ndarray) -> list[str]:
    """Rebuild the raw text of rows ``idx`` (comma-joined fields)."""
    if len(idx) == 0:
        return []
    sub = table.take(pa.array(idx))
    cols = [_as_text(sub.column(i)) for i in range(sub.num_columns)]
    return pc.binary_join_element_wise(*cols, ",").to_pylist()


def _int_values(arr: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """int64 values (0 where null) and the null mask of an int64 column."""
    null = arr.is_null().to_numpy(zero_copy_only=False)
    values = pc.fill_null(arr, 0).to_numpy()
    return values.astype(np.int64, copy=False), null


def _parse_int_text(arr: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coerce text to int64: (values, empty mask, non-integer mask), all vectorised."""
    text = _unquote(arr)
    empty = pc.equal(pc.utf8_length(text), 0)
    ok = pc.match_substring_regex(text, INT_PATTERN)
    values = pc.cast(pc.if_else(ok, text, pa.scalar("0")), pa.int64()).to_numpy()
    bad = pc.and_(pc.invert(ok), pc.invert(empty))
    return (
        values.astype(np.int64, copy=False),
        empty.to_numpy(zero_copy_only=False),
        bad.to_numpy(zero_copy_only=False),
    )


def _event_name(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    return text.lower()


def _event_codes(arr: pa.ChunkedArray) -> np.ndarray:
    """Codes into EVENT_TYPES (names matched ignoring case and spaces); -1 for anything else."""
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    cat = pd.Categorical(arr.to_pandas())
    known = {name: i for i, name in enumerate(EVENT_TYPES)}
    # one lookup per distinct name, not per row
    mapping = np.array([known.get(_event_name(c), -1) for c in cat.categories] + [-1], dtype=np.int8)
    return mapping[cat.codes]  # code -1 (null) picks the trailing -1


def _duplicated(frame: pd.DataFrame) -> np.ndarray:
    """``frame.duplicated(keep="first")``, fast: exact check only among rows whose numeric
    columns hash alike (equal rows always hash alike, so nothing is missed)."""
    h = np.zeros(len(frame), dtype=np.uint64)
    for _, col in frame.items():
        if isinstance(col.dtype, pd.CategoricalDtype):
            v = col.cat.codes.to_numpy().astype(np.int64)
        elif isinstance(col.dtype, pd.Int64Dtype):
            v = col.to_numpy(dtype=np.int64, na_value=-(2**63))
        elif col.dtype == np.int64:
            v = col.to_numpy()
        else:
            continue  # text: left to the exact check
        h = (h ^ v.view(np.uint64)) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(31)
    candidates = np.flatnonzero(pd.Series(h).duplicated(keep=False).to_numpy())
    out = np.zeros(len(frame), dtype=bool)
    if len(candidates):
        out[candidates] = frame.iloc[candidates].duplicated(keep="first").to_numpy()
    return out


def _filter(arr: pa.ChunkedArray, keep: np.ndarray | None) -> pa.ChunkedArray:
    return arr if keep is None else arr.filter(pa.array(keep))


# --------------------------------------------------------------------------- loader


Columns = dict[str, object]
Check = Callable[[Columns], tuple[np.ndarray, str, str]]
Select = Callable[[Columns], np.ndarray]


class RetailRocketLoader:
    """Read RetailRocket's Kaggle files (plain or ``.gz``), or your own events file, into
    canonical frames.

    Parameters
    ----------
    data_dir
        The folder of the files; defaults to ``settings.data_dir / "raw"`` (read when the loader
        is made). A path to a file is taken as the events file (its folder holds the others).
    strict
        Raise :class:`DataError` on the first malformed rows of a file instead of dropping them
        (exact duplicates are always dropped, never an error).
    events_file
        The events file's name in ``data_dir`` (or a path), default ``events.csv``.
    columns
        The events file's column for each role, where it is not RetailRocket's: roles
        ``timestamp`` (``timestamp``), ``visitor`` (``visitorid``), ``event`` (``event``),
        ``item`` (``itemid``), ``transaction`` (``transactionid``, optional: all <NA> when the
        file has no such column). E.g. ``columns={"visitor": "user_id", "item": "sku"}``.
    string_ids
        Roles (``visitor``, ``item``, ``transaction``) whose values are text ids (``"u-17"``):
        encoded to dense int64 codes ``0..n-1`` in sorted text order; :attr:`id_maps` holds the
        ids (code = position), :func:`save_id_maps` writes them.
    timestamp_unit
        ``"auto"`` (detect per file: seconds, milliseconds, microseconds or nanoseconds by
        magnitude) or one of ``"s"``, ``"ms"``, ``"us"``, ``"ns"``. Detected, a column that mixes
        units (another unit fits 2 values or more and 1% of them) is refused. A value that is no
        time between 1990-01-01 and 2100-01-01 in the unit drops its row (an "implausible
        timestamp", counted toward ``max_dropped_share``).
    max_dropped_share
        The share of a file's rows that may be dropped as unreadable before the file is
        refused (default :data:`DEFAULT_MAX_DROPPED_SHARE`, 0.1; 1.0 keeps whatever is readable).
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        strict: bool = False,
        *,
        events_file: str | Path | None = None,
        columns: Mapping[str, str] | None = None,
        string_ids: Iterable[str] = (),
        timestamp_unit: str = "auto",
        max_dropped_share: float = DEFAULT_MAX_DROPPED_SHARE,
    ) -> None:
        if data_dir is None:
            from funnelrec.config import settings

            data_dir = settings.data_dir / "raw"
        data_dir = Path(data_dir)
        if data_dir.is_file():
            if events_file is not None:
                raise DataError(f"give the events file once: data_dir {data_dir} is a file, and so is "
                                f"events_file {events_file}")
            data_dir, events_file = data_dir.parent, data_dir.name
        self.data_dir = data_dir
        self.events_file = Path(events_file) if events_file is not None else Path(EVENTS_FILE)
        self.strict = strict
        self.columns = self._check_columns(columns or {})
        self.string_ids = tuple(dict.fromkeys(string_ids))
        unknown = [r for r in self.string_ids if r not in TEXT_ID_ROLES]
        if unknown:
            raise DataError(f"string_ids: unknown role(s) {unknown}; text ids are possible for {list(TEXT_ID_ROLES)}")
        if timestamp_unit != "auto" and timestamp_unit not in TIMESTAMP_UNITS:
            raise DataError(
                f"timestamp_unit must be 'auto' or one of {list(TIMESTAMP_UNITS)}, got {timestamp_unit!r}"
            )
        self.timestamp_unit = timestamp_unit
        if not 0.0 <= float(max_dropped_share) <= 1.0:
            raise DataError(f"max_dropped_share must be between 0 and 1, got {max_dropped_share!r}")
        self.max_dropped_share = float(max_dropped_share)
        self.report = LoadReport()
        self.id_maps: dict[str, pd.Index] = {}
        """Role -> the text ids of :attr:`string_ids` (code = position), set by :meth:`load_events`."""

    @staticmethod
    def _check_columns(columns: Mapping[str, str]) -> dict[str, str]:
        unknown = [r for r in columns if r not in COLUMN_ROLES]
        if unknown:
            raise DataError(f"columns: unknown role(s) {unknown}; the roles are {list(COLUMN_ROLES)}")
        empty = [r for r, name in columns.items() if not isinstance(name, str) or not name.strip()]
        if empty:
            raise DataError(f"columns: role(s) {empty} need a column name")
        resolved = {**DEFAULT_COLUMNS, **{r: name.strip() for r, name in columns.items()}}
        names = list(resolved.values())
        shared = sorted({n for n in names if names.count(n) > 1})
        if shared:
            raise DataError(f"columns: {shared} named for more than one role: {resolved}")
        return resolved

    def __repr__(self) -> str:
        options = [f"data_dir={str(self.data_dir)!r}", f"strict={self.strict}"]
        if self.events_file != Path(EVENTS_FILE):
            options.append(f"events_file={str(self.events_file)!r}")
        if self.columns != DEFAULT_COLUMNS:
            changed = {r: c for r, c in self.columns.items() if DEFAULT_COLUMNS[r] != c}
            options.append(f"columns={changed}")
        if self.string_ids:
            options.append(f"string_ids={list(self.string_ids)}")
        if self.timestamp_unit != "auto":
            options.append(f"timestamp_unit={self.timestamp_unit!r}")
        if self.max_dropped_share != DEFAULT_MAX_DROPPED_SHARE:
            options.append(f"max_dropped_share={self.max_dropped_share}")
        return f"RetailRocketLoader({', '.join(options)})"

    # ------------------------------------------------------------------ public API

    def load_events(self, join_categories: bool = True) -> pd.DataFrame:
        """The canonical events frame, sorted by timestamp (stable), index 0..n-1.

        Columns: timestamp, visitor_id, event, item_id, transaction_id and, with
        ``join_categories``, category_id (the latest ``categoryid`` property of the item; <NA>
        for items without one, and for all items when the property files are absent).
        Raises :class:`DataError` when the file has no usable event, too many bad rows (an
        implausible timestamp is one), or a timestamp column that mixes units.
        """
        path = self._events_path()
        header = _read_header(path)
        spec: dict[str, str] = {}
        for role, name in self.columns.items():
            if role == "transaction" and name not in header and name == DEFAULT_COLUMNS[role]:
                logger.info("{}: no {!r} column; transaction_id is <NA> for every event", path, name)
                continue
            kind = _ROLE_KINDS[role]
            spec[name] = _AS_TEXT[kind] if role in self.string_ids else kind
        frame, _ = self._read(path, spec, required=True, hint=self._events_hint)
        order = np.argsort(frame[self.columns["timestamp"]].to_numpy(), kind="stable")
        frame = frame.take(order).reset_index(drop=True)
        self.id_maps = {}
        for role in self.string_ids:
            name = self.columns[role]
            if name not in frame.columns:
                continue
            codes, ids = pd.factorize(frame[name], sort=True)  # <NA> (code -1) only if optional
            codes = codes.astype(np.int64)
            frame[name] = codes if role != "transaction" else pd.arrays.IntegerArray(codes, codes < 0)
            self.id_maps[role] = pd.Index(ids, dtype="str", name=role)
            logger.info("{}: {:,} text {} ids encoded as codes 0..{:,}", path, len(ids), role, len(ids) - 1)
        frame = frame.rename(columns={self.columns[r]: c for r, c in COLUMN_ROLES.items()})
        if TRANSACTION_ID not in frame.columns:
            frame[TRANSACTION_ID] = _all_na(len(frame))
        frame = frame[list(COLUMN_ROLES.values())]
        frame[TIMESTAMP] = _to_datetime(frame[TIMESTAMP].to_numpy())
        if join_categories:
            frame[CATEGORY_ID] = self._categories_for(frame[ITEM_ID].to_numpy())
        return validate_events(frame, name=f"events from {path}")

    def load_item_properties(self) -> pd.DataFrame:
        """Both property files concatenated: timestamp (UTC), item_id, property, value (text)."""
        frames = [self._read(self._require(name), _PROPERTIES_SPEC)[0] for name in PROPERTY_FILES]
        frame = pd.concat(frames, ignore_index=True)
        frame = frame.rename(columns={"itemid": ITEM_ID})
        frame[TIMESTAMP] = _to_datetime(frame[TIMESTAMP].to_numpy())
        return frame

    def load_category_tree(self) -> pd.DataFrame:
        """category_id (Int64) and parent_id (Int64, <NA> for the roots)."""
        frame, _ = self._read(self._require(CATEGORY_TREE_FILE), _TREE_SPEC)
        return pd.DataFrame(
            {
                CATEGORY_ID: frame["categoryid"].astype("Int64"),
                PARENT_ID: frame["parentid"],
            }
        )

    def load_item_categories(self) -> pd.DataFrame:
        """[item_id, category_id]: the latest ``categoryid`` property of each item.

        "Latest" is by timestamp; equal timestamps are settled by file order (the later row
        wins). Rows whose ``categoryid`` value is not a non-negative integer are reported and
        dropped.
        """
        paths = [self._require(name) for name in PROPERTY_FILES]
        return self._item_categories(paths)

    # ------------------------------------------------------------------ categories

    def _categories_for(self, item_ids: np.ndarray) -> pd.arrays.IntegerArray:
        no_categories = _all_na(len(item_ids))
        found = [self._locate(name) for name in PROPERTY_FILES]
        if all(p is None for p in found):
            logger.warning(
                "No item property files ({}) in {}: category_id is <NA> for every event.",
                " / ".join(PROPERTY_FILES),
                self.data_dir,
            )
            return no_categories
        if "item" in self.string_ids:
            logger.warning("Item ids are text (string_ids): the property files' integer item ids are "
                           "not joined; category_id is <NA> for every event.")
            return no_categories
        # One part present and the other absent is a broken download: name the missing one.
        cats = self._item_categories([self._require(name) for name in PROPERTY_FILES])
        idx = pd.Index(cats[ITEM_ID].to_numpy()).get_indexer(item_ids)
        return cats[CATEGORY_ID].array.take(idx, allow_fill=True)

    def _item_categories(self, paths: list[Path]) -> pd.DataFrame:
        def categoryid_rows(cols: Columns) -> np.ndarray:
            return pc.equal(cols["property"], CATEGORY_PROPERTY).to_numpy(zero_copy_only=False)

        def category_values(cols: Columns) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            is_cat = categoryid_rows(cols)
            values, empty, bad = _parse_int_text(cols["value"].filter(pa.array(is_cat)))
            return is_cat, values, empty, bad

        def bad_value(cols: Columns) -> tuple[np.ndarray, str, str]:
            is_cat, _, empty, bad = category_values(cols)
            out = np.zeros(len(is_cat), dtype=bool)
            out[is_cat] = bad | empty
            return out, "non-integer categoryid value", "value"

        def negative_value(cols: Columns) -> tuple[np.ndarray, str, str]:
            is_cat, values, _, _ = category_values(cols)
            out = np.zeros(len(is_cat), dtype=bool)
            out[is_cat] = values < 0
            return out, "negative categoryid value", "value"

        frames = [
            self._read(
                path,
                _PROPERTIES_SPEC,
                checks=(bad_value, negative_value),
                select=categoryid_rows,
                note=f"only property == {CATEGORY_PROPERTY!r} rows returned",
            )[0]
            for path in paths
        ]
        props = pd.concat(frames, ignore_index=True)
        values, _, _ = _parse_int_text(pa.array(props["value"], pa.string()))
        cats = pd.DataFrame(
            {
                "timestamp": props["timestamp"].to_numpy(),
                ITEM_ID: props["itemid"].to_numpy(),
                CATEGORY_ID: values,
            }
        )
        latest = cats.sort_values([ITEM_ID, "timestamp"], kind="stable").drop_duplicates(
            ITEM_ID, keep="last"
        )
        return pd.DataFrame(
            {
                ITEM_ID: latest[ITEM_ID].to_numpy(),
                CATEGORY_ID: pd.array(latest[CATEGORY_ID].to_numpy(), dtype="Int64"),
            }
        )

    # ------------------------------------------------------------------ files

    def _locate(self, name: str | Path) -> Path | None:
        path = self.data_dir / name
        for candidate in (path, path.with_name(path.name + ".gz")):
            if candidate.is_file():
                return candidate
        return None

    def _events_path(self) -> Path:
        if self.events_file == Path(EVENTS_FILE):
            return self._require(EVENTS_FILE)
        path = self._locate(self.events_file)
        if path is None:
            where = self.data_dir / self.events_file
            raise FileNotFoundError(f"events file not found: {where} (nor {where}.gz)")
        return path

    def _require(self, name: str) -> Path:
        path = self._locate(name)
        if path is not None:
            return path
        where = self.data_dir / name
        folder = "" if self.data_dir.is_dir() else f" (the folder {self.data_dir} does not exist)"
        raise FileNotFoundError(
            f"RetailRocket file not found: {where} (nor {where}.gz){folder}. "
            f"Download the RetailRocket dataset from Kaggle ({KAGGLE_DATASET!r}: "
            f"`kaggle datasets download -d {KAGGLE_DATASET}`) and unzip it into {self.data_dir}, "
            f"or write synthetic data in the same format with "
            f"`funnelrec generate --out {self.data_dir}`."
        )

    # ------------------------------------------------------------------ reading

    def _read(
        self,
        path: Path,
        spec: dict[str, str],
        *,
        checks: tuple[Check, ...] = (),
        select: Select | None = None,
        note: str = "",
        required: bool = False,
        hint: Callable[[FileLoad], list[str]] | None = None,
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Read ``path``: typed frame (raw column names) of the good rows, and their line numbers.

        ``checks`` add problems (rows to drop and report); ``select`` picks the rows to return
        among the good ones (the others are not problems and are not reported). Timestamps come
        back as int64 milliseconds. ``required``: no usable row is an error.
        """
        header = _read_header(path)
        missing = [c for c in spec if c not in header]
        if missing:
            raise DataError(
                f"{path}: missing column(s) {missing}; the file has columns {header}. "
                f"Expected the columns {list(spec)}"
                + (" (map other names with columns=... / --columns role=name)" if hint else "")
                + "."
            )
        parsed = self._parse_typed(path, header, spec)
        if parsed is None:
            parsed = self._parse_text(path, header)
        table, n = parsed.table, parsed.table.num_rows

        # Column values, with the problems found on the way.
        cols: Columns = {}
        problems: list[tuple[np.ndarray, str, str | None]] = []
        nulls: list[np.ndarray] = []
        units: dict[str, str] = {}  # timestamp column -> its unit
        epoch_hints: list[str] = []
        for name, kind in spec.items():
            arr = table[name]
            if kind in _INT_KINDS:
                if parsed.typed:
                    values, null = _int_values(arr)
                    bad = np.zeros(n, dtype=bool)
                else:
                    values, null, bad = _parse_int_text(arr)
                    problems.append((bad, f"non-integer {name}", name))
                if kind in _REQUIRED:
                    problems.append((null, f"missing {name}", name))
                if kind == _TIME:
                    units[name], implausible, hint_text = self._timestamp_unit(
                        path, name, values, ~(null | bad), parsed.line_of
                    )
                    problems.append((implausible, _IMPLAUSIBLE_TIME, name))
                    epoch_hints += [hint_text] if hint_text else []
                else:
                    problems.append((values < 0, f"negative {name}", name))
                cols[name] = (values, null)
                nulls.append(null)
            elif kind in _TEXT_ID_KINDS:
                text = _unquote(arr)
                null = pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
                if kind in _REQUIRED:
                    problems.append((null, f"missing {name}", name))
                cols[name] = pc.if_else(pa.array(null), pa.scalar(None, pa.string()), text)
                nulls.append(null)
            elif kind == _EVENT:
                codes = _event_codes(arr)
                problems.append((codes < 0, "unknown event type", name))
                cols[name] = codes
            else:
                cols[name] = arr
        blank = np.logical_and.reduce(nulls) if nulls else np.zeros(n, dtype=bool)
        if blank.any():
            # Candidates have every integer field empty; a row is empty when its text is too.
            for name, kind in spec.items():
                if kind in (_STR, _EVENT):
                    idx = np.flatnonzero(blank)
                    text = _as_text(table[name].take(pa.array(idx)))
                    blank[idx] &= pc.equal(pc.utf8_length(text), 0).to_numpy(zero_copy_only=False)
        problems.insert(0, (blank, "empty row", None))
        if len(parsed.not_utf8):
            problems.insert(0, (np.isin(parsed.line_of(np.arange(n)), parsed.not_utf8), _NOT_UTF8, None))
        problems.extend(check(cols) for check in checks)

        # The first problem of each row decides its reason.
        code = np.full(n, -1, dtype=np.int16)
        for k, (mask, _, _) in enumerate(problems):
            if mask.any():
                code[(code < 0) & mask] = k
        keep = code < 0
        drops = [self._invalid_frame(path, parsed)]
        for k, (_, reason, column) in enumerate(problems):
            idx = np.flatnonzero(code == k)
            if len(idx):
                value = (
                    _as_text(table[column].take(pa.array(idx))).to_pylist()
                    if column
                    else [""] * len(idx)
                )
                text = [""] * len(idx) if reason == "empty row" else _join_text(table, idx)
                drops.append(
                    self._drop_frame(path, parsed.line_of(idx), reason, column, value, text)
                )
        malformed = pd.concat(drops, ignore_index=True).sort_values("line", kind="stable")
        if self.strict and len(malformed):
            self._record(path, parsed, n, 0, malformed, note)
            raise DataError(self._strict_message(path, malformed))

        # The good rows (and the selected ones among them) as a typed frame.
        if select is not None:
            keep &= select(cols)
        kept = None if keep.all() else keep
        kept_idx = np.flatnonzero(keep)
        frame = pd.DataFrame(
            {name: self._column(cols[name], kind, kept) for name, kind in spec.items()}
        )
        duplicated = _duplicated(frame)
        if duplicated.any():
            idx = kept_idx[duplicated]
            drops_dup = self._drop_frame(
                path, parsed.line_of(idx), _DUPLICATE, None, [""] * len(idx), _join_text(table, idx)
            )
            malformed = pd.concat([malformed, drops_dup], ignore_index=True)
            frame = frame[~duplicated].reset_index(drop=True)
            kept_idx = kept_idx[~duplicated]
        entry = self._record(path, parsed, n, len(frame), malformed, note)
        self._check_usable(entry, required, hint, epoch_hints)
        for name, unit in units.items():
            frame[name] = epoch_to_ms(frame[name].to_numpy(), unit)
        return frame, parsed.line_of(kept_idx)

    def _parse_typed(self, path: Path, header: list[str], spec: dict[str, str]) -> _Parsed | None:
        """The fast path: typed, multi-threaded. None when any row needs a closer look."""
        try:
            table = pv.read_csv(
                str(path),
                read_options=pv.ReadOptions(use_threads=True, column_names=header, skip_rows=1),
                # no invalid-row handler: a row with the wrong field count stops this read (pyarrow
                # cannot even hand a handler a row that is not UTF-8)
                parse_options=_parse_options(None),
                convert_options=pv.ConvertOptions(
                    include_columns=list(spec),
                    column_types={name: _ARROW_TYPES[kind] for name, kind in spec.items()},
                    null_values=[""],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid:
            return None  # a bad field count, a value that does not convert, a byte that is not UTF-8
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path}: cannot be read: {exc}") from exc
        return _Parsed(table=table, lines=None, invalid=[], typed=True)

    def _parse_text(self, path: Path, header: list[str]) -> _Parsed:
        """The careful path: every column as text, single-threaded so skipped rows have lines.

        Bytes that are not UTF-8 are found first (their lines are dropped as "not UTF-8") and
        replaced, so that one bad byte cannot abort the read of the whole file.
        """
        try:
            with pa.input_stream(str(path), compression="detect") as stream:
                raw = stream.read()
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path}: cannot be read: {exc}") from exc
        if not raw.partition(b"\n")[2]:  # a header without even a newline: pyarrow cannot skip it
            table = pa.table({name: pa.array([], pa.string()) for name in header})
            return _Parsed(table=table, lines=np.empty(0, np.int64), invalid=[], typed=False)
        raw, not_utf8 = _replace_invalid_utf8(raw)
        not_utf8 = not_utf8[not_utf8 > 1]  # a bad byte in the header only garbles a name
        invalid: list[tuple[int | None, str, int, int]] = []

        def handler(row: pv.InvalidRow) -> str:
            invalid.append((row.number, row.text, row.expected_columns, row.actual_columns))
            return "skip"

        try:
            table = pv.read_csv(
                pa.BufferReader(raw),
                read_options=pv.ReadOptions(use_threads=False, column_names=header, skip_rows=1),
                parse_options=_parse_options(handler),
                convert_options=pv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path}: cannot be read: {exc}") from exc
        n_rows = table.num_rows + len(invalid)
        skipped = np.array([r[0] for r in invalid if r[0] is not None], dtype=np.int64)
        lines = np.setdiff1d(np.arange(2, n_rows + 2), skipped, assume_unique=True)
        if len(lines) != table.num_rows:  # pyarrow did not say where a skipped row was
            logger.warning("{}: line numbers after a skipped row may be off", path)
            lines = np.arange(2, table.num_rows + 2)
        return _Parsed(table=table, lines=lines, invalid=invalid, typed=False, not_utf8=not_utf8)

    @staticmethod
    def _column(values: object, kind: str, keep: np.ndarray | None):
        if kind == _EVENT:
            codes = values if keep is None else values[keep]
            return pd.Categorical.from_codes(codes, dtype=EVENT_DTYPE)
        if kind == _STR or kind in _TEXT_ID_KINDS:
            return _filter(values, keep).to_pandas()
        data, null = values
        if keep is not None:
            data, null = data[keep], null[keep]
        if kind in _REQUIRED:
            return data
        return pd.arrays.IntegerArray(data, null)

    def _timestamp_unit(
        self, path: Path, column: str, values: np.ndarray, readable: np.ndarray, line_of: Callable
    ) -> tuple[str, np.ndarray, str]:
        """The unit of a timestamp column, the mask of its implausible values, and what to say
        about them if the file is refused for its dropped rows (``""``: nothing implausible).

        The rule: the unit is ``timestamp_unit``, or (``"auto"``) the unit most of the column's
        values fit (a time between 1990-01-01 and 2100-01-01). Detected, a column where another
        unit fits at least :data:`_MIXED_MIN_VALUES` values and :data:`_MIXED_SHARE` of them mixes
        units and is refused (:class:`DataError`). Any other value that is no time in the unit
        (a truncated or garbled one, or one in another unit given an explicit unit) makes its row
        an ``implausible timestamp``: dropped, reported and counted toward ``max_dropped_share``.
        ``readable``: the values that are integers at all (the others are reported already).
        """
        idx = np.flatnonzero(readable)
        check = check_epoch(values[idx], self.timestamp_unit)
        implausible = np.zeros(len(values), dtype=bool)
        implausible[idx[check.bad]] = True
        if check.detected:
            mixed = [u for u, k in check.fits.items()
                     if u != "none" and k >= max(_MIXED_MIN_VALUES, _MIXED_SHARE * len(idx))]
            if mixed:
                # examples: values of the other unit(s), not garbage that fits none
                bad_idx = idx[check.bad]
                other = np.logical_or.reduce([~check_epoch(values[bad_idx], u).bad for u in mixed])
                shown = bad_idx[other][:_SHOWN]
                examples = [f"line {line}: {value}" for line, value in zip(line_of(shown), values[shown], strict=True)]
                raise DataError(f"{path}: {epoch_problem(check, column, examples)}")
            if check.unit != "ms" and len(idx):
                logger.info("{}: column {!r} counts {} since the epoch (detected); read as such",
                            path, column, UNIT_NAMES[check.unit])
        if not implausible.any():
            return check.unit, implausible, ""
        shown = idx[check.bad][:_SHOWN]
        examples = [f"line {line}: {value}" for line, value in zip(line_of(shown), values[shown], strict=True)]
        return check.unit, implausible, epoch_problem(check, column, examples)

    # ------------------------------------------------------------------ report

    def _check_usable(self, entry: FileLoad, required: bool, hint, epoch_hints: Iterable[str] = ()) -> None:
        """No usable row (when ``required``), or too many dropped rows: DataError."""
        if required and entry.rows_returned == 0:
            if entry.rows_read == 0:
                raise DataError(f"{entry.path}: no events: the file has a header and no rows.")
            head = f"{entry.path}: no usable events: all {entry.rows_read:,} rows were dropped."
        elif entry.rows_read and entry.n_unusable > self.max_dropped_share * entry.rows_read:
            head = (
                f"{entry.path}: {entry.n_unusable:,} of {entry.rows_read:,} rows "
                f"({entry.n_unusable / entry.rows_read:.1%}) could not be used, more than "
                f"max_dropped_share={self.max_dropped_share:g} allows (raise it, "
                "--max-dropped-share on the command line, to keep the readable rows)."
            )
        else:
            return
        hints = hint(entry) if hint else []
        if entry.counts().get(_NOT_UTF8):
            hints.append("re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")
        hints.extend(epoch_hints)  # what the implausible timestamps look like
        text = "\n".join([head, entry.summary(max_rows=5)])
        raise DataError(text + ("\nHint: " + "; ".join(hints) if hints else ""))

    def _events_hint(self, entry: FileLoad) -> list[str]:
        """What to try when most rows of the events file were dropped, from the reasons."""
        reasons = entry.counts()
        hints = []
        for role in TEXT_ID_ROLES:
            name = self.columns[role]
            # most bad rows: a column of text ids, not a few damaged rows
            if reasons.get(f"non-integer {name}", 0) * 2 > entry.n_unusable and role not in self.string_ids:
                hints.append(f"if {name!r} holds text ids, read it with string_ids=[{role!r}] "
                             f"(--string-ids {role})")
        if reasons.get("unknown event type"):
            hints.append(f"event names must be one of {list(EVENT_TYPES)}")
        if reasons.get("wrong field count"):
            hints.append("fields are separated by commas and never quoted")
        return hints

    @staticmethod
    def _drop_frame(path, lines, reason, column, values, texts) -> pd.DataFrame:
        n = len(texts)
        return pd.DataFrame(
            {
                "file": pd.Series([str(path)] * n, dtype="str"),
                "line": pd.array(np.asarray(lines, dtype=np.int64), dtype="Int64"),
                "reason": pd.Series([reason] * n, dtype="str"),
                "column": pd.Series([column or ""] * n, dtype="str"),
                "value": pd.Series(values, dtype="str"),
                "text": pd.Series(texts, dtype="str"),
            }
        )

    @staticmethod
    def _invalid_frame(path: Path, parsed: _Parsed) -> pd.DataFrame:
        if not parsed.invalid:
            return _empty_drops()
        line, text, expected, actual = zip(*parsed.invalid, strict=True)
        not_utf8 = np.isin(np.array([-1 if x is None else x for x in line]), parsed.not_utf8)
        counts = [f"{a} fields, expected {e}" for e, a in zip(expected, actual, strict=True)]
        return pd.DataFrame(
            {
                "file": pd.Series([str(path)] * len(line), dtype="str"),
                "line": pd.array(list(line), dtype="Int64"),
                "reason": pd.Series(np.where(not_utf8, _NOT_UTF8, "wrong field count"), dtype="str"),
                "column": pd.Series([""] * len(line), dtype="str"),
                "value": pd.Series(np.where(not_utf8, "", counts), dtype="str"),
                "text": pd.Series(list(text), dtype="str"),
            }
        )

    def _record(self, path, parsed, n_parsed, n_returned, dropped, note) -> FileLoad:
        entry = FileLoad(
            path=str(path),
            rows_read=n_parsed + len(parsed.invalid),
            rows_returned=n_returned,
            note=note,
            dropped=dropped.reset_index(drop=True),
        )
        self.report.files[str(path)] = entry
        if len(dropped):
            counts = ", ".join(f"{reason}: {k:,}" for reason, k in entry.counts().items())
            first = "; ".join(_describe(r) for r in dropped.head(3).itertuples(index=False))
            logger.warning(
                "{}: dropped {:,} of {:,} rows ({}). First: {}. Details: loader.report",
                path,
                len(dropped),
                entry.rows_read,
                counts,
                first,
            )
        return entry

    @staticmethod
    def _strict_message(path: Path, malformed: pd.DataFrame) -> str:
        shown = [f"  {_describe(r)}" for r in malformed.head(_STRICT_SHOWN).itertuples(index=False)]
        more = len(malformed) - len(shown)
        tail = [f"  ... and {more:,} more"] if more else []
        return "\n".join(
            [f"{path}: {len(malformed):,} malformed row(s) (strict=True):", *shown, *tail]
        )


def _parse_options(handler: Callable[[pv.InvalidRow], str] | None) -> pv.ParseOptions:
    # quote_char=False: the format has no quoting, so a stray '"' cannot swallow the lines after it
    return pv.ParseOptions(quote_char=False, invalid_row_handler=handler, ignore_empty_lines=False)


def _all_na(n: int) -> pd.arrays.IntegerArray:
    return pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))


def _to_datetime(ms: np.ndarray) -> pd.arrays.DatetimeArray:
    """Milliseconds since the epoch -> datetime64[ms, UTC]."""
    out = pa.array(ms.astype(np.int64, copy=False), pa.timestamp("ms", tz="UTC")).to_pandas()
    return out.array.astype(TIMESTAMP_DTYPE, copy=False)
