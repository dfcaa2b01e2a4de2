"""Per-item features: popularity, funnel conversion rates, category."""

from __future__ import annotations

import numpy as np
import pandas as pd

from funnelrec.data.encoding import event_weight_array
from funnelrec.data.schema import CATEGORY_ID, EVENT, ITEM_ID, VISITOR_ID, validate_events
from funnelrec.errors import NotFittedError

#: Numeric columns of :meth:`ItemFeatureExtractor.feature_matrix`.
ITEM_NUMERIC_FEATURES: tuple[str, ...] = (
    "log_popularity",
    "log_n_visitors",
    "view_to_cart_rate",
    "cart_to_purchase_rate",
    "view_to_purchase_rate",
)


class ItemFeatureExtractor:
    """Item popularity, conversion rates and category from training events.

    Rates are smoothed towards the catalogue-wide rate with ``prior_strength`` pseudo-events
    (a Beta prior), so an item with one view and one cart is not called a 100% converter.
    """

    def __init__(self, prior_strength: float = 20.0, event_weights: dict[str, float] | None = None) -> None:
        if prior_strength < 0:
            raise ValueError(f"prior_strength must be >= 0, got {prior_strength}")
        self.prior_strength = prior_strength
        self.event_weights = event_weights
        self.features_: pd.DataFrame | None = None

    def fit(self, events: pd.DataFrame) -> ItemFeatureExtractor:
        from funnelrec.config import settings

        validate_events(events)
        if len(events) == 0:
            raise ValueError("cannot fit ItemFeatureExtractor on an empty events frame")
        weights = self.event_weights or settings.event_weights.as_dict()
        ev = events[EVENT]
        frame = pd.DataFrame(
            {
                ITEM_ID: events[ITEM_ID].to_numpy(),
                "n_views": (ev == "view").to_numpy(),
                "n_addtocarts": (ev == "addtocart").to_numpy(),
                "n_transactions": (ev == "transaction").to_numpy(),
                "popularity": event_weight_array(events, weights),
            }
        )
        feats = frame.groupby(ITEM_ID, sort=True).sum()
        feats[["n_views", "n_addtocarts", "n_transactions"]] = feats[
            ["n_views", "n_addtocarts", "n_transactions"]
        ].astype("int64")
        feats["n_visitors"] = events.groupby(ITEM_ID, sort=True)[VISITOR_ID].nunique()
        a = self.prior_strength
        totals = feats[["n_views", "n_addtocarts", "n_transactions"]].sum()
        p_cart = totals["n_addtocarts"] / max(totals["n_views"], 1)
        p_buy = totals["n_transactions"] / max(totals["n_addtocarts"], 1)
        p_vbuy = totals["n_transactions"] / max(totals["n_views"], 1)
        feats["view_to_cart_rate"] = (feats["n_addtocarts"] + a * p_cart) / (feats["n_views"] + a)
        feats["cart_to_purchase_rate"] = (feats["n_transactions"] + a * p_buy) / (feats["n_addtocarts"] + a)
        feats["view_to_purchase_rate"] = (feats["n_transactions"] + a * p_vbuy) / (feats["n_views"] + a)
        for column in ("view_to_cart_rate", "cart_to_purchase_rate", "view_to_purchase_rate"):
            feats[column] = feats[column].clip(0.0, 1.0)
        if CATEGORY_ID in events.columns:
            cats = events.loc[events[CATEGORY_ID].notna(), [ITEM_ID, CATEGORY_ID]].drop_duplicates(ITEM_ID, keep="last")
            feats[CATEGORY_ID] = cats.set_index(ITEM_ID)[CATEGORY_ID].reindex(feats.index).astype("Int64")
        else:
            feats[CATEGORY_ID] = pd.array([pd.NA] * len(feats), dtype="Int64")
        feats["log_popularity"] = np.log1p(feats["popularity"].to_numpy(dtype=float))
        feats["log_n_visitors"] = np.log1p(feats["n_visitors"].to_numpy(dtype=float))
        self.features_ = feats
        # what an item never seen in training gets: no events, the catalogue-wide rates
        self.defaults_ = {
            "n_views": 0, "n_addtocarts": 0, "n_transactions": 0, "n_visitors": 0, "popularity": 0.0,
            "log_popularity": 0.0, "log_n_visitors": 0.0, "view_to_cart_rate": float(p_cart),
            "cart_to_purchase_rate": float(p_buy), "view_to_purchase_rate": float(p_vbuy),
        }
        return self

    def _check_fitted(self) -> pd.DataFrame:
        if self.features_ is None:

            raise NotFittedError("ItemFeatureExtractor is not fitted; call fit(train) first")
        return self.features_

    def transform(self, item_ids: np.ndarray | list[int]) -> pd.DataFrame:
        """Features of ``item_ids`` in that order; unknown items get zero counts and prior rates."""
        feats = self._check_fitted()
        out = feats.reindex(np.asarray(item_ids)).fillna(self.defaults_)
        for column in ("n_views", "n_addtocarts", "n_transactions", "n_visitors"):
            out[column] = out[column].astype("int64")
        out.index.name = ITEM_ID
        return out

    def feature_matrix(self, item_ids: np.ndarray | list[int]) -> np.ndarray:
        """float32 matrix of :data:`ITEM_NUMERIC_FEATURES` (unknown items: zeros and prior rates)."""
        return self.transform(item_ids)[list(ITEM_NUMERIC_FEATURES)].to_numpy(np.float32)

    def item_categories(self) -> pd.Series:
        """category_id per item_id (nullable)."""
        return self._check_fitted()[CATEGORY_ID]
