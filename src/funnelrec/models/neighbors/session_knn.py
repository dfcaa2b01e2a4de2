"""Session-based k-nearest neighbours with recency-weighted queries (V-SKNN).

V-SKNN (Ludewig & Jannach 2018, "Evaluation of session-based recommendation algorithms"):
the live session is a vector over items whose weights decay with position (the most recent item
counts most); the training sessions sharing at least one item with it are the candidates; the
``sample_size`` most recent candidates are kept, the ``k`` most similar of those are the
neighbours, and an item's score is the sum of the similarities of the neighbours that contain it.

Everything is done for a whole batch of sessions at once with sparse matrix products:

- ``S``: training session x item binary CSR, rows ordered by session end time (row index =
  recency rank, so "most recent" is "largest column index" after ``Q @ S.T``);
- ``Q``: query session x item CSR of position weights;
- ``P = Q @ S.T``: weighted overlaps of each query with every candidate session;
- per-row sampling and top-``k`` filtering on the CSR arrays (no Python loop over sessions);
- ``scores = W @ S`` with ``W`` the neighbours' similarities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from loguru import logger

from funnelrec.data.encoding import Interactions, Sequences
from funnelrec.data.schema import SESSION_ID, timestamp_ms
from funnelrec.models.base import Recommender, StateArrays, register

SAMPLINGS = ("recent", "random")
SIMILARITIES = ("cosine", "dot")
WEIGHTINGS = ("linear", "same", "div", "log", "quadratic")
#: Live sessions scored per sparse product (bounds the size of the candidate matrix).
QUERY_CHUNK = 1024


@register("session_knn")
class SessionKNNRecommender(Recommender):
    """V-SKNN: session-based kNN with position-weighted queries and recency-sampled neighbours.

    Parameters
    ----------
    k:
        Number of nearest neighbour sessions whose items are scored (the most similar ones among
        the sampled candidates; ties go to the more recent session).
    sample_size:
        Candidate sessions (training sessions sharing at least one item with the query) kept per
        query before similarities are ranked; ``None`` keeps every candidate.
    sampling:
        How candidates are sampled when there are more than ``sample_size``: ``"recent"`` keeps
        the sessions that ended last (V-SKNN's choice); ``"random"`` keeps a random subset
        (a per-session random priority drawn once at fit time from ``random_state``).
    similarity:
        ``"cosine"``: ``q . s / (||q|| ||s||)`` between the position-weighted query vector ``q``
        and the binary neighbour session vector ``s``; ``"dot"``: the weighted overlap
        ``q . s`` alone.
    weighting:
        Weight of the query item at position ``i`` (1-based) of a session of length ``n``:
        ``"linear"`` ``i / n`` (the most recent item weighs 1, V-SKNN's linear decay),
        ``"same"`` ``1``, ``"div"`` ``1 / (n - i + 1)``, ``"log"`` ``1 / (1 + log10(n - i + 1))``,
        ``"quadratic"`` ``(i / n) ** 2``. An item seen several times keeps its latest (largest)
        weight.
    idf_weighting:
        Multiply each item's score by ``1 + idf(item)``, ``idf = log(n_sessions / sessions with
        the item)``, which favours rarer items (the IDF variant of the paper's kNN models).
    max_session_length:
        Only the last ``max_session_length`` items of a query session are used (and weighted
        over that tail); ``None`` uses the whole session.
    random_state:
        Seed of the ``"random"`` sampling priorities (unused with ``"recent"``).

    Notes
    -----
    Needs sessions: when the training events have no ``session_id`` they are sessionised with
    :class:`~funnelrec.data.processors.session_builder.SessionBuilder` defaults.
    ``recommend(visitor)`` queries with the visitor's most recent training session, leaving that
    session itself out of its neighbours. ``get_similar_items`` is the cosine of the items'
    session-occurrence columns.
    """

    name = "SessionKNN"
    sequential = True

    def __init__(
        self,
        k: int = 100,
        sample_size: int | None = 500,
        sampling: str = "recent",
        similarity: str = "cosine",
        weighting: str = "linear",
        idf_weighting: bool = False,
        max_session_length: int | None = 50,
        random_state: int = 42,
    ) -> None:
        _check_positive_int("k", k)
        if sample_size is not None:
            _check_positive_int("sample_size", sample_size)
        if max_session_length is not None:
            _check_positive_int("max_session_length", max_session_length)
        _check_choice("sampling", sampling, SAMPLINGS)
        _check_choice("similarity", similarity, SIMILARITIES)
        _check_choice("weighting", weighting, WEIGHTINGS)
        if not isinstance(idf_weighting, bool | np.bool_):
            raise ValueError(f"idf_weighting must be a bool, got {idf_weighting!r}")
        if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
            raise ValueError(f"random_state must be an integer, got {random_state!r}")
        self.k = int(k)
        self.sample_size = None if sample_size is None else int(sample_size)
        self.sampling = sampling
        self.similarity = similarity
        self.weighting = weighting
        self.idf_weighting = bool(idf_weighting)
        self.max_session_length = None if max_session_length is None else int(max_session_length)
        self.random_state = int(random_state)

    # ------------------------------------------------------------------ fitting
    def _fit(
        self, data: Interactions, events: pd.DataFrame, val_events: pd.DataFrame | None
    ) -> None:
        if SESSION_ID not in events.columns:
            from funnelrec.data.processors.session_builder import SessionBuilder

            logger.info("{}: training events have no session_id; building sessions", self.name)
            events = SessionBuilder().build_sessions(events)
            data = Interactions(
                events,
                visitor_map=data.visitor_map,
                item_map=data.item_map,
                event_weights=data.event_weights,
            )
        seqs = data.session_sequences()
        n_sessions = len(seqs)
        lengths = seqs.lengths
        # Session end time, aligned with seqs.keys (sorted session ids); rows ordered by it.
        end_ms = (
            pd.Series(timestamp_ms(events))
            .groupby(events[SESSION_ID].to_numpy())
            .max()
            .reindex(seqs.keys)
            .to_numpy()
        )
        order = np.lexsort((seqs.keys, end_ms))  # oldest first; ties by session id
        rank = np.empty(n_sessions, dtype=np.int64)
        rank[order] = np.arange(n_sessions)
        rows = np.repeat(rank, lengths)
        self.session_items_ = _binary_csr(rows, seqs.items, (n_sessions, data.n_items))
        self.session_ids_ = np.asarray(seqs.keys, dtype=np.int64)[order]

        # Each visitor's most recent session (its items in time order) for _score_users.
        session_visitor = data.session_visitor_idx()
        by_visitor = np.lexsort((rank, session_visitor))  # each visitor's sessions, oldest first
        grouped = session_visitor[by_visitor]
        last = by_visitor[np.r_[grouped[1:] != grouped[:-1], True]]
        if not np.array_equal(session_visitor[last], np.arange(data.n_visitors)):
            raise ValueError("every training visitor must have at least one session")
        tail_len = lengths[last]
        if self.max_session_length is not None:
            tail_len = np.minimum(tail_len, self.max_session_length)
        self.user_last_offsets_ = np.r_[0, np.cumsum(tail_len)].astype(np.int64)
        take = _ranges(seqs.offsets[last + 1] - tail_len, tail_len)
        self.user_last_items_ = seqs.items[take].astype(np.int64)
        self.user_last_session_ = rank[last]

        if self.sampling == "random":
            rng = np.random.default_rng(self.random_state)
            self.session_priority_ = rng.permutation(n_sessions).astype(np.int64)
        self._prepare()
        logger.info(
            "{}: {:,} training sessions, {:,} items, {:,} session-item pairs",
            self.name,
            n_sessions,
            data.n_items,
            self.session_items_.nnz,
        )

    def _prepare(self) -> None:
        """Derived structures (rebuilt on load): item -> sessions CSRs, norms, IDF."""
        S = self.session_items_
        S.sort_indices()
        n_sessions, n_items = S.shape
        self.item_sessions_ = S.T.tocsr()
        self.item_sessions_.sort_indices()  # each item's sessions, oldest first
        self.session_norm_ = np.sqrt(np.diff(S.indptr)).astype(np.float32)
        df = np.diff(self.item_sessions_.indptr)
        self.item_df_ = df
        self.idf_factor_ = (1.0 + np.log(max(n_sessions, 1) / np.maximum(df, 1))).astype(np.float32)
        # Each item's postings cut to its `sample_size + 1` highest-priority sessions. Exact: a
        # session among the best `sample_size` candidates of a query (the union of its items'
        # sessions, less at most one excluded session) is among the best `sample_size + 1`
        # sessions of every query item it contains, so the product with the cut postings finds it
        # with its full weighted overlap.
        self.item_postings_ = self.item_sessions_
        if self.sample_size is not None and df.max(initial=0) > self.sample_size + 1:
            T = self.item_sessions_
            rows = np.repeat(np.arange(n_items), df)
            cols = T.indices.astype(np.int64)
            keep = _top_per_row(rows, df, self._priority(cols), cols, self.sample_size + 1)
            counts = np.bincount(rows[keep], minlength=n_items)
            self.item_postings_ = sp.csr_matrix(
                (T.data[keep], T.indices[keep], np.r_[0, np.cumsum(counts)]), shape=T.shape
            )

    def _priority(self, session_rows: np.ndarray) -> np.ndarray:
        """Sampling priority of training sessions (larger = kept first)."""
        if self.sampling == "recent":
            return session_rows  # rows are in end-time order
        return self.session_priority_[session_rows]

    # ------------------------------------------------------------------ scoring
    def _score_sessions(self, sessions: Sequences) -> np.ndarray:
        return self._score_queries(sessions, exclude=None)

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        starts = self.user_last_offsets_[user_idx]
        lengths = self.user_last_offsets_[user_idx + 1] - starts
        items = self.user_last_items_[_ranges(starts, lengths)]
        sessions = Sequences(items, np.r_[0, np.cumsum(lengths)].astype(np.int64), user_idx)
        return self._score_queries(sessions, exclude=self.user_last_session_[user_idx])

    def _score_similar(self, item_idx: np.ndarray) -> np.ndarray:
        co = (self.item_sessions_[item_idx] @ self.session_items_).toarray()
        df = self.item_df_
        denom = np.sqrt(np.outer(df[item_idx], df))
        return (co / np.maximum(denom, 1e-12)).astype(np.float32)

    def _score_queries(self, sessions: Sequences, exclude: np.ndarray | None) -> np.ndarray:
        """Scores ``[len(sessions), n_items]``; ``exclude[i]`` is a session row query i may not use."""
        n_items = self.session_items_.shape[1]
        out = np.zeros((len(sessions), n_items), dtype=np.float32)
        for start in range(0, len(sessions), QUERY_CHUNK):
            rows = np.arange(start, min(start + QUERY_CHUNK, len(sessions)))
            chunk = _slice(sessions, rows)
            neighbours = self._neighbours(chunk, None if exclude is None else exclude[rows])
            scores = (neighbours @ self.session_items_).tocsr()
            if self.idf_weighting:
                scores.data *= self.idf_factor_[scores.indices]
            out[start + np.repeat(np.arange(len(rows)), np.diff(scores.indptr)), scores.indices] = (
                scores.data
            )
        return out

    def _query_matrix(self, sessions: Sequences) -> sp.csr_matrix:
        """Position-weighted query CSR (each item keeps its latest, largest weight)."""
        if self.max_session_length is not None:
            sessions = sessions.tails(self.max_session_length)
        lengths = sessions.lengths
        n = np.repeat(lengths, lengths).astype(np.float64)
        pos = np.arange(len(sessions.items)) - np.repeat(sessions.offsets[:-1], lengths) + 1.0
        weights = _position_weights(self.weighting, pos, n)
        rows = np.repeat(np.arange(len(sessions)), lengths)
        n_items = self.session_items_.shape[1]
        key = rows * n_items + sessions.items
        # last occurrence of each (row, item): weights never decrease along a session
        _, first_in_reversed = np.unique(key[::-1], return_index=True)
        keep = len(key) - 1 - first_in_reversed
        return sp.csr_matrix(
            (weights[keep].astype(np.float32), (rows[keep], sessions.items[keep])),
            shape=(len(sessions), n_items),
        )

    def _neighbours(self, sessions: Sequences, exclude: np.ndarray | None) -> sp.csr_matrix:
        """``[len(sessions), n_sessions]`` CSR holding the similarity of each kept neighbour."""
        query = self._query_matrix(sessions)
        n_rows = query.shape[0]
        # candidates: sessions sharing an item (with cut postings: a superset of the sample whose
        # sampled entries carry their exact overlap, see _prepare)
        overlap = (query @ self.item_postings_).tocsr()
        counts = np.diff(overlap.indptr)
        rows = np.repeat(np.arange(n_rows), counts)
        cols, values = overlap.indices.astype(np.int64), overlap.data
        if exclude is not None:
            keep = cols != exclude[rows]
            rows, cols, values, counts = _compress(keep, rows, cols, values, n_rows)
        if self.sample_size is not None:
            keep = _top_per_row(rows, counts, self._priority(cols), cols, self.sample_size)
            rows, cols, values, counts = _compress(keep, rows, cols, values, n_rows)
        if self.similarity == "cosine":
            query_rows = np.repeat(np.arange(n_rows), np.diff(query.indptr))
            q_norm = np.sqrt(
                np.bincount(
                    query_rows, weights=query.data.astype(np.float64) ** 2, minlength=n_rows
                )
            )
            values = values / (q_norm[rows] * self.session_norm_[cols])
        keep = _top_per_row(rows, counts, values, cols, self.k)
        rows, cols, values, counts = _compress(keep, rows, cols, values, n_rows)
        indptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
        return sp.csr_matrix(
            (values.astype(np.float32), cols, indptr), shape=(n_rows, self.session_items_.shape[0])
        )

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> dict[str, np.ndarray]:
        S = self.session_items_
        state = {
            "session_indptr": S.indptr.astype(np.int64),
            "session_indices": S.indices.astype(np.int64),
            "session_ids": self.session_ids_,
            "user_last_items": self.user_last_items_,
            "user_last_offsets": self.user_last_offsets_,
            "user_last_session": self.user_last_session_,
        }
        if self.sampling == "random":
            state["session_priority"] = self.session_priority_
        return state

    def _validate_state(self, state: StateArrays) -> None:
        n_sessions = len(state.get("session_indptr", "i", (None,))) - 1
        if n_sessions < 1:
            state.fail("session_indptr", "holds no session: a fitted model has at least one")
        state.csr("session_indptr", "session_indices", None, (n_sessions, self.n_items))
        state.get("session_ids", "i", (n_sessions,))
        n_visitors = len(self.visitor_map_)
        state.sequences("user_last_items", "user_last_offsets", n_visitors, self.n_items)
        state.get("user_last_session", "i", (n_visitors,), low=0, high=n_sessions)
        if self.sampling == "random":
            state.get("session_priority", "i", (n_sessions,))

    def _set_state(self, arrays: dict[str, np.ndarray], path: Path) -> None:
        indptr, indices = arrays["session_indptr"], arrays["session_indices"]
        self.session_items_ = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, indptr),
            shape=(len(indptr) - 1, len(self.item_map_)),
        )
        self.session_ids_ = arrays["session_ids"]
        self.user_last_items_ = arrays["user_last_items"]
        self.user_last_offsets_ = arrays["user_last_offsets"]
        self.user_last_session_ = arrays["user_last_session"]
        if self.sampling == "random":
            self.session_priority_ = arrays["session_priority"]
        self._prepare()


# --------------------------------------------------------------------------- helpers
def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _position_weights(weighting: str, pos: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Weight of position ``pos`` (1-based) in a session of length ``n``; nondecreasing in pos."""
    if weighting == "linear":
        return pos / n
    if weighting == "same":
        return np.ones_like(pos)
    if weighting == "div":
        return 1.0 / (n - pos + 1.0)
    if weighting == "log":
        return 1.0 / (1.0 + np.log10(n - pos + 1.0))
    return (pos / n) ** 2  # quadratic


def _binary_csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every ``(s, l)`` (vectorised)."""
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    return np.repeat(np.asarray(starts, dtype=np.int64) - offsets[:-1], lengths) + np.arange(
        offsets[-1]
    )


def _slice(sessions: Sequences, rows: np.ndarray) -> Sequences:
    """Contiguous rows ``rows[0]..rows[-1]`` of ``sessions`` (no copy of the item array)."""
    lo, hi = sessions.offsets[rows[0]], sessions.offsets[rows[-1] + 1]
    return Sequences(
        sessions.items[lo:hi], sessions.offsets[rows[0] : rows[-1] + 2] - lo, sessions.keys[rows]
    )


def _compress(
    keep: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keep the flagged entries of row-grouped COO arrays; returns new per-row counts too."""
    rows, cols, values = rows[keep], cols[keep], values[keep]
    return rows, cols, values, np.bincount(rows, minlength=n_rows)


def _top_per_row(
    rows: np.ndarray, counts: np.ndarray, score: np.ndarray, tiebreak: np.ndarray, m: int
) -> np.ndarray:
    """Mask of the ``m`` entries with the largest ``score`` (then largest ``tiebreak``) per row.

    ``rows`` must be grouped (nondecreasing), as in a CSR. Only rows longer than ``m`` are sorted.
    """
    keep = np.ones(len(rows), dtype=bool)
    long_rows = counts > m
    if not long_rows.any():
        return keep
    sel = np.flatnonzero(long_rows[rows])
    order = np.lexsort((-tiebreak[sel], -score[sel], rows[sel]))
    sub_counts = counts[long_rows]
    rank_in_row = np.arange(len(sel)) - np.repeat(np.r_[0, np.cumsum(sub_counts)[:-1]], sub_counts)
    keep[sel] = False
    keep[sel[order[rank_in_row < m]]] = True
    return keep
