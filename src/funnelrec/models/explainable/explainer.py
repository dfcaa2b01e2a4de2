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
``component_weights``     the weights the caller (a hybrid model) passed in, normalised; the
                          sentence names only components with a weight above 0, by what they
                          are ("the session model"), and says what they read only as far as the
                          request shows it: "on your current session" when it had a live
                          session, "on your earlier visits" for a visitor with training events
``new_item``              ``item_id`` has no event in the training data
========================  =====================================================================

"Other visitors" leaves out the visitor being explained: their own views and purchases are
never counted as evidence that others behave like them.

The ``source`` of a co-occurrence says where the visitor's ``source_item_id`` comes from:
``"cart"`` (added to cart, not bought), ``"purchases"`` (bought), ``"history"`` (viewed),
``"last_session"`` (viewed in the visitor's last training session) or ``"live_session"`` (the
``session_item_ids`` passed in). A reason type without evidence is left out; an item with no
evidence at all gets one popularity reason with its real event count; an item unknown to
training gets one honest "new to the catalogue" reason and confidence 0. A live session none of
whose items is known counts as no session (the models drop unknown items too).

Order and summary
-----------------
Reasons are told evidence first: facts about the visitor (the personal kinds above), then facts
about the item (category rank, popularity), then the model's component weights; within each
group, strongest first (stage-weighted strength, below). :meth:`Explanation.get_summary` names
what ranked the item, then the leading reason: "Ranked by ALS (collaborative filtering). Goes
with item 10, ...". A fallback list (the model could not personalise) reads "Ranked by
popularity, because ALS (collaborative filtering) had nothing to personalise from." and tells
no component weights.

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
browser about the categories they browse, a returning buyer about what goes with previous
purchases ("intent": co-purchases of bought items; "content": the category of a bought item).

Cost
----
Explaining a list costs numpy work over the visitor's items times the ``n`` listed items (binary
searches in the co-occurrence rows, :func:`pair_counts`), never a loop over events; Python loops
only format the sentences. Everything per item (categories, ranks, popularity) is computed in
``fit`` and saved.

Strength and confidence
-----------------------
A personal reason carries an evidence mass ``EVIDENCE_WEIGHTS[kind] * count``; its strength is
``1 - exp(-mass / evidence_scale)``. Non-personal reasons (popularity, category rank, component
weights) have small fixed strengths and no mass. ``Reason.weight`` is the reason's share of the
stage-weighted strengths (the weights of one explanation sum to 1; they decrease within each
group of the order above, not necessarily across groups). ``confidence`` is
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
from funnelrec.models.artifacts import (
    CHECKSUM_KEY,
    StateArrays,
    atomic_dir,
    config_field,
    file_checksums,
    read_config,
    read_npz,
    recover_interrupted_save,
    verify_checksums,
)
from funnelrec.models.base import ArtifactError, NotFittedError


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

#: Component names a hybrid model may pass in ``component_weights`` -> (reason type, what the
#: component is). The name says what the component is, never what it read: that is added from
#: the request (see :data:`REQUEST_READERS`).
COMPONENT_LABELS: dict[str, tuple[ReasonType, str]] = {
    "session": (_T.SESSION, "the session model"),
    "short_term": (_T.SESSION, "the session model"),
    "sequential": (_T.SESSION, "the session model"),
    "history": (_T.COLLABORATIVE, "the history model"),
    "long_term": (_T.COLLABORATIVE, "the history model"),
    "cf": (_T.COLLABORATIVE, "visitors like you"),
    "collaborative": (_T.COLLABORATIVE, "visitors like you"),
    "content": (_T.CONTENT, "the item-similarity model"),
    "popular": (_T.POPULARITY, "what is popular"),
    "popularity": (_T.POPULARITY, "what is popular"),
    "intent": (_T.INTENT, "where you are in your shopping"),
}
#: Components that read the live session when the request has one, else the visitor's history
#: (what the funnel-aware hybrid does with its session and content components).
REQUEST_READERS = frozenset({"session", "short_term", "sequential", "content"})
#: Components that read the visitor's history only.
HISTORY_READERS = frozenset({"history", "long_term"})

