"""SASRec (Kang & McAuley 2018): causal self-attention over each visitor's event sequence.

Item indices are shifted by +1 inside this module so that 0 is the padding index. Sequences are
left-padded, and positions are absolute from the right: the most recent item always sits at
position ``max_seq_length - 1``. A batch is therefore trimmed to its longest row without changing
any result (padded keys are masked in every layer).

Losses (``loss_type``):

- ``"ce"``: full softmax cross-entropy over the catalogue;
- ``"sampled"``: sampled softmax with ``n_negatives`` popularity-sampled negatives shared by the
  whole batch and the logQ correction (Bengio & Senécal 2008; Yi et al. 2019);
- ``"gbce"``: gSASRec's generalised binary cross-entropy (Petrov & Macdonald 2023) with
  ``n_negatives`` uniform negatives per position and calibration parameter ``gbce_t``;
- ``"auto"``: ``"ce"`` up to :data:`AUTO_CE_MAX_ITEMS` items, else ``"sampled"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from funnelrec.data.encoding import Interactions, Sequences
from funnelrec.models.base import StateArrays, register
from funnelrec.models.torch_base import CombinedOptimizer, TorchRecommender

LOSS_TYPES = ("auto", "ce", "sampled", "gbce")
HISTORY_POOLINGS = ("mean", "last")
#: ``loss_type="auto"`` uses the full softmax up to this many items.
AUTO_CE_MAX_ITEMS = 50_000
#: From this many items on, sampled losses update the item table sparsely (SparseAdam).
SPARSE_MIN_ITEMS = 50_000
#: Popularity exponent of the negative sampler of ``loss_type="sampled"``.
SAMPLE_ALPHA = 0.75
#: Upper bound on floats in one block of logits. Larger losses are computed in checkpointed
#: chunks (the logits are recomputed in the backward pass, never all held); scoring runs in
#: blocks of at most this many scores.
LOSS_BLOCK_FLOATS = 1 << 24
#: Most rows per forward pass when scoring.
INFERENCE_ROWS = 1024


# --------------------------------------------------------------------------- array helpers
def training_windows(sequences: Sequences, max_length: int) -> np.ndarray:
    """Cut sequences into training windows of at most ``max_length + 1`` items (vectorised).

    Returns ``[n_windows, max_length + 1]`` int64, left-padded with 0, items shifted by +1. Row
    ``w``'s inputs are ``w[:-1]`` and its next-item targets ``w[1:]`` (where the input is not 0).
    Windows are cut from the end of each sequence and overlap by one item, so every next-item pair
    of every sequence is a target exactly once and the most recent targets get the longest context.
    Sequences of one item have no pair and give no window.
    """
    lengths = sequences.lengths
    n_pairs = np.maximum(lengths - 1, 0)
    n_windows = -(-n_pairs // max_length)  # ceil
    seq_of = np.repeat(np.arange(len(lengths)), n_windows)
    # window j of a sequence (0 = earliest) ends at local item n - 1 - (w - 1 - j) * L
    first_window = np.cumsum(n_windows) - n_windows
    j = np.arange(len(seq_of)) - first_window[seq_of]
    end = lengths[seq_of] - 1 - (n_windows[seq_of] - 1 - j) * max_length
    n_targets = np.minimum(end, max_length)
    local = end[:, None] - (max_length - np.arange(max_length + 1))[None, :]
    valid = local >= (end - n_targets)[:, None]
    flat = sequences.offsets[seq_of][:, None] + np.where(valid, local, 0)
    return np.where(valid, sequences.items[flat] + 1, 0).astype(np.int64)


def left_padded(sequences: Sequences, max_length: int) -> np.ndarray:
    """The last ``max_length`` items of each sequence, shifted by +1, left-padded with 0.

    The width is the longest kept row (at least 1), not ``max_length``.
    """
    tails = sequences.tails(max_length)
    lengths = tails.lengths
    width = max(int(lengths.max(initial=0)), 1)
    out = np.zeros((len(lengths), width), dtype=np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    cols = np.arange(len(tails.items)) - tails.offsets[rows] + (width - lengths)[rows]
    out[rows, cols] = tails.items + 1
    return out


# --------------------------------------------------------------------------- the network
class _Block(nn.Module):
    """Pre-LN transformer block: causal multi-head self-attention, then a position-wise FFN."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.norm_attn = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(self.norm_attn(x)).view(batch, length, 3, self.n_heads, dim // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(attn.transpose(1, 2).reshape(batch, length, dim)))
        return x + self.drop(self.ff(self.norm_ff(x)))


