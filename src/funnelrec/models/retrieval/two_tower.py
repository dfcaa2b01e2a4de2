"""Two-Tower retrieval: a visitor tower and an item tower trained with sampled softmax.

The item tower reads an item's id embedding, its category embedding and its statistics
(popularity, conversion rates from :class:`~funnelrec.data.features.item_features.ItemFeatureExtractor`);
the visitor tower pools the id embeddings of the visitor's recent items (the same embedding
table) with attention, and reads the most recent item, the mean category embedding of the
history and the visitor's funnel features
(:class:`~funnelrec.data.features.user_features.UserFeatureExtractor`). Each tower's MLP output
is added to its id-embedding path (the item's own embedding, the pooled history) and
L2-normalised, so a score is a cosine. Because the visitor tower needs only items and features, a visitor never
seen in training still gets a tower output from a live session (with "new visitor" features):
that is what ``recommend_by_item_ids`` answers with.

Ranking known visitors goes through a FAISS :class:`~funnelrec.models.retrieval.index.VectorIndex`
over the precomputed item matrix (``use_faiss=True``; exact inner product for small catalogues),
or through the shared numpy ranker (``use_faiss=False``); both give the same top-k for an exact
index.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from loguru import logger
from torch import nn

from funnelrec.data.encoding import Interactions, Sequences
from funnelrec.models.base import ArtifactError, StateArrays, register
from funnelrec.models.retrieval.index import INDEX_KINDS, VectorIndex
from funnelrec.models.torch_base import TorchRecommender

INDEX_DIR = "faiss_index"
#: Rows pushed through a tower per forward pass at inference.
INFERENCE_BLOCK = 8192


# --------------------------------------------------------------------------- sequence helpers
def dedupe_consecutive(sequences: Sequences) -> Sequences:
    """Drop an item that repeats the one right before it in the same sequence (vectorised)."""
    items, lengths = sequences.items, sequences.lengths
    if len(items) == 0:
        return sequences
    row = np.repeat(np.arange(len(sequences)), lengths)
    keep = np.r_[True, (items[1:] != items[:-1]) | (row[1:] != row[:-1])]
    new_lengths = np.bincount(row[keep], minlength=len(sequences))
    offsets = np.concatenate([[0], np.cumsum(new_lengths)]).astype(np.int64)
    return Sequences(items[keep], offsets, sequences.keys)


def padded_windows(
    flat_items: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int, pad: int
) -> np.ndarray:
    """``[len(ends), length]`` windows ``flat_items[max(start, end-length):end]``, right-aligned.

    The last column holds the most recent item; missing positions hold ``pad``.
    """
    positions = ends[:, None] - length + np.arange(length)[None, :]
    valid = positions >= starts[:, None]
    return np.where(valid, flat_items[np.maximum(positions, 0)] if len(flat_items) else pad, pad)


def _mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden_dims:
        layers += [nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


#: Standardised features are clipped to +-this many standard deviations.
FEATURE_CLIP = 5.0


def _standardise(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column-standardised ``matrix`` (clipped), with the mean and scale used.

    A constant column keeps scale 1: the "new visitor" stage is constant (0) over training
    visitors, and dividing by a ~0 deviation would blow the new visitor's row up.
    """
    mean = matrix.mean(axis=0)
    std = matrix.std(axis=0)
    std = np.where(std < 1e-3, 1.0, std)
    return _scaled(matrix, mean, std), mean.astype(np.float32), std.astype(np.float32)


