"""Load the real Kaggle RetailRocket files into the canonical events frame.

Files (each plain or ``.gz``; the plain file wins when both exist), in one folder:

- ``events.csv``: ``timestamp,visitorid,event,itemid,transactionid`` (ms since the epoch)
- ``item_properties_part1.csv``, ``item_properties_part2.csv``: ``timestamp,itemid,property,value``
- ``category_tree.csv``: ``categoryid,parentid``

Reading is done by ``pyarrow.csv``: a typed, multi-threaded read first; only when that fails
(a row with the wrong number of fields, a value that is not an integer) is the file read again
with every column as text, single-threaded so that pyarrow knows the line number of every row it
skips, and coerced with vectorised operations to find the bad rows. Bad rows are dropped, logged
and listed in :attr:`RetailRocketLoader.report` with file, line (the header is line 1), reason
and raw text; ``strict=True`` raises instead. Exact duplicate rows are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Callable
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
    EVENT_DTYPE,
    EVENT_TYPES,
    ITEM_ID,
    RAW_EVENT_COLUMNS,
    TIMESTAMP,
    TIMESTAMP_DTYPE,
    validate_events,
)

__all__ = ["FileLoad", "LoadReport", "RetailRocketLoader"]

EVENTS_FILE = "events.csv"
PROPERTY_FILES = ("item_properties_part1.csv", "item_properties_part2.csv")
CATEGORY_TREE_FILE = "category_tree.csv"
KAGGLE_DATASET = "retailrocket/ecommerce-dataset"

PARENT_ID = "parent_id"
PROPERTY = "property"
VALUE = "value"
CATEGORY_PROPERTY = "categoryid"

# Column kinds: a required integer, an optional integer (empty -> <NA>), text, a funnel event.
_INT, _OPT_INT, _STR, _EVENT = "int", "int?", "str", "event"
_ARROW_TYPES = {
    _INT: pa.int64(),
    _OPT_INT: pa.int64(),
    _STR: pa.string(),
    _EVENT: pa.dictionary(pa.int32(), pa.string()),
}
_EVENTS_SPEC = {
    "timestamp": _INT,
    "visitorid": _INT,
    "event": _EVENT,
    "itemid": _INT,
    "transactionid": _OPT_INT,
}
_PROPERTIES_SPEC = {"timestamp": _INT, "itemid": _INT, "property": _STR, "value": _STR}
_TREE_SPEC = {"categoryid": _INT, "parentid": _OPT_INT}

_INT_PATTERN = r"^[+-]?[0-9]{1,18}$"  # 18 digits always fit int64
_DROP_COLUMNS = ["file", "line", "reason", "column", "value", "text"]
_DUPLICATE = "duplicate row"
_STRICT_SHOWN = 5


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
        lines = ["RetailRocket load report"]
        for f in self.files.values():
            lines.append(
                f"  {f.path}: {f.rows_read:,} rows read, {f.rows_returned:,} returned, "
                f"{len(f.dropped):,} dropped" + (f" ({f.note})" if f.note else "")
            )
            for reason, n in f.counts().items():
                lines.append(f"    {reason}: {n:,}")
            shown = f.dropped.head(max_rows)
            for row in shown.itertuples(index=False):
                lines.append(f"      {_describe(row)}")
            if len(f.dropped) > len(shown):
                lines.append(
                    f"      ... and {len(f.dropped) - len(shown):,} more (report.to_frame())"
                )
        return "\n".join(lines)

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


# --------------------------------------------------------------------------- parsing helpers


@dataclass
class _Parsed:
    """A file read by pyarrow, before any row is dropped."""

    table: pa.Table  # typed columns, or every column as text (fallback)
    lines: np.ndarray | None  # line number of each table row; None means row i is line i + 2
    invalid: list[tuple[int | None, str, int, int]]  # (line, text, expected, actual) field counts
    typed: bool

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
        raise ValueError(f"{path}: cannot be read as a (gzipped) CSV file: {exc}") from exc
    first = head.split(b"\n", 1)[0].decode("utf-8-sig", errors="replace").rstrip("\r")
    if not first.strip():
        raise ValueError(f"{path}: the file is empty; expected a header line")
    return [name.strip().strip('"').strip() for name in first.split(",")]


def _as_text(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Values as strings, nulls as empty strings."""
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    return pc.fill_null(pc.cast(arr, pa.string()), "")


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
    text = pc.utf8_trim_whitespace(arr)
    empty = pc.equal(pc.utf8_length(text), 0)
    ok = pc.match_substring_regex(text, _INT_PATTERN)
    values = pc.cast(pc.if_else(ok, text, pa.scalar("0")), pa.int64()).to_numpy()
    bad = pc.and_(pc.invert(ok), pc.invert(empty))
    return (
        values.astype(np.int64, copy=False),
        empty.to_numpy(zero_copy_only=False),
        bad.to_numpy(zero_copy_only=False),
    )


