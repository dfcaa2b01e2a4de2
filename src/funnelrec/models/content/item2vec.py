"""Item2Vec (Barkan & Koenigstein 2016): skip-gram with negative sampling over sessions."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from funnelrec.data.encoding import Interactions, Sequences
from funnelrec.models.base import Recommender, StateArrays, register


def _stable_hash(token: object) -> int:
    # gensim 4 draws the initial vectors from its seeded numpy generator; hashfxn only seeds the
    # vectors it makes one at a time (seeded_vector). The builtin str hash changes between
    # processes unless PYTHONHASHSEED is fixed, so those use a hash that never does.
    return zlib.crc32(str(token).encode())


def _position_weights(lengths: np.ndarray, decay: float) -> np.ndarray:
    """Weight ``decay ** (steps from the end)`` for every position of flat sequences."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    pos_from_end = np.repeat(offsets[1:], lengths) - np.arange(offsets[-1]) - 1
    return np.power(decay, pos_from_end).astype(np.float32)


@register("item2vec")
class Item2VecRecommender(Recommender):
    """Item embeddings learned from sessions with gensim's Word2Vec (skip-gram, negative sampling).

    Parameters
    ----------
    embedding_dim, window, epochs, min_count, negative, ns_exponent:
        As in :class:`gensim.models.Word2Vec` (``ns_exponent`` matters for recommendation:
        Caselles-Dupré et al. 2018). Items below ``min_count`` get no vector.
    history_length:
        A visitor is the recency-weighted mean of their last ``history_length`` item vectors.
    recency_decay:
        Weight ``recency_decay ** k`` for the item ``k`` steps before the last one.
    sentences:
        ``"visitors"``: each visitor's whole history in time order is one sentence (long-term
        co-interest across sessions, still local within ``window``); ``"sessions"``: one
        sentence per session, as in the original Item2Vec.
    popularity_weight:
        Ranking score = cosine to the visitor/session vector + ``popularity_weight`` x
        log-popularity scaled to [0, 1]. Cosine alone ignores how much items are wanted; a small
        prior lifts accuracy on both evaluation protocols (see ``benchmarks/RESULTS.md``).
        ``0`` gives pure Item2Vec. Similar-item lists never use it.
    seed:
        Training seed (``None``: ``settings.random_seed``). Training uses one worker thread so
        the result is reproducible; vectors are seeded with a process-independent hash.
    """

    name = "Item2Vec"
    sequential = True

    def __init__(
        self,
        embedding_dim: int = 64,
        window: int = 5,
        epochs: int = 5,
        min_count: int = 1,
        negative: int = 10,
        ns_exponent: float = 0.75,
        history_length: int = 20,
        recency_decay: float = 0.8,
        sentences: str = "visitors",
        popularity_weight: float = 0.3,
        seed: int | None = None,
    ) -> None:
        for arg, value in (("embedding_dim", embedding_dim), ("window", window), ("epochs", epochs),
                           ("min_count", min_count), ("negative", negative),
                           ("history_length", history_length)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if not 0 < recency_decay <= 1:
            raise ValueError(f"recency_decay must be in (0, 1], got {recency_decay}")
        if sentences not in ("visitors", "sessions"):
            raise ValueError(f"sentences must be 'visitors' or 'sessions', got {sentences!r}")
        if popularity_weight < 0:
            raise ValueError(f"popularity_weight must be >= 0, got {popularity_weight}")
        self.embedding_dim = embedding_dim
        self.window = window
        self.epochs = epochs
        self.min_count = min_count
        self.negative = negative
        self.ns_exponent = ns_exponent
        self.history_length = history_length
        self.recency_decay = recency_decay
        self.sentences = sentences
        self.popularity_weight = popularity_weight
        self.seed = seed

    def _fit(self, data: Interactions, events: pd.DataFrame, val_events: pd.DataFrame | None) -> None:
        from gensim.models import Word2Vec

        from funnelrec.config import settings

        by_session = self.sentences == "sessions" and "session_id" in events.columns
        sequences = data.session_sequences() if by_session else data.visitor_sequences()
        corpus = [s for s in sequences.to_lists() if len(s) > 1]
        if not corpus:
            raise ValueError("Item2Vec needs sessions with at least two events to learn from")
        w2v = Word2Vec(
            sentences=corpus,
            vector_size=self.embedding_dim,
            window=self.window,
            min_count=self.min_count,
            sg=1,
            negative=self.negative,
            ns_exponent=self.ns_exponent,
            epochs=self.epochs,
            # one worker whatever settings.threads: with more, the order in which worker
            # threads update the shared vectors varies, and a seed no longer fixes the result
            workers=1,
            seed=settings.random_seed if self.seed is None else self.seed,
            hashfxn=_stable_hash,
            sample=0,
        )
        vectors = np.zeros((data.n_items, self.embedding_dim), dtype=np.float32)
        vocab = np.fromiter(w2v.wv.index_to_key, dtype=np.int64, count=len(w2v.wv.index_to_key))
        vectors[vocab] = w2v.wv.vectors
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        self.item_vectors_ = vectors / np.maximum(norms, 1e-12)
        self.has_vector_ = norms.ravel() > 0
        history = data.visitor_sequences().tails(self.history_length)
        self.history_items_, self.history_offsets_ = history.items, history.offsets
        self._prior_cache = None  # a refit may keep the catalogue size but not the popularity

    def _pooled(self, items: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        weights = _position_weights(lengths, self.recency_decay) * self.has_vector_[items]
        rows = np.repeat(np.arange(len(lengths)), lengths)
        pooled = np.zeros((len(lengths), self.embedding_dim), dtype=np.float32)
        np.add.at(pooled, rows, self.item_vectors_[items] * weights[:, None])
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _popularity_prior(self) -> np.ndarray:
        """``popularity_weight`` x log-popularity scaled to [0, 1], once per fitted/loaded model."""
        cached = getattr(self, "_prior_cache", None)
        if cached is None or cached[0] != self.popularity_weight:
            log_pop = np.log1p(self.item_popularity_.astype(np.float32))
            prior = (self.popularity_weight * log_pop / max(float(log_pop.max()), 1e-12)).astype(np.float32)
            cached = self._prior_cache = (self.popularity_weight, prior)
        return cached[1]

    def _scores_or_fallback(self, pooled: np.ndarray) -> np.ndarray:
        scores = pooled @ self.item_vectors_.T
        if self.popularity_weight:
            scores += self._popularity_prior()
        # no item of the query has a vector: popularity, not a row of zeros
        empty = ~pooled.any(axis=1)
        if empty.any():
            scores[empty] = self._fallback_scores(int(empty.sum()))
        return scores

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        history = Sequences(self.history_items_, self.history_offsets_, np.arange(len(self.history_offsets_) - 1))
        rows = history.take(user_idx)
        return self._scores_or_fallback(self._pooled(rows.items, rows.lengths))

    def _score_sessions(self, sessions: Sequences) -> np.ndarray:
        tails = sessions.tails(self.history_length)
        return self._scores_or_fallback(self._pooled(tails.items, tails.lengths))

    def _item_vectors(self) -> np.ndarray:
        return self.item_vectors_

    def _score_similar(self, item_idx: np.ndarray) -> np.ndarray:
        scores = super()._score_similar(item_idx)
        # an item too rare for a vector: popular items of its category instead of all-zero ties
        no_vector = ~self.has_vector_[item_idx]
        for row in np.flatnonzero(no_vector):
            scores[row] = self._fallback_scores(1, self.item_category_[item_idx[row : row + 1]])[0]
        return scores

    def _get_state(self) -> dict[str, np.ndarray]:
        return {
            "item_vectors": self.item_vectors_,
            "has_vector": self.has_vector_,
            "history_items": self.history_items_,
            "history_offsets": self.history_offsets_,
        }

    def _validate_state(self, state: StateArrays) -> None:
        state.get("item_vectors", "f", (self.n_items, self.embedding_dim), finite=True)
        state.get("has_vector", "b", (self.n_items,))
        state.sequences("history_items", "history_offsets", len(self.visitor_map_), self.n_items)

    def _set_state(self, arrays, path) -> None:
        self.item_vectors_ = arrays["item_vectors"]
        self.has_vector_ = arrays["has_vector"]
        self.history_items_ = arrays["history_items"]
        self.history_offsets_ = arrays["history_offsets"]
        self._prior_cache = None
