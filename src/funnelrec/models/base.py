"""The one Recommender interface, the model registry and the shared top-k ranker.

Template method: the public methods (``fit``, ``recommend*``, ``get_similar_items``, ``save``,
``load``) handle external ids, argument checks, cold start and seen-item masking; a model
implements the private hooks, which see dense index arrays only:

- ``_fit(data)``: learn from :class:`~funnelrec.data.encoding.Interactions`;
- ``_score_users(user_idx)``: dense scores ``[len(user_idx), n_items]``;
- ``_score_sessions(sessions)``: dense scores for live sessions (:class:`Sequences` of indices);
- ``_score_similar(item_idx)``: dense item-to-item scores (defaults to cosine over
  ``_item_vectors()`` when a model has item vectors);
- ``_get_state()`` / ``_set_state(arrays)``: learned arrays for save/load (npz, no pickle).

Cold-start policy: a visitor unknown to the model gets popular items, boosted to the categories
of the live session when one is given; the result's ``is_fallback`` says so. A live session made
only of unknown items is answered the same way.
"""

from __future__ import annotations

import inspect
import json
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_type_hints

import numpy as np
import pandas as pd
import scipy.sparse as sp
from loguru import logger
from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError

from funnelrec import __version__
from funnelrec.data.encoding import IdMap, Interactions, Sequences
from funnelrec.data.schema import CATEGORY_ID, ITEM_ID, validate_events
from funnelrec.errors import ArtifactError, NotFittedError  # noqa: F401  (re-exported)
from funnelrec.models.artifacts import (  # noqa: F401  (atomic_dir re-exported)
    CHECKSUM_KEY,
    CONFIG_FILE,
    STATE_FILE,
    StateArrays,
    atomic_dir,
    config_field,
    file_checksums,
    read_config,
    read_npz,
    recover_interrupted_save,
    recover_interrupted_saves,
    verify_checksums,
)

FORMAT_VERSION = 1
#: Upper bound on floats held by one dense score block (users x items) while ranking.
SCORE_BLOCK_FLOATS = 1 << 24


