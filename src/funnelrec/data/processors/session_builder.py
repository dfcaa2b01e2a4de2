"""Sessionisation and the session filters of the session-based literature."""

from __future__ import annotations

import numpy as np
import pandas as pd
from loguru import logger

from funnelrec.data.schema import (
    ITEM_ID,
    SESSION_ID,
    TIMESTAMP,
    VISITOR_ID,
    event_codes,
    timestamp_ms,
    validate_events,
)


class SessionBuilder:
    """Cut each visitor's events into sessions at gaps longer than ``timeout_minutes``.

    Vectorised: sort once by (visitor, time, funnel step), flag a new session where the visitor
    changes or the gap exceeds the timeout, cumulative sum. Deterministic; never mutates its input.
    """

    def __init__(self, timeout_minutes: float | None = None) -> None:
        from funnelrec.config import settings

        timeout = settings.session_timeout_minutes if timeout_minutes is None else timeout_minutes
        if not timeout > 0:
            raise ValueError(f"timeout_minutes must be positive, got {timeout_minutes}")
        self.timeout_minutes = float(timeout)

    def build_sessions(self, events: pd.DataFrame) -> pd.DataFrame:
        """Return a copy of ``events`` with ``session_id`` (int64, 0..n-1), sorted by session and time.

        Session ids are numbered in (visitor_id, start time) order, so the same events always
        get the same ids. A gap equal to the timeout stays in the session.
        """
        validate_events(events)
        if len(events) == 0:
            out = events.copy()
            out[SESSION_ID] = np.empty(0, dtype=np.int64)
            return out
        visitors = events[VISITOR_ID].to_numpy()
        ts = timestamp_ms(events)  # ms since epoch
        order = np.lexsort((event_codes(events), ts, visitors))
        v, t = visitors[order], ts[order]
        timeout_ms = self.timeout_minutes * 60_000
        new_session = np.r_[True, (v[1:] != v[:-1]) | (np.diff(t) > timeout_ms)]
        out = events.iloc[order].reset_index(drop=True)
        out[SESSION_ID] = (np.cumsum(new_session) - 1).astype(np.int64)
        logger.info(
            "Built {:,} sessions from {:,} events ({:,} visitors), timeout {} min",
            int(new_session.sum()), len(out), len(np.unique(v)), self.timeout_minutes,
        )
        return out

    @staticmethod
    def _require_sessions(events: pd.DataFrame) -> None:
        validate_events(events, require=(SESSION_ID,))

    def filter_short_sessions(self, events: pd.DataFrame, min_length: int = 2) -> pd.DataFrame:
        """Keep sessions with at least ``min_length`` events (a copy)."""
        if min_length < 1:
            raise ValueError(f"min_length must be >= 1, got {min_length}")
        self._require_sessions(events)
        sizes = events.groupby(SESSION_ID, sort=False)[SESSION_ID].transform("size")
        kept = events[sizes.to_numpy() >= min_length].reset_index(drop=True)
        logger.info(
            "Kept {:,} of {:,} events in sessions of length >= {}", len(kept), len(events), min_length
        )
        return kept

    def filter_iteratively(
        self,
        events: pd.DataFrame,
        *,
        min_item_support: int = 5,
        min_session_length: int = 2,
        drop_consecutive_repeats: bool = False,
        max_rounds: int = 100,
    ) -> pd.DataFrame:
        """The session-based literature's filter: repeat until stable

        - drop items with fewer than ``min_item_support`` events,
        - drop sessions shorter than ``min_session_length``.

        With ``drop_consecutive_repeats`` an event whose item equals the previous event's item in
        the same session is dropped first (a reload, not a new step).
        """
        self._require_sessions(events)
        if min_item_support < 1 or min_session_length < 1:
            raise ValueError(
                f"min_item_support and min_session_length must be >= 1, got "
                f"{min_item_support} and {min_session_length}"
            )
        frame = events
        if drop_consecutive_repeats:
            frame = self.drop_consecutive_repeats(frame)
        for round_no in range(1, max_rounds + 1):  # noqa: B007  (reported after the loop)
            n_before = len(frame)
            support = frame.groupby(ITEM_ID, sort=False)[ITEM_ID].transform("size").to_numpy()
            frame = frame[support >= min_item_support]
            sizes = frame.groupby(SESSION_ID, sort=False)[SESSION_ID].transform("size").to_numpy()
            frame = frame[sizes >= min_session_length]
            if len(frame) == n_before:
                break
        else:
            logger.warning("filter_iteratively did not converge in {} rounds", max_rounds)
        logger.info(
            "Iterative filter: {:,} -> {:,} events in {} round(s)", len(events), len(frame), round_no
        )
        return frame.reset_index(drop=True)

    def drop_consecutive_repeats(self, events: pd.DataFrame) -> pd.DataFrame:
        """Drop an event whose item repeats the previous event of the same session (a copy)."""
        self._require_sessions(events)
        frame = events.sort_values([SESSION_ID, TIMESTAMP], kind="stable")
        s = frame[SESSION_ID].to_numpy()
        i = frame[ITEM_ID].to_numpy()
        repeat = np.r_[False, (s[1:] == s[:-1]) & (i[1:] == i[:-1])]
        return frame[~repeat].reset_index(drop=True)
