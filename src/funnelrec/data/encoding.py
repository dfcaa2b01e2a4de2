"""Ids <-> dense indices, and the interaction structures every model builds from.

``*_id`` is an external id (what the shop uses), ``*_idx`` an internal dense index.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from funnelrec.data.schema import (
    EVENT_TYPES,
    ITEM_ID,
    SESSION_ID,
    VISITOR_ID,
    event_codes,
    timestamp_ms,
)


class IdMap:
    """An immutable, vectorised mapping between external ids and dense indices ``0..n-1``."""

    __slots__ = ("_index",)

    def __init__(self, ids: Iterable[int] | np.ndarray) -> None:
        array = np.asarray(list(ids) if not isinstance(ids, np.ndarray | pd.Index | pd.Series) else ids)
        index = pd.Index(array.astype("int64", copy=False))
        if not index.is_unique:
            dupes = index[index.duplicated()].unique()[:5].tolist()
            raise ValueError(f"IdMap ids must be unique; duplicated, e.g. {dupes}")
        self._index = index

    @classmethod
    def from_values(cls, values: Iterable[int] | np.ndarray | pd.Series) -> IdMap:
        """Build from (possibly repeated) values; indices follow sorted id order."""
        return cls(np.unique(np.asarray(values, dtype="int64")))

    @property
    def ids(self) -> np.ndarray:
        """External ids, position = index. A read-only view."""
        values = self._index.to_numpy()
        values.flags.writeable = False
        return values

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._index.equals(other._index)

    def __hash__(self) -> int:  # immutable, so hashable by content
        return hash((len(self), tuple(self._index[:16].tolist())))

    def __repr__(self) -> str:
        return f"IdMap(n={len(self)})"

    def to_idx(self, ids: Iterable[int] | np.ndarray | int, *, missing: int = -1) -> np.ndarray:
        """Dense indices for ``ids``; unknown ids get ``missing`` (default -1)."""
        array = np.atleast_1d(np.asarray(ids))
        if array.size == 0:
            return np.empty(0, dtype=np.int64)
        if not np.issubdtype(array.dtype, np.integer):
            try:
                as_int = array.astype("int64")
            except (TypeError, ValueError) as exc:
                raise TypeError(f"ids must be integers, got {array[:3].tolist()}") from exc
            if np.issubdtype(array.dtype, np.floating) and not np.array_equal(as_int, array):
                raise TypeError(f"ids must be integers, got {array[as_int != array][:3].tolist()}")
            array = as_int
        idx = self._index.get_indexer(array).astype(np.int64, copy=False)
        if missing != -1:
            idx[idx == -1] = missing
        return idx

    def to_ids(self, idx: np.ndarray | Iterable[int]) -> np.ndarray:
        """External ids for dense indices (which must be valid)."""
        return self._index.to_numpy()[np.asarray(idx, dtype=np.int64)]


def event_weight_array(events: pd.DataFrame, weights: Mapping[str, float]) -> np.ndarray:
    """Per-event weight from its funnel step (vectorised lookup on the category codes)."""
    missing = [e for e in EVENT_TYPES if e not in weights]
    if missing:
        raise ValueError(f"event weights are missing {missing}")
    table = np.array([weights[e] for e in EVENT_TYPES], dtype=np.float32)
    return table[event_codes(events)]


@dataclass(frozen=True)
class Sequences:
    """Variable-length index sequences stored flat: ``items[offsets[i]:offsets[i+1]]`` is row i."""

    items: np.ndarray  # int64 item indices
    offsets: np.ndarray  # int64, len = n + 1
    keys: np.ndarray  # external key per sequence (session_id or visitor_id)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @classmethod
    def single(cls, items: np.ndarray) -> Sequences:
        """One sequence (a live session) of item indices, keyed 0."""
        items = np.asarray(items, dtype=np.int64)
        return cls(items, np.array([0, len(items)], dtype=np.int64), np.zeros(1, np.int64))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def get(self, i: int) -> np.ndarray:
        return self.items[self.offsets[i] : self.offsets[i + 1]]

    def to_lists(self) -> list[list[int]]:
        return [arr.tolist() for arr in np.split(self.items, self.offsets[1:-1])] if len(self) else []

    def take(self, rows: np.ndarray) -> Sequences:
        """The sequences at positions ``rows`` (vectorised gather)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = self.lengths[rows]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.repeat(self.offsets[rows] - offsets[:-1], lengths) + np.arange(offsets[-1])
        return Sequences(self.items[take], offsets, self.keys[rows])

    def tails(self, max_length: int) -> Sequences:
        """The last ``max_length`` items of every sequence (vectorised)."""
        lengths = np.minimum(self.lengths, max_length)
        starts = self.offsets[1:] - lengths
        new_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
        return Sequences(self.items[take], new_offsets, self.keys)


def sequences_from_sorted(group_keys: np.ndarray, item_idx: np.ndarray) -> Sequences:
    """Build :class:`Sequences` from rows already sorted by group (then time)."""
    if len(group_keys) == 0:
        return Sequences(np.empty(0, np.int64), np.zeros(1, np.int64), np.empty(0, np.int64))
    starts = np.flatnonzero(np.r_[True, group_keys[1:] != group_keys[:-1]])
    offsets = np.r_[starts, len(group_keys)].astype(np.int64)
    return Sequences(np.asarray(item_idx, dtype=np.int64), offsets, np.asarray(group_keys)[starts])


