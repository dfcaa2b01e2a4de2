"""Funnel-aware, faithful explanations of recommendations.

:class:`RecommendationExplainer` is fitted on the training events and explains any
``(visitor, item, score)`` a model produced. It does not look inside the model: it states facts
about the training data that connect the visitor to the item, ranks them by how strong they are
and by where the visitor stands in the funnel, and says how much evidence there is.

Faithfulness
------------
Every fact an explanation states is true in the frame the explainer was fitted on, and the
``evidence`` dict of each :class:`Reason` holds the ids and counts it rests on:

========================  =====================================================================
evidence ``kind``         fact (all counts are distinct visitors or distinct items)
========================  =====================================================================
``co_view``               ``count`` other visitors viewed both ``source_item_id`` and ``item_id``
``co_purchase``           ``count`` other visitors bought (transaction) both items
``view_then_buy``         ``count`` other visitors viewed ``source_item_id``, bought ``item_id``
``in_cart``               the visitor added ``item_id`` to the cart ``count`` times, never bought it
``category_match``        ``item_id`` is in ``category_id``; the visitor has ``count`` other items
                          of it among their viewed items (``source="history"``), bought items
                          (``"purchases"``) or live session (``"live_session"``)
``category_rank``         ``item_id`` ranks ``rank`` of ``n_items`` items of its category by events
``popularity``            ``item_id`` has ``count`` events, rank ``rank`` of ``n_items`` items
``component_weights``     the weights the caller (a hybrid model) passed in, normalised
``new_item``              ``item_id`` has no event in the training data
========================  =====================================================================

"Other visitors" leaves out the visitor being explained: their own views and purchases are
never counted as evidence that others behave like them.

The ``source`` of a co-occurrence says where the visitor's ``source_item_id`` comes from:
``"cart"`` (added to cart, not bought), ``"purchases"`` (bought), ``"history"`` (viewed),
``"last_session"`` (viewed in the visitor's last training session) or ``"live_session"`` (the
``session_item_ids`` passed in). A reason type without evidence is left out; an item with no
evidence at all gets one popularity reason with its real event count; an item unknown to
training gets one honest "new to the catalogue" reason and confidence 0.

Funnel awareness
----------------
The visitor's funnel stage (:class:`~funnelrec.data.features.user_features.FunnelStage`) picks
the wording and multiplies each reason's strength by :data:`STAGE_PRIORITY`:

=============  ======  =======  =============  =======  ==========
stage          intent  session  collaborative  content  popularity
=============  ======  =======  =============  =======  ==========
new            1.0     1.6      1.0            1.3      1.1
browser        1.0     1.2      1.0            1.5      1.3
considerer     2.0     1.2      1.0            0.8      0.5
buyer          1.8     1.0      1.2            1.3      0.6
repeat_buyer   2.0     1.0      1.2            1.3      0.5
=============  ======  =======  =============  =======  ==========

so a visitor with items in the cart hears about complements of the cart first ("intent"), a
browser about categories and what is popular, a returning buyer about what goes with previous
purchases ("intent": co-purchases of bought items; "content": the category of a bought item).

Strength and confidence
-----------------------
A personal reason carries an evidence mass ``EVIDENCE_WEIGHTS[kind] * count``; its strength is
``1 - exp(-mass / evidence_scale)``. Non-personal reasons (popularity, category rank, component
weights) have small fixed strengths and no mass. ``Reason.weight`` is the reason's share of the
stage-weighted strengths (the weights of one explanation sum to 1). ``confidence`` is
``1 - exp(-sum of masses / evidence_scale)``: 0 without personal evidence, growing with it.

Persistence
-----------
:meth:`RecommendationExplainer.save` writes a folder (``config.json`` + ``state.npz``, no pickle)
atomically; :meth:`RecommendationExplainer.load` reads it back, raising
:class:`~funnelrec.models.base.ArtifactError` for a missing, corrupted or newer-format file. Of
the user feature extractor only the funnel stage per visitor is kept (:class:`FunnelStageTable`).
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from loguru import logger

from funnelrec import __version__
from funnelrec.data.encoding import IdMap
from funnelrec.data.features.user_features import FunnelStage, UserFeatureExtractor
from funnelrec.data.schema import (
    CATEGORY_ID,
    EVENT,
    ITEM_ID,
    SESSION_ID,
    VISITOR_ID,
    timestamp_ms,
    validate_events,
)
from funnelrec.models.base import ArtifactError, NotFittedError, atomic_dir


class ReasonType(StrEnum):
    """What kind of evidence a reason rests on."""

    COLLABORATIVE = "collaborative"  # other visitors' co-views / purchases of the visitor's items
    CONTENT = "content"  # the item's category
    INTENT = "intent"  # the visitor's funnel position: cart contents, previous purchases
    SESSION = "session"  # the live session, or the visitor's last session
    POPULARITY = "popularity"  # how many events the item has


_STAGES = [s.value for s in FunnelStage]
_T = ReasonType

#: stage -> reason type -> multiplier of the reason's strength (see the module docstring).
STAGE_PRIORITY: dict[str, dict[ReasonType, float]] = {
    FunnelStage.NEW: {_T.INTENT: 1.0, _T.SESSION: 1.6, _T.COLLABORATIVE: 1.0, _T.CONTENT: 1.3, _T.POPULARITY: 1.1},
    FunnelStage.BROWSER: {_T.INTENT: 1.0, _T.SESSION: 1.2, _T.COLLABORATIVE: 1.0, _T.CONTENT: 1.5, _T.POPULARITY: 1.3},
    FunnelStage.CONSIDERER: {_T.INTENT: 2.0, _T.SESSION: 1.2, _T.COLLABORATIVE: 1.0, _T.CONTENT: 0.8, _T.POPULARITY: 0.5},
    FunnelStage.BUYER: {_T.INTENT: 1.8, _T.SESSION: 1.0, _T.COLLABORATIVE: 1.2, _T.CONTENT: 1.3, _T.POPULARITY: 0.6},
    FunnelStage.REPEAT_BUYER: {_T.INTENT: 2.0, _T.SESSION: 1.0, _T.COLLABORATIVE: 1.2, _T.CONTENT: 1.3, _T.POPULARITY: 0.5},
}

#: Evidence mass per unit of count, by evidence kind (personal evidence only).
EVIDENCE_WEIGHTS: dict[str, float] = {
    "in_cart": 2.0,
    "co_purchase": 1.0,
    "view_then_buy": 0.7,
    "co_view": 0.4,
    "category_match": 0.25,
}

#: Strength of the non-personal reasons at their best (top item, a single dominant component).
POPULARITY_STRENGTH = 0.1
CATEGORY_RANK_STRENGTH = 0.08
COMPONENT_STRENGTH = 0.1

#: Component names a hybrid model may pass in ``component_weights`` -> (reason type, wording).
COMPONENT_LABELS: dict[str, tuple[ReasonType, str]] = {
    "session": (_T.SESSION, "your current session"),
    "short_term": (_T.SESSION, "your current session"),
    "sequential": (_T.SESSION, "your current session"),
    "history": (_T.COLLABORATIVE, "your history"),
    "long_term": (_T.COLLABORATIVE, "your history"),
    "cf": (_T.COLLABORATIVE, "shoppers like you"),
    "collaborative": (_T.COLLABORATIVE, "shoppers like you"),
    "content": (_T.CONTENT, "items similar to yours"),
    "popular": (_T.POPULARITY, "what is popular"),
    "popularity": (_T.POPULARITY, "what is popular"),
    "intent": (_T.INTENT, "where you are in your shopping"),
}

#: Evidence kind -> (what visitors did with the source item, what they did with the target).
_SIDES: dict[str, tuple[str, str]] = {
    "co_view": ("viewed", "viewed"),
    "co_purchase": ("bought", "bought"),
    "view_then_buy": ("viewed", "bought"),
}

_EXPLORING = {FunnelStage.NEW.value, FunnelStage.BROWSER.value}
_RETURNING = {FunnelStage.BUYER.value, FunnelStage.REPEAT_BUYER.value}


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Reason:
    """One reason: its type, a sentence, its share of the explanation, and what it rests on."""

    type: ReasonType
    text: str
    weight: float
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": str(self.type.value),
            "text": self.text,
            "weight": float(self.weight),
            "evidence": _plain(self.evidence),
        }


@dataclass
class Explanation:
    """Why ``item_id`` was recommended: reasons (strongest first) and a confidence in [0, 1]."""

    item_id: int
    score: float
    model_name: str
    reasons: list[Reason] = field(default_factory=list)
    confidence: float = 0.0
    funnel_stage: str = FunnelStage.NEW.value
    visitor_id: int | None = None

    def get_summary(self) -> str:
        """One sentence: the strongest reason."""
        if not self.reasons:
            return f"No explanation is available for item {self.item_id}."
        return self.reasons[0].text

    def get_full_explanation(self) -> str:
        """All reasons, strongest first, as numbered lines."""
        return "\n".join(f"{i}. {reason.text}" for i, reason in enumerate(self.reasons, start=1))

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only (``json.dumps`` works on it)."""
        return {
            "item_id": int(self.item_id),
            "score": float(self.score),
            "model_name": str(self.model_name),
            "visitor_id": None if self.visitor_id is None else int(self.visitor_id),
            "funnel_stage": str(self.funnel_stage),
            "confidence": float(self.confidence),
            "summary": self.get_summary(),
            "reasons": [reason.to_dict() for reason in self.reasons],
        }


