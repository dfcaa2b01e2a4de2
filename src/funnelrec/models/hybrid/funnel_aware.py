"""Session + history fusion: component scores weighted by attention learned over the context.

For each request (a visitor, a live session, or both) every available component scores the
catalogue; the union of their top ``n_candidates`` items is the candidate set; each component's
scores are normalised over the candidates; and the fused score is
``sum_k w_k(context) * score_k``, where ``w = softmax(W @ context + b)`` over the available
components. ``context`` is the visitor's funnel features (stage, counts, rates, recency,
intent), their history length, and the live session's length. ``W`` and ``b`` are learned in
``fit`` to put held-out next items on top (softmax cross-entropy over the candidates), never
hand-set.

Where the attention learns from (no leakage into the examples it learns from):

- a validation frame when ``fit`` gets one (components are fitted on ``train`` only), else
- the last session of every returning visitor in ``train``, held out: components are cloned and
  refitted on the rest (``refit_components=True``, the default) so the held-out items are as
  new to them as test items will be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from loguru import logger
from torch import nn

from funnelrec.data.encoding import IdMap, Interactions, Sequences, sequences_from_sorted
from funnelrec.data.features.user_features import UserFeatureExtractor
from funnelrec.data.schema import ITEM_ID, SESSION_ID, VISITOR_ID, timestamp_ms
from funnelrec.models.base import (
    SCORE_BLOCK_FLOATS,
    NotFittedError,
    RecommendationList,
    Recommender,
    _as_list,
    id_list,
    rank_in_batches,
    register,
    top_k,
)

ROLES: tuple[str, ...] = ("popular", "content", "cf", "session")
#: Roles whose scores come from the visitor's history when the visitor is known.
HISTORY_FIRST = frozenset({"cf"})
NORMALISATIONS = ("minmax", "zscore", "rank")
COMPONENTS_DIR = "components"


class _ContextAttention(nn.Module):
    """``softmax(W @ context + b)`` over the available components, and a learned temperature."""

    def __init__(self, n_context: int, n_components: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_context, n_components)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.log_scale = nn.Parameter(torch.tensor(2.0))  # fused scores x e^2 before the softmax

    def forward(self, context: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
        logits = self.linear(context).masked_fill(~available, float("-inf"))
        return torch.softmax(logits, dim=-1)


@register("funnel_hybrid")
class FunnelAwareHybridRecommender(Recommender):
    """The funnel-aware hybrid: attention over components conditioned on the visitor's context.

    Parameters
    ----------
    popular_model, content_model, cf_model, session_model:
        Component recommenders (any may be ``None``). Unfitted components are fitted on the
        training events in :meth:`fit`; fitted ones must have been fitted on the same events.
        ``cf_model`` scores from the visitor's history when the visitor is known; the others
        score the live session when there is one, else the visitor's history.
    score_normalization:
        ``"minmax"``, ``"zscore"`` or ``"rank"`` (per component, over the candidates).
    user_feature_extractor:
        Source of the funnel context; fitted on the training events if it is not yet.
    n_candidates:
        Each component contributes its top ``n_candidates`` items to the candidate set.
    max_training_examples, epochs, learning_rate, weight_decay:
        The attention's training budget (full-batch Adam).
    refit_components:
        Without a validation frame, refit clones of the components without the held-out
        sessions (clean, costs one more fit of each); ``False`` reuses the fitted components
        (fast, but they have seen the held-out items).
    """

    name = "FunnelAwareHybrid"

    def __init__(
        self,
        popular_model: Recommender | None = None,
        content_model: Recommender | None = None,
        cf_model: Recommender | None = None,
        session_model: Recommender | None = None,
        score_normalization: str = "minmax",
        user_feature_extractor: UserFeatureExtractor | None = None,
        n_candidates: int = 100,
        max_training_examples: int = 4000,
        epochs: int = 200,
        learning_rate: float = 0.05,
        weight_decay: float = 1e-3,
        refit_components: bool = True,
        seed: int | None = None,
    ) -> None:
        if score_normalization not in NORMALISATIONS:
            raise ValueError(f"score_normalization must be one of {NORMALISATIONS}, got {score_normalization!r}")
        for name, value, least in (("n_candidates", n_candidates, 1),
                                   ("max_training_examples", max_training_examples, 1), ("epochs", epochs, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        for name, value in (("learning_rate", learning_rate), ("weight_decay", weight_decay)):
            if not isinstance(value, int | float) or not np.isfinite(value) or value < 0 \
                    or (name == "learning_rate" and value == 0):
                raise ValueError(f"{name} must be a finite number {'> 0' if name == 'learning_rate' else '>= 0'}, "
                                 f"got {value!r}")
        components = {"popular": popular_model, "content": content_model, "cf": cf_model, "session": session_model}
        for role, model in components.items():
            if model is not None and not isinstance(model, Recommender):
                raise TypeError(f"{role}_model must be a Recommender, got {type(model).__name__}")
        self.popular_model = popular_model
        self.content_model = content_model
        self.cf_model = cf_model
        self.session_model = session_model
        self.score_normalization = score_normalization
        self.user_feature_extractor = user_feature_extractor
        self.n_candidates = n_candidates
        self.max_training_examples = max_training_examples
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.refit_components = refit_components
        self.seed = seed

    # ------------------------------------------------------------------ parameters
    _OBJECT_PARAMS = frozenset({"popular_model", "content_model", "cf_model", "session_model",
                                "user_feature_extractor"})

    @classmethod
    def _param_names(cls) -> list[str]:
        # components and the extractor are saved as artifacts of their own, not as parameters
        return [p for p in super()._param_names() if p not in cls._OBJECT_PARAMS]

    @property
    def components(self) -> dict[str, Recommender]:
        """The present components by role."""
        return {role: m for role, m in zip(ROLES, (self.popular_model, self.content_model, self.cf_model,
                                                   self.session_model), strict=True) if m is not None}

    # ------------------------------------------------------------------ fitting
    def _fit(self, data: Interactions, events: pd.DataFrame, val_events: pd.DataFrame | None) -> None:
        from funnelrec.config import settings

        seed = settings.random_seed if self.seed is None else self.seed
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        if not self.components:
            raise ValueError("FunnelAwareHybridRecommender needs at least one component model")
        if SESSION_ID not in events.columns:
            raise ValueError("FunnelAwareHybridRecommender needs events with 'session_id' (SessionBuilder)")
        for role, model in self.components.items():
            if not model.is_fitted:
                logger.info("Hybrid: fitting the {} component ({})", role, model.name)
                model.fit(events, val_events=val_events if model.sequential else None)
        self.roles_ = list(self.components)
        extractor = self.user_feature_extractor or UserFeatureExtractor()
        if extractor.features_ is None:
            extractor.fit(events)
        self.user_feature_extractor = extractor
        self.context_ = extractor.feature_matrix(self.visitor_map_.ids)
        self.default_context_ = extractor.feature_matrix([-(2**62)])[0]

        if val_events is not None and len(val_events) and SESSION_ID in val_events.columns:
            scorers, history, heldout = self.components, events, val_events
            history_context = self.context_
            history_map = self.visitor_map_
            history_seen = self.user_items_
            logger.info("Hybrid: learning attention on the validation frame ({:,} events)", len(val_events))
        else:
            history, heldout = _hold_out_last_sessions(events)
            if heldout.empty:
                raise ValueError("no visitor has two sessions to hold one out; pass val_events to fit()")
            scorers = self._refit_clones(history) if self.refit_components else self.components
            as_of = UserFeatureExtractor(extractor.n_favourite_categories).fit(history)
            history_map = Interactions(history).visitor_map
            history_context = as_of.feature_matrix(history_map.ids)
            history_seen = _seen_matrix(history, history_map, self.item_map_)
            logger.info("Hybrid: learning attention on {:,} held-out events of {:,} returning visitors",
                        len(heldout), heldout[VISITOR_ID].nunique())
        examples = self._examples(heldout, history, history_map, rng)
        self._train_attention(examples, scorers, history_map, history_context, history_seen)

    def _refit_clones(self, history: pd.DataFrame) -> dict[str, Recommender]:
        clones = {}
        for role, model in self.components.items():
            clone = type(model)(**model.get_params())
            logger.info("Hybrid: refitting a clone of the {} component without the held-out sessions", role)
            clones[role] = clone.fit(history)
        return clones

    def _examples(self, heldout: pd.DataFrame, history: pd.DataFrame, history_map, rng) -> dict[str, np.ndarray]:
        """Training requests: (visitor or anonymous, live prefix or none) -> the next item."""
        order = np.lexsort((timestamp_ms(heldout), heldout[SESSION_ID].to_numpy()))
        session_keys = heldout[SESSION_ID].to_numpy()[order]
        item_idx = self.item_map_.to_idx(heldout[ITEM_ID].to_numpy()[order])
        visitors = heldout[VISITOR_ID].to_numpy()[order]
        keep = item_idx >= 0
        session_keys, item_idx, visitors = session_keys[keep], item_idx[keep], visitors[keep]
        sessions = sequences_from_sorted(session_keys, item_idx)
        first = sessions.offsets[:-1]
        visitor_of_session = history_map.to_idx(visitors[first]) if len(first) else np.empty(0, np.int64)
        # (a) history only: a returning visitor, no live session -> each distinct item of the
        # held-out session
        session_of_item = np.repeat(np.arange(len(sessions)), sessions.lengths)
        distinct = ~pd.DataFrame({"s": session_of_item, "i": sessions.items}).duplicated().to_numpy()
        a_rows = np.flatnonzero(distinct & (visitor_of_session[session_of_item] >= 0))
        a_visitor = visitor_of_session[session_of_item[a_rows]]
        a_target = sessions.items[a_rows]
        # (b) live prefixes: every next item of every held-out session, once anonymous and once
        # with the visitor (when known)
        lengths = sessions.lengths
        n_targets = np.maximum(lengths - 1, 0)
        session_row = np.repeat(np.arange(len(sessions)), n_targets)
        pos = np.arange(n_targets.sum()) - np.repeat(np.cumsum(n_targets) - n_targets, n_targets) + 1
        b_target = sessions.items[first[session_row] + pos]
        b_visitor = visitor_of_session[session_row]
        visitor = np.concatenate([a_visitor, np.full(len(b_target), -1), b_visitor])
        start = np.concatenate([np.zeros(len(a_target), np.int64), first[session_row], first[session_row]])
        length = np.concatenate([np.zeros(len(a_target), np.int64), pos, pos])
        target = np.concatenate([a_target, b_target, b_target])
        kind = np.concatenate([np.zeros(len(a_target), np.int8), np.ones(len(b_target), np.int8),
                               np.full(len(b_target), 2, np.int8)])
        kind[(kind == 2) & (visitor < 0)] = -1  # the known-visitor copy of an anonymous session
        rows = self._balanced_rows(kind, rng)
        offsets = np.concatenate([[0], np.cumsum(length[rows])]).astype(np.int64)
        take = np.repeat(start[rows] - offsets[:-1], length[rows]) + np.arange(offsets[-1])
        prefixes = Sequences(sessions.items[take], offsets, np.arange(len(rows)))
        return {"visitor": visitor[rows], "prefixes": prefixes, "target": target[rows], "kind": kind[rows]}

    def _balanced_rows(self, kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Up to ``max_training_examples`` rows, shared evenly among the kinds of request.

        History-only requests are few next to session prefixes; an even share keeps the
        attention from learning the session context alone.
        """
        pools = [np.flatnonzero(kind == k) for k in (0, 1, 2)]
        pools = [p for p in pools if len(p)]
        budget, chosen = self.max_training_examples, []
        for i, pool in enumerate(sorted(pools, key=len)):  # small pools first, leftovers move on
            share = budget // (len(pools) - i)
            pick = pool if len(pool) <= share else rng.choice(pool, share, replace=False)
            chosen.append(pick)
            budget -= len(pick)
        return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, np.int64)

    def _train_attention(self, examples, scorers, history_map, history_context, history_seen) -> None:
        visitor, prefixes, target = examples["visitor"], examples["prefixes"], examples["target"]
        kind = examples["kind"]
        # as served: a history-only request is answered from items the visitor does not have yet
        history_only = sp.diags((kind == 0).astype(np.float32))
        seen = (history_only @ history_seen[np.maximum(visitor, 0)]).tocsr()
        seen.eliminate_zeros()
        norm, cand, available = self._component_matrix(scorers, history_map, visitor, prefixes, seen)
        context = self._context(history_context, visitor, prefixes)
        self.context_mean_ = context.mean(axis=0)
        self.context_std_ = context.std(axis=0) + 1e-6
        # keep examples whose target is a candidate: the attention can only reorder candidates
        hit = cand[np.arange(len(target)), target]
        logger.info("Hybrid: {:,} training requests, target among candidates in {:.1%}",
                    len(target), hit.mean() if len(hit) else 0.0)
        rows = np.flatnonzero(hit)
        self.attention_ = _ContextAttention(context.shape[1], len(self.roles_))
        if len(rows) == 0:
            logger.warning("Hybrid: no held-out target among the candidates; keeping uniform weights")
            return
        cand_lists = [np.flatnonzero(cand[r]) for r in rows]
        width = max(len(c) for c in cand_lists)
        padded_scores = np.zeros((len(rows), len(self.roles_), width), np.float32)
        valid = np.zeros((len(rows), width), bool)
        target_pos = np.zeros(len(rows), np.int64)
        for j, (r, cols) in enumerate(zip(rows, cand_lists, strict=True)):  # a few thousand requests
            padded_scores[j, :, : len(cols)] = norm[:, r, cols]
            valid[j, : len(cols)] = True
            target_pos[j] = np.searchsorted(cols, target[r])
        ctx = torch.from_numpy((context[rows] - self.context_mean_) / self.context_std_).float()
        avail = torch.from_numpy(available[:, rows].T.copy())
        scores_t = torch.from_numpy(padded_scores)
        padding = torch.from_numpy(np.where(valid, 0.0, -np.inf).astype(np.float32))  # additive mask
        target_t = torch.from_numpy(target_pos)
        # each kind of request weighs the same in the loss, however many rows it has
        kinds, counts = np.unique(kind[rows], return_counts=True)
        per_kind = dict(zip(kinds.tolist(), (1.0 / (counts * len(kinds))).tolist(), strict=True))
        row_weight = torch.tensor([per_kind[k] for k in kind[rows].tolist()], dtype=torch.float32)
        optimizer = torch.optim.Adam(self.attention_.parameters(), lr=self.learning_rate,
                                     weight_decay=self.weight_decay)
        first_loss = loss = None
        for epoch in range(self.epochs):
            weights = self.attention_(ctx, avail)  # [E, K]
            fused = torch.einsum("ek,ekw->ew", weights, scores_t) * self.attention_.log_scale.exp()
            losses = nn.functional.cross_entropy(fused + padding, target_t, reduction="none")
            loss = (losses * row_weight).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if epoch == 0:
                first_loss = loss.item()
        if loss is not None:
            logger.info("Hybrid: attention loss {:.4f} -> {:.4f} over {} epochs", first_loss, loss.item(), self.epochs)
        else:
            logger.warning("Hybrid: epochs=0, the attention keeps its initial (uniform) weights")
        self.attention_.eval()

    # ------------------------------------------------------------------ scoring
    def _component_scores(self, role: str, model: Recommender, visitor_map, visitor: np.ndarray,
                          prefixes: Sequences) -> tuple[np.ndarray, np.ndarray]:
        """Dense scores of one component aligned to this model's items, and which rows it could score."""
        n = len(visitor)
        out = np.full((n, self.n_items), np.nan, dtype=np.float32)
        has_session = prefixes.lengths > 0
        # the component's own indices for the visitor and the session items
        comp_visitor = np.full(n, -1, np.int64)
        known = visitor >= 0
        comp_visitor[known] = model.visitor_map_.to_idx(visitor_map.to_ids(visitor[known]))
        use_history = (comp_visitor >= 0) & ((role in HISTORY_FIRST) | ~has_session)
        use_session = ~use_history & has_session
        columns = model.item_map_.to_idx(self.item_map_.ids)  # this model's items in the component
        present = columns >= 0
        if use_history.any():
            rows = np.flatnonzero(use_history)
            out[np.ix_(rows, np.flatnonzero(present))] = model.score_users(comp_visitor[rows])[:, columns[present]]
        if use_session.any():
            rows = np.flatnonzero(use_session)
            sub = prefixes.take(rows)
            comp_items = model.item_map_.to_idx(self.item_map_.to_ids(sub.items))
            sub = _drop_negative(Sequences(comp_items, sub.offsets, sub.keys))
            out[np.ix_(rows, np.flatnonzero(present))] = model.score_sessions(sub)[:, columns[present]]
        available = use_history | use_session
        if role == "popular":  # popularity answers every request
            rest = np.flatnonzero(~available)
            if len(rest):
                pop = np.asarray(model._fallback_popularity(), dtype=np.float32)
                out[np.ix_(rest, np.flatnonzero(present))] = pop[columns[present]]
            available[:] = True
        out[~np.isfinite(out)] = np.nan
        return out, available

    def _component_matrix(self, scorers, visitor_map, visitor, prefixes, seen: sp.csr_matrix | None = None):
        """Normalised scores ``[K, n, items]``, candidate mask ``[n, items]``, availability ``[K, n]``.

        ``seen`` (``[n, items]``, this model's item indices, or ``None``): items kept out of the
        candidates, so that the candidate slots go to items the visitor can still be offered.
        """
        n, k = len(visitor), len(self.roles_)
        raw = np.empty((k, n, self.n_items), dtype=np.float32)
        available = np.zeros((k, n), dtype=bool)
        for j, role in enumerate(self.roles_):
            raw[j], available[j] = self._component_scores(role, scorers[role], visitor_map, visitor, prefixes)
        if seen is not None and seen.nnz:
            row_of = np.repeat(np.arange(n), np.diff(seen.indptr))
            raw[:, row_of, seen.indices] = np.nan
        cand = np.zeros((n, self.n_items), dtype=bool)
        kk = min(self.n_candidates, self.n_items)
        for j in range(k):
            scores = np.where(np.isnan(raw[j]), -np.inf, raw[j])
            idx, top_scores = top_k(scores, kk)
            ok = (idx >= 0) & available[j][:, None]
            cand[np.repeat(np.arange(n), kk)[ok.ravel()], idx.ravel()[ok.ravel()]] = True
        norm = np.stack([_normalise(raw[j], cand, self.score_normalization) for j in range(k)])
        return norm, cand, available

    def _context(self, context_matrix, visitor: np.ndarray, prefixes: Sequences) -> np.ndarray:
        base = np.where((visitor >= 0)[:, None], context_matrix[np.maximum(visitor, 0)], self.default_context_)
        session_length = prefixes.lengths.astype(np.float32)
        extra = np.stack([np.log1p(session_length), (session_length > 0).astype(np.float32)], axis=1)
        return np.hstack([base, extra]).astype(np.float32)

    def _weights(self, context: np.ndarray, available: np.ndarray) -> np.ndarray:
        self._check_attention()
        with torch.no_grad():
            ctx = torch.from_numpy((context - self.context_mean_) / self.context_std_).float()
            return self.attention_(ctx, torch.from_numpy(available.T.copy())).numpy()

    def _check_attention(self) -> None:
        if not hasattr(self, "attention_"):
            raise NotFittedError("FunnelAwareHybridRecommender is not fitted")

    def _fused(self, visitor: np.ndarray, prefixes: Sequences,
               seen: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Dense fused scores for requests, in blocks; non-candidates rank below candidates.

        ``seen``: per request, items kept out of the candidates (see :meth:`_component_matrix`).
        """
        n = len(visitor)
        out = np.empty((n, self.n_items), dtype=np.float32)
        weights_out = np.zeros((n, len(self.roles_)), dtype=np.float32)
        block = max(1, SCORE_BLOCK_FLOATS // max(self.n_items * (len(self.roles_) + 2), 1))
        pop = self.item_popularity_ / (self.item_popularity_.max() + 1.0)
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            sub = prefixes.take(np.arange(lo, hi))
            norm, cand, available = self._component_matrix(self.components, self.visitor_map_, visitor[lo:hi], sub,
                                                           None if seen is None else seen[lo:hi])
            weights = self._weights(self._context(self.context_, visitor[lo:hi], sub), available)
            fused = np.einsum("nk,kni->ni", weights, norm)
            low = np.where(cand, fused, np.inf).min(axis=1, keepdims=True)
            low = np.where(np.isfinite(low), low, 0.0)
            out[lo:hi] = np.where(cand, fused, low - 2.0 + pop)
            weights_out[lo:hi] = weights
        return out, weights_out

    def _score_similar(self, item_idx: np.ndarray) -> np.ndarray:
        # item-to-item similarity is the content model's job; else the first component that has one
        for role in ("content", "session", "cf", "popular"):
            model = self.components.get(role)
            if model is None:
                continue
            comp_idx = model.item_map_.to_idx(self.item_map_.to_ids(item_idx))
            if (comp_idx < 0).any():
                continue
            columns = model.item_map_.to_idx(self.item_map_.ids)
            try:
                scores = np.asarray(model._score_similar(comp_idx), dtype=np.float32)
            except NotImplementedError:
                continue
            return np.where(columns >= 0, scores[:, np.maximum(columns, 0)], -np.inf)
        return self._fallback_scores(len(item_idx), self.item_category_[item_idx])

    def _history_only(self, user_idx: np.ndarray, keep_seen: bool) -> np.ndarray:
        user_idx = np.asarray(user_idx, np.int64)
        empty = Sequences(np.empty(0, np.int64), np.zeros(len(user_idx) + 1, np.int64), np.arange(len(user_idx)))
        return self._fused(user_idx, empty, None if keep_seen else self.user_items_[user_idx])[0]

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        # the answer as served with exclude_seen (the default, and the Evaluator's default):
        # candidates are items the visitor does not have yet, their own items rank below them
        return self._history_only(user_idx, keep_seen=False)

    def _rank_users(self, user_idx: np.ndarray, k: int, exclude) -> tuple[np.ndarray, np.ndarray]:
        if exclude is not None:
            return super()._rank_users(user_idx, k, exclude)
        # exclude_seen=False: the visitor's own items compete as candidates, as in recommend()
        return rank_in_batches(lambda rows: self._history_only(rows, keep_seen=True), user_idx, k, self.n_items)

    def _score_sessions(self, sessions: Sequences) -> np.ndarray:
        return self._fused(np.full(len(sessions), -1, np.int64), sessions)[0]

    # ------------------------------------------------------------------ public extras
    def recommend(self, user_id: int, n_items: int = 10, exclude_seen: bool = True,
                  session_item_ids=None) -> RecommendationList:
        """Top items for a visitor, fusing their live session when ``session_item_ids`` is given.

        The result carries ``component_weights``: how much each component counted.
        """
        self._check_fitted()
        n = self._check_n(n_items)
        if session_item_ids is not None:
            session_item_ids = id_list(session_item_ids)
        visitor, prefixes = self._request(user_id, session_item_ids)
        if visitor[0] < 0 and prefixes.lengths[0] == 0:
            return self._fallback_list(n, session_item_ids)
        history_only = exclude_seen and visitor[0] >= 0 and prefixes.lengths[0] == 0
        scores, weights = self._fused(visitor, prefixes, self.user_items_[visitor] if history_only else None)
        if exclude_seen and visitor[0] >= 0:
            row = self.user_items_[visitor[0]]
            scores[0, row.indices] = -np.inf
        idx, top = top_k(scores, n)
        keep = idx[0] >= 0
        result = _as_list(self.item_map_.to_ids(idx[0][keep]), top[0][keep])
        result.component_weights = dict(zip(self.roles_, weights[0].astype(float).round(6).tolist(), strict=True))
        return result

    def recommend_by_item_ids(self, item_ids, n_items: int = 10, exclude_seen: bool = False) -> RecommendationList:
        item_ids = id_list(item_ids)
        result = super().recommend_by_item_ids(item_ids, n_items, exclude_seen)
        if not result.is_fallback:
            result.component_weights = self.explain_weights(None, item_ids)
        return result

    def explain_weights(self, visitor_id: int | None = None, session_item_ids=None) -> dict[str, float]:
        """The attention weight of each component for this visitor and/or live session."""
        self._check_fitted()
        visitor, prefixes = self._request(visitor_id, session_item_ids)
        available = np.zeros((len(self.roles_), 1), dtype=bool)
        for j, role in enumerate(self.roles_):
            model = self.components[role]
            known = visitor[0] >= 0 and model.visitor_map_.to_idx(self.visitor_map_.to_ids(visitor))[0] >= 0
            available[j, 0] = role == "popular" or known or prefixes.lengths[0] > 0
        weights = self._weights(self._context(self.context_, visitor, prefixes), available)[0]
        return dict(zip(self.roles_, weights.astype(float).round(6).tolist(), strict=True))

    def _request(self, visitor_id, session_item_ids) -> tuple[np.ndarray, Sequences]:
        visitor = np.array([-1 if visitor_id is None else self.visitor_map_.to_idx([visitor_id])[0]], np.int64)
        idx = self._session_indices(session_item_ids if session_item_ids is not None else [])
        return visitor, Sequences.single(idx)

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> dict[str, np.ndarray]:
        state = {k: v.detach().numpy() for k, v in self.attention_.state_dict().items()}
        return {
            **{f"attention_{k}": v for k, v in state.items()},
            "roles": np.array(self.roles_),
            "context": self.context_,
            "default_context": self.default_context_,
            "context_mean": self.context_mean_,
            "context_std": self.context_std_,
        }

    def _write_extra(self, path: Path) -> None:
        for role, model in self.components.items():
            model.save(path / COMPONENTS_DIR / role)

    def _set_state(self, arrays: dict[str, Any], path: Path) -> None:
        self.roles_ = [str(r) for r in arrays["roles"]]
        for role in self.roles_:
            setattr(self, f"{role}_model", Recommender.load(path / COMPONENTS_DIR / role))
        self.context_ = arrays["context"]
        self.default_context_ = arrays["default_context"]
        self.context_mean_ = arrays["context_mean"]
        self.context_std_ = arrays["context_std"]
        self.attention_ = _ContextAttention(self.context_.shape[1] + 2, len(self.roles_))
        self.attention_.load_state_dict(
            {k[len("attention_"):]: torch.from_numpy(np.array(v)) for k, v in arrays.items()
             if k.startswith("attention_")}
        )
        self.attention_.eval()


# --------------------------------------------------------------------------- helpers
def _hold_out_last_sessions(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off the last session of every visitor who has two or more sessions."""
    starts = events.groupby(SESSION_ID, sort=False)["timestamp"].min()
    owner = events.drop_duplicates(SESSION_ID).set_index(SESSION_ID)[VISITOR_ID].reindex(starts.index)
    frame = pd.DataFrame({"start": starts.to_numpy(), VISITOR_ID: owner.to_numpy()}, index=starts.index)
    frame = frame.sort_values([VISITOR_ID, "start"])
    counts = frame.groupby(VISITOR_ID)["start"].transform("size")
    last = ~frame.duplicated(VISITOR_ID, keep="last") & (counts >= 2)
    heldout_sessions = frame.index[last.to_numpy()]
    mask = events[SESSION_ID].isin(heldout_sessions).to_numpy()
    return events[~mask].reset_index(drop=True), events[mask].reset_index(drop=True)


def _seen_matrix(events: pd.DataFrame, visitor_map: IdMap, item_map: IdMap) -> sp.csr_matrix:
    """Visitor x item indicator of ``events`` in the given index spaces (unknown ids dropped)."""
    rows = visitor_map.to_idx(events[VISITOR_ID].to_numpy())
    cols = item_map.to_idx(events[ITEM_ID].to_numpy())
    ok = (rows >= 0) & (cols >= 0)
    matrix = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (rows[ok], cols[ok])),
                           shape=(len(visitor_map), len(item_map)))
    matrix.sum_duplicates()
    return matrix


