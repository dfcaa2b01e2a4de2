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
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from loguru import logger
from torch import nn

from funnelrec.data.encoding import IdMap, Interactions, Sequences, sequences_from_sorted
from funnelrec.data.features.user_features import UserFeatureExtractor
from funnelrec.data.schema import ITEM_ID, SESSION_ID, VISITOR_ID, timestamp_ms
from funnelrec.models.artifacts import STATE_FILE, resolve_inside
from funnelrec.models.base import (
    SCORE_BLOCK_FLOATS,
    NotFittedError,
    RecommendationList,
    Recommender,
    StateArrays,
    _as_list,
    _lowest_indices_win_ties,
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
        cand = self._component_matrix(scorers, history_map, visitor, prefixes, seen)
        context = self._context(history_context, visitor, prefixes)
        self.context_mean_ = context.mean(axis=0)
        self.context_std_ = context.std(axis=0) + 1e-6
        # keep examples whose target is a candidate: the attention can only reorder candidates
        target_slot = (cand.idx == target[:, None]) & cand.valid
        hit = target_slot.any(axis=1)
        logger.info("Hybrid: {:,} training requests, target among candidates in {:.1%}",
                    len(target), hit.mean() if len(hit) else 0.0)
        rows = np.flatnonzero(hit)
        self.attention_ = _ContextAttention(context.shape[1], len(self.roles_))
        if len(rows) == 0:
            logger.warning("Hybrid: no held-out target among the candidates; keeping uniform weights")
            return
        width = int(cand.valid[rows].sum(axis=1).max())
        padded_scores = np.ascontiguousarray(cand.norm[:, rows, :width].transpose(1, 0, 2))  # [E, K, width]
        valid = cand.valid[rows, :width]
        target_pos = target_slot[rows].argmax(axis=1)
        ctx = torch.from_numpy((context[rows] - self.context_mean_) / self.context_std_).float()
        avail = torch.from_numpy(cand.available[:, rows].T.copy())
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
    def _alignment(self, model: Recommender, visitor_map: IdMap) -> _Alignment:
        """How ``model``'s index spaces map onto this model's items and ``visitor_map``'s visitors.

        Computed once per served component (cached; refitting a component or this model makes a
        new one), so a request never converts between index spaces through the id maps.
        """
        served = visitor_map is self.visitor_map_ and any(model is m for m in self.components.values())
        cache: dict[int, _Alignment] = self.__dict__.setdefault("_alignment_cache", {})
        cached = cache.get(id(model)) if served else None
        if cached is not None and cached.is_for(model, self.item_map_, visitor_map):
            return cached
        alignment = _Alignment.between(model, self.item_map_, visitor_map)
        if served:
            cache[id(model)] = alignment
        return alignment

    def _component_scores(self, role: str, model: Recommender, visitor_map: IdMap, visitor: np.ndarray,
                          prefixes: Sequences, out: np.ndarray) -> np.ndarray:
        """Write one component's scores, aligned to this model's items, into ``out`` ``[n, items]``
        (left NaN where the component has no score); returns which rows it could score."""
        align = self._alignment(model, visitor_map)
        has_session = prefixes.lengths > 0
        comp_visitor = align.component_visitors(visitor)
        use_history = (comp_visitor >= 0) & ((role in HISTORY_FIRST) | ~has_session)
        use_session = ~use_history & has_session
        if use_history.any():
            rows = np.flatnonzero(use_history)
            align.write(out, rows, model.score_users(comp_visitor[rows]))
        if use_session.any():
            rows = np.flatnonzero(use_session)
            sub = prefixes if len(rows) == len(prefixes) else prefixes.take(rows)
            if align.item_columns is not None:
                sub = _drop_negative(Sequences(align.item_columns[sub.items], sub.offsets, sub.keys))
            align.write(out, rows, model.score_sessions(sub))
        available = use_history | use_session
        if role == "popular":  # popularity answers every request
            rest = np.flatnonzero(~available)
            if len(rest):
                pop = np.asarray(model._fallback_popularity(), dtype=np.float32)
                align.write(out, rest, np.broadcast_to(pop, (len(rest), len(pop))))
            available[:] = True
        out[~np.isfinite(out)] = np.nan
        return available

    def _component_matrix(self, scorers, visitor_map: IdMap, visitor: np.ndarray, prefixes: Sequences,
                          seen: sp.csr_matrix | None = None) -> _Candidates:
        """Every component's scores of each request's candidates, normalised (see :class:`_Candidates`).

        The candidates of a request are the union of each available component's top
        ``n_candidates`` items; only they are normalised and fused, never the whole catalogue.
        ``seen`` (``[n, items]``, this model's item indices, or ``None``): items kept out of the
        candidates, so that the candidate slots go to items the visitor can still be offered.
        Requests are scored in blocks of at most :data:`SCORE_BLOCK_FLOATS` dense scores.
        """
        n, k, n_items = len(visitor), len(self.roles_), self.n_items
        kk = min(self.n_candidates, n_items)
        width = k * kk
        idx = np.full((n, width), n_items, dtype=np.int64)
        norm = np.zeros((k, n, width), dtype=np.float32)
        available = np.zeros((k, n), dtype=bool)
        block = max(1, SCORE_BLOCK_FLOATS // max(n_items * (k + 1), 1))
        for lo in range(0, n, block):
            hi = min(lo + block, n)
            sub = prefixes if hi - lo == len(prefixes) else prefixes.take(np.arange(lo, hi))
            raw = np.full((k, hi - lo, n_items), np.nan, dtype=np.float32)
            for j, role in enumerate(self.roles_):
                available[j, lo:hi] = self._component_scores(role, scorers[role], visitor_map, visitor[lo:hi],
                                                             sub, raw[j])
            if seen is not None:
                block_seen = seen[lo:hi]
                if block_seen.nnz:
                    raw[:, np.repeat(np.arange(hi - lo), np.diff(block_seen.indptr)), block_seen.indices] = np.nan
            members = np.stack([_top_members(raw[j], kk, available[j, lo:hi]) for j in range(k)], axis=1)
            members = np.sort(members.reshape(hi - lo, width), axis=1)
            members[:, 1:][members[:, 1:] == members[:, :-1]] = n_items  # an item once per request
            members.sort(axis=1)  # valid candidates first, in item order
            gathered = np.take_along_axis(raw, np.minimum(members, n_items - 1)[None], axis=2)
            idx[lo:hi] = members
            norm[:, lo:hi] = _normalise(gathered, (members < n_items)[None], self.score_normalization)
        used = int((idx < n_items).sum(axis=1).max(initial=1))
        return _Candidates(idx[:, :used], idx[:, :used] < n_items, norm[:, :, :used], available)

    def _context(self, context_matrix, visitor: np.ndarray, prefixes: Sequences) -> np.ndarray:
        base = np.where((visitor >= 0)[:, None], context_matrix[np.maximum(visitor, 0)], self.default_context_)
        session_length = prefixes.lengths.astype(np.float32)
        extra = np.stack([np.log1p(session_length), (session_length > 0).astype(np.float32)], axis=1)
        return np.hstack([base, extra]).astype(np.float32)

    def _weights(self, context: np.ndarray, available: np.ndarray) -> np.ndarray:
        """The attention's softmax ``[n, K]`` in numpy (a request must not pay torch's call overhead)."""
        self._check_attention()
        cached = self.__dict__.get("_attention_arrays")
        if cached is None or cached[0] is not self.attention_:
            linear = self.attention_.linear
            cached = (self.attention_, linear.weight.detach().cpu().numpy().T.copy(),
                      linear.bias.detach().cpu().numpy().copy())
            self._attention_arrays = cached
        _, weight_t, bias = cached
        scaled = ((context - self.context_mean_) / self.context_std_).astype(np.float32)
        logits = np.where(available.T, scaled @ weight_t + bias, -np.inf)
        with np.errstate(invalid="ignore"):
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def _check_attention(self) -> None:
        if not hasattr(self, "attention_"):
            raise NotFittedError("FunnelAwareHybridRecommender is not fitted")

    def _fused(self, visitor: np.ndarray, prefixes: Sequences,
               seen: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Dense fused scores for requests and the weights used; non-candidates rank below
        candidates, in order of popularity.

        ``seen``: per request, items kept out of the candidates (see :meth:`_component_matrix`).
        """
        cand = self._component_matrix(self.components, self.visitor_map_, visitor, prefixes, seen)
        weights = self._weights(self._context(self.context_, visitor, prefixes), cand.available)
        fused = np.einsum("nk,knc->nc", weights, cand.norm)
        low = np.where(cand.valid, fused, np.inf).min(axis=1, keepdims=True)
        low = np.where(np.isfinite(low), low, 0.0).astype(np.float32)
        out = self._popularity_floor() + (low - 2.0)
        rows, slots = np.nonzero(cand.valid)
        out[rows, cand.idx[rows, slots]] = fused[rows, slots]
        return out, weights

    def _popularity_floor(self) -> np.ndarray:
        """Popularity scaled into [0, 1): orders the non-candidates below the fused candidates."""
        cached = self.__dict__.get("_popularity_floor_cache")
        if cached is None or cached[0] is not self.item_popularity_:
            pop = self.item_popularity_
            cached = (pop, (pop / (pop.max(initial=0.0) + 1.0)).astype(np.float32))
            self._popularity_floor_cache = cached
        return cached[1]

    def _score_similar(self, item_idx: np.ndarray) -> np.ndarray:
        # item-to-item similarity is the content model's job; else the first component that has one
        for role in ("content", "session", "cf", "popular"):
            model = self.components.get(role)
            if model is None:
                continue
            align = self._alignment(model, self.visitor_map_)
            comp_idx = item_idx if align.item_columns is None else align.item_columns[item_idx]
            if (comp_idx < 0).any():
                continue
            try:
                scores = np.asarray(model._score_similar(comp_idx), dtype=np.float32)
            except NotImplementedError:
                continue
            out = np.full((len(item_idx), self.n_items), -np.inf, dtype=np.float32)
            align.write(out, np.arange(len(item_idx)), scores)
            return out
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
                  session_item_ids=None, exclude_session_items: bool = True) -> RecommendationList:
        """Top items for a visitor, fusing their live session when ``session_item_ids`` is given.

        ``exclude_seen`` and ``exclude_session_items`` as in :meth:`Recommender.recommend`. The
        result carries ``component_weights``: how much each component counted.
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
        return self._ranked(scores, weights, n, prefixes.items if exclude_session_items else None)

    def recommend_by_item_ids(self, item_ids, n_items: int = 10,
                              exclude_session_items: bool = True) -> RecommendationList:
        """As :meth:`Recommender.recommend_by_item_ids`, with ``component_weights`` on the result."""
        self._check_fitted()
        n = self._check_n(n_items)
        item_ids = id_list(item_ids)
        known = self._session_indices(item_ids)
        if known.size == 0:
            return self._fallback_list(n, item_ids)
        scores, weights = self._fused(np.array([-1], np.int64), Sequences.single(known))
        return self._ranked(scores, weights, n, known if exclude_session_items else None)

    def _ranked(self, scores: np.ndarray, weights: np.ndarray, n: int,
                excluded: np.ndarray | None) -> RecommendationList:
        """The top ``n`` of one request's fused ``scores`` (``excluded`` item indices left out)."""
        if excluded is not None and len(excluded):
            scores[0, excluded] = -np.inf
        idx, top = top_k(scores, n)
        keep = idx[0] >= 0
        result = _as_list(self.item_map_.to_ids(idx[0][keep]), top[0][keep])
        result.component_weights = dict(zip(self.roles_, weights[0].astype(float).round(6).tolist(), strict=True))
        return result

    def explain_weights(self, visitor_id: int | None = None, session_item_ids=None) -> dict[str, float]:
        """The attention weight of each component for this visitor and/or live session."""
        self._check_fitted()
        visitor, prefixes = self._request(visitor_id, session_item_ids)
        available = np.zeros((len(self.roles_), 1), dtype=bool)
        for j, role in enumerate(self.roles_):
            known = self._alignment(self.components[role], self.visitor_map_).component_visitors(visitor)[0] >= 0
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

    def _validate_state(self, state: StateArrays) -> None:
        roles = state.get("roles", "U", (None,)).tolist()
        if not roles or len(set(roles)) != len(roles) or not set(roles) <= set(ROLES):
            state.fail("roles", f"must name distinct components among {list(ROLES)}, names {roles}")
        width = state.get("context", "f", (len(self.visitor_map_), None), finite=True).shape[1]
        state.get("default_context", "f", (width,), finite=True)
        state.get("context_mean", "f", (width + 2,), finite=True)
        state.get("context_std", "f", (width + 2,), finite=True, low=1e-12)
        state.get("attention_linear.weight", "f", (len(roles), width + 2), finite=True)
        state.get("attention_linear.bias", "f", (len(roles),), finite=True)
        state.get("attention_log_scale", "f", (), finite=True)

    def _set_state(self, arrays: dict[str, Any], path: Path) -> None:
        self.roles_ = [str(r) for r in arrays["roles"]]
        for role in self.roles_:
            # a component is a folder of this artifact, never a path the file makes up
            folder = resolve_inside(path, f"{COMPONENTS_DIR}/{role}", f"{path / STATE_FILE}, component {role!r}")
            setattr(self, f"{role}_model", Recommender.load(folder))
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
class _Candidates(NamedTuple):
    """The candidates of a block of requests, in compact form (``C`` slots per request).

    ``idx`` ``[n, C]``: candidate item indices, ascending, padded with ``n_items``; ``valid``
    ``[n, C]``: which slots hold a candidate; ``norm`` ``[K, n, C]``: each component's normalised
    score of each candidate (0 where it has none); ``available`` ``[K, n]``: which components
    could score each request.
    """

    idx: np.ndarray
    valid: np.ndarray
    norm: np.ndarray
    available: np.ndarray


class _Alignment(NamedTuple):
    """A component's index spaces against the hybrid's: ``None`` where they are the same (the
    usual case: components fitted on the same events), else the component's index of each of
    the hybrid's items (``item_columns``, -1 where unknown) and visitors (``visitor_rows``)."""

    model: Recommender
    item_map: IdMap
    visitor_map: IdMap
    item_columns: np.ndarray | None
    visitor_rows: np.ndarray | None

    @classmethod
    def between(cls, model: Recommender, item_map: IdMap, visitor_map: IdMap) -> _Alignment:
        def same(a: IdMap, b: IdMap) -> bool:
            return a is b or (len(a) == len(b) and np.array_equal(a.ids, b.ids))

        columns = None if same(model.item_map_, item_map) else model.item_map_.to_idx(item_map.ids)
        rows = None if same(model.visitor_map_, visitor_map) else model.visitor_map_.to_idx(visitor_map.ids)
        return cls(model, model.item_map_, visitor_map, columns, rows)

    def is_for(self, model: Recommender, item_map: IdMap, visitor_map: IdMap) -> bool:
        return self.model is model and self.item_map is model.item_map_ and self.visitor_map is visitor_map \
            and (self.item_columns is None or len(self.item_columns) == len(item_map))

    def component_visitors(self, visitor: np.ndarray) -> np.ndarray:
        """The component's index of each visitor index (-1: unknown or no visitor)."""
        if self.visitor_rows is None:
            return np.where(visitor >= 0, visitor, -1)
        return np.where(visitor >= 0, self.visitor_rows[np.maximum(visitor, 0)], -1)

    def write(self, out: np.ndarray, rows: np.ndarray, scores: np.ndarray) -> None:
        """``out[rows]`` = the component's ``scores`` ``[len(rows), its items]`` in the hybrid's item order."""
        if self.item_columns is None:
            out[rows] = scores
            return
        present = np.flatnonzero(self.item_columns >= 0)
        out[np.ix_(rows, present)] = scores[:, self.item_columns[present]]


def _top_members(scores: np.ndarray, k: int, available: np.ndarray) -> np.ndarray:
    """Per row, the indices of the ``k`` best finite (non-NaN) scores, as ``top_k`` picks them;
    slots with no such item, and rows not ``available``, hold ``n_items``."""
    n_rows, n_items = scores.shape
    filled = np.where(np.isnan(scores), -np.inf, scores)
    if k < n_items:
        part = np.argpartition(-filled, k - 1, axis=1)[:, :k]
        _lowest_indices_win_ties(filled, part, k)
    else:
        part = np.broadcast_to(np.arange(n_items), (n_rows, n_items))
    ok = np.isfinite(np.take_along_axis(filled, part, axis=1)) & available[:, None]
    return np.where(ok, part, n_items)


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
    """Normalise each row (last axis) over its candidates; missing (NaN) and non-candidates become 0."""
    masked = np.where(cand & ~np.isnan(scores), scores, np.nan)
    with np.errstate(all="ignore"):
        if how == "minmax":
            lo = np.nanmin(masked, axis=-1, keepdims=True)
            hi = np.nanmax(masked, axis=-1, keepdims=True)
            out = (masked - lo) / np.where(hi > lo, hi - lo, 1.0)
        elif how == "zscore":
            mean = np.nanmean(masked, axis=-1, keepdims=True)
            std = np.nanstd(masked, axis=-1, keepdims=True)
            out = (masked - mean) / np.where(std > 0, std, 1.0)
        else:  # rank: best candidate 1, worst near 0
            filled = np.where(np.isnan(masked), -np.inf, masked)
            ranks = np.argsort(np.argsort(-filled, axis=-1, kind="stable"), axis=-1, kind="stable")
            counts = (~np.isnan(masked)).sum(axis=-1, keepdims=True)
            out = np.where(np.isnan(masked), np.nan, 1.0 - ranks / np.maximum(counts, 1))
    return np.nan_to_num(out, nan=0.0).astype(np.float32)