class RecommendationList(list):
    """``[(item_id, score), ...]``, best first, plus where the answer came from.

    ``is_fallback`` is True when the model could not personalise (unknown visitor, a session of
    unknown items) and answered with popular items instead. ``component_weights`` is set by
    hybrid models: how much each component weighed in this answer.
    """

    def __init__(
        self,
        pairs: Iterable[tuple[int, float]] = (),
        *,
        is_fallback: bool = False,
        component_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__(pairs)
        self.is_fallback = is_fallback
        self.component_weights = component_weights

    @property
    def item_ids(self) -> list[int]:
        return [item_id for item_id, _ in self]


# --------------------------------------------------------------------------- ranking
def mask_rows(scores: np.ndarray, rows: sp.csr_matrix, value: float = -np.inf) -> None:
    """Set ``scores[i, j] = value`` for every stored entry ``(i, j)`` of the CSR ``rows`` (in place)."""
    if rows.nnz == 0:
        return
    row_of_entry = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    scores[row_of_entry, rows.indices] = value


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` columns per row, best first: ``(idx, scores)``.

    Uses ``argpartition`` then sorts only the ``k`` winners. Ties are ordered by column index (a
    stable, deterministic rule), at the cut too: of the items tied at the ``k``-th score, those of
    the lowest indices get in, so the top ``k`` is always a prefix of the top ``k + 1``. Entries
    scoring ``-inf`` (masked) come back as index ``-1``.
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k <= 0:
        return np.empty((n_rows, 0), np.int64), np.empty((n_rows, 0), np.float32)
    if k < n_cols:  # on -scores a NaN sorts last, so it never enters the top k
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        _lowest_indices_win_ties(scores, part, k)
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top_scores = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    idx[~np.isfinite(top_scores) & (top_scores < 0)] = -1
    return idx, top_scores


def _lowest_indices_win_ties(scores: np.ndarray, part: np.ndarray, k: int) -> None:
    """Fix ``part`` (``argpartition``'s top ``k`` per row, in place) where the items tied at the
    ``k``-th score did not all fit: ``argpartition`` picks any of them, the rule is the lowest
    indices. Only rows with such a tie are touched (rare with continuous scores)."""
    cut = np.take_along_axis(scores, part, axis=1).min(axis=1)  # the k-th score (NaN: none)
    tied = scores == cut[:, None]
    n_tied = tied.sum(axis=1)
    n_tied_in = (np.take_along_axis(scores, part, axis=1) == cut[:, None]).sum(axis=1)
    rows = np.flatnonzero((n_tied > n_tied_in) & np.isfinite(cut))
    if len(rows) == 0:
        return
    above = scores[rows] > cut[rows, None]
    room = k - above.sum(axis=1)
    keep = above | (tied[rows] & (np.cumsum(tied[rows], axis=1) <= room[:, None]))
    part[rows] = np.nonzero(keep)[1].reshape(len(rows), k)


def rank_in_batches(
    score_fn: Callable[[np.ndarray], np.ndarray],
    rows: np.ndarray,
    k: int,
    n_items: int,
    exclude: sp.csr_matrix | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The shared batched ranker: score blocks of ``rows``, mask ``exclude[rows]``, keep top ``k``.

    ``score_fn(block_rows)`` returns dense scores ``[len(block_rows), n_items]``. Blocks are sized
    so a score block stays under :data:`SCORE_BLOCK_FLOATS` floats.
    """
    k = min(k, n_items)
    out_idx = np.full((len(rows), k), -1, dtype=np.int64)
    out_scores = np.full((len(rows), k), -np.inf, dtype=np.float32)
    block = max(1, SCORE_BLOCK_FLOATS // max(n_items, 1))
    for start in range(0, len(rows), block):
        block_rows = rows[start : start + block]
        scores = np.array(score_fn(block_rows), dtype=np.float32, copy=True)
        if exclude is not None:
            mask_rows(scores, exclude[block_rows])
        idx, sc = top_k(scores, k)
        out_idx[start : start + len(block_rows)] = idx
        out_scores[start : start + len(block_rows)] = sc
    return out_idx, out_scores


def cosine_similar(vectors: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``vectors[item_idx]`` against all ``vectors``."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = vectors / np.maximum(norms, 1e-12)
    return unit[item_idx] @ unit.T


# --------------------------------------------------------------------------- registry
REGISTRY: dict[str, type[Recommender]] = {}
R = TypeVar("R", bound="Recommender")


def register(key: str) -> Callable[[type[R]], type[R]]:
    """Class decorator: make a model available to the CLI and to :meth:`Recommender.load`."""

    def decorator(cls: type[R]) -> type[R]:
        if key in REGISTRY and REGISTRY[key] is not cls:
            raise ValueError(f"model key {key!r} is already registered to {REGISTRY[key].__name__}")
        REGISTRY[key] = cls
        cls.registry_key = key
        return cls

    return decorator


def get_model_class(key: str) -> type[Recommender]:
    """The registered class for ``key`` (importing every built-in model first)."""
    import funnelrec.models  # noqa: F401  (registers the built-in models)

    try:
        return REGISTRY[key]
    except KeyError:
        raise KeyError(f"unknown model {key!r}; available: {sorted(REGISTRY)}") from None


# --------------------------------------------------------------------------- the interface
class Recommender(ABC):
    """Base class of every funnelrec model. See the module docstring for the contract."""

    registry_key: ClassVar[str] = ""
    #: Display name reported by the Evaluator.
    name: str = "Recommender"
    #: Whether this model learns from the order of events (session/sequence models).
    sequential: ClassVar[bool] = False

    # learned state common to all models (set in fit)
    item_map_: IdMap
    visitor_map_: IdMap
    user_items_: sp.csr_matrix
    item_popularity_: np.ndarray
    item_category_: np.ndarray

    # ------------------------------------------------------------------ parameters
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments, read back from the attributes of the same names."""
        return {name: getattr(self, name) for name in self._param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "item_map_")

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted; call fit(train) first")

    @property
    def n_items(self) -> int:
        self._check_fitted()
        return len(self.item_map_)

    @property
    def item_ids(self) -> np.ndarray:
        """External item ids, in the order of the model's internal indices."""
        self._check_fitted()
        return self.item_map_.ids

    # ------------------------------------------------------------------ fitting
    def fit(self, events: pd.DataFrame, val_events: pd.DataFrame | None = None) -> Recommender:
        """Learn from the training events (canonical frame). Refitting starts from scratch."""
        validate_events(events, name="train events")
        if len(events) == 0:
            raise ValueError("cannot fit on an empty events frame")
        if val_events is not None:
            validate_events(val_events, name="validation events")
        data = Interactions(events)
        self.item_map_ = data.item_map
        self.visitor_map_ = data.visitor_map
        self.user_items_ = data.matrix
        self.item_popularity_ = np.asarray(data.matrix.sum(axis=0)).ravel().astype(np.float32)
        self.item_category_ = self._item_categories(events, data.item_map)
        logger.info(
            "Fitting {} on {:,} events ({:,} visitors x {:,} items)",
            self.name, len(events), data.n_visitors, data.n_items,
        )
        self._fit(data, events, val_events)
        return self

    @staticmethod
    def _item_categories(events: pd.DataFrame, item_map: IdMap) -> np.ndarray:
        categories = np.full(len(item_map), -1, dtype=np.int64)
        if CATEGORY_ID in events.columns:
            known = events.loc[events[CATEGORY_ID].notna(), [ITEM_ID, CATEGORY_ID]]
            known = known.drop_duplicates(ITEM_ID, keep="last")
            idx = item_map.to_idx(known[ITEM_ID].to_numpy())
            categories[idx] = known[CATEGORY_ID].to_numpy(dtype="int64")
        return categories

    def _category_codes(self) -> np.ndarray:
        """Dense category codes per item index: 1..C in category-id order, 0 = unknown."""
        codes = np.zeros(len(self.item_category_), dtype=np.int64)
        known = self.item_category_ >= 0
        codes[known] = pd.factorize(self.item_category_[known], sort=True)[0] + 1
        return codes

    @abstractmethod
    def _fit(self, data: Interactions, events: pd.DataFrame, val_events: pd.DataFrame | None) -> None:
        """Learn model state from index-encoded data (``events`` for models that need columns)."""

    # ------------------------------------------------------------------ scoring hooks
    @abstractmethod
    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Dense scores ``[len(user_idx), n_items]`` for known visitors."""

    @abstractmethod
    def _score_sessions(self, sessions: Sequences) -> np.ndarray:
        """Dense scores ``[len(sessions), n_items]`` for live sessions of known item indices."""

    def _item_vectors(self) -> np.ndarray | None:
        """Item embedding matrix ``[n_items, d]`` when the model has one."""
        return None

    def _score_similar(self, item_idx: np.ndarray) -> np.ndarray:
        vectors = self._item_vectors()
        if vectors is None:
            raise NotImplementedError(f"{type(self).__name__} must implement _score_similar")
        return cosine_similar(vectors, item_idx)

    def _fallback_popularity(self) -> np.ndarray:
        """Item scores of the cold-start answer (event-weighted popularity)."""
        return self.item_popularity_

    def _fallback_scores(self, n_rows: int, categories: np.ndarray | None = None) -> np.ndarray:
        """Popularity; items of ``categories`` get ``max + 1`` added so they come first."""
        pop = np.asarray(self._fallback_popularity(), dtype=np.float32)
        scores = np.broadcast_to(pop, (n_rows, len(pop))).astype(np.float32)
        if categories is not None and len(categories):
            in_context = np.isin(self.item_category_, categories[categories >= 0])
            scores = scores + in_context.astype(np.float32) * (float(pop.max()) + 1.0)
        return scores

    # ------------------------------------------------------------------ public scoring (indices)
    def score_users(self, user_idx: np.ndarray) -> np.ndarray:
        """Dense scores for known visitor indices (used by the Evaluator)."""
        self._check_fitted()
        return np.asarray(self._score_users(np.asarray(user_idx, dtype=np.int64)), dtype=np.float32)

    def score_sessions(self, sessions: Sequences) -> np.ndarray:
        """Dense scores for sessions of item indices; a session with no known item gets popularity."""
        self._check_fitted()
        lengths = sessions.lengths
        scores = np.empty((len(sessions), self.n_items), dtype=np.float32)
        has_items = lengths > 0
        if has_items.any():
            scores[has_items] = self._score_sessions(sessions.take(np.flatnonzero(has_items)))
        if (~has_items).any():
            scores[~has_items] = self._fallback_scores(int((~has_items).sum()))
        return scores

    # ------------------------------------------------------------------ public API (external ids)
    @staticmethod
    def _check_n(n_items: int) -> int:
        if isinstance(n_items, bool) or not isinstance(n_items, int | np.integer) or n_items < 1:
            raise ValueError(f"n_items must be a positive integer, got {n_items!r}")
        return int(n_items)

    def recommend_batch(
        self, user_ids: Sequence[int] | np.ndarray, n_items: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n_items`` for many visitors: ``(item_ids [n_users, n], scores [n_users, n])``.

        ``n`` is ``min(n_items, catalogue size)``. Unknown visitors get the popularity fallback.
        Slots left empty (every remaining item was seen) hold item id -1 and score ``-inf``.
        """
        self._check_fitted()
        n = self._check_n(n_items)
        ids = np.asarray(user_ids)
        if ids.ndim != 1:
            raise ValueError(f"user_ids must be one-dimensional, got shape {ids.shape}")
        user_idx = self.visitor_map_.to_idx(ids)
        known = user_idx >= 0
        k = min(n, self.n_items)
        idx = np.full((len(ids), k), -1, dtype=np.int64)
        scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
        if known.any():
            idx[known], scores[known] = self._rank_users(
                user_idx[known], k, self.user_items_ if exclude_seen else None
            )
        if (~known).any():
            fb_idx, fb_scores = top_k(self._fallback_scores(1), k)
            idx[~known], scores[~known] = fb_idx[0], fb_scores[0]
        item_ids = np.where(idx >= 0, self.item_map_.to_ids(np.maximum(idx, 0)), -1)
        return item_ids, scores

    def _rank_users(
        self, user_idx: np.ndarray, k: int, exclude: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` item indices and scores for the known visitors ``user_idx``.

        ``exclude`` is the whole visitor x item CSR (row = visitor index) or ``None``. The shared
        numpy ranker over :meth:`score_users`; a model with a vector index (FAISS) overrides this
        hook. Same format as :func:`top_k`.
        """
        return rank_in_batches(self.score_users, user_idx, k, self.n_items, exclude)

    def recommend(
        self,
        user_id: int,
        n_items: int = 10,
        exclude_seen: bool = True,
        session_item_ids: Sequence[int] | None = None,
        exclude_session_items: bool = True,
    ) -> RecommendationList:
        """Top ``n_items`` ``(item_id, score)`` for one visitor, best first.

        ``session_item_ids`` is the visitor's live session (item ids in the order seen). For a
        known visitor it is used as :meth:`_score_visitor_in_session` says: session models rank
        from it, history models from the visitor's history, the Two-Tower reads both, the hybrid
        fuses both. An unknown visitor gets popular items, those in the session's categories
        first; ``is_fallback`` marks such answers.

        ``exclude_seen`` removes the visitor's past items, ``exclude_session_items`` the live
        session's own items (the item on the page is not recommended next to itself); both are
        on by default, as a shop page wants.
        """
        self._check_fitted()
        n = self._check_n(n_items)
        if session_item_ids is not None:
            session_item_ids = id_list(session_item_ids)
        session = self._session_indices(session_item_ids) if session_item_ids else np.empty(0, np.int64)
        excluded = session if exclude_session_items else None
        user_idx = int(self.visitor_map_.to_idx([user_id])[0])
        if user_idx < 0:
            return self._fallback_list(n, session_item_ids, excluded)
        if session.size == 0:
            item_ids, scores = self.recommend_batch([user_id], n, exclude_seen)
            return _as_list(item_ids[0], scores[0])
        scores = np.array(self._score_visitor_in_session(user_idx, session), dtype=np.float32)[None, :]  # a copy: masked below
        if exclude_seen:
            mask_rows(scores, self.user_items_[[user_idx]])
        if excluded is not None:
            scores[0, excluded] = -np.inf
        top_idx, top_scores = top_k(scores, n)
        return _as_list(*_valid(self, top_idx[0], top_scores[0]))

    def _session_indices(self, item_ids: Sequence[int]) -> np.ndarray:
        """This model's indices of the known items of a live session (unknown ones dropped)."""
        raw = np.asarray(id_list(item_ids))
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise ValueError(f"item_ids must be integers, got {raw[:3].tolist()}")
        idx = self.item_map_.to_idx(raw.astype(np.int64))
        return idx[idx >= 0]

    def _score_visitor_in_session(self, user_idx: int, session: np.ndarray) -> np.ndarray:
        """Scores ``[n_items]`` for a known visitor in a live session of item indices.

        A sequential model (``sequential = True``) ranks from the live session, the freshest
        evidence of intent; a history model (ALS, Popular) from the visitor's history, which it
        reads better than a short session. Models that can read both override this.
        """
        if self.sequential:
            return self.score_sessions(Sequences.single(session))[0]
        return self.score_users(np.array([user_idx]))[0]

    def _fallback_list(self, n: int, session_item_ids: Sequence[int] | None = None,
                       excluded: np.ndarray | None = None) -> RecommendationList:
        """Popular items (the session's categories first), without the item indices ``excluded``."""
        categories = None
        if session_item_ids:
            categories = np.unique(self.item_category_[self._session_indices(session_item_ids)])
        scores = np.array(self._fallback_scores(1, categories), dtype=np.float32)
        if excluded is not None and len(excluded):
            scores[0, excluded] = -np.inf
        idx, top_scores = top_k(scores, n)
        return _as_list(self.item_map_.to_ids(idx[0][idx[0] >= 0]), top_scores[0][idx[0] >= 0], fallback=True)

    def recommend_by_item_ids(
        self, item_ids: Sequence[int], n_items: int = 10, exclude_session_items: bool = True
    ) -> RecommendationList:
        """Recommendations for a live session (items in the order they were seen).

        Items unknown to the model are ignored; if none is known the answer is the popularity
        fallback (``is_fallback``). ``exclude_session_items`` (default on, as a shop page wants)
        keeps the session's own items out of the answer; ``False`` lets them back in (repeat
        views are real next items in e-commerce logs: the Evaluator's next-item protocol scores
        sessions without excluding them).
        """
        self._check_fitted()
        n = self._check_n(n_items)
        item_ids = id_list(item_ids)
        known = self._session_indices(item_ids)
        if known.size == 0:
            return self._fallback_list(n, item_ids)
        scores = self.score_sessions(Sequences.single(known))
        if exclude_session_items:
            scores[0, known] = -np.inf
        top_idx, top_scores = top_k(scores, n)
        return _as_list(*_valid(self, top_idx[0], top_scores[0]))

    def get_similar_items(self, item_id: int, n_items: int = 10) -> RecommendationList:
        """Items most similar to ``item_id`` (itself excluded). Unknown item: ``KeyError``."""
        self._check_fitted()
        n = self._check_n(n_items)
        idx = self.item_map_.to_idx([item_id])[0]
        if idx < 0:
            raise KeyError(f"item {item_id!r} is not in {self.name}'s catalogue ({self.n_items} items)")
        scores = np.array(self._score_similar(np.array([idx])), dtype=np.float32)
        scores[0, idx] = -np.inf
        top_idx, top_scores = top_k(scores, n)
        return _as_list(*_valid(self, top_idx[0], top_scores[0]))

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> dict[str, np.ndarray]:
        """Model-specific learned arrays to save (names must not start with ``base_``)."""
        return {}

    def _validate_state(self, state: StateArrays) -> None:
        """Check this model's own arrays of a ``state.npz`` being loaded, before ``_set_state``.

        The base arrays (id maps, popularity, categories, the visitor x item matrix) are
        checked already and set on ``self``; a model checks the dtype, shape, index range and
        finiteness of each array it saves with :meth:`StateArrays.get` and friends, so that a
        damaged file fails at load time, never inside a request.
        """

    def _set_state(self, arrays: dict[str, np.ndarray], path: Path) -> None:
        """Restore model-specific state from ``arrays`` (and extra files under ``path``)."""

    @classmethod
    def _saved_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments from a saved ``config.json``. A model whose parameters grew
        since an earlier release fills in what an older file lacks with the behaviour that
        release had (not today's default), so old files load and score as they did; one that
        renamed or dropped a parameter maps the old name here. Runs before the parameters are
        checked (:meth:`_check_saved_params`)."""
        return params

    @classmethod
    def _check_saved_params(cls, params: dict[str, Any], config_path: Path) -> None:
        """Refuse saved parameters this class does not take, or whose JSON type does not fit
        the constructor's annotation (an ``ArtifactError`` naming the file and parameter)."""
        names = cls._param_names()
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise ArtifactError(
                f"{config_path}: {cls.__name__} takes no parameter(s) {unknown} (it takes {names}); "
                f"the file was altered or written for another model type"
            )
        for name, (annotation, adapter) in _param_adapters(cls).items():
            if name not in params:
                continue
            try:  # JSON in strict mode: 8.0 is no int, "8" no number, 1 no bool
                adapter.validate_json(json.dumps(params[name]), strict=True)
            except ValidationError:
                shown = json.dumps(params[name])
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise ArtifactError(
                    f"{config_path}: parameter {name!r} of {cls.__name__} must be {annotation}, got {shown}"
                ) from None

    def _write_extra(self, path: Path) -> None:
        """Write extra files (torch state dicts, FAISS indexes) into the folder being saved."""

    def save(self, path: str | Path) -> Path:
        """Save to the folder ``path`` atomically: written beside it, then renamed into place.

        ``config.json`` holds the class, parameters, format and library version, and the
        SHA-256 of every other file (checked by :meth:`load`); arrays go to ``state.npz``. A
        crash at any step never leaves a half-written model at ``path``: the old or the new
        model is there, or is put back by the next save or load (see
        :func:`~funnelrec.models.artifacts.atomic_dir`).
        """
        self._check_fitted()
        path = Path(path)
        with atomic_dir(path) as tmp:
            config = {
                "format_version": FORMAT_VERSION,
                "funnelrec_version": __version__,
                "model": self.registry_key,
                "class": type(self).__name__,
                "name": self.name,
                "params": _jsonable(self.get_params()),
            }
            ui = self.user_items_.tocsr()
            arrays = {
                "base_item_ids": self.item_map_.ids,
                "base_visitor_ids": self.visitor_map_.ids,
                "base_item_popularity": self.item_popularity_,
                "base_item_category": self.item_category_,
                "base_ui_data": ui.data,
                "base_ui_indices": ui.indices,
                "base_ui_indptr": ui.indptr,
            }
            state = self._get_state()
            clash = [k for k in state if k.startswith("base_")]
            if clash:
                raise ValueError(f"model state keys must not start with 'base_': {clash}")
            np.savez(tmp / STATE_FILE, **arrays, **state)
            self._write_extra(tmp)
            config[CHECKSUM_KEY] = file_checksums(tmp)
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2))
        logger.info("Saved {} to {}", self.name, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Recommender:
        """Load a model saved by :meth:`save`. ``Recommender.load`` picks the class from the file.

        Everything is checked before the model is returned, each failure an
        :class:`ArtifactError` naming the file: the fields of ``config.json`` and the names and
        JSON types of the parameters, the SHA-256 of every file (a folder saved before
        checksums existed loads with a warning), each npz header against its stored size, and
        the arrays' dtypes, shapes, index ranges and finiteness (:meth:`_validate_state`). A
        save that was killed between its two renames is repaired first.
        """
        path = Path(path)
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            try:
                recover_interrupted_save(path)
            except OSError as exc:
                logger.warning("Cannot repair the interrupted save of {}: {}", path, exc)
        if not config_path.is_file():
            raise ArtifactError(f"no model at {path}: {config_path} does not exist")
        config = read_config(config_path)
        version = config_field(config, "format_version", int, config_path)
        key = config_field(config, "model", str, config_path)
        params = config_field(config, "params", dict, config_path)
        if "name" in config:
            config_field(config, "name", str, config_path)
        if version > FORMAT_VERSION:
            raise ArtifactError(
                f"{config_path} has format version {version}, newer than this funnelrec "
                f"({__version__}) reads ({FORMAT_VERSION}); upgrade funnelrec"
            )
        try:
            model_cls = get_model_class(key)
        except KeyError as exc:
            raise ArtifactError(f"{config_path}: {exc.args[0]}") from None
        if not issubclass(model_cls, cls):
            raise ArtifactError(f"{path} holds a {model_cls.__name__}, not a {cls.__name__}")
        try:
            # the compatibility hook first: it may rename or drop a parameter of an older release
            params = model_cls._saved_params(dict(params))
            model_cls._check_saved_params(params, config_path)
            model = model_cls(**params)
        except ArtifactError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{config_path}: bad parameters for {model_cls.__name__}: {exc}") from exc
        verify_checksums(path, config, config_path)
        state_path = path / STATE_FILE
        state = StateArrays(read_npz(state_path), state_path)
        item_ids, visitor_ids = state.ids("base_item_ids"), state.ids("base_visitor_ids")
        n_items, n_visitors = len(item_ids), len(visitor_ids)
        if n_items == 0 or n_visitors == 0:
            state.fail("base_item_ids" if n_items == 0 else "base_visitor_ids",
                       "is empty: a fitted model knows at least one item and one visitor")
        state.csr("base_ui_indptr", "base_ui_indices", "base_ui_data", (n_visitors, n_items))
        model.item_map_ = IdMap(item_ids)
        model.visitor_map_ = IdMap(visitor_ids)
        model.item_popularity_ = state.get("base_item_popularity", "f", (n_items,), finite=True)
        model.item_category_ = state.get("base_item_category", "i", (n_items,))
        model.user_items_ = sp.csr_matrix(
            (state.arrays["base_ui_data"], state.arrays["base_ui_indices"], state.arrays["base_ui_indptr"]),
            shape=(n_visitors, n_items),
        )
        model._validate_state(state)
        try:
            model._set_state({k: v for k, v in state.arrays.items() if not k.startswith("base_")}, path)
        except ArtifactError:
            raise
        except (OSError, ValueError, TypeError, IndexError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ArtifactError(f"{state_path} (or a file beside it) is corrupted or incomplete: {exc}") from exc
        if "name" in config:
            model.name = config["name"]
        return model


# --------------------------------------------------------------------------- artifact folders
def find_model_dirs(artifacts_dir: str | Path) -> dict[str, Path]:
    """Folders holding a saved model under ``artifacts_dir``: ``{folder name: path}``, sorted.

    ``artifacts_dir`` may itself be one model folder (returned under its own name; an unknown
    model type there is an :class:`ArtifactError`). What
    interrupted saves left is repaired first; hidden folders, among them the ``.<name>.tmp-*``
    and ``.<name>.old-*`` copies a save writes, are never models. A subfolder without
    ``config.json`` is skipped with a log line, as is one whose model type is not registered; a
    folder without a ``"model"`` key (the explainer) is not a model. A ``config.json`` that
    cannot be read is an :class:`ArtifactError` naming it.
    """
    root = Path(artifacts_dir)
    if not root.exists():
        try:
            recover_interrupted_save(root)
        except OSError as exc:
            logger.warning("Cannot repair the interrupted save of {}: {}", root, exc)
    if not root.is_dir():
        return {}
    get_model_class("popular")  # imports funnelrec.models, which registers the built-in models
    if (root / CONFIG_FILE).is_file():
        candidates = [root]
    else:
        recover_interrupted_saves(root)
        candidates = []
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if folder.name.startswith("."):
                logger.debug("Ignoring {}: hidden (a save in progress or interrupted)", folder)
            elif not (folder / CONFIG_FILE).is_file():
                looks_like_a_model = (folder / STATE_FILE).exists()
                (logger.warning if looks_like_a_model else logger.info)(
                    "Skipping {}: it has no {}{}", folder, CONFIG_FILE,
                    " (a damaged model folder?)" if looks_like_a_model else ", so it is not a saved model",
                )
            else:
                candidates.append(folder)
    found: dict[str, Path] = {}
    for folder in candidates:
        config_path = folder / CONFIG_FILE
        key = read_config(config_path).get("model")
        if key is None:
            continue
        if not isinstance(key, str):
            raise ArtifactError(f"{config_path} is corrupted: 'model' must be a string, got {key!r}")
        if key not in REGISTRY:
            if folder == root:  # the one folder asked for cannot be skipped quietly
                raise ArtifactError(f"{config_path}: unknown model type {key!r}; available: {sorted(REGISTRY)}")
            logger.warning("Skipping {}: model type {!r} is not registered", folder, key)
            continue
        found[folder.name] = folder
    return found


@cache
def _param_adapters(cls: type[Recommender]) -> dict[str, tuple[str, TypeAdapter]]:
    """``{parameter: (its annotation as text, a pydantic validator)}`` for the constructor
    parameters whose annotation pydantic understands."""
    try:
        hints = get_type_hints(cls.__init__)
    except (NameError, TypeError) as exc:
        logger.debug("{}: parameter annotations cannot be resolved ({}); saved types are not checked",
                     cls.__name__, exc)
        return {}
    adapters = {}
    for name in cls._param_names():
        if name in hints:
            hint = hints[name]
            text = getattr(hint, "__name__", None) if isinstance(hint, type) else None
            text = text or str(hint).replace("collections.abc.", "").replace("typing.", "")
            try:
                adapters[name] = (text, TypeAdapter(hint))
            except PydanticSchemaGenerationError:  # e.g. a Recommender argument: not saved as JSON
                continue
    return adapters


# --------------------------------------------------------------------------- helpers
def id_list(item_ids: Iterable[int]) -> list:
    """A live session's item ids as a list (read once: a generator works too); a string or a
    non-iterable is a ``ValueError``."""
    if isinstance(item_ids, str | bytes) or not isinstance(item_ids, Iterable):
        raise ValueError(f"item_ids must be a sequence of item ids, got {item_ids!r}")
    return item_ids if isinstance(item_ids, list) else list(item_ids)


def _valid(model: Recommender, idx: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = idx >= 0
    return model.item_map_.to_ids(idx[keep]), scores[keep]


def _as_list(item_ids: np.ndarray, scores: np.ndarray, fallback: bool = False) -> RecommendationList:
    keep = np.asarray(item_ids) >= 0
    return RecommendationList(
        zip(np.asarray(item_ids)[keep].tolist(), np.asarray(scores, dtype=float)[keep].tolist(), strict=True),
        is_fallback=fallback,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"parameter value {value!r} cannot be saved as JSON")