def _plain(value: Any) -> Any:
    """Numpy scalars/arrays and nested containers -> plain Python types."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# --------------------------------------------------------------------------- sparse helpers
def _binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = matrix.copy()
    out.data = np.ones_like(out.data, dtype=np.int32)
    return out.astype(np.int32)


def _top_n_per_row(block: sp.csr_matrix, top_n: int, row_offset: int) -> sp.csr_matrix:
    """Keep the ``top_n`` largest entries of every row (ties: smaller column first), no diagonal."""
    coo = block.tocoo()
    rows, cols, data = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    keep = (rows + row_offset != cols) & (data > 0)
    rows, cols, data = rows[keep], cols[keep], data[keep]
    order = np.lexsort((cols, -data, rows))
    rows, cols, data = rows[order], cols[order], data[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    keep = rank < top_n
    out = sp.csr_matrix((data[keep], (rows[keep], cols[keep])), shape=block.shape, dtype=np.int32)
    out.sort_indices()
    return out


def cooccurrence(
    left: sp.csr_matrix, right: sp.csr_matrix, top_n: int, block_size: int = 1024
) -> sp.csr_matrix:
    """``left.T @ right`` (item x item, counts of visitors), top ``top_n`` per row, no diagonal.

    Computed in blocks of ``block_size`` rows so the full product is never held at once.
    """
    left_t = left.T.tocsr()
    n_items = left_t.shape[0]
    blocks = []
    for start in range(0, n_items, block_size):
        product = (left_t[start : start + block_size] @ right).tocsr()
        blocks.append(_top_n_per_row(product, top_n, start))
    if not blocks:
        return sp.csr_matrix((0, right.shape[1]), dtype=np.int32)
    return sp.vstack(blocks, format="csr").astype(np.int32)


# --------------------------------------------------------------------------- the explainer
@dataclass
class _Visitor:
    """What the explainer knows about one visitor, as sorted item-index arrays."""

    visitor_id: int
    stage: str
    viewed: np.ndarray
    carted_open: np.ndarray  # added to cart, never bought
    cart_adds: dict[int, int]  # item idx -> number of addtocart events (for carted_open)
    bought: np.ndarray
    session: np.ndarray  # the live session if given, else the last training session's views
    session_source: str  # "live_session" | "last_session"


@dataclass
class _Candidate:
    type: ReasonType
    text: str
    strength: float
    mass: float
    evidence: dict[str, Any]


class RecommendationExplainer:
    """Explain recommendations with true, funnel-aware reasons. See the module docstring.

    Parameters
    ----------
    user_feature_extractor:
        A fitted :class:`UserFeatureExtractor`; gives the visitor's funnel stage. ``None``: one is
        fitted on the training events.
    item_popularity:
        ``item_id -> event count`` (``train['item_id'].value_counts().to_dict()``). ``None``, or
        an item missing from it: the event count in the training events.
    max_neighbors:
        Co-occurrences kept per item and relation (the strongest); bounds memory.
    evidence_scale:
        ``c`` in ``1 - exp(-mass / c)``, for reason strength and confidence.
    item_names:
        Optional ``item_id -> display name``; otherwise items read as "item 123".
    """

    def __init__(
        self,
        user_feature_extractor: UserFeatureExtractor | None = None,
        item_popularity: Mapping[int, int] | None = None,
        *,
        max_neighbors: int = 50,
        evidence_scale: float = 5.0,
        item_names: Mapping[int, str] | None = None,
    ) -> None:
        if max_neighbors < 1:
            raise ValueError(f"max_neighbors must be >= 1, got {max_neighbors}")
        if not (evidence_scale > 0 and math.isfinite(evidence_scale)):
            raise ValueError(f"evidence_scale must be a positive number, got {evidence_scale}")
        if item_popularity is not None and not isinstance(item_popularity, Mapping):
            raise TypeError(
                f"item_popularity must be a mapping item_id -> count, got {type(item_popularity).__name__}"
            )
        self.user_feature_extractor = user_feature_extractor
        self.item_popularity = item_popularity
        self.max_neighbors = max_neighbors
        self.evidence_scale = evidence_scale
        self.item_names = item_names
        self.item_map_: IdMap | None = None

    # ------------------------------------------------------------------ fit
    def fit(self, events: pd.DataFrame) -> RecommendationExplainer:
        """Build co-occurrences, item categories and popularity, and every visitor's history."""
        validate_events(events)
        if len(events) == 0:
            raise ValueError("cannot fit RecommendationExplainer on an empty events frame")
        extractor = self.user_feature_extractor
        if extractor is None:
            extractor = UserFeatureExtractor().fit(events)
        elif extractor.features_ is None:
            raise NotFittedError(
                "user_feature_extractor is not fitted; call user_feature_extractor.fit(train) first"
            )
        self.stages_ = extractor

        item_map = IdMap.from_values(events[ITEM_ID].to_numpy())
        visitor_map = IdMap.from_values(events[VISITOR_ID].to_numpy())
        item_idx = item_map.to_idx(events[ITEM_ID].to_numpy())
        visitor_idx = visitor_map.to_idx(events[VISITOR_ID].to_numpy())
        codes = events[EVENT].cat.codes.to_numpy()
        code_of = {name: i for i, name in enumerate(events[EVENT].cat.categories)}
        shape = (len(visitor_map), len(item_map))

        def counts(mask: np.ndarray) -> sp.csr_matrix:
            ones = np.ones(int(mask.sum()), dtype=np.int32)
            m = sp.csr_matrix((ones, (visitor_idx[mask], item_idx[mask])), shape=shape, dtype=np.int32)
            m.sum_duplicates()
            return m

        is_view = codes == code_of.get("view", -2)
        self.views_ = counts(is_view)
        self.carts_ = counts(codes == code_of.get("addtocart", -2))
        self.buys_ = counts(codes == code_of.get("transaction", -2))
        views_b, buys_b = _binary(self.views_), _binary(self.buys_)
        self.co_view_ = cooccurrence(views_b, views_b, self.max_neighbors)
        self.co_purchase_ = cooccurrence(buys_b, buys_b, self.max_neighbors)
        self.view_buy_ = cooccurrence(views_b, buys_b, self.max_neighbors)

        # the visitor's last session: views in the session of their latest event
        if SESSION_ID in events.columns:
            sessions = events[SESSION_ID].to_numpy()
            order = np.lexsort((timestamp_ms(events), visitor_idx))
            v_sorted = visitor_idx[order]
            last = order[np.r_[v_sorted[1:] != v_sorted[:-1], True]]
            last_session = np.empty(len(visitor_map), dtype=sessions.dtype)
            last_session[visitor_idx[last]] = sessions[last]
            self.last_session_views_ = counts(is_view & (sessions == last_session[visitor_idx]))
        else:  # no sessions: no last-session reasons
            self.last_session_views_ = sp.csr_matrix(shape, dtype=np.int32)

        # item categories (the last one seen per item), -1 / has_category_ False when unknown
        self.item_category_ = np.full(len(item_map), -1, dtype=np.int64)
        self.has_category_ = np.zeros(len(item_map), dtype=bool)
        if CATEGORY_ID in events.columns:
            known = events[CATEGORY_ID].notna().to_numpy()
            if known.any():
                cats = pd.Series(events[CATEGORY_ID].to_numpy()[known].astype(np.int64))
                last_cat = cats.groupby(item_idx[known]).last()
                self.item_category_[last_cat.index.to_numpy()] = last_cat.to_numpy()
                self.has_category_[last_cat.index.to_numpy()] = True

        # popularity: the caller's mapping, else training event counts; ranks over all items named
        train_counts = pd.Series(np.bincount(item_idx, minlength=len(item_map)), index=item_map.ids)
        if self.item_popularity is not None:
            given = pd.Series(
                {int(k): int(v) for k, v in self.item_popularity.items()}, dtype="int64"
            )
            if (given < 0).any():
                bad = given[given < 0].index[:5].tolist()
                raise ValueError(f"item_popularity has negative counts, e.g. for items {bad}")
            universe = train_counts.copy()
            universe.update(given)
            universe = pd.concat([universe, given[~given.index.isin(universe.index)]])
        else:
            universe = train_counts
        sorted_counts = np.sort(universe.to_numpy())
        self.popularity_ = universe.reindex(item_map.ids).to_numpy(dtype=np.int64)
        self.popularity_rank_ = 1 + len(sorted_counts) - np.searchsorted(
            sorted_counts, self.popularity_, side="right"
        )
        self.n_ranked_items_ = len(sorted_counts)
        cat_frame = pd.DataFrame({"cat": self.item_category_, "pop": self.popularity_})
        cat_frame = cat_frame[self.has_category_]
        self.category_rank_ = np.zeros(len(item_map), dtype=np.int64)
        self.category_size_ = np.zeros(len(item_map), dtype=np.int64)
        if len(cat_frame):
            ranks = cat_frame.groupby("cat")["pop"].rank(method="min", ascending=False)
            sizes = cat_frame.groupby("cat")["pop"].transform("size")
            self.category_rank_[cat_frame.index.to_numpy()] = ranks.to_numpy(dtype=np.int64)
            self.category_size_[cat_frame.index.to_numpy()] = sizes.to_numpy(dtype=np.int64)

        self.item_map_ = item_map
        self.visitor_map_ = visitor_map
        logger.debug(
            "explainer fitted: {} items, {} visitors, co-view nnz {}, co-purchase nnz {}, "
            "view->buy nnz {}",
            len(item_map), len(visitor_map), self.co_view_.nnz, self.co_purchase_.nnz,
            self.view_buy_.nnz,
        )
        return self

    def _check_fitted(self) -> IdMap:
        if self.item_map_ is None:
            raise NotFittedError("RecommendationExplainer is not fitted; call fit(train) first")
        return self.item_map_

    # ------------------------------------------------------------------ public API
    def explain(
        self,
        visitor_id: int,
        item_id: int,
        score: float,
        model_name: str,
        session_item_ids: Sequence[int] | None = None,
        component_weights: Mapping[str, float] | None = None,
        *,
        funnel_stage: str | None = None,
    ) -> Explanation:
        """Explain one recommended item for one visitor (``funnel_stage`` overrides the stage)."""
        return self.explain_batch(
            user_id=visitor_id,
            recommendations=[(item_id, score)],
            model_name=model_name,
            session_item_ids=session_item_ids,
            component_weights=component_weights,
            funnel_stage=funnel_stage,
        )[0]

    def explain_batch(
        self,
        user_id: int,
        recommendations: Iterable[tuple[int, float]],
        model_name: str,
        session_item_ids: Sequence[int] | None = None,
        component_weights: Mapping[str, float] | None = None,
        *,
        funnel_stage: str | None = None,
    ) -> list[Explanation]:
        """Explain a visitor's recommendations ``[(item_id, score), ...]``, in the same order."""
        item_map = self._check_fitted()
        item_ids, scores = _parse_recommendations(recommendations)
        if funnel_stage is not None and funnel_stage not in _STAGES:
            raise ValueError(f"funnel_stage must be one of {_STAGES}, got {funnel_stage!r}")
        visitor = self._visitor(user_id, session_item_ids, funnel_stage)
        component = self._component_candidate(component_weights, model_name)
        y_idx = item_map.to_idx(item_ids) if len(item_ids) else np.empty(0, np.int64)
        known = y_idx >= 0
        per_item: list[list[_Candidate]] = [[] for _ in item_ids]
        if known.any():
            for pos, cands in zip(
                np.flatnonzero(known), self._candidates(visitor, y_idx[known]), strict=True
            ):
                per_item[pos] = cands
        out = []
        for pos, item_id in enumerate(item_ids):
            if not known[pos]:
                cands = [self._new_item_candidate(int(item_id))]
            else:
                cands = list(per_item[pos])
                if component is not None:
                    cands.append(component)
                if not cands:  # cannot happen for a known item (it has events) but stay honest
                    cands = [self._popularity_candidate(int(y_idx[pos]), visitor.stage, force=True)]
            out.append(self._assemble(int(item_id), float(scores[pos]), model_name, visitor, cands))
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save the fitted explainer to the folder ``path`` atomically (JSON + npz, no pickle).

        ``config.json`` holds the parameters and format version; ``state.npz`` every learned array,
        the caller's ``item_popularity`` / ``item_names`` mappings, and each visitor's funnel stage
        (all the user feature extractor contributes to an explanation). The folder is written
        beside ``path`` and renamed into place, so a failed save leaves a previous one intact.
        """
        item_map = self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        stage_ids, stage_codes = _stage_arrays(self.stages_)
        config = {
            "format_version": EXPLAINER_FORMAT_VERSION,
            "funnelrec_version": __version__,
            "artifact": "explainer",
            "class": type(self).__name__,
            "params": {"max_neighbors": int(self.max_neighbors),
                       "evidence_scale": float(self.evidence_scale)},
            "n_ranked_items": int(self.n_ranked_items_),
            "stages": list(_STAGES),
        }
        arrays: dict[str, np.ndarray] = {
            "item_ids": np.asarray(item_map.ids, dtype=np.int64),
            "visitor_ids": np.asarray(self.visitor_map_.ids, dtype=np.int64),
            "stage_visitor_ids": stage_ids,
            "stage_codes": stage_codes,
        }
        for name in _VISITOR_MATRICES + _ITEM_MATRICES:
            matrix = getattr(self, name).tocsr()
            arrays[f"{name}data"] = matrix.data
            arrays[f"{name}indices"] = matrix.indices
            arrays[f"{name}indptr"] = matrix.indptr
        for name in _ITEM_ARRAYS:
            arrays[name] = np.asarray(getattr(self, name))
        if self.item_popularity is not None:
            arrays["param_item_popularity_ids"] = np.fromiter(
                (int(k) for k in self.item_popularity), dtype=np.int64, count=len(self.item_popularity)
            )
            arrays["param_item_popularity_counts"] = np.fromiter(
                (int(v) for v in self.item_popularity.values()), dtype=np.int64,
                count=len(self.item_popularity),
            )
        if self.item_names is not None:
            arrays["param_item_name_ids"] = np.fromiter(
                (int(k) for k in self.item_names), dtype=np.int64, count=len(self.item_names)
            )
            arrays["param_item_name_values"] = np.array(
                [str(v) for v in self.item_names.values()], dtype=np.str_
            )
        with atomic_dir(path) as tmp:
            np.savez(tmp / EXPLAINER_STATE_FILE, **arrays)
            (tmp / EXPLAINER_CONFIG_FILE).write_text(json.dumps(config, indent=2))
        logger.info("Saved RecommendationExplainer to {}", path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RecommendationExplainer:
        """Load an explainer written by :meth:`save`.

        A missing, corrupted or newer-format file raises :class:`ArtifactError` naming it. The
        loaded explainer looks funnel stages up in the saved table (its
        ``user_feature_extractor`` is ``None``; refitting it fits a fresh extractor).
        """
        path = Path(path)
        config_path = path / EXPLAINER_CONFIG_FILE
        if not config_path.is_file():
            raise ArtifactError(f"no explainer at {path}: {config_path} does not exist")
        try:
            config = json.loads(config_path.read_text())
            version = int(config["format_version"])
            params = dict(config["params"])
            n_ranked = int(config["n_ranked_items"])
            stage_names = [str(s) for s in config["stages"]]
            kind = config.get("class", cls.__name__)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{config_path} is corrupted: {exc}") from exc
        if version > EXPLAINER_FORMAT_VERSION:
            raise ArtifactError(
                f"{config_path} has format version {version}, newer than this funnelrec "
                f"({__version__}) reads ({EXPLAINER_FORMAT_VERSION}); upgrade funnelrec"
            )
        if kind != cls.__name__:
            raise ArtifactError(f"{config_path} holds a {kind}, not a {cls.__name__}")
        unknown_stages = sorted(set(stage_names) - set(_STAGES))
        if unknown_stages:
            raise ArtifactError(f"{config_path} names unknown funnel stages {unknown_stages}")
        state_path = path / EXPLAINER_STATE_FILE
        try:
            with np.load(state_path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            popularity = names = None
            if "param_item_popularity_ids" in arrays:
                popularity = dict(zip(arrays["param_item_popularity_ids"].tolist(),
                                      arrays["param_item_popularity_counts"].tolist(), strict=True))
            if "param_item_name_ids" in arrays:
                names = dict(zip(arrays["param_item_name_ids"].tolist(),
                                 arrays["param_item_name_values"].tolist(), strict=True))
            explainer = cls(None, popularity, item_names=names, **params)
            item_map, visitor_map = IdMap(arrays["item_ids"]), IdMap(arrays["visitor_ids"])
            n_items, n_visitors = len(item_map), len(visitor_map)
            for name in _VISITOR_MATRICES + _ITEM_MATRICES:
                rows = n_visitors if name in _VISITOR_MATRICES else n_items
                setattr(explainer, name, _csr(arrays, name, (rows, n_items)))
            for name in _ITEM_ARRAYS:
                if arrays[name].shape != (n_items,):
                    raise ValueError(f"{name} has shape {arrays[name].shape}, expected ({n_items},)")
                setattr(explainer, name, arrays[name])
            codes = arrays["stage_codes"].astype(np.int64)
            if codes.size and (codes.min() < 0 or codes.max() >= len(stage_names)):
                raise ValueError("stage_codes out of range")
            explainer.stages_ = FunnelStageTable(
                arrays["stage_visitor_ids"], np.asarray(stage_names, dtype=object)[codes]
            )
        except ArtifactError:
            raise
        except (OSError, ValueError, KeyError, TypeError, IndexError, EOFError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"{state_path} is corrupted or incomplete: {exc}") from exc
        explainer.n_ranked_items_ = n_ranked
        explainer.item_map_ = item_map
        explainer.visitor_map_ = visitor_map
        return explainer

    # ------------------------------------------------------------------ visitor context
    def _visitor(
        self, visitor_id: int, session_item_ids: Sequence[int] | None, stage: str | None
    ) -> _Visitor:
        try:
            visitor_id = int(visitor_id)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"user_id must be an integer id, got {visitor_id!r}") from exc
        if stage is None:
            stage = str(self.stages_.get_stage(visitor_id))
        v = int(self.visitor_map_.to_idx(visitor_id)[0])
        empty = np.empty(0, dtype=np.int64)
        if v >= 0:
            viewed = self.views_[v].indices.astype(np.int64)
            bought = self.buys_[v].indices.astype(np.int64)
            cart_row = self.carts_[v]
            open_mask = ~np.isin(cart_row.indices, bought)
            carted_open = cart_row.indices[open_mask].astype(np.int64)
            cart_adds = dict(zip(carted_open.tolist(), cart_row.data[open_mask].tolist(), strict=True))
            last_session = self.last_session_views_[v].indices.astype(np.int64)
        else:
            viewed, bought, carted_open, cart_adds, last_session = empty, empty, empty, {}, empty
        if session_item_ids is not None:
            ids = np.asarray(list(session_item_ids))
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                raise TypeError(f"session_item_ids must be integer ids, got {ids[:3].tolist()}")
            live = self.item_map_.to_idx(ids) if ids.size else empty
            session, source = np.unique(live[live >= 0]), "live_session"
        else:
            session, source = np.sort(last_session), "last_session"
        return _Visitor(
            visitor_id, stage, np.sort(viewed), np.sort(carted_open), cart_adds, np.sort(bought),
            session, source,
        )

    # ------------------------------------------------------------------ candidate reasons
    def _label(self, item_id: int) -> str:
        if self.item_names is not None and item_id in self.item_names:
            return str(self.item_names[item_id])
        return f"item {item_id}"

    def _strength(self, mass: float) -> float:
        return float(1.0 - math.exp(-mass / self.evidence_scale))

    def _best_pairs(
        self,
        visitor: _Visitor,
        sources: np.ndarray,
        y_idx: np.ndarray,
        relations: list[tuple[str, sp.csr_matrix]],
    ) -> list[tuple[str, int, int, float] | None]:
        """Per target: the strongest (kind, source idx, count, mass) over sources and relations.

        Counts are of *other* visitors: the explained visitor's own co-occurrence is taken out.
        """
        best: list[tuple[str, int, int, float] | None] = [None] * len(y_idx)
        if len(sources) == 0 or len(y_idx) == 0:
            return best
        masses, counts, kinds = [], [], []
        for kind, matrix in relations:
            sub = matrix[sources][:, y_idx].toarray().astype(np.int64)
            sub[sources[:, None] == y_idx[None, :]] = 0
            left, right = (visitor.viewed if k == "viewed" else visitor.bought for k in _SIDES[kind])
            own = np.isin(sources, left)[:, None] & np.isin(y_idx, right)[None, :]
            sub = np.maximum(sub - own, 0)  # a kept pair the visitor made themself counts one less
            counts.append(sub)
            masses.append(sub * EVIDENCE_WEIGHTS[kind])
            kinds.append(kind)
        mass = np.stack(masses)  # relation x source x target
        count = np.stack(counts)
        flat = mass.reshape(-1, len(y_idx))
        winner = flat.argmax(axis=0)  # first max: earlier relation, then smaller item id
        for j, w in enumerate(winner.tolist()):
            r, s = divmod(w, len(sources))
            if count[r, s, j] > 0:
                best[j] = (kinds[r], int(sources[s]), int(count[r, s, j]), float(mass[r, s, j]))
        return best

    def _pair_candidate(
        self,
        rtype: ReasonType,
        source: str,
        lead: str,
        y: int,
        pair: tuple[str, int, int, float],
    ) -> _Candidate:
        kind, x, n, mass = pair
        item_ids = self.item_map_.ids
        x_id, y_id = int(item_ids[x]), int(item_ids[y])
        x_label, y_label = self._label(x_id), self._label(y_id)
        verbs = _SIDES[kind]
        who = "other visitor" if n == 1 else "other visitors"
        fact = f"{n} {who} who {verbs[0]} {x_label} also {verbs[1]} {y_label}"
        text = lead.format(x=x_label) + fact + "."
        evidence = {"kind": kind, "source": source, "item_id": y_id, "source_item_id": x_id,
                    "count": n}
        return _Candidate(rtype, text, self._strength(mass), mass, evidence)

    def _candidates(self, visitor: _Visitor, y_idx: np.ndarray) -> list[list[_Candidate]]:
        stage = visitor.stage
        out: list[list[_Candidate]] = [[] for _ in y_idx]

        # intent: the item itself waits in the cart
        for j, y in enumerate(y_idx.tolist()):
            n = visitor.cart_adds.get(y)
            if n:
                y_id = int(self.item_map_.ids[y])
                times = "" if n == 1 else (" twice" if n == 2 else f" {n} times")
                mass = EVIDENCE_WEIGHTS["in_cart"] * n
                text = f"You added {self._label(y_id)} to your cart{times} and have not bought it yet."
                evidence = {"kind": "in_cart", "source": "cart", "item_id": y_id, "count": int(n)}
                out[j].append(_Candidate(_T.INTENT, text, self._strength(mass), mass, evidence))

        # intent: complements of the cart, then of previous purchases
        cart = self._best_pairs(
            visitor, visitor.carted_open, y_idx,
            [("co_purchase", self.co_purchase_), ("view_then_buy", self.view_buy_)],
        )
        bought = self._best_pairs(visitor, visitor.bought, y_idx, [("co_purchase", self.co_purchase_)])
        # session: the live session, else the last visit; collaborative: the rest of the viewing
        # history. Sources are disjoint (cart, purchases, session, history), so no fact is told twice.
        funnel_items = np.concatenate([visitor.carted_open, visitor.bought])
        session_items = np.setdiff1d(visitor.session, funnel_items)
        session = self._best_pairs(
            visitor, session_items, y_idx, [("view_then_buy", self.view_buy_), ("co_view", self.co_view_)]
        )
        history_items = np.setdiff1d(visitor.viewed, np.concatenate([funnel_items, visitor.session]))
        history = self._best_pairs(
            visitor, history_items, y_idx, [("view_then_buy", self.view_buy_), ("co_view", self.co_view_)]
        )
        session_lead = (
            "You just viewed {x}: " if visitor.session_source == "live_session"
            else "In your last visit you viewed {x}: "
        )
        if stage in _EXPLORING:
            history_lead = "Shoppers who browse like you: you viewed {x}, and "
        elif stage in _RETURNING:
            history_lead = "From your browsing history: you viewed {x}, and "
        else:
            history_lead = "You looked at {x}: "
        for j, y in enumerate(y_idx.tolist()):
            if cart[j] is not None:
                lead = "Goes with {x}, which you added to your cart: "
                out[j].append(self._pair_candidate(_T.INTENT, "cart", lead, y, cart[j]))
            if bought[j] is not None:
                lead = "You bought {x}: "
                out[j].append(self._pair_candidate(_T.INTENT, "purchases", lead, y, bought[j]))
            if session[j] is not None:
                out[j].append(
                    self._pair_candidate(_T.SESSION, visitor.session_source, session_lead, y, session[j])
                )
            if history[j] is not None:
                out[j].append(self._pair_candidate(_T.COLLABORATIVE, "history", history_lead, y, history[j]))
            content = self._category_candidate(visitor, y)
            if content is not None:
                out[j].append(content)
            popularity = self._popularity_candidate(y, stage, force=not out[j])
            if popularity is not None:
                out[j].append(popularity)
        return out

    def _category_candidate(self, visitor: _Visitor, y: int) -> _Candidate | None:
        if not self.has_category_[y]:
            return None
        cat = int(self.item_category_[y])
        item_ids = self.item_map_.ids
        y_id = int(item_ids[y])

        def matching(items: np.ndarray) -> np.ndarray:
            items = items[items != y]
            return items[self.has_category_[items] & (self.item_category_[items] == cat)]

        options = []
        if visitor.stage in _RETURNING:
            options.append(("purchases", visitor.bought))
        options += [("history", visitor.viewed)]
        if visitor.session_source == "live_session":
            options.append(("live_session", visitor.session))
        for source, items in options:
            match = matching(items)
            if len(match) == 0:
                continue
            m = len(match)
            examples = [int(i) for i in item_ids[match[:3]]]
            first = self._label(examples[0])
            if source == "purchases" and m == 1:
                text = f"Same category ({cat}) as {first}, which you bought."
            elif source == "purchases":
                others = f"{m - 1} other item{'s' if m > 2 else ''}"
                text = f"Same category ({cat}) as {first} and {others} you bought."
            elif source == "history":
                what = "1 item" if m == 1 else f"{m} items"
                text = f"Matches your interest in category {cat}: you viewed {what} there, e.g. {first}."
            else:
                what = first if m == 1 else f"{first} and {m - 1} more"
                text = f"In category {cat}, like {what} in your current session."
            mass = EVIDENCE_WEIGHTS["category_match"] * m
            evidence = {"kind": "category_match", "source": source, "item_id": y_id,
                        "category_id": cat, "matching_item_ids": examples, "count": m}
            return _Candidate(_T.CONTENT, text, self._strength(mass), mass, evidence)
        rank, size = int(self.category_rank_[y]), int(self.category_size_[y])
        text = f"From category {cat}, where it ranks #{rank} of {size} items by interactions."
        evidence = {"kind": "category_rank", "item_id": y_id, "category_id": cat, "rank": rank,
                    "n_items": size}
        strength = CATEGORY_RANK_STRENGTH * (1.0 - (rank - 1) / max(size, 1))
        return _Candidate(_T.CONTENT, text, strength, 0.0, evidence)

    def _popularity_candidate(self, y: int, stage: str, *, force: bool) -> _Candidate | None:
        count = int(self.popularity_[y])
        if count <= 0 and not force:
            return None
        rank, n = int(self.popularity_rank_[y]), int(self.n_ranked_items_)
        if stage in _EXPLORING:
            lead = "Popular with other shoppers"
        elif stage in _RETURNING:
            lead = "Popular with other customers"
        else:
            lead = "A popular pick"
        what = "1 interaction" if count == 1 else f"{count} interactions"
        text = f"{lead}: {what}, #{rank} of {n} items."
        y_id = int(self.item_map_.ids[y])
        evidence = {"kind": "popularity", "item_id": y_id, "count": count, "rank": rank, "n_items": n}
        strength = POPULARITY_STRENGTH * (1.0 - (rank - 1) / max(n, 1))
        return _Candidate(_T.POPULARITY, text, strength, 0.0, evidence)

    def _new_item_candidate(self, item_id: int) -> _Candidate:
        text = f"New to the catalogue: {self._label(item_id)} has no interactions yet."
        evidence = {"kind": "new_item", "item_id": item_id, "count": 0}
        return _Candidate(_T.POPULARITY, text, 1.0, 0.0, evidence)

    def _component_candidate(
        self, weights: Mapping[str, float] | None, model_name: str
    ) -> _Candidate | None:
        if weights is None:
            return None
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError(f"component_weights must be a non-empty mapping name -> weight, got {weights!r}")
        values = {str(k): float(v) for k, v in weights.items()}
        bad = {k: v for k, v in values.items() if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"component_weights must be finite and >= 0, got {bad}")
        total = sum(values.values())
        if total <= 0:
            raise ValueError(f"component_weights must not all be zero, got {values}")
        shares = {k: v / total for k, v in values.items()}
        ranked = sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
        top, share = ranked[0]
        rtype, label = COMPONENT_LABELS.get(top.lower(), (_T.COLLABORATIVE, f"the {top} component"))

        def describe(name: str) -> str:
            return COMPONENT_LABELS.get(name.lower(), (None, f"the {name} component"))[1]

        if share >= 0.5:
            text = f"Mostly from {label} ({share:.0%} of the {model_name} weight)."
        else:
            parts = ", ".join(f"{describe(k)} {v:.0%}" for k, v in ranked)
            text = f"A blend in {model_name}: {parts}."
        evidence = {"kind": "component_weights", "dominant": top,
                    "component_weights": {k: float(v) for k, v in shares.items()}}
        return _Candidate(rtype, text, COMPONENT_STRENGTH * share, 0.0, evidence)

    # ------------------------------------------------------------------ ranking
    def _assemble(
        self, item_id: int, score: float, model_name: str, visitor: _Visitor, cands: list[_Candidate]
    ) -> Explanation:
        table = STAGE_PRIORITY.get(visitor.stage, STAGE_PRIORITY[FunnelStage.NEW])
        type_order = list(ReasonType)
        priorities = [c.strength * table[c.type] for c in cands]
        order = sorted(
            range(len(cands)), key=lambda i: (-priorities[i], type_order.index(cands[i].type), i)
        )
        total = sum(priorities)
        reasons = [
            Reason(
                type=cands[i].type,
                text=cands[i].text,
                weight=float(priorities[i] / total) if total > 0 else 1.0 / len(cands),
                evidence=_plain(cands[i].evidence),
            )
            for i in order
        ]
        mass = sum(c.mass for c in cands)
        confidence = self._strength(mass) if mass > 0 else 0.0
        return Explanation(
            item_id=item_id,
            score=score,
            model_name=str(model_name),
            reasons=reasons,
            confidence=float(min(max(confidence, 0.0), 1.0)),
            funnel_stage=str(visitor.stage),
            visitor_id=visitor.visitor_id,
        )


# --------------------------------------------------------------------------- persistence helpers
EXPLAINER_FORMAT_VERSION = 1
EXPLAINER_CONFIG_FILE = "config.json"
EXPLAINER_STATE_FILE = "state.npz"
#: Visitor x item and item x item count matrices, saved as ``<name>data/indices/indptr``.
_VISITOR_MATRICES = ("views_", "carts_", "buys_", "last_session_views_")
_ITEM_MATRICES = ("co_view_", "co_purchase_", "view_buy_")
#: Per-item arrays.
_ITEM_ARRAYS = (
    "item_category_", "has_category_", "popularity_", "popularity_rank_", "category_rank_",
    "category_size_",
)


class FunnelStageTable:
    """Funnel stage per visitor, as a loaded explainer keeps it (``get_stage`` like the extractor)."""

    def __init__(self, visitor_ids: np.ndarray, stages: np.ndarray) -> None:
        if len(visitor_ids) != len(stages):
            raise ValueError(f"{len(visitor_ids)} visitor ids but {len(stages)} stages")
        self._map = IdMap(visitor_ids)
        self._stages = np.asarray(stages, dtype=object)

    def __len__(self) -> int:
        return len(self._map)

    def get_stage(self, visitor_id: int) -> str:
        idx = int(self._map.to_idx([visitor_id])[0])
        return FunnelStage.NEW.value if idx < 0 else str(self._stages[idx])


def _stage_arrays(stages: UserFeatureExtractor | FunnelStageTable) -> tuple[np.ndarray, np.ndarray]:
    """``(visitor_ids, codes into _STAGES)`` of a fitted extractor or a loaded stage table."""
    if isinstance(stages, FunnelStageTable):
        ids, names = np.asarray(stages._map.ids, dtype=np.int64), stages._stages
    else:
        feats = stages._check_fitted()
        ids, names = feats.index.to_numpy(dtype=np.int64), feats["funnel_stage"].to_numpy()
    codes = pd.Categorical(names, categories=_STAGES).codes
    if (codes < 0).any():
        raise ValueError(f"unknown funnel stages {sorted(set(names[codes < 0].tolist()))}")
    return ids, codes.astype(np.int8)


def _csr(arrays: Mapping[str, np.ndarray], name: str, shape: tuple[int, int]) -> sp.csr_matrix:
    data, indices, indptr = (arrays[f"{name}{part}"] for part in ("data", "indices", "indptr"))
    if len(indptr) != shape[0] + 1 or len(data) != len(indices) or (len(indptr) and indptr[-1] != len(data)):
        raise ValueError(f"matrix {name} is inconsistent with shape {shape}")
    if len(indices) and (indices.min() < 0 or indices.max() >= shape[1]):
        raise ValueError(f"matrix {name} has column indices outside 0..{shape[1] - 1}")
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def _parse_recommendations(
    recommendations: Iterable[tuple[int, float]],
) -> tuple[np.ndarray, np.ndarray]:
    pairs = list(recommendations)
    item_ids, scores = [], []
    for pair in pairs:
        try:
            item_id, score = pair
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"recommendations must be (item_id, score) pairs, got {pair!r}"
            ) from exc
        if isinstance(item_id, bool) or not isinstance(item_id, int | np.integer):
            raise TypeError(f"item ids must be integers, got {item_id!r}")
        item_ids.append(int(item_id))
        scores.append(float(score))
    return np.asarray(item_ids, dtype=np.int64), np.asarray(scores, dtype=np.float64)


__all__: list[str] = [
    "COMPONENT_LABELS",
    "EVIDENCE_WEIGHTS",
    "FunnelStageTable",
    "STAGE_PRIORITY",
    "Explanation",
    "Reason",
    "ReasonType",
    "RecommendationExplainer",
    "cooccurrence",
]
