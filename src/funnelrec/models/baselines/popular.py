"""Most-popular items, weighted by funnel step, optionally decayed over time."""

from __future__ import annotations

import numpy as np
import pandas as pd

from funnelrec.data.encoding import Interactions, Sequences, event_weight_array
from funnelrec.data.schema import TIMESTAMP
from funnelrec.models.base import Recommender, StateArrays, register


@register("popular")
class PopularItemsRecommender(Recommender):
    """Rank items by event-type-weighted popularity in the training period.

    Parameters
    ----------
    half_life_days:
        If set, an event ``d`` days before the end of training counts ``0.5 ** (d / half_life_days)``
        (time decay); ``None`` counts every event fully.
    use_categories:
        For a live session (``recommend_by_item_ids``), rank items of the session's categories
        first (by their popularity), then the rest.
    """

    name = "Popular"

    def __init__(self, half_life_days: float | None = None, use_categories: bool = True) -> None:
        if half_life_days is not None and not half_life_days > 0:
            raise ValueError(f"half_life_days must be positive or None, got {half_life_days}")
        self.half_life_days = half_life_days
        self.use_categories = use_categories

    def _fit(self, data: Interactions, events: pd.DataFrame, val_events: pd.DataFrame | None) -> None:
        weights = event_weight_array(events, data.event_weights).astype(np.float64)
        if self.half_life_days is not None:
            ts = events[TIMESTAMP]
            age_days = (ts.max() - ts).dt.total_seconds().to_numpy() / 86_400.0
            weights = weights * np.power(0.5, age_days / self.half_life_days)
        item_idx = data.item_map.to_idx(events["item_id"].to_numpy())
        scores = np.bincount(item_idx, weights=weights, minlength=data.n_items)
        self.scores_ = scores.astype(np.float32)

    def _fallback_popularity(self) -> np.ndarray:
        return self.scores_

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.scores_, (len(user_idx), len(self.scores_)))

    def _score_sessions(self, sessions: Sequences) -> np.ndarray:
        scores = np.broadcast_to(self.scores_, (len(sessions), len(self.scores_))).astype(np.float32)
        if not self.use_categories:
            return scores
        # +max so every in-category item outranks every other; rows are sessions
        rows = np.repeat(np.arange(len(sessions)), sessions.lengths)
        cats = self.item_category_[sessions.items]
        rows, cats = rows[cats >= 0], cats[cats >= 0]
        if len(cats) == 0:
            return scores
        cat_codes, cat_values = pd.factorize(cats)
        in_session = np.zeros((len(sessions), len(cat_values)), dtype=bool)
        in_session[rows, cat_codes] = True
        item_code = pd.Index(cat_values).get_indexer(self.item_category_)
        boost = np.zeros((len(sessions), len(self.scores_)), dtype=bool)
        has = item_code >= 0
        boost[:, has] = in_session[:, item_code[has]]
        return scores + boost * (self.scores_.max() + 1.0)

    def _score_similar(self, item_idx: np.ndarray) -> np.ndarray:
        # "similar" for a popularity model: popular items of the same category first
        sessions = Sequences(item_idx, np.arange(len(item_idx) + 1, dtype=np.int64), item_idx)
        return self._score_sessions(sessions)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"scores": self.scores_}

    def _validate_state(self, state: StateArrays) -> None:
        state.get("scores", "f", (self.n_items,), finite=True)

    def _set_state(self, arrays, path) -> None:
        self.scores_ = arrays["scores"]