class SASRecNet(nn.Module):
    """Item + learned position embeddings, ``n_layers`` causal blocks, a final LayerNorm.

    With ``item_category`` (codes per item, 0 = unknown) an item's vector is its id embedding
    plus its category's embedding, on the input and on the (tied) output side alike.

    ``forward(seq)`` takes left-padded shifted item indices ``[batch, width]`` (``width <=
    max_length``; 0 = padding) and returns hidden states ``[batch, width, hidden_dim]``. The output
    layer is the input item table itself: ``scores = hidden @ item_weights().T``.
    """

    def __init__(self, n_items: int, hidden_dim: int, n_heads: int, n_layers: int,
                 max_length: int, dropout: float, sparse: bool = False,
                 item_category: np.ndarray | None = None) -> None:
        super().__init__()
        self.max_length = max_length
        # sparse: the item table's gradient holds only the rows a batch touched (see SPARSE_MIN_ITEMS)
        self.item_embedding = nn.Embedding(n_items + 1, hidden_dim, padding_idx=0, sparse=sparse)
        self.position_embedding = nn.Embedding(max_length, hidden_dim)
        self.category_embedding: nn.Embedding | None = None
        self._weights_cache: tuple[tuple, torch.Tensor] | None = None
        if item_category is not None:
            item_category = np.asarray(item_category)
            if item_category.shape != (n_items,):
                raise ValueError(f"item_category must hold one code per item ({n_items}), "
                                 f"got shape {item_category.shape}")
            if not np.issubdtype(item_category.dtype, np.integer) or (item_category < 0).any():
                raise ValueError("item_category must hold integer codes >= 0 (0 = unknown category)")
            # shifted like the items: row 0 (padding) has category 0, whose embedding is zero
            shifted = np.concatenate([[0], np.asarray(item_category, dtype=np.int64)])
            self.register_buffer("item_category", torch.as_tensor(shifted), persistent=False)
            self.category_embedding = nn.Embedding(int(shifted.max()) + 1, hidden_dim, padding_idx=0)
        self.embedding_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(hidden_dim, n_heads, dropout) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(hidden_dim)
        std = 1.0 / math.sqrt(hidden_dim)
        nn.init.normal_(self.item_embedding.weight, std=std)
        nn.init.normal_(self.position_embedding.weight, std=std)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        if self.category_embedding is not None:
            nn.init.normal_(self.category_embedding.weight, std=std)
            with torch.no_grad():
                self.category_embedding.weight[0].zero_()

    def item_weights(self) -> torch.Tensor:
        """Output embeddings of the real items (padding row dropped): ``[n_items, hidden_dim]``.

        With categories the sum is cached while gradients are off and the two tables are
        unchanged: at 227k items building it takes ~30 ms, more than scoring a session. In-place
        updates (optimiser steps, ``load_state_dict``, ``weight.add_``) are seen through the
        tensors' version counters; a write through ``weight.data`` is not, so call
        :meth:`clear_item_weights_cache` after one.
        """
        if self.category_embedding is None:
            return self.item_embedding.weight[1:]
        tables = (self.item_embedding.weight, self.category_embedding.weight)
        if torch.is_grad_enabled() or any(t.is_inference() for t in tables):
            # inference tensors have no version counter to key a cache on
            return self._item_plus_category()
        key = tuple((t.data_ptr(), t._version) for t in tables)
        if self._weights_cache is None or self._weights_cache[0] != key:
            self._weights_cache = (key, self._item_plus_category())
        return self._weights_cache[1]

    def _item_plus_category(self) -> torch.Tensor:
        return self.item_embedding.weight[1:] + self.category_embedding(self.item_category[1:])

    def clear_item_weights_cache(self) -> None:
        """Drop the cached output table (needed only after writes through ``weight.data``)."""
        self._weights_cache = None

    def item_rows(self, item_idx: torch.Tensor) -> torch.Tensor:
        """Output embeddings of some items (any shape of indices), with a sparse gradient when
        the table is sparse."""
        return self._embed(item_idx + 1)

    def _embed(self, shifted: torch.Tensor) -> torch.Tensor:
        """Vectors of shifted item indices (0 = padding -> zero vector)."""
        vectors = F.embedding(shifted, self.item_embedding.weight, padding_idx=0, sparse=self.item_embedding.sparse)
        if self.category_embedding is not None:
            vectors = vectors + self.category_embedding(self.item_category[shifted])
        return vectors

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        width = seq.shape[1]
        if width > self.max_length:
            raise ValueError(f"sequence width {width} exceeds max_seq_length {self.max_length}")
        positions = torch.arange(self.max_length - width, self.max_length, device=seq.device)
        x = self.embedding_dropout(self._embed(seq) + self.position_embedding(positions))
        pad = seq == 0
        eye = torch.eye(width, dtype=torch.bool, device=seq.device)
        causal = torch.ones(width, width, dtype=torch.bool, device=seq.device).tril()
        # keys: earlier-or-same positions that are not padding; a padded query sees itself only,
        # so no row of the attention is empty (an empty row would give NaN)
        allowed = (causal & (~pad[:, None, :] | eye)).unsqueeze(1)
        for block in self.blocks:
            x = block(x, allowed)
        return self.final_norm(x)