def _scaled(matrix: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.clip((matrix - mean) / std, -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)


# --------------------------------------------------------------------------- the network
class TwoTowerNet(nn.Module):
    """Item tower and visitor tower sharing one item id embedding table.

    ``item_stats`` [n_items, s] and ``item_category`` [n_items] (codes, 0 = unknown) are
    non-persistent buffers: the model saves them in its npz state, not in the weights.
    """

    def __init__(
        self,
        n_items: int,
        n_categories: int,
        item_stats: np.ndarray,
        item_category: np.ndarray,
        user_dim: int,
        embedding_dim: int,
        hidden_dims: Sequence[int],
        dropout: float,
        history_length: int,
    ) -> None:
        super().__init__()
        d = embedding_dim
        self.pad = n_items
        self.item_embedding = nn.Embedding(n_items + 1, d, padding_idx=n_items)
        # small: at the notebook's learning rate (1e-3) embeddings of scale 0.1 barely turn in 5 epochs
        nn.init.normal_(self.item_embedding.weight, std=0.01)
        with torch.no_grad():
            self.item_embedding.weight[n_items].zero_()
        cat_dim = max(8, d // 2)
        self.category_embedding = nn.Embedding(n_categories + 1, cat_dim)
        nn.init.normal_(self.category_embedding.weight, std=0.1)
        self.register_buffer("item_stats", torch.as_tensor(item_stats, dtype=torch.float32), persistent=False)
        self.register_buffer("item_category", torch.as_tensor(item_category, dtype=torch.long), persistent=False)
        self.item_mlp = _mlp(d + cat_dim + item_stats.shape[1], hidden_dims, d, dropout)
        self.attention = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.position_bias = nn.Parameter(torch.zeros(history_length))
        self.user_mlp = _mlp(2 * d + cat_dim + user_dim, hidden_dims, d, dropout)

    def item_tower(self, item_idx: torch.Tensor) -> torch.Tensor:
        x = torch.cat(
            [
                self.item_embedding(item_idx),
                self.category_embedding(self.item_category[item_idx]),
                self.item_stats[item_idx],
            ],
            dim=1,
        )
        return F.normalize(self.item_mlp(x) + self.item_embedding(item_idx), dim=1)

    def user_tower(self, history: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """``history`` [B, L] right-aligned item indices (``pad`` where empty), ``features`` [B, f]."""
        emb = self.item_embedding(history)  # [B, L, d]; the pad row is zero
        valid = history != self.pad
        logits = self.attention(emb).squeeze(-1) + self.position_bias[-history.shape[1]:]
        logits = logits.masked_fill(~valid, -1e9)
        weights = torch.softmax(logits, dim=1) * valid  # a row with no history pools to zero
        pooled = (weights.unsqueeze(-1) * emb).sum(dim=1)
        last = emb[:, -1]  # the most recent item (zero when there is none)
        # the categories the visitor browsed: mean category embedding of the history
        categories = self.category_embedding(self.item_category[history.clamp(max=self.pad - 1)])
        n_valid = valid.sum(dim=1, keepdim=True).clamp(min=1)
        category_mean = (categories * valid.unsqueeze(-1)).sum(dim=1) / n_valid
        x = torch.cat([pooled, last, category_mean, features], dim=1)
        return F.normalize(self.user_mlp(x) + pooled, dim=1)


# --------------------------------------------------------------------------- the model
@register("two_tower")
class TwoTowerRecommender(TorchRecommender):
    """Two-Tower retrieval model (visitor tower x item tower, sampled softmax, FAISS ranking).

    Training examples are ``(visitor history up to event t, item of event t)`` pairs from each
    visitor's time-ordered training events (consecutive repeats of the same item collapsed),
    built as flat arrays plus offsets. Simplification: a visitor's funnel features are those at
    the end of the training period for every example of that visitor (not as of time t); with
    probability ``new_visitor_rate`` an example's features are replaced by the "new visitor"
    features, so the tower also learns to answer live sessions of unknown visitors.

    Loss: softmax over the batch's positives (in-batch negatives) plus ``negative_samples`` x
    batch popularity-sampled negatives (``count ** sample_alpha``), logits ``cos / temperature``
    minus ``log Q`` (the expected number of times an item is a candidate in a batch: logQ
    correction for both samplers). In-batch "negatives" equal to a row's positive are masked.

    Parameters
    ----------
    embedding_dim:
        Size of the item id embeddings and of both tower outputs.
    hidden_dims:
        Hidden layer widths of both tower MLPs (a final linear layer maps to ``embedding_dim``).
    dropout, temperature, learning_rate, batch_size, epochs:
        Training hyperparameters (``temperature`` divides the cosine logits).
    negative_samples:
        Popularity-sampled negatives per positive, shared across the batch.
    use_faiss:
        Rank known visitors through a :class:`VectorIndex` (``index_kind``) instead of the
        shared numpy ranker.
    history_length:
        Most recent items the visitor tower reads.
    sample_alpha:
        Exponent of the popularity distribution negatives are drawn from.
    new_visitor_rate:
        Share of training examples shown with "new visitor" features.
    weight_decay:
        Adam weight decay.
    index_kind:
        ``VectorIndex`` kind (``"auto"``: exact below 50k items, HNSW above).
    seed, device, patience, show_progress:
        As in :class:`~funnelrec.models.torch_base.TorchRecommender`.

    Reproducibility: on CPU two fits with the same seed, data and thread count
    (``settings.threads``, ``FUNNELREC_THREADS``) give bit-identical weights and
    recommendations: every random draw (batch order, negatives, "new visitor" features, dropout)
    comes from the seeded generators, and there are no data-loader workers. Across thread counts
    they differ: MKL splits the batch dimension of the weight-gradient matrix products across
    threads, and torch sums a large tensor in per-thread partial sums, so the float sums run in
    another order; the 1e-7 differences of the first steps grow through training (the nDCG@10
    of 0.0705 vs 0.0672 seen between a default and an ``OMP_NUM_THREADS=1`` demo). Compare runs
    with the same thread count. On CUDA, PyTorch's nondeterministic kernels apply.
    """

    name = "TwoTower"
    sequential = True

    def __init__(
        self,
        embedding_dim: int = 64,
        hidden_dims: Sequence[int] = (128, 64),
        dropout: float = 0.2,
        temperature: float = 0.1,
        learning_rate: float = 0.001,
        batch_size: int = 1024,
        epochs: int = 5,
        negative_samples: int = 4,
        use_faiss: bool = True,
        history_length: int = 20,
        sample_alpha: float = 0.75,
        new_visitor_rate: float = 0.2,
        weight_decay: float = 0.0,
        index_kind: str = "auto",
        seed: int | None = None,
        device: str | None = "auto",
        patience: int = 2,
        show_progress: bool = True,
    ) -> None:
        for arg, value in (("embedding_dim", embedding_dim), ("batch_size", batch_size), ("epochs", epochs),
                           ("history_length", history_length), ("patience", patience)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if isinstance(negative_samples, bool) or not isinstance(negative_samples, int) or negative_samples < 0:
            raise ValueError(f"negative_samples must be a non-negative integer, got {negative_samples!r}")
        if isinstance(hidden_dims, str | bytes) or not all(
            isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden_dims
        ):
            raise ValueError(f"hidden_dims must be a sequence of positive integers, got {hidden_dims!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        if not 0 <= new_visitor_rate <= 1:
            raise ValueError(f"new_visitor_rate must be in [0, 1], got {new_visitor_rate}")
        if sample_alpha < 0 or weight_decay < 0:
            raise ValueError("sample_alpha and weight_decay must be >= 0")
        if index_kind not in INDEX_KINDS:
            raise ValueError(f"index_kind must be one of {INDEX_KINDS}, got {index_kind!r}")
        self.embedding_dim = embedding_dim
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        self.dropout = dropout
        self.temperature = temperature
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.negative_samples = negative_samples
        self.use_faiss = use_faiss
        self.history_length = history_length
        self.sample_alpha = sample_alpha
        self.new_visitor_rate = new_visitor_rate
        self.weight_decay = weight_decay
        self.index_kind = index_kind
        self.seed = seed
        self.device = device
        self.patience = patience
        self.show_progress = show_progress

    # ------------------------------------------------------------------ training data
    def _prepare_training(self, data: Interactions, events: pd.DataFrame) -> None:
        from funnelrec.data.features.item_features import ItemFeatureExtractor
        from funnelrec.data.features.user_features import UserFeatureExtractor

        # item side: category codes (0 = unknown) and standardised statistics
        self.item_cat_code_ = self._category_codes()
        stats = ItemFeatureExtractor().fit(events).feature_matrix(self.item_ids)
        self.item_stats_ = _standardise(stats)[0]
        # visitor side: funnel features as of the end of training, and the "new visitor" row
        users = UserFeatureExtractor().fit(events)
        visitor_ids = self.visitor_map_.ids
        raw = users.feature_matrix(visitor_ids)
        new_row = users.feature_matrix(np.array([int(visitor_ids.min()) - 1]))
        self.user_features_, mean, std = _standardise(raw)
        self.new_visitor_features_ = _scaled(new_row, mean, std)[0]
        # examples: every event after a visitor's first (repeats collapsed) is a target
        sequences = dedupe_consecutive(data.visitor_sequences())
        tails = sequences.tails(self.history_length)
        self.history_items_, self.history_offsets_ = tails.items, tails.offsets
        lengths = sequences.lengths
        starts = np.repeat(sequences.offsets[:-1], lengths)
        pos = np.arange(len(sequences.items), dtype=np.int64)
        is_target = pos > starts
        self._flat_items = sequences.items
        self._ex_pos = pos[is_target]
        self._ex_start = starts[is_target]
        self._ex_visitor = np.repeat(sequences.keys, lengths)[is_target]
        if len(self._ex_pos) == 0:
            raise ValueError("TwoTower needs visitors with at least two distinct consecutive events to learn from")
        # candidate probabilities: targets (in-batch) and count ** alpha (sampled)
        n = self.n_items
        target_counts = np.bincount(self._flat_items[self._ex_pos], minlength=n).astype(np.float64)
        self._p_target = target_counts / target_counts.sum()
        weight = np.power(np.bincount(sequences.items, minlength=n).astype(np.float64), self.sample_alpha)
        self._p_negative = weight / weight.sum()
        self._negative_cdf = np.cumsum(self._p_negative)
        self._p_target_t = torch.as_tensor(self._p_target, dtype=torch.float32, device=self.device_)
        self._p_negative_t = torch.as_tensor(self._p_negative, dtype=torch.float32, device=self.device_)
        self.item_matrix_: np.ndarray | None = None
        self.index_: VectorIndex | None = None
        logger.info("TwoTower: {:,} training examples from {:,} visitors", len(self._ex_pos), len(sequences))

    def _build_network(self) -> nn.Module:
        return TwoTowerNet(
            n_items=self.n_items,
            n_categories=int(self.item_cat_code_.max(initial=0)),
            item_stats=self.item_stats_,
            item_category=self.item_cat_code_,
            user_dim=self.user_features_.shape[1],
            embedding_dim=self.embedding_dim,
            hidden_dims=self.hidden_dims,
            dropout=self.dropout,
            history_length=self.history_length,
        )

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)

    def _n_batches(self) -> int:
        return math.ceil(len(self._ex_pos) / self.batch_size)

    def _batches(self, rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
        order = rng.permutation(len(self._ex_pos))
        for lo in range(0, len(order), self.batch_size):
            rows = order[lo : lo + self.batch_size]
            n_neg = self.negative_samples * len(rows)
            negatives = np.searchsorted(self._negative_cdf, rng.random(n_neg) * self._negative_cdf[-1], side="right")
            yield {
                "history": padded_windows(self._flat_items, self._ex_start[rows], self._ex_pos[rows],
                                          self.history_length, self.n_items),
                "features": self._features_for(self._ex_visitor[rows], rng.random(len(rows)) < self.new_visitor_rate),
                "target": self._flat_items[self._ex_pos[rows]],
                "negatives": np.minimum(negatives, self.n_items - 1),
            }

    def _features_for(self, visitor_idx: np.ndarray, as_new: np.ndarray | None = None) -> np.ndarray:
        """Funnel features of known visitors (``-1``: the "new visitor" row)."""
        feats = self.user_features_[np.maximum(visitor_idx, 0)]
        new = visitor_idx < 0 if as_new is None else (visitor_idx < 0) | as_new
        feats[new] = self.new_visitor_features_
        return feats

    def _loss(self, batch: dict[str, np.ndarray]) -> torch.Tensor:
        device = self.device_
        history = torch.as_tensor(batch["history"], device=device)
        features = torch.as_tensor(batch["features"], device=device)
        target = torch.as_tensor(batch["target"], device=device)
        negatives = torch.as_tensor(batch["negatives"], device=device)
        b, m = len(target), len(negatives)
        candidates = torch.cat([target, negatives])
        users = self.net_.user_tower(history, features)
        items = self.net_.item_tower(candidates)
        # logQ: expected times each candidate shows up in a batch (in-batch + sampled)
        log_q = torch.log(b * self._p_target_t[candidates] + m * self._p_negative_t[candidates] + 1e-12)
        logits = users @ items.T / self.temperature - log_q
        same = candidates[None, :] == target[:, None]
        same[torch.arange(b, device=device), torch.arange(b, device=device)] = False
        logits = logits.masked_fill(same, float("-inf"))
        return F.cross_entropy(logits, torch.arange(b, device=device))

    def _on_epoch_start(self, epoch: int) -> None:
        self.item_matrix_ = None  # the item matrix cached for validation is stale

    def _fit(self, data: Interactions, events: pd.DataFrame, val_events: pd.DataFrame | None) -> None:
        super()._fit(data, events, val_events)
        for name in ("_flat_items", "_ex_pos", "_ex_start", "_ex_visitor", "_p_target", "_p_negative",
                     "_negative_cdf", "_p_target_t", "_p_negative_t"):
            delattr(self, name)  # training-only arrays
        self._finalise()

    def _finalise(self) -> None:
        """Precompute the item matrix (and the FAISS index) from the trained network."""
        self.item_matrix_ = None
        self.item_matrix_ = self._items_matrix()
        self.index_ = None
        if self.use_faiss:
            self.index_ = VectorIndex(kind=self.index_kind, metric="ip").build(self.item_matrix_)

    # ------------------------------------------------------------------ towers at inference
    def _items_matrix(self) -> np.ndarray:
        if getattr(self, "item_matrix_", None) is not None:
            return self.item_matrix_
        out = np.empty((self.n_items, self.embedding_dim), dtype=np.float32)
        with self._inference():
            for lo in range(0, self.n_items, INFERENCE_BLOCK):
                idx = torch.arange(lo, min(lo + INFERENCE_BLOCK, self.n_items), device=self.device_)
                out[lo : lo + len(idx)] = self.net_.item_tower(idx).cpu().numpy()
        self.item_matrix_ = out
        return out

    def _user_vectors(self, histories: Sequences, features: np.ndarray) -> np.ndarray:
        """Visitor tower outputs for ``histories`` (item index sequences) and feature rows."""
        histories = dedupe_consecutive(histories).tails(self.history_length)
        out = np.empty((len(histories), self.embedding_dim), dtype=np.float32)
        with self._inference():
            for lo in range(0, len(histories), INFERENCE_BLOCK):
                hi = min(lo + INFERENCE_BLOCK, len(histories))
                windows = padded_windows(histories.items, histories.offsets[lo:hi], histories.offsets[lo + 1 : hi + 1],
                                         self.history_length, self.n_items)
                users = self.net_.user_tower(
                    torch.as_tensor(windows, device=self.device_),
                    torch.as_tensor(features[lo:hi], device=self.device_),
                )
                out[lo:hi] = users.cpu().numpy()
        return out

    def _visitor_histories(self, user_idx: np.ndarray) -> Sequences:
        history = Sequences(self.history_items_, self.history_offsets_, np.arange(len(self.history_offsets_) - 1))
        return history.take(user_idx)

    def _known_user_vectors(self, user_idx: np.ndarray) -> np.ndarray:
        return self._user_vectors(self._visitor_histories(user_idx), self._features_for(user_idx))

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return self._known_user_vectors(user_idx) @ self._items_matrix().T

    def _score_sessions(self, sessions: Sequences) -> np.ndarray:
        features = np.tile(self.new_visitor_features_, (len(sessions), 1))
        return self._user_vectors(sessions, features) @ self._items_matrix().T

    def _visitor_vector(self, user_idx: int, session: np.ndarray) -> np.ndarray:
        """The visitor tower on the history (known visitor, ``user_idx >= 0``) followed by the live
        session, with the visitor's funnel features ("new visitor" ones when unknown)."""
        history = self._visitor_histories(np.array([user_idx])).items if user_idx >= 0 else np.empty(0, np.int64)
        sequence = Sequences.single(np.concatenate([history, session]))
        return self._user_vectors(sequence, self._features_for(np.array([user_idx])))[0]

    def _score_visitor_in_session(self, user_idx: int, session: np.ndarray) -> np.ndarray:
        return self._items_matrix() @ self._visitor_vector(user_idx, session)

    def _rank_users(
        self, user_idx: np.ndarray, k: int, exclude: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.index_ is None:
            return super()._rank_users(user_idx, k, exclude)
        out_idx = np.empty((len(user_idx), k), dtype=np.int64)
        out_scores = np.empty((len(user_idx), k), dtype=np.float32)
        for lo in range(0, len(user_idx), INFERENCE_BLOCK):
            rows = user_idx[lo : lo + INFERENCE_BLOCK]
            out_idx[lo : lo + len(rows)], out_scores[lo : lo + len(rows)] = self.index_.search(
                self._known_user_vectors(rows), k, exclude[rows] if exclude is not None else None
            )
        return out_idx, out_scores

    def _item_vectors(self) -> np.ndarray:
        return self._items_matrix()

    # ------------------------------------------------------------------ embeddings
    def get_item_embeddings(self) -> np.ndarray:
        """Item tower outputs ``[n_items, embedding_dim]`` (unit norm), row i = ``item_ids[i]``."""
        self._check_fitted()
        return self._items_matrix().copy()

    def get_user_embedding(self, visitor_id: int | None = None, item_ids: Sequence[int] | None = None) -> np.ndarray:
        """Visitor tower output ``[embedding_dim]`` (unit norm).

        A known ``visitor_id`` reads their training history (followed by ``item_ids``, a live
        session, when given) and their funnel features; an unknown or ``None`` visitor reads
        ``item_ids`` alone with "new visitor" features. Items unknown to the model are ignored.
        """
        self._check_fitted()
        items = self._session_indices(item_ids if item_ids is not None else [])
        user_idx = int(self.visitor_map_.to_idx([visitor_id])[0]) if visitor_id is not None else -1
        return self._visitor_vector(user_idx, items)

    # ------------------------------------------------------------------ persistence
    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {
            "item_cat_code": self.item_cat_code_,
            "item_stats": self.item_stats_,
            "user_features": self.user_features_,
            "new_visitor_features": self.new_visitor_features_,
            "history_items": self.history_items_,
            "history_offsets": self.history_offsets_,
            "item_matrix": self._items_matrix(),
        }

    def _validate_state(self, state: StateArrays) -> None:
        n_items, n_visitors = self.n_items, len(self.visitor_map_)
        state.get("item_cat_code", "i", (n_items,), low=0)
        state.get("item_stats", "f", (n_items, None), finite=True)
        width = state.get("user_features", "f", (n_visitors, None), finite=True).shape[1]
        state.get("new_visitor_features", "f", (width,), finite=True)
        state.sequences("history_items", "history_offsets", n_visitors, n_items)
        state.get("item_matrix", "f", (n_items, self.embedding_dim), finite=True)

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        try:
            self.item_cat_code_ = arrays["item_cat_code"]
            self.item_stats_ = arrays["item_stats"]
            self.user_features_ = arrays["user_features"]
            self.new_visitor_features_ = arrays["new_visitor_features"]
            self.history_items_ = arrays["history_items"]
            self.history_offsets_ = arrays["history_offsets"]
            self.item_matrix_ = arrays["item_matrix"]
        except KeyError as exc:
            raise ArtifactError(f"TwoTower state is missing the array {exc}") from exc

    def _write_extra(self, path: Path) -> None:
        super()._write_extra(path)
        if self.index_ is not None:
            self.index_.save(path / INDEX_DIR)

    def _set_state(self, arrays: dict[str, np.ndarray], path: Path) -> None:
        super()._set_state(arrays, path)
        self.index_ = None
        if not self.use_faiss:
            return
        index_path = path / INDEX_DIR
        if index_path.is_dir():
            index = VectorIndex.load(index_path)
            if index.n_vectors == self.n_items and index.dim == self.embedding_dim:
                self.index_ = index
                return
            logger.warning("{}: the saved FAISS index does not match the item matrix; rebuilding it", path)
        self.index_ = VectorIndex(kind=self.index_kind, metric="ip").build(self.item_matrix_)

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["hidden_dims"] = list(self.hidden_dims)
        return params
