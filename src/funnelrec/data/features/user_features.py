"""Per-visitor funnel features: what a visitor did, how far down the funnel, how recently."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import numpy as np
import pandas as pd

from funnelrec.data.schema import (
    CATEGORY_ID,
    EVENT,
    SESSION_ID,
    TIMESTAMP,
    TRANSACTION_ID,
    VISITOR_ID,
    validate_events,
)
from funnelrec.errors import NotFittedError


class FunnelStage(StrEnum):
    """How far down the funnel a visitor has gone in the training period."""

    NEW = "new"  # never seen in training
    BROWSER = "browser"  # views only
    CONSIDERER = "considerer"  # added to cart, never bought
    BUYER = "buyer"  # one purchase
    REPEAT_BUYER = "repeat_buyer"  # two or more purchases


FUNNEL_STAGES: tuple[str, ...] = tuple(s.value for s in FunnelStage)

#: Numeric columns, in the order of :meth:`UserFeatureExtractor.feature_matrix`.
NUMERIC_FEATURES: tuple[str, ...] = (
    "n_views",
    "n_addtocarts",
    "n_transactions",
    "n_purchases",
    "n_sessions",
    "mean_session_length",
    "n_unique_items",
    "view_to_cart_rate",
    "cart_to_purchase_rate",
    "recency_days",
    "tenure_days",
    "intent_score",
)

_INT_COLUMNS = ["n_views", "n_addtocarts", "n_transactions", "n_purchases", "n_sessions",
                "n_unique_items", "n_events"]

_DEFAULTS: dict[str, object] = {
    "n_events": 0,
    "n_views": 0,
    "n_addtocarts": 0,
    "n_transactions": 0,
    "n_purchases": 0,
    "n_sessions": 0,
    "mean_session_length": 0.0,
    "n_unique_items": 0,
    "view_to_cart_rate": 0.0,
    "cart_to_purchase_rate": 0.0,
    "recency_days": np.nan,
    "tenure_days": 0.0,
    "intent_score": 0.0,
    "funnel_stage": FunnelStage.NEW.value,
    "favourite_categories": (),
    "is_known": False,
}


class UserFeatureExtractor:
    """Fit on the training events; look up features for any visitor.

    Features (one row per visitor): event counts per funnel step, number of purchases (distinct
    transaction ids), sessions and mean session length, distinct items, view->cart and
    cart->purchase rates, recency (days between the visitor's last event and the end of the
    training period), tenure (first to last event), up to ``n_favourite_categories`` favourite
    categories (most events first), the funnel stage, and an intent score in [0, 1].

    Intent score: a logistic blend of how far down the funnel the visitor went and how recently,
    ``sigmoid(-2 + 1.5*cart_rate*4 + 1.0*[has cart] + 1.0*[bought] - recency_days/14)``; it orders
    visitors by purchase intent, it is not a calibrated probability.

    Unknown visitors get the defaults: zero counts, ``recency_days`` NaN, ``funnel_stage``
    ``"new"``, no favourite categories, ``is_known`` False.
    """

    def __init__(self, n_favourite_categories: int = 3) -> None:
        if n_favourite_categories < 1:
            raise ValueError(f"n_favourite_categories must be >= 1, got {n_favourite_categories}")
        self.n_favourite_categories = n_favourite_categories
        self.features_: pd.DataFrame | None = None
        self.reference_time_: pd.Timestamp | None = None

    def fit(self, events: pd.DataFrame) -> UserFeatureExtractor:
        validate_events(events)
        if len(events) == 0:
            raise ValueError("cannot fit UserFeatureExtractor on an empty events frame")
        ev = events[EVENT]
        frame = pd.DataFrame(
            {
                VISITOR_ID: events[VISITOR_ID].to_numpy(),
                "is_view": (ev == "view").to_numpy(),
                "is_cart": (ev == "addtocart").to_numpy(),
                "is_txn": (ev == "transaction").to_numpy(),
                TIMESTAMP: events[TIMESTAMP].to_numpy(),
            }
        )
        grouped = frame.groupby(VISITOR_ID, sort=True)
        feats = pd.DataFrame(
            {
                "n_views": grouped["is_view"].sum(),
                "n_addtocarts": grouped["is_cart"].sum(),
                "n_transactions": grouped["is_txn"].sum(),
                "first_seen": grouped[TIMESTAMP].min(),
                "last_seen": grouped[TIMESTAMP].max(),
                "n_events": grouped.size(),
            }
        )
        feats["n_unique_items"] = events.groupby(VISITOR_ID, sort=True)["item_id"].nunique()
        # a purchase is a distinct transaction id; transactions without ids count once per
        # session (or once in all when sessions are unknown)
        is_txn = (ev == "transaction").to_numpy()
        if TRANSACTION_ID in events.columns:
            has_id = is_txn & events[TRANSACTION_ID].notna().to_numpy()
        else:
            has_id = np.zeros(len(events), dtype=bool)
        if has_id.any():
            with_ids = events.loc[has_id, [VISITOR_ID, TRANSACTION_ID]]
            n_purchases = with_ids.groupby(VISITOR_ID)[TRANSACTION_ID].nunique()
        else:
            n_purchases = pd.Series(dtype="int64")
        no_id = is_txn & ~has_id
        if no_id.any():
            key = SESSION_ID if SESSION_ID in events.columns else VISITOR_ID
            extra = events.loc[no_id, [VISITOR_ID, key]].drop_duplicates().groupby(VISITOR_ID).size()
            n_purchases = n_purchases.add(extra, fill_value=0)
        feats["n_purchases"] = n_purchases.reindex(feats.index, fill_value=0).astype("int64")
        if SESSION_ID in events.columns:
            feats["n_sessions"] = events.groupby(VISITOR_ID, sort=True)[SESSION_ID].nunique()
        else:
            feats["n_sessions"] = 1
        feats["mean_session_length"] = feats["n_events"] / feats["n_sessions"]
        feats["view_to_cart_rate"] = (feats["n_addtocarts"] / feats["n_views"].clip(lower=1)).clip(upper=1.0)
        feats["cart_to_purchase_rate"] = (
            feats["n_transactions"] / feats["n_addtocarts"].clip(lower=1)
        ).clip(upper=1.0)
        self.reference_time_ = events[TIMESTAMP].max()
        day = pd.Timedelta(days=1)
        feats["recency_days"] = (self.reference_time_ - feats["last_seen"]) / day
        feats["tenure_days"] = (feats["last_seen"] - feats["first_seen"]) / day
        stage = np.select(
            [feats["n_purchases"] >= 2, feats["n_purchases"] == 1, feats["n_addtocarts"] > 0],
            [FunnelStage.REPEAT_BUYER.value, FunnelStage.BUYER.value, FunnelStage.CONSIDERER.value],
            default=FunnelStage.BROWSER.value,
        )
        feats["funnel_stage"] = stage
        logit = (
            -2.0
            + 6.0 * feats["view_to_cart_rate"]
            + 1.0 * (feats["n_addtocarts"] > 0)
            + 1.0 * (feats["n_purchases"] > 0)
            - feats["recency_days"] / 14.0
        )
        feats["intent_score"] = 1.0 / (1.0 + np.exp(-logit.to_numpy(dtype=float)))
        feats["favourite_categories"] = self._favourite_categories(events).reindex(feats.index)
        feats["favourite_categories"] = feats["favourite_categories"].apply(
            lambda v: v if isinstance(v, tuple) else ()
        )
        feats["is_known"] = True
        feats[_INT_COLUMNS] = feats[_INT_COLUMNS].astype("int64")
        self.features_ = feats
        return self

    def _favourite_categories(self, events: pd.DataFrame) -> pd.Series:
        if CATEGORY_ID not in events.columns:
            return pd.Series(dtype=object)
        known = events.loc[events[CATEGORY_ID].notna(), [VISITOR_ID, CATEGORY_ID]]
        if known.empty:
            return pd.Series(dtype=object)
        counts = known.value_counts([VISITOR_ID, CATEGORY_ID]).reset_index(name="n")
        counts = counts.sort_values([VISITOR_ID, "n", CATEGORY_ID], ascending=[True, False, True])
        top = counts.groupby(VISITOR_ID, sort=False).head(self.n_favourite_categories)
        # one tuple per visitor, built from flat arrays (no per-row Python on the event frame)
        visitors = top[VISITOR_ID].to_numpy()
        cats = top[CATEGORY_ID].to_numpy(dtype="int64")
        bounds = np.flatnonzero(np.r_[True, visitors[1:] != visitors[:-1], True])
        return pd.Series(
            [tuple(cats[a:b].tolist()) for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
            index=visitors[bounds[:-1]],
        )

    def _check_fitted(self) -> pd.DataFrame:
        if self.features_ is None:

            raise NotFittedError("UserFeatureExtractor is not fitted; call fit(train) first")
        return self.features_

    def transform(self, visitor_ids: Iterable[int] | np.ndarray) -> pd.DataFrame:
        """Features of ``visitor_ids`` (in that order, index = visitor_id); unknown get defaults."""
        feats = self._check_fitted()
        ids = np.asarray(list(visitor_ids) if not isinstance(visitor_ids, np.ndarray) else visitor_ids)
        out = feats.reindex(ids)
        unknown = ~out["is_known"].fillna(False).astype(bool).to_numpy()
        if unknown.any():
            for column, default in _DEFAULTS.items():
                if column == "favourite_categories":
                    out.loc[unknown, column] = pd.Series([()] * int(unknown.sum()), index=out.index[unknown])
                else:
                    out.loc[unknown, column] = default
            out[_INT_COLUMNS] = out[_INT_COLUMNS].astype("int64")
            out["is_known"] = out["is_known"].astype(bool)
        out.index.name = VISITOR_ID
        return out

    def get_features(self, visitor_id: int) -> dict:
        """Features of one visitor as a plain dict (defaults for an unknown visitor)."""
        row = self.transform([visitor_id]).iloc[0]
        result = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        result[VISITOR_ID] = int(visitor_id)
        return result

    def get_stage(self, visitor_id: int) -> str:
        feats = self._check_fitted()
        return str(feats["funnel_stage"].get(visitor_id, FunnelStage.NEW.value))

    def feature_matrix(self, visitor_ids: Iterable[int] | np.ndarray) -> np.ndarray:
        """float32 matrix of :data:`NUMERIC_FEATURES` plus a one-hot funnel stage, for models.

        Counts are log1p-scaled and recency is capped at 365 days (unknown visitors: 365), so
        columns live on comparable scales.
        """
        frame = self.transform(visitor_ids)
        numeric = frame[list(NUMERIC_FEATURES)].astype(float)
        numeric["recency_days"] = numeric["recency_days"].fillna(365.0).clip(upper=365.0) / 30.0
        numeric["tenure_days"] = numeric["tenure_days"] / 30.0
        counts = ["n_views", "n_addtocarts", "n_transactions", "n_purchases", "n_sessions",
                  "mean_session_length", "n_unique_items"]
        numeric[counts] = np.log1p(numeric[counts])
        stages = pd.Categorical(frame["funnel_stage"], categories=list(FUNNEL_STAGES))
        one_hot = np.eye(len(FUNNEL_STAGES), dtype=np.float32)[stages.codes]
        return np.hstack([numeric.to_numpy(dtype=np.float32), one_hot])

    @property
    def feature_names(self) -> list[str]:
        return list(NUMERIC_FEATURES) + [f"stage_{s}" for s in FUNNEL_STAGES]