class Interactions:
    """A visitor x item CSR of event weights plus time-ordered sequences, on dense indices.

    Built once from a canonical events frame; the frame is never modified.
    """

    def __init__(
        self,
        events: pd.DataFrame,
        *,
        visitor_map: IdMap | None = None,
        item_map: IdMap | None = None,
        event_weights: Mapping[str, float] | None = None,
    ) -> None:
        from funnelrec.config import settings

        weights = dict(event_weights) if event_weights is not None else settings.event_weights.as_dict()
        self.visitor_map = visitor_map or IdMap.from_values(events[VISITOR_ID].to_numpy())
        self.item_map = item_map or IdMap.from_values(events[ITEM_ID].to_numpy())
        visitor_idx = self.visitor_map.to_idx(events[VISITOR_ID].to_numpy())
        item_idx = self.item_map.to_idx(events[ITEM_ID].to_numpy())
        known = (visitor_idx >= 0) & (item_idx >= 0)
        self.n_unknown_events = int((~known).sum())
        self.event_weights = weights
        w = event_weight_array(events, weights)[known]
        self.matrix = sp.csr_matrix(
            (w, (visitor_idx[known], item_idx[known])),
            shape=(len(self.visitor_map), len(self.item_map)),
            dtype=np.float32,
        )
        self.matrix.sum_duplicates()
        # Time order, funnel order within a timestamp; a stable sort keeps file order otherwise.
        ts = timestamp_ms(events)
        ev = event_codes(events)
        order = np.lexsort((ev, ts, visitor_idx))
        order = order[known[order]]
        self._visitor_sorted = visitor_idx[order]
        self._item_sorted = item_idx[order]
        self._ts_sorted = ts[order]
        self._session_sorted = (
            events[SESSION_ID].to_numpy()[order] if SESSION_ID in events.columns else None
        )

    @property
    def n_visitors(self) -> int:
        return len(self.visitor_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)

    def item_counts(self) -> np.ndarray:
        """Number of events per item index."""
        return np.bincount(self._item_sorted, minlength=self.n_items)

    def visitor_sequences(self) -> Sequences:
        """Each visitor's items in time order; keys are visitor indices."""
        return sequences_from_sorted(self._visitor_sorted, self._item_sorted)

    def session_sequences(self) -> Sequences:
        """Each session's items in time order; keys are session ids. Needs ``session_id``."""
        if self._session_sorted is None:
            raise ValueError("events have no 'session_id' column; run SessionBuilder.build_sessions first")
        # sessions never span visitors, so (visitor, time) order groups them once re-sorted by id+time
        order = np.lexsort((self._ts_sorted, self._session_sorted))
        return sequences_from_sorted(self._session_sorted[order], self._item_sorted[order])

    def session_visitor_idx(self) -> np.ndarray:
        """Visitor index of each session in :meth:`session_sequences` order."""
        if self._session_sorted is None:
            raise ValueError("events have no 'session_id' column")
        order = np.lexsort((self._ts_sorted, self._session_sorted))
        s = self._session_sorted[order]
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if len(s) else np.empty(0, np.int64)
        return self._visitor_sorted[order][starts]


def next_item_targets(sessions: Sequences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every next-item prediction of every session, without building the prefixes.

    Returns ``(session_row, prefix_length, targets)``: prediction ``j`` reads the first
    ``prefix_length[j]`` items of session ``session_row[j]`` and its target is the next item.
    Memory is linear in the events, where the prefixes themselves grow with the square of
    the session length (a bot's 5,000-event session alone has 12.5 million prefix items).
    """
    lengths = sessions.lengths
    n_targets = np.maximum(lengths - 1, 0)
    total = int(n_targets.sum())
    session_row = np.repeat(np.arange(len(sessions)), n_targets)
    # position of the target within its session: 1 .. length-1 (= the prefix length)
    prefix_length = np.arange(total) - np.repeat(np.cumsum(n_targets) - n_targets, n_targets) + 1
    targets = sessions.items[sessions.offsets[:-1][session_row] + prefix_length]
    return session_row, prefix_length, targets


def take_prefixes(sessions: Sequences, session_row: np.ndarray, prefix_length: np.ndarray) -> Sequences:
    """The prefixes ``sessions[session_row[j]][:prefix_length[j]]`` as one :class:`Sequences`."""
    starts = sessions.offsets[:-1][session_row]
    offsets = np.concatenate([[0], np.cumsum(prefix_length)]).astype(np.int64)
    take = np.repeat(starts - offsets[:-1], prefix_length) + np.arange(offsets[-1])
    return Sequences(sessions.items[take], offsets, np.arange(len(session_row)))


def expand_prefixes(sessions: Sequences) -> tuple[Sequences, np.ndarray, np.ndarray]:
    """Every next-item prediction of every session: ``(prefixes, targets, session_row)``.

    For a session ``[a, b, c]`` the prefixes are ``[a]`` and ``[a, b]`` with targets ``b`` and
    ``c``. Vectorised; prefix ``j`` belongs to session row ``session_row[j]``. Quadratic in the
    session length: for samples or blocks use :func:`next_item_targets` + :func:`take_prefixes`.
    """
    session_row, prefix_length, targets = next_item_targets(sessions)
    return take_prefixes(sessions, session_row, prefix_length), targets, session_row


def slice_sequences(sequences: Sequences, start: int, stop: int) -> Sequences:
    """Rows ``start:stop`` as a new :class:`Sequences` (a view of the flat items)."""
    lo, hi = sequences.offsets[start], sequences.offsets[stop]
    return Sequences(
        sequences.items[lo:hi], sequences.offsets[start : stop + 1] - lo, sequences.keys[start:stop]
    )