#: Model name (letters and digits, lower case: ``"funnel_hybrid"`` and ``"FunnelAwareHybrid"``
#: alike) -> what ranked the item, as the explanation's summary names it.
MODEL_DESCRIPTIONS: dict[str, str] = {
    "popular": "Popular (the most-interacted items)",
    "als": "ALS (collaborative filtering)",
    "item2vec": "Item2Vec (item similarity)",
    "twotower": "Two-Tower (neural retrieval)",
    "gru4rec": "GRU4Rec (recurrent sequence model)",
    "sasrec": "SASRec (self-attention sequence model)",
    "sessionknn": "SessionKNN (similar sessions)",
    "funnelhybrid": "the funnel-aware hybrid",
    "funnelawarehybrid": "the funnel-aware hybrid",
}

#: Evidence kinds by the order reasons are told in: facts about the visitor (0), facts about the
#: item (1), what the model said of its own weights (2). Strength orders reasons within a group.
PERSONAL_KINDS = frozenset(EVIDENCE_WEIGHTS)
_MODEL_KINDS = frozenset({"component_weights"})
_TYPE_RANK = {t: i for i, t in enumerate(ReasonType)}


def _group(kind: str) -> int:
    return 0 if kind in PERSONAL_KINDS else (2 if kind in _MODEL_KINDS else 1)


def _model_key(model_name: str) -> str:
    return "".join(ch for ch in str(model_name).lower() if ch.isalnum())


def describe_model(model_name: str) -> str:
    """What ranked the items, in words (``"als"`` -> ``"ALS (collaborative filtering)"``)."""
    return MODEL_DESCRIPTIONS.get(_model_key(model_name), str(model_name))


def _ranked_by(model_name: str, is_fallback: bool) -> str:
    description = describe_model(model_name)
    if is_fallback and _model_key(model_name) != "popular":
        return f"Ranked by popularity, because {description} had nothing to personalise from."
    return f"Ranked by {description}."

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
    """Why ``item_id`` was recommended: reasons and a confidence in [0, 1].

    ``reasons`` come evidence first: facts about the visitor, then facts about the item, then the
    model's own component weights; strongest first within each group. ``ranked_by`` names what
    ranked the item ("Ranked by ALS (collaborative filtering).").
    """

    item_id: int
    score: float
    model_name: str
    reasons: list[Reason] = field(default_factory=list)
    confidence: float = 0.0
    funnel_stage: str = FunnelStage.NEW.value
    visitor_id: int | None = None
    ranked_by: str = ""

    def get_summary(self) -> str:
        """What ranked the item, then the leading reason."""
        if not self.reasons:
            return f"No explanation is available for item {self.item_id}."
        return f"{self.ranked_by} {self.reasons[0].text}" if self.ranked_by else self.reasons[0].text

    def get_full_explanation(self) -> str:
        """All reasons, in order, as numbered lines."""
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


_PLAIN_SCALARS = (int, float, str, bool)


def _plain(value: Any) -> Any:
    """Numpy scalars/arrays and nested containers -> plain Python types."""
    if value is None or type(value) in _PLAIN_SCALARS:  # the common case, checked cheaply
        return value
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