# --------------------------------------------------------------------------- the recommender
@register("sasrec")
class SASRecRecommender(TorchRecommender):
    """SASRec: next-item prediction with causal self-attention over visitors' event sequences.

    Parameters
    ----------
    hidden_dim, n_heads, n_layers:
        Transformer width (``hidden_dim`` divisible by ``n_heads``), heads and blocks.
    max_seq_length:
        Items of context. Scoring uses a visitor's (or session's) last ``max_seq_length`` items;
        training cuts each visitor's sequence into windows of ``max_seq_length + 1`` items so
        that every next-item pair is a training target exactly once.
    dropout:
        Dropout on embeddings, attention weights and block outputs.
    learning_rate, batch_size, epochs:
        Adam step size, windows per batch, passes over the data.
    loss_type:
        ``"auto"``, ``"ce"``, ``"sampled"`` or ``"gbce"`` (see the module docstring).
    n_negatives:
        Negatives for ``"sampled"`` (shared by the batch) and ``"gbce"`` (per position); capped
        at the catalogue size (``n_items - 1`` for ``"gbce"``).
    gbce_t:
        gSASRec's calibration parameter ``t`` in [0, 1] (1: fully calibrated, 0: plain BCE).
    use_categories:
        Add a learned embedding of each item's category (``category_id`` of the training
        events; RetailRocket's item properties) to its id embedding, on the input and the tied
        output side, as feature-aware SASRec variants do; no effect when the events carry no
        categories. Items of one category then share part of their vector, which carries a
        visitor's taste over to items of the category they never saw.
    history_pooling:
        The query of ``recommend(visitor_id)`` without a live session, which asks what the
        visitor does on a *later* visit rather than next in a session: ``"mean"`` (default)
        averages the hidden states over the visitor's history (the mean of the next-item
        predictions made after each of their items: their taste), ``"last"`` takes the last
        position's (the next click after their last item, as in the paper). It applies to
        every visitor-history query: ``recommend``, ``recommend_batch``, ``score_users``, the
        evaluator's ``evaluate`` and the hybrid's SASRec history component. Live sessions
        (``recommend_by_item_ids``, ``evaluate_sessions``) always use the last position, and so
        does the validation MRR that early stopping selects epochs on. On the demo data
        ``"mean"`` lifts ``evaluate``'s nDCG@10 (benchmarks/RESULTS.md). Models saved before
        this option existed load with ``"last"``, as they scored then.
    patience, seed, device, show_progress:
        As in :class:`~funnelrec.models.torch_base.TorchRecommender`: early-stopping patience
        (epochs without a better validation MRR@20), seed (``None``: ``settings.random_seed``),
        ``"auto"``/``"cpu"``/``"cuda"``, and the tqdm bar.

    Training batches group windows of similar length (shuffled within equal lengths, batches in
    random order) so that little compute goes to padding.
    """

    name = "SASRec"
    sequential = True

    def __init__(
        self,
        hidden_dim: int = 64,
        n_heads: int = 2,
        n_layers: int = 2,
        max_seq_length: int = 50,
        dropout: float = 0.2,
        learning_rate: float = 0.001,
        batch_size: int = 512,
        epochs: int = 5,
        loss_type: str = "auto",
        n_negatives: int = 256,
        gbce_t: float = 0.75,
        use_categories: bool = True,
        history_pooling: str = "mean",
        patience: int = 2,
        seed: int | None = None,
        device: str | None = "auto",
        show_progress: bool = True,
    ) -> None:
        for arg, value in (("hidden_dim", hidden_dim), ("n_heads", n_heads), ("n_layers", n_layers),
                           ("max_seq_length", max_seq_length), ("batch_size", batch_size),
                           ("epochs", epochs), ("n_negatives", n_negatives), ("patience", patience)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if hidden_dim % n_heads:
            raise ValueError(f"hidden_dim ({hidden_dim}) must be divisible by n_heads ({n_heads})")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {list(LOSS_TYPES)}, got {loss_type!r}")
        if not 0 <= gbce_t <= 1:
            raise ValueError(f"gbce_t must be in [0, 1], got {gbce_t!r}")
        if history_pooling not in HISTORY_POOLINGS:
            raise ValueError(f"history_pooling must be one of {list(HISTORY_POOLINGS)}, got {history_pooling!r}")
        self.hidden_dim = hidden_dim
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.max_seq_length = max_seq_length
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.loss_type = loss_type
        self.n_negatives = n_negatives
        self.gbce_t = gbce_t
        self.use_categories = bool(use_categories)
        self.history_pooling = history_pooling
        self.patience = patience
        self.seed = seed
        self.device = device
        self.show_progress = show_progress

    @classmethod
    def _saved_params(cls, params: dict) -> dict:
        # files from before the category embedding and history pooling: a plain id table and
        # the last position's query
        params.setdefault("use_categories", False)
        params.setdefault("history_pooling", "last")
        return params

    # ---------------------------------------------------------------- training hooks
    def _build_network(self) -> SASRecNet:
        return SASRecNet(self.n_items, self.hidden_dim, self.n_heads, self.n_layers,
                         self.max_seq_length, self.dropout, sparse=getattr(self, "sparse_updates_", False),
                         item_category=self._network_categories())

    def _network_categories(self) -> np.ndarray | None:
        """Category codes per item for the network, or ``None`` (off, or no category known)."""
        if not self.use_categories:
            return None
        codes = self._category_codes()
        return codes if codes.any() else None

    def _make_optimizer(self) -> torch.optim.Optimizer | CombinedOptimizer:
        if not self.net_.item_embedding.sparse:
            return super()._make_optimizer()
        table = self.net_.item_embedding.weight
        rest = [p for p in self.net_.parameters() if p is not table]
        # SparseAdam is lazy: a row's moments move only when a batch touches it, which keeps
        # the step cost independent of the catalogue size
        return CombinedOptimizer(torch.optim.SparseAdam([table], lr=self.learning_rate),
                                 torch.optim.Adam(rest, lr=self.learning_rate))

    def _prepare_training(self, data: Interactions, events: pd.DataFrame) -> None:
        sequences = data.visitor_sequences()
        self._set_history(sequences)
        self.windows_ = training_windows(sequences, self.max_seq_length)
        if len(self.windows_) == 0:
            raise ValueError("SASRec needs at least one visitor with two or more events to learn from")
        self.loss_type_ = self.loss_type
        if self.loss_type == "auto":
            self.loss_type_ = "ce" if self.n_items <= AUTO_CE_MAX_ITEMS else "sampled"
        if self.loss_type_ == "gbce" and self.n_items < 2:
            raise ValueError("loss_type='gbce' needs at least two items to draw negatives from")
        # sampled losses touch a few thousand item rows a batch: past SPARSE_MIN_ITEMS items a
        # dense Adam step over the whole table costs more than the rest of the batch
        self.sparse_updates_ = self.loss_type_ in ("sampled", "gbce") and self.n_items >= SPARSE_MIN_ITEMS
        counts = data.item_counts().astype(np.float64)
        probs = np.power(np.maximum(counts, 1.0), SAMPLE_ALPHA)
        self._sample_probs = torch.as_tensor(probs / probs.sum(), dtype=torch.float32, device=self.device_)
        self._log_q = torch.log(self._sample_probs)

    def _set_history(self, sequences: Sequences) -> None:
        """Each visitor's last ``max_seq_length`` items, flat and indexed by visitor index."""
        tails = sequences.tails(self.max_seq_length)
        order = np.argsort(tails.keys, kind="stable")  # already sorted by construction
        lengths = tails.lengths[order]
        sorted_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.repeat(tails.offsets[:-1][order] - sorted_offsets[:-1], lengths) + np.arange(sorted_offsets[-1])
        per_visitor = np.zeros(len(self.visitor_map_), dtype=np.int64)
        per_visitor[tails.keys[order]] = lengths
        self.history_items_ = tails.items[take].astype(np.int64)
        self.history_offsets_ = np.concatenate([[0], np.cumsum(per_visitor)]).astype(np.int64)

    def _n_batches(self) -> int:
        return -(-len(self.windows_) // self.batch_size)

    def _batches(self, rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(inputs, targets)`` of shape ``[batch, width]``; width = the batch's longest window."""
        n_targets = (self.windows_[:, :-1] > 0).sum(axis=1)
        order = np.lexsort((rng.random(len(n_targets)), n_targets))
        starts = np.arange(0, len(order), self.batch_size)
        for start in starts[rng.permutation(len(starts))]:
            rows = order[start : start + self.batch_size]
            width = int(n_targets[rows].max())
            window = torch.from_numpy(self.windows_[rows, -width - 1 :]).to(self.device_)
            yield window[:, :-1], window[:, 1:]

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        inputs, targets = batch
        hidden = self.net_(inputs)
        valid = inputs > 0
        h, target = hidden[valid], targets[valid] - 1  # back to item indices
        if self.loss_type_ == "ce":
            weights = self.net_.item_weights()
            return _chunked_mean(lambda hc, tc: F.cross_entropy(hc @ weights.T, tc, reduction="sum"),
                                 h, target, LOSS_BLOCK_FLOATS // self.n_items)
        if self.loss_type_ == "sampled":
            k = min(self.n_negatives, self.n_items)
            negatives = torch.multinomial(self._sample_probs, k, replacement=True)
            log_q = self._log_q
            neg_w, neg_logq = self.net_.item_rows(negatives), log_q[negatives]

            def sampled(hc: torch.Tensor, tc: torch.Tensor) -> torch.Tensor:
                pos = (hc * self.net_.item_rows(tc)).sum(-1) - log_q[tc]
                neg = hc @ neg_w.T - neg_logq
                neg = neg.masked_fill(negatives[None, :] == tc[:, None], float("-inf"))
                return F.cross_entropy(torch.cat([pos[:, None], neg], dim=1),
                                       torch.zeros_like(tc), reduction="sum")

            return _chunked_mean(sampled, h, target, LOSS_BLOCK_FLOATS // (k + 1))
        # gbce: k uniform negatives per position, never the position's own target
        k = min(self.n_negatives, self.n_items - 1)
        alpha = k / (self.n_items - 1)
        beta = alpha * (self.gbce_t * (1 - 1 / alpha) + 1 / alpha)

        def gbce(hc: torch.Tensor, tc: torch.Tensor) -> torch.Tensor:
            neg = torch.randint(0, self.n_items - 1, (len(tc), k), device=tc.device)
            neg = neg + (neg >= tc[:, None]).long()
            pos = (hc * self.net_.item_rows(tc)).sum(-1)
            neg_scores = torch.einsum("nd,nkd->nk", hc, self.net_.item_rows(neg))
            return (beta * F.softplus(-pos)).sum() + F.softplus(neg_scores).sum()

        return _chunked_mean(gbce, h, target, LOSS_BLOCK_FLOATS // (k * self.hidden_dim))

    # ---------------------------------------------------------------- scoring hooks
    def _scores(self, sequences: Sequences, pooling: str = "last") -> np.ndarray:
        """Query @ item embeddings, in chunks on the model's device. The query is the last
        position's hidden state, or with ``pooling="mean"`` the mean over the sequence's
        positions."""
        padded = left_padded(sequences, self.max_seq_length)
        scores = np.empty((len(padded), self.n_items), dtype=np.float32)
        rows = max(1, min(INFERENCE_ROWS, LOSS_BLOCK_FLOATS // self.n_items))
        with self._inference():
            weights = self.net_.item_weights()
            for lo in range(0, len(padded), rows):
                block = padded[lo : lo + rows]
                width = max(int((block > 0).sum(axis=1).max(initial=0)), 1)
                seq = torch.from_numpy(np.ascontiguousarray(block[:, -width:])).to(self.device_)
                hidden = self.net_(seq)
                if pooling == "mean":
                    real = (seq > 0).unsqueeze(-1).to(hidden.dtype)
                    query = (hidden * real).sum(1) / real.sum(1).clamp(min=1)
                else:
                    query = hidden[:, -1]
                scores[lo : lo + len(block)] = (query @ weights.T).float().cpu().numpy()
        empty = sequences.lengths == 0
        if empty.any():
            scores[empty] = self._fallback_scores(int(empty.sum()))
        return scores

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        starts, ends = self.history_offsets_[user_idx], self.history_offsets_[user_idx + 1]
        lengths = ends - starts
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return self._scores(Sequences(self.history_items_[take], offsets, user_idx), self.history_pooling)

    def _score_sessions(self, sessions: Sequences) -> np.ndarray:
        return self._scores(sessions)

    def _item_vectors(self) -> np.ndarray:
        return self.net_.item_weights().detach().float().cpu().numpy()

    # ---------------------------------------------------------------- persistence
    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {"history_items": self.history_items_, "history_offsets": self.history_offsets_}

    def _validate_state(self, state: StateArrays) -> None:
        state.sequences("history_items", "history_offsets", len(self.visitor_map_), self.n_items)

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.history_items_ = arrays["history_items"].astype(np.int64)
        self.history_offsets_ = arrays["history_offsets"].astype(np.int64)
        if len(self.history_offsets_) != len(self.visitor_map_) + 1:
            raise ValueError(
                f"history_offsets has {len(self.history_offsets_)} entries for "
                f"{len(self.visitor_map_)} visitors"
            )


def _chunked_mean(
    loss_sum: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    h: torch.Tensor,
    target: torch.Tensor,
    chunk: int,
) -> torch.Tensor:
    """Mean over positions of ``loss_sum(h_chunk, target_chunk)``, memory-bounded.

    With more rows than ``chunk``, each chunk runs under activation checkpointing, so its logits
    are freed after the forward pass and recomputed in the backward pass (checkpointing restores
    the RNG state, so a loss that draws negatives draws the same ones again).
    """
    n = len(target)
    chunk = max(int(chunk), 1)
    if n <= chunk:
        return loss_sum(h, target) / max(n, 1)
    total = h.new_zeros(())
    for lo in range(0, n, chunk):
        total = total + checkpoint(loss_sum, h[lo : lo + chunk], target[lo : lo + chunk],
                                   use_reentrant=False)
    return total / n


__all__ = ["SASRecNet", "SASRecRecommender", "left_padded", "training_windows"]