def _drop_negative(sequences: Sequences) -> Sequences:
    keep = sequences.items >= 0
    if keep.all():
        return sequences
    row_of = np.repeat(np.arange(len(sequences)), sequences.lengths)
    lengths = np.bincount(row_of[keep], minlength=len(sequences))
    return Sequences(sequences.items[keep], np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                     sequences.keys)


def _normalise(scores: np.ndarray, cand: np.ndarray, how: str) -> np.ndarray:
    """Normalise each row over its candidates; missing (NaN) and non-candidates become 0."""
    masked = np.where(cand & ~np.isnan(scores), scores, np.nan)
    with np.errstate(all="ignore"):
        if how == "minmax":
            lo = np.nanmin(masked, axis=1, keepdims=True)
            hi = np.nanmax(masked, axis=1, keepdims=True)
            out = (masked - lo) / np.where(hi > lo, hi - lo, 1.0)
        elif how == "zscore":
            mean = np.nanmean(masked, axis=1, keepdims=True)
            std = np.nanstd(masked, axis=1, keepdims=True)
            out = (masked - mean) / np.where(std > 0, std, 1.0)
        else:  # rank: best candidate 1, worst near 0
            filled = np.where(np.isnan(masked), -np.inf, masked)
            ranks = np.argsort(np.argsort(-filled, axis=1, kind="stable"), axis=1, kind="stable")
            counts = (~np.isnan(masked)).sum(axis=1, keepdims=True)
            out = np.where(np.isnan(masked), np.nan, 1.0 - ranks / np.maximum(counts, 1))
    return np.nan_to_num(out, nan=0.0).astype(np.float32)