def pair_counts(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows][:, cols]`` as a dense int64 array, by binary search in the rows' entries.

    ``matrix`` must have sorted column indices within each row (as :func:`cooccurrence` writes
    them). Costs O(entries of ``rows`` + len(rows) * len(cols) * log), with none of scipy's
    per-call overhead: this runs once per relation and request.
    """
    out = np.zeros((len(rows), len(cols)), dtype=np.int64)
    starts = matrix.indptr[rows].astype(np.int64)
    lengths = matrix.indptr[rows + 1].astype(np.int64) - starts
    total = int(lengths.sum())
    if total == 0 or len(cols) == 0:
        return out
    # positions of every entry of the chosen rows, row after row
    pos = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(total)
    width = matrix.shape[1]
    local_row = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    keys = local_row * width + matrix.indices[pos]  # sorted: rows in order, columns sorted
    query = (np.arange(len(rows), dtype=np.int64)[:, None] * width + cols[None, :]).ravel()
    found = np.minimum(np.searchsorted(keys, query), total - 1)
    hit = keys[found] == query
    out.ravel()[hit] = matrix.data[pos[found[hit]]]
    return out


def _member(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``np.isin(values, sorted_values)`` for a sorted ``sorted_values``, by binary search."""
    if len(sorted_values) == 0:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[pos] == values