def _event_codes(arr: pa.ChunkedArray) -> np.ndarray:
    """Codes into EVENT_TYPES; -1 for anything else."""
    if not pa.types.is_dictionary(arr.type):
        arr = pc.dictionary_encode(arr)
    cat = pd.Categorical(arr.to_pandas())
    known = {name: i for i, name in enumerate(EVENT_TYPES)}
    mapping = np.array([known.get(c, -1) for c in cat.categories] + [-1], dtype=np.int8)
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
    """Read RetailRocket's Kaggle files (plain or ``.gz``) into canonical frames.

    ``data_dir`` defaults to ``settings.data_dir / "raw"`` (read when the loader is made).
    ``strict=True`` raises :class:`ValueError` on the first malformed rows of a file instead of
    skipping them (exact duplicates are always dropped, never an error).
    """

    def __init__(self, data_dir: str | Path | None = None, strict: bool = False) -> None:
        if data_dir is None:
            from funnelrec.config import settings

            data_dir = settings.data_dir / "raw"
        self.data_dir = Path(data_dir)
        self.strict = strict
        self.report = LoadReport()

    def __repr__(self) -> str:
        return f"RetailRocketLoader(data_dir={str(self.data_dir)!r}, strict={self.strict})"

    # ------------------------------------------------------------------ public API

    def load_events(self, join_categories: bool = True) -> pd.DataFrame:
        """The canonical events frame, sorted by timestamp (stable), index 0..n-1.

        Columns: timestamp, visitor_id, event, item_id, transaction_id and, with
        ``join_categories``, category_id (the latest ``categoryid`` property of the item; <NA>
        for items without one, and for all items when the property files are absent).
        """
        frame, _ = self._read(self._require(EVENTS_FILE), _EVENTS_SPEC)
        order = np.argsort(frame["timestamp"].to_numpy(), kind="stable")
        frame = frame.take(order).reset_index(drop=True).rename(columns=RAW_EVENT_COLUMNS)
        frame[TIMESTAMP] = _to_datetime(frame[TIMESTAMP].to_numpy())
        if join_categories:
            frame[CATEGORY_ID] = self._categories_for(frame[ITEM_ID].to_numpy())
        return validate_events(frame, name=f"events from {self.data_dir}")

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
        wins). Rows whose ``categoryid`` value is not an integer are reported and dropped.
        """
        paths = [self._require(name) for name in PROPERTY_FILES]
        return self._item_categories(paths)

    # ------------------------------------------------------------------ categories

    def _categories_for(self, item_ids: np.ndarray) -> pd.arrays.IntegerArray:
        found = [self._locate(name) for name in PROPERTY_FILES]
        if all(p is None for p in found):
            logger.warning(
                "No item property files ({}) in {}: category_id is <NA> for every event.",
                " / ".join(PROPERTY_FILES),
                self.data_dir,
            )
            n = len(item_ids)
            return pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))
        # One part present and the other absent is a broken download: name the missing one.
        cats = self._item_categories([self._require(name) for name in PROPERTY_FILES])
        idx = pd.Index(cats[ITEM_ID].to_numpy()).get_indexer(item_ids)
        return cats[CATEGORY_ID].array.take(idx, allow_fill=True)

    def _item_categories(self, paths: list[Path]) -> pd.DataFrame:
        def categoryid_rows(cols: Columns) -> np.ndarray:
            return pc.equal(cols["property"], CATEGORY_PROPERTY).to_numpy(zero_copy_only=False)

        def bad_value(cols: Columns) -> tuple[np.ndarray, str, str]:
            is_cat = categoryid_rows(cols)
            _, empty, bad = _parse_int_text(cols["value"].filter(pa.array(is_cat)))
            out = np.zeros(len(is_cat), dtype=bool)
            out[is_cat] = bad | empty
            return out, "non-integer categoryid value", "value"

        frames = [
            self._read(
                path,
                _PROPERTIES_SPEC,
                checks=(bad_value,),
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

    def _locate(self, name: str) -> Path | None:
        for candidate in (self.data_dir / name, self.data_dir / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        return None

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
    ) -> tuple[pd.DataFrame, np.ndarray]:
        """Read ``path``: typed frame (raw column names) of the good rows, and their line numbers.

        ``checks`` add problems (rows to drop and report); ``select`` picks the rows to return
        among the good ones (the others are not problems and are not reported).
        """
        header = _read_header(path)
        missing = [c for c in spec if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; the file has columns {header}. "
                f"Expected the RetailRocket columns {list(spec)}."
            )
        parsed = self._parse_typed(path, spec)
        if parsed is None:
            parsed = self._parse_text(path, header, spec)
        table, n = parsed.table, parsed.table.num_rows

        # Column values, with the problems found on the way.
        cols: Columns = {}
        problems: list[tuple[np.ndarray, str, str | None]] = []
        nulls: list[np.ndarray] = []
        for name, kind in spec.items():
            arr = table[name]
            if kind in (_INT, _OPT_INT):
                if parsed.typed:
                    values, null = _int_values(arr)
                else:
                    values, null, bad = _parse_int_text(arr)
                    problems.append((bad, f"non-integer {name}", name))
                if kind == _INT:
                    problems.append((null, f"missing {name}", name))
                cols[name] = (values, null)
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
                text = [""] * len(idx) if column is None else _join_text(table, idx)
                drops.append(
                    self._drop_frame(path, parsed.line_of(idx), reason, column, value, text)
                )
        malformed = pd.concat(drops, ignore_index=True).sort_values("line", kind="stable")
        if self.strict and len(malformed):
            self._record(path, parsed, n, 0, malformed, note)
            raise ValueError(self._strict_message(path, malformed))

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
        self._record(path, parsed, n, len(frame), malformed, note)
        return frame, parsed.line_of(kept_idx)

    def _parse_typed(self, path: Path, spec: dict[str, str]) -> _Parsed | None:
        """The fast path: typed, multi-threaded. None when any row needs a closer look."""
        invalid: list[pv.InvalidRow] = []

        def handler(row: pv.InvalidRow) -> str:
            invalid.append(row)
            return "skip"

        try:
            table = pv.read_csv(
                str(path),
                read_options=pv.ReadOptions(use_threads=True),
                parse_options=pv.ParseOptions(
                    invalid_row_handler=handler, ignore_empty_lines=False
                ),
                convert_options=pv.ConvertOptions(
                    include_columns=list(spec),
                    column_types={name: _ARROW_TYPES[kind] for name, kind in spec.items()},
                    null_values=[""],
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            if "conversion error" in str(exc).lower():
                return None
            raise ValueError(f"{path}: cannot be parsed as CSV: {exc}") from exc
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(f"{path}: cannot be read: {exc}") from exc
        if invalid:
            return None
        return _Parsed(table=table, lines=None, invalid=[], typed=True)

    def _parse_text(self, path: Path, header: list[str], spec: dict[str, str]) -> _Parsed:
        """The careful path: every column as text, single-threaded so skipped rows have lines."""
        invalid: list[tuple[int | None, str, int, int]] = []

        def handler(row: pv.InvalidRow) -> str:
            invalid.append((row.number, row.text, row.expected_columns, row.actual_columns))
            return "skip"

        try:
            table = pv.read_csv(
                str(path),
                read_options=pv.ReadOptions(use_threads=False),
                parse_options=pv.ParseOptions(
                    invalid_row_handler=handler, ignore_empty_lines=False
                ),
                convert_options=pv.ConvertOptions(
                    column_types={name: pa.string() for name in header},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
        except (OSError, pa.ArrowException) as exc:
            raise ValueError(f"{path}: cannot be read: {exc}") from exc
        n_rows = table.num_rows + len(invalid)
        skipped = np.array([r[0] for r in invalid if r[0] is not None], dtype=np.int64)
        lines = np.setdiff1d(np.arange(2, n_rows + 2), skipped, assume_unique=True)
        if len(lines) != table.num_rows:  # pyarrow did not say where a skipped row was
            logger.warning("{}: line numbers after a skipped row may be off", path)
            lines = np.arange(2, table.num_rows + 2)
        return _Parsed(table=table, lines=lines, invalid=invalid, typed=False)

    @staticmethod
    def _column(values: object, kind: str, keep: np.ndarray | None):
        if kind == _EVENT:
            codes = values if keep is None else values[keep]
            return pd.Categorical.from_codes(codes, dtype=EVENT_DTYPE)
        if kind == _STR:
            return _filter(values, keep).to_pandas()
        data, null = values
        if keep is not None:
            data, null = data[keep], null[keep]
        if kind == _INT:
            return data
        return pd.arrays.IntegerArray(data, null)

    # ------------------------------------------------------------------ report

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
        return pd.DataFrame(
            {
                "file": pd.Series([str(path)] * len(line), dtype="str"),
                "line": pd.array(list(line), dtype="Int64"),
                "reason": pd.Series(["wrong field count"] * len(line), dtype="str"),
                "column": pd.Series([""] * len(line), dtype="str"),
                "value": pd.Series(
                    [f"{a} fields, expected {e}" for e, a in zip(expected, actual, strict=True)],
                    dtype="str",
                ),
                "text": pd.Series(list(text), dtype="str"),
            }
        )

    def _record(self, path, parsed, n_parsed, n_returned, dropped, note) -> None:
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

    @staticmethod
    def _strict_message(path: Path, malformed: pd.DataFrame) -> str:
        shown = [f"  {_describe(r)}" for r in malformed.head(_STRICT_SHOWN).itertuples(index=False)]
        more = len(malformed) - len(shown)
        tail = [f"  ... and {more:,} more"] if more else []
        return "\n".join(
            [f"{path}: {len(malformed):,} malformed row(s) (strict=True):", *shown, *tail]
        )


def _to_datetime(ms: np.ndarray) -> pd.arrays.DatetimeArray:
    """Milliseconds since the epoch -> datetime64[ms, UTC]."""
    out = pa.array(ms.astype(np.int64, copy=False), pa.timestamp("ms", tz="UTC")).to_pandas()
    return out.array.astype(TIMESTAMP_DTYPE, copy=False)
