"""Global-time train/validation/test split that keeps sessions whole."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from loguru import logger

from funnelrec.data.schema import ITEM_ID, SESSION_ID, timestamp_ms, validate_events


@dataclass(frozen=True)
class SplitReport:
    """What a split did: boundaries and what was dropped."""

    n_train: int
    n_val: int
    n_test: int
    val_start: pd.Timestamp | None
    test_start: pd.Timestamp | None
    dropped_unseen_val: int = 0
    dropped_unseen_test: int = 0


class TimeBasedSplitter:
    """Split events by global time into train / validation / test, whole sessions at a time.

    Sessions are ordered by their start time and assigned in that order until each part holds
    its share of the events (``train_ratio`` etc. are shares of events, not of sessions).

    Invariants (tested):

    - without ``drop_unseen_items`` the three parts add up exactly to the input;
    - no session is split across parts;
    - every validation session starts at or after the start of the last training session, and
      every test session at or after the start of the last validation session.

    A training session may still run past the start of the first validation session: sessions
    are kept whole rather than cut at the boundary.

    With ``drop_unseen_items`` the validation and test parts lose events whose item never occurs
    in train (counted in :attr:`report_`), as the next-item literature does.
    """

    def __init__(
        self,
        train_ratio: float | None = None,
        val_ratio: float | None = None,
        test_ratio: float | None = None,
        *,
        drop_unseen_items: bool = False,
    ) -> None:
        from funnelrec.config import settings

        ratios = (
            settings.train_ratio if train_ratio is None else train_ratio,
            settings.val_ratio if val_ratio is None else val_ratio,
            settings.test_ratio if test_ratio is None else test_ratio,
        )
        if any(r < 0 for r in ratios) or ratios[0] <= 0:
            raise ValueError(f"ratios must be >= 0 with train_ratio > 0, got {ratios}")
        if not np.isclose(sum(ratios), 1.0, atol=1e-6):
            raise ValueError(
                f"train_ratio + val_ratio + test_ratio must sum to 1, got "
                f"{ratios[0]} + {ratios[1]} + {ratios[2]} = {sum(ratios):g}"
            )
        self.train_ratio, self.val_ratio, self.test_ratio = ratios
        self.drop_unseen_items = drop_unseen_items
        self.report_: SplitReport | None = None

    def split(self, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """Return ``(train, val, test)`` copies. Builds sessions first if ``session_id`` is absent."""
        validate_events(events)
        if SESSION_ID not in events.columns:
            from funnelrec.data.processors.session_builder import SessionBuilder

            logger.info("events have no session_id; building sessions with the default timeout")
            events = SessionBuilder().build_sessions(events)
        if len(events) == 0:
            raise ValueError("cannot split an empty events frame")

        session_codes, session_uniques = pd.factorize(events[SESSION_ID], sort=False)
        ts = timestamp_ms(events)
        n_sessions = len(session_uniques)
        starts = np.full(n_sessions, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(starts, session_codes, ts)
        sizes = np.bincount(session_codes, minlength=n_sessions)
        order = np.lexsort((np.asarray(session_uniques), starts))  # by start, ties by session id
        cum = np.cumsum(sizes[order]) / len(events)
        part_sorted = np.where(
            cum <= self.train_ratio + 1e-12, 0, np.where(cum <= self.train_ratio + self.val_ratio + 1e-12, 1, 2)
        )
        # at least one session for training, and test empty only when test_ratio is 0
        part_sorted[0] = 0
        if self.test_ratio == 0:
            part_sorted[part_sorted == 2] = 1 if self.val_ratio > 0 else 0
        part_of_session = np.empty(n_sessions, dtype=np.int8)
        part_of_session[order] = part_sorted
        part = part_of_session[session_codes]

        train = events[part == 0].reset_index(drop=True)
        val = events[part == 1].reset_index(drop=True)
        test = events[part == 2].reset_index(drop=True)
        dropped_val = dropped_test = 0
        if self.drop_unseen_items:
            seen = pd.Index(train[ITEM_ID].unique())
            keep_val = val[ITEM_ID].isin(seen).to_numpy()
            keep_test = test[ITEM_ID].isin(seen).to_numpy()
            dropped_val, dropped_test = int((~keep_val).sum()), int((~keep_test).sum())
            val = val[keep_val].reset_index(drop=True)
            test = test[keep_test].reset_index(drop=True)

        def first_start(p: int) -> pd.Timestamp | None:
            mask = part_sorted == p
            return pd.Timestamp(starts[order][mask][0], unit="ms", tz="UTC") if mask.any() else None

        self.report_ = SplitReport(
            len(train), len(val), len(test), first_start(1), first_start(2), dropped_val, dropped_test
        )
        logger.info(
            "Split {:,} events -> train {:,} / val {:,} / test {:,}{}",
            len(events), len(train), len(val), len(test),
            f" (dropped unseen items: val {dropped_val:,}, test {dropped_test:,})"
            if self.drop_unseen_items else "",
        )
        return train, val, test