# --------------------------------------------------------------------------- the explainer
@dataclass
class _Visitor:
    """What the explainer knows about one visitor, as sorted item-index arrays."""

    visitor_id: int
    stage: str
    known: bool  # the visitor has events in the training data
    viewed: np.ndarray
    carted_open: np.ndarray  # added to cart, never bought
    cart_adds: np.ndarray  # number of addtocart events, aligned with carted_open
    bought: np.ndarray
    session: np.ndarray  # the live session (its known items), else the last training session's views
    session_source: str  # "live_session" (a live session with a known item) | "last_session"

    @property
    def live(self) -> bool:
        return self.session_source == "live_session"


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
        self._relations_ = None  # built from the matrices above on first use

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
        is_fallback: bool = False,
    ) -> Explanation:
        """Explain one recommended item for one visitor (``funnel_stage`` overrides the stage)."""
        return self.explain_batch(
            user_id=visitor_id,
            recommendations=[(item_id, score)],
            model_name=model_name,
            session_item_ids=session_item_ids,
            component_weights=component_weights,
            funnel_stage=funnel_stage,
            is_fallback=is_fallback,
        )[0]

    @property
    def anonymous_visitor_id(self) -> int:
        """A visitor id this explainer has never seen: it explains a live session without a visitor."""
        known = self.visitor_map_.ids
        return -1 if -1 not in self.visitor_map_ else int(known.min()) - 1

    def explain_batch(
        self,
        user_id: int,
        recommendations: Iterable[tuple[int, float]],
        model_name: str,
        session_item_ids: Sequence[int] | None = None,
        component_weights: Mapping[str, float] | None = None,
        *,
        funnel_stage: str | None = None,
        is_fallback: bool | None = None,
    ) -> list[Explanation]:
        """Explain a visitor's recommendations ``[(item_id, score), ...]``, in the same order.

        ``session_item_ids``: the live session the model was given (``None``: none).
        ``component_weights`` and ``is_fallback`` default to the attributes of a
        :class:`~funnelrec.models.base.RecommendationList` passed as ``recommendations``. A
        fallback list (the model could not personalise) is said to be ranked by popularity, and
        component weights are not told for it.
        """
        item_map = self._check_fitted()
        if component_weights is None:
            component_weights = getattr(recommendations, "component_weights", None)
        if is_fallback is None:
            is_fallback = bool(getattr(recommendations, "is_fallback", False))
        item_ids, scores = _parse_recommendations(recommendations)
        if funnel_stage is not None and funnel_stage not in _STAGES:
            raise ValueError(f"funnel_stage must be one of {_STAGES}, got {funnel_stage!r}")
        visitor = self._visitor(user_id, session_item_ids, funnel_stage)
        component = self._component_candidate(component_weights, model_name, visitor)
        if is_fallback:  # the weights did not rank a fallback list
            component = None
        ranked_by = _ranked_by(model_name, is_fallback)
        y_idx = item_map.to_idx(item_ids) if len(item_ids) else np.empty(0, np.int64)
        known = y_idx >= 0
        per_item: list[list[_Candidate]] = [[] for _ in item_ids]
        if known.any():
            for pos, cands in zip(
                np.flatnonzero(known).tolist(), self._candidates(visitor, y_idx[known]), strict=True
            ):
                per_item[pos] = cands
        out = []
        for pos, item_id in enumerate(item_ids.tolist()):
            if not known[pos]:
                cands = [self._new_item_candidate(item_id)]
            else:
                cands = per_item[pos]
                if component is not None:
                    cands.append(component)
            out.append(self._assemble(item_id, float(scores[pos]), model_name, visitor, cands, ranked_by))
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save the fitted explainer to the folder ``path`` atomically (JSON + npz, no pickle).

        ``config.json`` holds the parameters and format version; ``state.npz`` every learned array,
        the caller's ``item_popularity`` / ``item_names`` mappings, and each visitor's funnel stage
        (all the user feature extractor contributes to an explanation); ``config.json`` also
        records the SHA-256 of ``state.npz``. The folder is written beside ``path`` and renamed
        into place, so a failed save leaves a previous one intact.
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
            config[CHECKSUM_KEY] = file_checksums(tmp)
            (tmp / EXPLAINER_CONFIG_FILE).write_text(json.dumps(config, indent=2))
        logger.info("Saved RecommendationExplainer to {}", path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> RecommendationExplainer:
        """Load an explainer written by :meth:`save`.

        A missing, corrupted, altered (its SHA-256 no longer the one recorded) or newer-format
        file, and an array of the wrong dtype, shape or range, raise :class:`ArtifactError`
        naming the file (and the array). The loaded explainer looks funnel stages up in the
        saved table (its ``user_feature_extractor`` is ``None``; refitting it fits a fresh
        extractor).
        """
        path = Path(path)
        config_path = path / EXPLAINER_CONFIG_FILE
        if not config_path.is_file():
            try:
                recover_interrupted_save(path)
            except OSError as exc:
                logger.warning("Cannot repair the interrupted save of {}: {}", path, exc)
        if not config_path.is_file():
            raise ArtifactError(f"no explainer at {path}: {config_path} does not exist")
        config = read_config(config_path)
        version = config_field(config, "format_version", int, config_path)
        params = config_field(config, "params", dict, config_path)
        n_ranked = config_field(config, "n_ranked_items", int, config_path)
        stage_names = config_field(config, "stages", list, config_path)
        kind = config.get("class", cls.__name__)
        if version > EXPLAINER_FORMAT_VERSION:
            raise ArtifactError(
                f"{config_path} has format version {version}, newer than this funnelrec "
                f"({__version__}) reads ({EXPLAINER_FORMAT_VERSION}); upgrade funnelrec"
            )
        if kind != cls.__name__:
            raise ArtifactError(f"{config_path} holds a {kind}, not a {cls.__name__}")
        unknown_stages = [s for s in stage_names if s not in _STAGES]
        if unknown_stages:
            raise ArtifactError(f"{config_path} names unknown funnel stages {unknown_stages}")
        unknown_params = sorted(set(params) - {"max_neighbors", "evidence_scale"})
        if unknown_params:
            raise ArtifactError(f"{config_path}: {cls.__name__} takes no parameter(s) {unknown_params}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in params.values()):
            raise ArtifactError(f"{config_path}: the parameters must be numbers, got {params}")
        verify_checksums(path, config, config_path)
        state_path = path / EXPLAINER_STATE_FILE
        state = StateArrays(read_npz(state_path), state_path)
        n_items, n_visitors = len(state.ids("item_ids")), len(state.ids("visitor_ids"))
        for name in _VISITOR_MATRICES + _ITEM_MATRICES:
            rows = n_visitors if name in _VISITOR_MATRICES else n_items
            state.csr(f"{name}indptr", f"{name}indices", f"{name}data", (rows, n_items))
        for name in _ITEM_ARRAYS:
            state.get(name, "b" if name == "has_category_" else "i", (n_items,))
        n_staged = len(state.ids("stage_visitor_ids"))
        state.get("stage_codes", "i", (n_staged,), low=0, high=len(stage_names))
        arrays = state.arrays
        popularity = names = None
        if "param_item_popularity_ids" in arrays:
            n_given = len(state.ids("param_item_popularity_ids"))
            state.get("param_item_popularity_counts", "i", (n_given,), low=0)
            popularity = dict(zip(arrays["param_item_popularity_ids"].tolist(),
                                  arrays["param_item_popularity_counts"].tolist(), strict=True))
        if "param_item_name_ids" in arrays:
            n_named = len(state.ids("param_item_name_ids"))
            state.get("param_item_name_values", "U", (n_named,))
            names = dict(zip(arrays["param_item_name_ids"].tolist(),
                             arrays["param_item_name_values"].tolist(), strict=True))
        try:
            explainer = cls(None, popularity, item_names=names, **params)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{config_path}: bad parameters for {cls.__name__}: {exc}") from exc
        for name in _VISITOR_MATRICES + _ITEM_MATRICES:
            rows = n_visitors if name in _VISITOR_MATRICES else n_items
            setattr(explainer, name, _csr(arrays, name, (rows, n_items)))
        for name in _ITEM_ARRAYS:
            setattr(explainer, name, arrays[name])
        codes = arrays["stage_codes"].astype(np.int64)
        explainer.stages_ = FunnelStageTable(
            arrays["stage_visitor_ids"], np.asarray(stage_names, dtype=object)[codes]
        )
        explainer.n_ranked_items_ = n_ranked
        explainer.item_map_ = IdMap(arrays["item_ids"])
        explainer.visitor_map_ = IdMap(arrays["visitor_ids"])
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
            viewed, _ = _row(self.views_, v)
            bought, _ = _row(self.buys_, v)
            carted, adds = _row(self.carts_, v)
            open_mask = ~_member(bought, carted)
            carted_open, cart_adds = carted[open_mask], adds[open_mask].astype(np.int64)
            last_session, _ = _row(self.last_session_views_, v)
        else:
            viewed = bought = carted_open = cart_adds = last_session = empty
        session, source = last_session, "last_session"
        if session_item_ids is not None:
            ids = np.asarray(list(session_item_ids))
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                raise TypeError(f"session_item_ids must be integer ids, got {ids[:3].tolist()}")
            live = self.item_map_.to_idx(ids) if ids.size else empty
            live = np.unique(live[live >= 0])
            if live.size:  # a session of unknown items only is no session to the models either
                session, source = live, "live_session"
        return _Visitor(visitor_id, stage, v >= 0, viewed, carted_open, cart_adds, bought, session, source)

    # ------------------------------------------------------------------ candidate reasons
    def _label(self, item_id: int) -> str:
        if self.item_names is not None and item_id in self.item_names:
            return str(self.item_names[item_id])
        return f"item {item_id}"

    def _strength(self, mass: float) -> float:
        return float(1.0 - math.exp(-mass / self.evidence_scale))

    def _relations(self) -> dict[str, sp.csr_matrix]:
        """Evidence kind -> its item x item matrix, rows' indices sorted (checked once).

        Never sorts in place: concurrent requests may build this at once, and they share the
        matrices.
        """
        relations = getattr(self, "_relations_", None)
        if relations is None:
            matrices = {"co_view": self.co_view_, "co_purchase": self.co_purchase_,
                        "view_then_buy": self.view_buy_}
            relations = {kind: m if m.has_sorted_indices else m.sorted_indices() for kind, m in matrices.items()}
            self._relations_ = relations
        return relations

    def _best_pairs(
        self, visitor: _Visitor, sources: np.ndarray, y_idx: np.ndarray, kinds: tuple[str, ...]
    ) -> list[tuple[str, int, int, float] | None]:
        """Per target: the strongest (kind, source idx, count, mass) over sources and relations.

        Counts are of *other* visitors: the explained visitor's own co-occurrence is taken out.
        Ties go to the earlier relation, then the smaller source index.
        """
        best: list[tuple[str, int, int, float] | None] = [None] * len(y_idx)
        if len(sources) == 0 or len(y_idx) == 0:
            return best
        relations = self._relations()
        counts = []
        for kind in kinds:
            sub = pair_counts(relations[kind], sources, y_idx)
            sub[sources[:, None] == y_idx[None, :]] = 0
            left, right = (visitor.viewed if k == "viewed" else visitor.bought for k in _SIDES[kind])
            own = _member(left, sources)[:, None] & _member(right, y_idx)[None, :]
            counts.append(np.maximum(sub - own, 0))  # a kept pair the visitor made themself counts one less
        count = np.stack(counts)  # relation x source x target
        mass = count * np.array([EVIDENCE_WEIGHTS[k] for k in kinds])[:, None, None]
        winner = mass.reshape(-1, len(y_idx)).argmax(axis=0)  # first max
        relation, source = np.divmod(winner, len(sources))
        columns = np.arange(len(y_idx))
        best_count = count[relation, source, columns]
        best_mass = mass[relation, source, columns]
        for j in np.flatnonzero(best_count > 0).tolist():
            best[j] = (kinds[relation[j]], int(sources[source[j]]), int(best_count[j]), float(best_mass[j]))
        return best

    def _pair_candidate(
        self,
        rtype: ReasonType,
        source: str,
        lead: str,
        y_id: int,
        pair: tuple[str, int, int, float],
    ) -> _Candidate:
        kind, x, n, mass = pair
        x_id = int(self.item_map_.ids[x])
        x_label, y_label = self._label(x_id), self._label(y_id)
        verbs = _SIDES[kind]
        who = "other visitor" if n == 1 else "other visitors"
        fact = f"{n} {who} who {verbs[0]} {x_label} also {verbs[1]} {y_label}"
        text = lead.format(x=x_label) + fact + "."
        evidence = {"kind": kind, "source": source, "item_id": y_id, "source_item_id": x_id,
                    "count": n}
        return _Candidate(rtype, text, self._strength(mass), mass, evidence)

    def _candidates(self, visitor: _Visitor, y_idx: np.ndarray) -> list[list[_Candidate]]:
        """Candidate reasons of every known target, computed for all targets at once."""
        stage = visitor.stage
        out: list[list[_Candidate]] = [[] for _ in y_idx]
        y_ids = self.item_map_.ids[y_idx].tolist()

        # intent: the item itself waits in the cart
        if len(visitor.carted_open):
            pos = np.minimum(np.searchsorted(visitor.carted_open, y_idx), len(visitor.carted_open) - 1)
            for j in np.flatnonzero(visitor.carted_open[pos] == y_idx).tolist():
                n = int(visitor.cart_adds[pos[j]])
                times = "" if n == 1 else (" twice" if n == 2 else f" {n} times")
                mass = EVIDENCE_WEIGHTS["in_cart"] * n
                text = f"You added {self._label(y_ids[j])} to your cart{times} and have not bought it yet."
                evidence = {"kind": "in_cart", "source": "cart", "item_id": y_ids[j], "count": n}
                out[j].append(_Candidate(_T.INTENT, text, self._strength(mass), mass, evidence))

        # intent: complements of the cart, then of previous purchases; session: the live session,
        # else the last visit; collaborative: the rest of the viewing history. Sources are
        # disjoint (cart, purchases, session, history), so no fact is told twice.
        funnel_items = np.concatenate([visitor.carted_open, visitor.bought])
        session_items = np.setdiff1d(visitor.session, funnel_items)
        history_items = np.setdiff1d(visitor.viewed, np.concatenate([funnel_items, visitor.session]))
        views = ("view_then_buy", "co_view")
        session_lead = "You just viewed {x}: " if visitor.live else "In your last visit you viewed {x}: "
        if stage in _EXPLORING:
            history_lead = "Shoppers who browse like you: you viewed {x}, and "
        elif stage in _RETURNING:
            history_lead = "From your browsing history: you viewed {x}, and "
        else:
            history_lead = "You looked at {x}: "
        pair_groups = [
            (_T.INTENT, "cart", "Goes with {x}, which you added to your cart: ", visitor.carted_open,
             ("co_purchase", "view_then_buy")),
            (_T.INTENT, "purchases", "You bought {x}: ", visitor.bought, ("co_purchase",)),
            (_T.SESSION, visitor.session_source, session_lead, session_items, views),
            (_T.COLLABORATIVE, "history", history_lead, history_items, views),
        ]
        for rtype, source, lead, sources, kinds in pair_groups:
            for j, pair in enumerate(self._best_pairs(visitor, sources, y_idx, kinds)):
                if pair is not None:
                    out[j].append(self._pair_candidate(rtype, source, lead, y_ids[j], pair))

        for j, content in enumerate(self._category_candidates(visitor, y_idx, y_ids)):
            if content is not None:
                out[j].append(content)
        for j, y in enumerate(y_idx.tolist()):
            popularity = self._popularity_candidate(y, y_ids[j], stage, force=not out[j])
            if popularity is not None:
                out[j].append(popularity)
        return out

    def _category_candidates(
        self, visitor: _Visitor, y_idx: np.ndarray, y_ids: list[int]
    ) -> list[_Candidate | None]:
        """Per target: its category among the visitor's items (first source that has it), else
        its rank in its category; ``None`` for an item without a category."""
        out: list[_Candidate | None] = [None] * len(y_idx)
        has = self.has_category_[y_idx]
        cats = self.item_category_[y_idx]
        options = [("purchases", visitor.bought)] if visitor.stage in _RETURNING else []
        options.append(("history", visitor.viewed))
        if visitor.live:
            options.append(("live_session", visitor.session))
        pending = has.copy()
        item_ids = self.item_map_.ids
        for source, items in options:
            if not pending.any():
                break
            if len(items) == 0:
                continue
            match = (
                (self.item_category_[items][:, None] == cats[None, :])
                & self.has_category_[items][:, None]
                & (items[:, None] != y_idx[None, :])
                & pending[None, :]
            )  # source item x target
            counts = match.sum(axis=0)
            first = match & (np.cumsum(match, axis=0) <= 3)  # the first three, in item order
            targets, rows = np.nonzero(first.T)
            examples: dict[int, list[int]] = {}
            for j, i in zip(targets.tolist(), item_ids[items[rows]].tolist(), strict=True):
                examples.setdefault(j, []).append(i)
            for j in np.flatnonzero(counts).tolist():
                out[j] = self._category_match(source, int(cats[j]), y_ids[j], examples[j], int(counts[j]))
            pending &= counts == 0
        for j in np.flatnonzero(pending).tolist():
            cat, rank, size = int(cats[j]), int(self.category_rank_[y_idx[j]]), int(self.category_size_[y_idx[j]])
            text = f"From category {cat}, where it ranks #{rank} of {size} items by interactions."
            evidence = {"kind": "category_rank", "item_id": y_ids[j], "category_id": cat, "rank": rank,
                        "n_items": size}
            strength = CATEGORY_RANK_STRENGTH * (1.0 - (rank - 1) / max(size, 1))
            out[j] = _Candidate(_T.CONTENT, text, strength, 0.0, evidence)
        return out

    def _category_match(self, source: str, cat: int, y_id: int, examples: list[int], m: int) -> _Candidate:
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

    def _popularity_candidate(self, y: int, y_id: int, stage: str, *, force: bool) -> _Candidate | None:
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
        evidence = {"kind": "popularity", "item_id": y_id, "count": count, "rank": rank, "n_items": n}
        strength = POPULARITY_STRENGTH * (1.0 - (rank - 1) / max(n, 1))
        return _Candidate(_T.POPULARITY, text, strength, 0.0, evidence)

    def _new_item_candidate(self, item_id: int) -> _Candidate:
        text = f"New to the catalogue: {self._label(item_id)} has no interactions yet."
        evidence = {"kind": "new_item", "item_id": item_id, "count": 0}
        return _Candidate(_T.POPULARITY, text, 1.0, 0.0, evidence)

    @staticmethod
    def _component_label(name: str, visitor: _Visitor) -> tuple[ReasonType, str]:
        """What the component is and, where the request shows it, what it read."""
        key = name.lower()
        rtype, label = COMPONENT_LABELS.get(key, (_T.COLLABORATIVE, f"the {name} component"))
        if key in REQUEST_READERS and visitor.live:
            label += " on your current session"
        elif key in REQUEST_READERS | HISTORY_READERS and visitor.known:
            label += " on your earlier visits"
        return rtype, label

    def _component_candidate(
        self, weights: Mapping[str, float] | None, model_name: str, visitor: _Visitor
    ) -> _Candidate | None:
        """The model's component weights, in words: only components that counted are named."""
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
        # a component with weight 0 had no input in this request (or did not count): not named
        ranked = sorted(((k, v) for k, v in shares.items() if v > 0), key=lambda kv: (-kv[1], kv[0]))
        top, share = ranked[0]
        rtype, label = self._component_label(top, visitor)
        model = describe_model(model_name)
        if share >= 0.5:
            text = f"Mostly from {label} ({_percent(share)} of the weight in {model})."
        else:
            parts = ", ".join(f"{self._component_label(k, visitor)[1]} {_percent(v)}" for k, v in ranked)
            text = f"A blend in {model}: {parts}."
        evidence = {"kind": "component_weights", "dominant": top, "component_weights": shares}
        return _Candidate(rtype, text, COMPONENT_STRENGTH * share, 0.0, evidence)

    # ------------------------------------------------------------------ ranking
    def _assemble(
        self,
        item_id: int,
        score: float,
        model_name: str,
        visitor: _Visitor,
        cands: list[_Candidate],
        ranked_by: str,
    ) -> Explanation:
        """Order the reasons (evidence group, then stage-weighted strength) and give their shares."""
        table = STAGE_PRIORITY.get(visitor.stage, STAGE_PRIORITY[FunnelStage.NEW])
        priorities = [c.strength * table[c.type] for c in cands]
        groups = [_group(c.evidence["kind"]) for c in cands]
        order = sorted(
            range(len(cands)),
            key=lambda i: (groups[i], -priorities[i], _TYPE_RANK[cands[i].type], i),
        )
        total = sum(priorities)
        reasons = [
            Reason(
                type=cands[i].type,
                text=cands[i].text,
                weight=float(priorities[i] / total) if total > 0 else 1.0 / len(cands),
                evidence=dict(cands[i].evidence),
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
            ranked_by=ranked_by,
        )


def _row(matrix: sp.csr_matrix, row: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted column indices (int64) and values of one row of a CSR matrix, without scipy's slicing."""
    lo, hi = int(matrix.indptr[row]), int(matrix.indptr[row + 1])
    cols, data = matrix.indices[lo:hi].astype(np.int64), matrix.data[lo:hi]
    if len(cols) > 1 and (np.diff(cols) < 0).any():
        order = np.argsort(cols, kind="stable")
        cols, data = cols[order], data[order]
    return cols, data


def _percent(share: float) -> str:
    return "<1%" if share < 0.005 else f"{share:.0%}"


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
    "HISTORY_READERS",
    "MODEL_DESCRIPTIONS",
    "PERSONAL_KINDS",
    "REQUEST_READERS",
    "FunnelStageTable",
    "STAGE_PRIORITY",
    "Explanation",
    "Reason",
    "ReasonType",
    "RecommendationExplainer",
    "cooccurrence",
    "describe_model",
    "pair_counts",
]
