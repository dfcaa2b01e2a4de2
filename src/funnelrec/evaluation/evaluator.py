"""The Evaluator: two honest protocols, full-catalogue ranking, conservative ties."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from loguru import logger

from funnelrec.data.encoding import (
    Sequences,
    next_item_targets,
    sequences_from_sorted,
    take_prefixes,
)
from funnelrec.data.schema import (
    EVENT,
    ITEM_ID,
    SESSION_ID,
    VISITOR_ID,
    timestamp_ms,
    validate_events,
)
from funnelrec.evaluation.metrics import (
    catalogue_coverage,
    csr_entries,
    next_item_metrics,
    ranks_of,
    user_metrics,
)
from funnelrec.models.base import SCORE_BLOCK_FLOATS, Recommender, mask_rows, top_k
from funnelrec.progress import progress_bar


class EvaluationResult(dict):
    """A plain dict of the mean metrics (as the seed notebook uses it) plus per-row values.

    ``details`` holds one row per visitor (``evaluate``) or per predicted event
    (``evaluate_sessions``) when requested with ``return_details=True``, else ``None``.
    """

    details: pd.DataFrame | None = None


class Evaluator:
    """Evaluate any :class:`~funnelrec.models.base.Recommender` with the same rules.

    Parameters
    ----------
    k_values:
        Cutoffs for the @k metrics.
    exclude_seen:
        ``evaluate`` only: items a visitor interacted with in train are removed from the
        ranking and from the truth (the same rule for every model family; reported in results).
    truth_events:
        ``evaluate`` only: which test event types make an item relevant; ``None`` = all
        (``("addtocart", "transaction")`` measures purchase intent).
    ties:
        ``"conservative"`` (default): a target tied with others takes the worst of their ranks.
    seed:
        Seed for sampling visitors (``None``: ``settings.random_seed``).
    """

    def __init__(
        self,
        k_values: Sequence[int] = (5, 10, 20),
        *,
        exclude_seen: bool = True,
        truth_events: Sequence[str] | None = None,
        ties: str = "conservative",
        seed: int | None = None,
        show_progress: bool = False,
    ) -> None:
        ks = sorted({int(k) for k in k_values})
        if not ks or ks[0] < 1:
            raise ValueError(f"k_values must be positive integers, got {list(k_values)}")
        if truth_events is not None:
            bad = [e for e in truth_events if e not in ("view", "addtocart", "transaction")]
            if bad:
                raise ValueError(f"truth_events has unknown event types {bad}")
        if ties not in ("conservative", "optimistic"):
            raise ValueError(f"ties must be 'conservative' or 'optimistic', got {ties!r}")
        self.k_values = ks
        self.exclude_seen = exclude_seen
        self.truth_events = tuple(truth_events) if truth_events is not None else None
        self.ties = ties
        self.seed = seed
        self.show_progress = show_progress

    # ------------------------------------------------------------------ visitor holdout
    def evaluate(
        self,
        model: Recommender,
        train: pd.DataFrame,
        test: pd.DataFrame,
        n_items: int = 20,
        max_users: int | None = 2000,
        *,
        return_details: bool = False,
    ) -> EvaluationResult:
        """Visitor-holdout protocol: predict what warm visitors interact with in the test period.

        1. Visitors present in ``train`` and in ``test`` (and known to the model) are evaluated;
           when there are more than ``max_users`` a seeded random sample is drawn.
        2. Truth: the distinct items each visitor interacted with in ``test`` (only
           ``truth_events`` types when set). With ``exclude_seen`` items the visitor had in
           ``train`` are removed from the truth and masked from the ranking.
        3. Every item of the model's catalogue is scored (no sampled negatives); a truth item
           unknown to the model counts as a miss. Ties count against the model.
        4. Visitors left with no truth are skipped and counted (``n_users_no_truth``).

        Returns a dict: ``model``, ``precision@k``, ``recall@k``, ``ndcg@k``, ``hit_rate@k`` for
        each k, ``hit_rate`` and ``mrr`` at ``n_items``, ``coverage`` (share of the catalogue in
        the top-``n_items`` lists), ``n_items`` itself, ``n_users`` and protocol counts.
        """
        validate_events(train, name="train")
        validate_events(test, name="test")
        if not isinstance(n_items, int) or n_items < 1:
            raise ValueError(f"n_items must be a positive integer, got {n_items!r}")
        if max_users is not None and max_users < 1:
            raise ValueError(f"max_users must be positive or None, got {max_users}")
        started = time.perf_counter()
        truth_frame = test if self.truth_events is None else test[test[EVENT].isin(self.truth_events)]
        warm = np.intersect1d(train[VISITOR_ID].unique(), truth_frame[VISITOR_ID].unique())
        warm = warm[model.visitor_map_.to_idx(warm) >= 0]
        n_warm = len(warm)
        if max_users is not None and n_warm > max_users:
            from funnelrec.config import settings

            rng = np.random.default_rng(settings.random_seed if self.seed is None else self.seed)
            warm = np.sort(rng.choice(warm, max_users, replace=False))
        n_rows, n_cat = len(warm), model.n_items
        seen = self._user_item_matrix(model, train, warm)
        truth = self._user_item_matrix(model, truth_frame, warm, keep_unknown=True)
        # truth items unknown to the model sit in an extra last column: counted, never hit
        if self.exclude_seen:
            seen_padded = sp.hstack([seen, sp.csr_matrix((n_rows, 1))]).tocsr()
            truth = (truth - truth.multiply(seen_padded > 0)).tocsr()
            truth.eliminate_zeros()
        n_relevant_all = np.diff(truth.indptr)
        has_truth = n_relevant_all > 0
        users = np.flatnonzero(has_truth)
        truth = truth[users]
        seen = seen[users]
        n_relevant = n_relevant_all[users]
        user_idx = model.visitor_map_.to_idx(warm[users])
        max_k = max(max(self.k_values), n_items)
        ranks_all, user_all, top_lists = [], [], []
        block = max(1, SCORE_BLOCK_FLOATS // max(n_cat, 1))
        bar = progress_bar(range(0, len(users), block), desc=f"evaluate {model.name}", enabled=self.show_progress,
                           leave=False)
        for lo in bar:
            hi = min(lo + block, len(users))
            scores = np.array(model.score_users(user_idx[lo:hi]), dtype=np.float32, copy=True)
            if self.exclude_seen:
                mask_rows(scores, seen[lo:hi])
            rows, cols = csr_entries(truth[lo:hi])
            known = cols < n_cat
            ranks = np.full(len(rows), max_k + 1, dtype=np.int64)
            ranks[known] = ranks_of(scores, rows[known], cols[known], self.ties, max_rank=max_k)
            ranks_all.append(ranks)
            user_all.append(rows + lo)
            top_lists.append(top_k(scores, n_items)[0])
        ranks = np.concatenate(ranks_all) if ranks_all else np.empty(0, np.int64)
        user_of = np.concatenate(user_all) if user_all else np.empty(0, np.int64)
        per_user = user_metrics(ranks, user_of, len(users), n_relevant, self.k_values, n_items)
        result = EvaluationResult({"model": model.name})
        for key, values in per_user.items():
            result[key] = float(values.mean()) if len(values) else 0.0
        tops = np.concatenate(top_lists) if top_lists else np.empty((0, n_items), np.int64)
        result["coverage"] = catalogue_coverage(tops, n_cat)
        result["n_items"] = n_items  # the cutoff of hit_rate, mrr and coverage, for labels
        result["n_users"] = int(len(users))
        result["n_users_warm"] = int(n_warm)
        result["n_users_no_truth"] = int((~has_truth).sum())
        result["n_truth_items_unknown"] = int((truth.indices >= n_cat).sum())
        result["exclude_seen"] = self.exclude_seen
        result["seconds"] = time.perf_counter() - started
        if return_details:
            result.details = pd.DataFrame(per_user, index=pd.Index(warm[users], name=VISITOR_ID))
        logger.info(
            "{}: ndcg@10 {:.4f}, hit_rate@{} {:.4f} over {:,} visitors ({:.1f}s)",
            model.name, result.get("ndcg@10", float("nan")), n_items, result["hit_rate"],
            result["n_users"], result["seconds"],
        )
        return result

    @staticmethod
    def _user_item_matrix(model: Recommender, events: pd.DataFrame, visitors: np.ndarray,
                          keep_unknown: bool = False) -> sp.csr_matrix:
        """Binary visitors x model-items matrix of ``events``; unknown items -> extra column."""
        frame = events[events[VISITOR_ID].isin(visitors)]
        rows = np.searchsorted(visitors, frame[VISITOR_ID].to_numpy())
        cols = model.item_map_.to_idx(frame[ITEM_ID].to_numpy())
        n_cols = model.n_items + (1 if keep_unknown else 0)
        if keep_unknown:
            cols = np.where(cols < 0, model.n_items, cols)
        else:
            rows, cols = rows[cols >= 0], cols[cols >= 0]
        matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(visitors), n_cols))
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix

    # ------------------------------------------------------------------ next item in session
    def evaluate_sessions(
        self,
        model: Recommender,
        test: pd.DataFrame,
        cutoff: int = 20,
        *,
        max_events: int | None = None,
        batch_size: int = 512,
        return_details: bool = False,
    ) -> EvaluationResult:
        """Next-item protocol of the session-based literature.

        For every test session ``[i1, ..., in]`` and every position ``t >= 2``, the prefix
        ``[i1, ..., i(t-1)]`` is the live session (``score_sessions``, the batched form of
        ``recommend_by_item_ids``) and ``it`` is the target. The whole catalogue is ranked; ties
        count against the model; nothing is filtered from the ranking (repeat views are real next
        items). Prefix items unknown to the model are left out of the prefix; a target unknown to
        the model counts as a miss and is reported in ``n_events_unknown_target``, never dropped.

        Returns ``recall@k``, ``mrr@k``, ``ndcg@k`` for every k in ``k_values`` and ``cutoff``,
        ``n_events``, ``n_sessions``, ``n_events_unknown_target``, ``coverage`` (of the top-``cutoff``
        lists) and ``n_items`` (= ``cutoff``).
        ``max_events`` evaluates a seeded random sample of the predictions.
        """
        validate_events(test, name="test")
        if SESSION_ID not in test.columns:
            raise ValueError("test events need a 'session_id' column; run SessionBuilder.build_sessions")
        if not isinstance(cutoff, int) or cutoff < 1:
            raise ValueError(f"cutoff must be a positive integer, got {cutoff!r}")
        started = time.perf_counter()
        ks = sorted(set(self.k_values) | {cutoff})
        order = np.lexsort((timestamp_ms(test), test[SESSION_ID].to_numpy()))
        keys = test[SESSION_ID].to_numpy()[order]
        raw_items = model.item_map_.to_idx(test[ITEM_ID].to_numpy()[order])
        # unknown items stay in the sequence as -1 so they are counted as targets
        sessions = sequences_from_sorted(keys, raw_items)
        session_row, prefix_length, targets = next_item_targets(sessions)  # prefixes built per block
        rows = np.arange(len(targets))
        if max_events is not None and len(rows) > max_events:
            from funnelrec.config import settings

            rng = np.random.default_rng(settings.random_seed if self.seed is None else self.seed)
            rows = np.sort(rng.choice(len(rows), max_events, replace=False))
        n_cat = model.n_items
        ranks = np.full(len(rows), max(ks) + 1, dtype=np.int64)
        tops = []
        # at most SCORE_BLOCK_FLOATS scores in memory at once, however large the catalogue
        rows_per_block = max(1, min(batch_size, SCORE_BLOCK_FLOATS // max(n_cat, 1)))
        bar = progress_bar(range(0, len(rows), rows_per_block), desc=f"evaluate_sessions {model.name}",
                           enabled=self.show_progress, leave=False)
        for lo in bar:
            block_rows = rows[lo : lo + rows_per_block]
            block = take_prefixes(sessions, session_row[block_rows], prefix_length[block_rows])
            known = block.items >= 0
            block = _drop_unknown(block, known)
            scores = model.score_sessions(block)
            t = targets[block_rows]
            ok = np.flatnonzero(t >= 0)
            ranks[lo + ok] = ranks_of(scores, ok, t[ok], self.ties, max_rank=max(ks))
            tops.append(top_k(scores, cutoff)[0])
        per_event = next_item_metrics(ranks, ks)
        result = EvaluationResult({"model": model.name})
        for key, values in per_event.items():
            result[key] = float(values.mean()) if len(values) else 0.0
        result["coverage"] = catalogue_coverage(np.concatenate(tops) if tops else np.empty((0, 1), np.int64), n_cat)
        result["n_items"] = cutoff  # the length of the ranked lists (coverage's cutoff), as in evaluate
        result["n_events"] = int(len(rows))
        result["n_sessions"] = int(len(np.unique(session_row[rows])))
        result["n_events_unknown_target"] = int((targets[rows] < 0).sum())
        result["seconds"] = time.perf_counter() - started
        if return_details:
            result.details = pd.DataFrame(
                {SESSION_ID: sessions.keys[session_row[rows]], "target_idx": targets[rows], "rank": ranks,
                 **per_event}
            )
        logger.info(
            "{}: Recall@{} {:.4f}, MRR@{} {:.4f} over {:,} events ({} unknown targets, {:.1f}s)",
            model.name, cutoff, result[f"recall@{cutoff}"], cutoff, result[f"mrr@{cutoff}"],
            result["n_events"], result["n_events_unknown_target"], result["seconds"],
        )
        return result


def _drop_unknown(block: Sequences, known: np.ndarray) -> Sequences:
    """Remove ``-1`` items from each prefix (vectorised)."""
    if known.all():
        return block
    row_of = np.repeat(np.arange(len(block)), block.lengths)
    lengths = np.bincount(row_of[known], minlength=len(block))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return Sequences(block.items[known], offsets, block.keys)
