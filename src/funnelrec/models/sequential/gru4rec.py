"""GRU4Rec (Hidasi et al. 2016, 2018) trained the way the official implementation trains it.

Hidasi & Czapp (RecSys 2023) showed that third-party GRU4Rec versions lose most of its accuracy
because they change the training scheme. This one keeps it:

- **session-parallel mini-batches**: ``batch_size`` sessions side by side; each step feeds the
  current item of every active session and predicts its next item. When a session ends its slot
  takes the next session (sessions in start-time order) and that row of the hidden state is reset
  to zero. The hidden state is carried from step to step and detached (truncated BPTT of one step);
- **shared negatives**: the other targets of the mini-batch plus ``n_sample`` items drawn with
  probability proportional to ``popularity ** sample_alpha``, the same for every row of the batch,
  drawn in large chunks from a cumulative-distribution table;
- **losses**: cross-entropy with logQ correction (``'ce'``), BPR-max with score regularisation
  (``'bpr-max'``), TOP1-max (``'top1-max'``);
- **optimiser**: Adagrad with optional momentum whose sparse updates touch only the rows of the
  embedding matrices seen in the step (the official ``IndexedAdagradM``), or Adam (lazy, row-wise
  on the item tables), so a step costs the same whatever the size of the catalogue.

The official RSC15 settings (``loss_type='ce'``, ``constrained_embedding=True``,
``optimizer='adagrad'``, ``learning_rate=0.1``, ``batch_size=32``, ``hidden_dim=100``,
``dropout_p_embed=0.1``, ``dropout=0``, ``n_sample=512``) are in
``benchmarks/gru4rec_yoochoose.py``. The defaults keep the seed notebook's call
(``learning_rate=0.001`` suits Adam, not Adagrad).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from funnelrec.data.encoding import Interactions, Sequences, sequences_from_sorted
from funnelrec.data.schema import EVENT, ITEM_ID, SESSION_ID, VISITOR_ID, timestamp_ms
from funnelrec.models.base import SCORE_BLOCK_FLOATS, StateArrays, register
from funnelrec.models.torch_base import CombinedOptimizer, TorchRecommender

LOSS_TYPES = ("ce", "bpr-max", "top1-max")
OPTIMIZERS = ("adagrad", "adam")
#: Number of negative-sample ids drawn at once (one chunk of the sample cache).
SAMPLE_CHUNK = 1 << 20
#: Upper bounds on one inference block: sessions, and padded positions (sessions x length).
SCORE_BLOCK_ROWS = 1024
SCORE_BLOCK_POSITIONS = 1 << 18


# --------------------------------------------------------------------------- session-parallel batches
@dataclass(frozen=True)
class SessionParallelStep:
    """One step of session-parallel training, on positions of the flat item array.

    ``positions[r]`` is the input event of row ``r``; its target is the event at
    ``positions[r] + 1`` of the same session. ``reset[r]`` says row ``r`` starts a new session at
    this step (its hidden state must be zero). ``carry`` is ``None`` when the rows are those of the
    previous step, else row ``r`` continues the previous step's row ``carry[r]`` (the batch shrinks
    once no session is left to fill a finished slot).
    """

    positions: np.ndarray
    reset: np.ndarray
    carry: np.ndarray | None


def session_parallel_batches(
    offsets: np.ndarray, batch_size: int, order: np.ndarray | None = None
) -> Iterator[SessionParallelStep]:
    """Yield the steps of one epoch of session-parallel mini-batches.

    Parameters
    ----------
    offsets:
        Session boundaries in a flat item array (``len = n_sessions + 1``); every session must
        have at least two events.
    batch_size:
        Number of sessions processed side by side.
    order:
        The order in which sessions enter the batch (default: ``0..n_sessions-1``).

    Every consecutive pair of events of every session is produced exactly once per epoch.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    if lengths.size and lengths.min() < 2:
        raise ValueError("session_parallel_batches needs sessions of at least two events")
    n_sessions = len(lengths)
    order = np.arange(n_sessions) if order is None else np.asarray(order, dtype=np.int64)
    n_rows = min(batch_size, n_sessions)
    if n_rows == 0:
        return
    start = offsets[order[:n_rows]].copy()
    end = offsets[order[:n_rows] + 1].copy()
    next_session = n_rows
    reset = np.ones(n_rows, dtype=bool)
    carry: np.ndarray | None = None
    while True:
        steps = int((end - start).min()) - 1  # every row has at least this many pairs left
        no_reset = np.zeros(len(start), dtype=bool)
        for i in range(steps):
            yield SessionParallelStep(start + i, reset if i == 0 else no_reset, carry if i == 0 else None)
        start = start + steps
        finished = np.flatnonzero(end - start <= 1)
        n_new = min(len(finished), n_sessions - next_session)
        refill, drop = finished[:n_new], finished[n_new:]
        new_sessions = order[next_session : next_session + n_new]
        next_session += n_new
        start[refill] = offsets[new_sessions]
        end[refill] = offsets[new_sessions + 1]
        reset = np.zeros(len(start), dtype=bool)
        reset[refill] = True
        carry = None
        if drop.size:
            keep = np.ones(len(start), dtype=bool)
            keep[drop] = False
            carry = np.flatnonzero(keep)
            start, end, reset = start[carry], end[carry], reset[carry]
            if len(start) == 0:
                return


class PopularitySampler:
    """Item ids drawn with probability ``counts ** alpha``, ``n_sample`` at a time.

    Ids are generated in chunks of about :data:`SAMPLE_CHUNK` with one ``searchsorted`` on the
    cumulative distribution, then handed out a row at a time (as a tensor on ``device``).
    """

    def __init__(
        self, counts: np.ndarray, alpha: float, n_sample: int, rng: np.random.Generator, device: torch.device
    ) -> None:
        weights = np.asarray(counts, dtype=np.float64) ** alpha
        cdf = np.cumsum(weights)
        self.cdf = cdf / cdf[-1]
        self.n_sample = n_sample
        self.rng = rng
        self.device = device
        self._rows_per_chunk = max(1, SAMPLE_CHUNK // max(n_sample, 1))
        self._cache: torch.Tensor | None = None
        self._next = 0

    def sample(self) -> torch.Tensor:
        if self._cache is None or self._next >= len(self._cache):
            u = self.rng.random(self._rows_per_chunk * self.n_sample)
            ids = np.minimum(np.searchsorted(self.cdf, u, side="right"), len(self.cdf) - 1)
            self._cache = torch.from_numpy(ids.reshape(self._rows_per_chunk, self.n_sample)).to(self.device)
            self._next = 0
        row = self._cache[self._next]
        self._next += 1
        return row


# --------------------------------------------------------------------------- optimiser
class IndexedAdagradM(torch.optim.Optimizer):
    """Adagrad with optional momentum; a sparse gradient updates only the rows it touches.

    ``acc += g**2``, ``step = -lr * g / sqrt(acc + eps)``; with ``momentum > 0``,
    ``v = momentum * v + step`` and ``p += v``, else ``p += step``.
    """

    def __init__(self, params: Any, lr: float = 0.05, momentum: float = 0.0, eps: float = 1e-6) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or eps <= 0:
            raise ValueError(f"need lr > 0, 0 <= momentum < 1 and eps > 0, got {lr}, {momentum}, {eps}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, eps = group["lr"], group["momentum"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["acc"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if momentum > 0:
                        state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                acc = state["acc"]
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows, values = grad.indices()[0], grad.values()
                    row_acc = acc.index_select(0, rows).addcmul_(values, values)
                    acc.index_copy_(0, rows, row_acc)
                    update = values.div(row_acc.add_(eps).sqrt_()).mul_(-lr)
                    if momentum > 0:
                        velocity = state["velocity"].index_select(0, rows).mul_(momentum).add_(update)
                        state["velocity"].index_copy_(0, rows, velocity)
                        update = velocity
                    p.index_add_(0, rows, update)
                else:
                    acc.addcmul_(grad, grad)
                    update = grad.div(acc.add(eps).sqrt_()).mul_(-lr)
                    if momentum > 0:
                        update = state["velocity"].mul_(momentum).add_(update)
                    p.add_(update)
        return loss


# --------------------------------------------------------------------------- network
def _init_uniform(tensor: torch.Tensor, fan_rows: float, fan_cols: float) -> None:
    """Uniform in ``+-sqrt(6 / (fan_rows + fan_cols))`` (Glorot), as the official initialisation."""
    bound = float(np.sqrt(6.0 / (fan_rows + fan_cols)))
    with torch.no_grad():
        tensor.uniform_(-bound, bound)


class GRU4RecNet(nn.Module):
    """Item input -> GRU layers -> scores against the output item embeddings plus a bias.

    With ``constrained_embedding`` the input embedding of an item is its output embedding
    (``hidden_dim`` wide) and ``embedding_dim`` is unused.
    """

    def __init__(
        self,
        n_items: int,
        embedding_dim: int,
        hidden_dim: int,
        n_layers: int,
        dropout: float,
        dropout_p_embed: float,
        constrained_embedding: bool,
        sparse: bool,
    ) -> None:
        super().__init__()
        self.constrained = constrained_embedding
        self.item_out = nn.Embedding(n_items, hidden_dim, sparse=sparse)
        self.item_bias = nn.Embedding(n_items, 1, sparse=sparse)
        n_input = hidden_dim
        self.item_in: nn.Embedding | None = None
        if not constrained_embedding:
            self.item_in = nn.Embedding(n_items, embedding_dim, sparse=sparse)
            n_input = embedding_dim
        # the packed multi-layer GRU runs inference; training steps its layers one by one (step)
        self.gru = nn.GRU(n_input, hidden_dim, n_layers, batch_first=True)
        self.drop_embed = nn.Dropout(dropout_p_embed)
        self.drop_hidden = nn.Dropout(dropout)
        _init_uniform(self.item_out.weight, n_items, hidden_dim)
        nn.init.zeros_(self.item_bias.weight)
        if self.item_in is not None:
            _init_uniform(self.item_in.weight, n_items, embedding_dim)
        for name, param in self.gru.named_parameters():
            if name.startswith("weight"):
                _init_uniform(param, param.shape[0] / 3, param.shape[1])
            else:
                nn.init.zeros_(param)

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        table = self.item_out if self.item_in is None else self.item_in
        return self.drop_embed(table(items))

    def step(self, items: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One training time step for a batch: ``(output [B, hidden_dim], new hidden [layers, B,
        hidden_dim])``.

        As in the official implementation, each layer's new state goes through the hidden
        dropout, and the dropped state is both the next layer's input and the state carried to
        the session's next step (so dropout also perturbs the recurrence, not just the output).
        """
        x = self.embed(items)
        states = []
        for layer in range(self.gru.num_layers):
            # all_weights[layer]: weight_ih, weight_hh, bias_ih, bias_hh, gru_cell's order
            x = self.drop_hidden(torch.gru_cell(x, hidden[layer], *self.gru.all_weights[layer]))
            states.append(x)
        return x, torch.stack(states)

    def encode(self, padded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Final last-layer hidden state of each padded row (``lengths`` on the CPU, descending)."""
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(padded), lengths, batch_first=True)
        _, hidden = self.gru(packed)
        return hidden[-1]

    def score_columns(self, out: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, len(items)]`` of the given output items."""
        return out @ self.item_out(items).T + self.item_bias(items).T

    def score_all(self, out: torch.Tensor) -> torch.Tensor:
        """Scores ``[B, n_items]`` against the whole catalogue."""
        return torch.addmm(self.item_bias.weight[:, 0], out, self.item_out.weight.T)


# --------------------------------------------------------------------------- losses
def _negative_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax over every column except the row's own target (column ``r`` of row ``r``)."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    masked = logits.clone()
    masked[rows, rows] = -torch.inf
    return torch.softmax(masked, dim=1)


def bpr_max_loss(logits: torch.Tensor, bpreg: float) -> torch.Tensor:
    """Summed BPR-max: ``-log sum_j s_j sigmoid(r_t - r_j) + bpreg * sum_j s_j r_j**2``."""
    weights = _negative_softmax(logits)
    target = torch.diagonal(logits)[:, None]
    ranking = torch.sum(weights * torch.sigmoid(target - logits), dim=1)
    loss = -torch.log(ranking + 1e-24)
    if bpreg:
        loss = loss + bpreg * torch.sum(weights * logits**2, dim=1)
    return loss.sum()


def top1_max_loss(logits: torch.Tensor) -> torch.Tensor:
    """Summed TOP1-max: ``sum_j s_j (sigmoid(r_j - r_t) + sigmoid(r_j**2))``."""
    weights = _negative_softmax(logits)
    target = torch.diagonal(logits)[:, None]
    return torch.sum(weights * (torch.sigmoid(logits - target) + torch.sigmoid(logits**2)))


@dataclass(frozen=True)
class _Batch:
    inputs: torch.Tensor
    targets: torch.Tensor
    reset: torch.Tensor | None  # bool rows to zero, None when no row starts a session
    carry: torch.Tensor | None
    samples: torch.Tensor | None


# --------------------------------------------------------------------------- the recommender
@register("gru4rec")
class GRU4RecRecommender(TorchRecommender):
    """GRU4Rec with the official training scheme (see the module docstring).

    Parameters
    ----------
    embedding_dim:
        Width of the input item embedding (unused with ``constrained_embedding``; 0 is allowed
        only then).
    hidden_dim, n_layers:
        GRU size.
    dropout:
        Dropout on each GRU layer's new state, which feeds the next layer, the output and the
        next time step alike: the official ``dropout_p_hidden``.
    learning_rate, batch_size, epochs:
        Optimiser step size, sessions side by side, passes over the training sessions.
    loss_type:
        ``'ce'`` (cross-entropy with logQ correction), ``'bpr-max'`` or ``'top1-max'``.
    n_sample, sample_alpha:
        Extra negatives per mini-batch, shared by its rows, drawn with probability
        ``popularity ** sample_alpha`` (0: only the other targets of the mini-batch).
    logq:
        Weight of the logQ correction of ``'ce'``: every output score is lowered by
        ``logq * log(probability that the item is in the output set)`` (popularity for the
        mini-batch targets, ``popularity ** sample_alpha`` for the sampled items).
    bpreg:
        Score regularisation of ``'bpr-max'``.
    elu_param:
        ``> 0`` applies ``elu(score, elu_param)`` before the BPR-max/TOP1-max loss (official
        ``elu_param``); 0 leaves scores as they are.
    constrained_embedding:
        Share the input and output item embeddings (the input is the output embedding).
    dropout_p_embed:
        Dropout on the input embedding.
    optimizer, momentum:
        ``'adam'`` (dense Adam for the GRU, lazy row-wise ``SparseAdam`` for the item tables) or
        ``'adagrad'`` (Adagrad with ``momentum``, sparse row updates; the official optimiser,
        with learning rates around 0.05-0.1).
    max_history:
        ``recommend(visitor)`` runs the GRU over the last ``max_history`` items of the visitor's
        most recent training session.
    seed, device, patience, show_progress:
        As in :class:`~funnelrec.models.torch_base.TorchRecommender`.

    Training sessions enter the mini-batches in the order of their first event, as in the
    official implementation; sessions of one event teach nothing and are skipped.
    """

    name = "GRU4Rec"
    sequential = True
    grad_clip = None  # the official training does not clip gradients

    def __init__(
        self,
        embedding_dim: int = 64,
        hidden_dim: int = 128,
        n_layers: int = 1,
        dropout: float = 0.2,
        learning_rate: float = 0.001,
        batch_size: int = 512,
        epochs: int = 5,
        loss_type: str = "ce",
        n_sample: int = 2048,
        sample_alpha: float = 0.75,
        logq: float = 1.0,
        bpreg: float = 1.0,
        elu_param: float = 0.0,
        constrained_embedding: bool = False,
        dropout_p_embed: float = 0.0,
        optimizer: str = "adam",
        momentum: float = 0.0,
        max_history: int = 50,
        seed: int | None = None,
        device: str | None = "auto",
        patience: int = 2,
        show_progress: bool = True,
    ) -> None:
        for arg, value in (("hidden_dim", hidden_dim), ("n_layers", n_layers), ("batch_size", batch_size),
                           ("epochs", epochs), ("max_history", max_history), ("patience", patience)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        for arg, value in (("embedding_dim", embedding_dim), ("n_sample", n_sample)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{arg} must be a non-negative integer, got {value!r}")
        if embedding_dim == 0 and not constrained_embedding:
            raise ValueError("embedding_dim=0 needs constrained_embedding=True (the input is then the output embedding)")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        for arg, value in (("dropout", dropout), ("dropout_p_embed", dropout_p_embed), ("momentum", momentum)):
            if not 0 <= value < 1:
                raise ValueError(f"{arg} must be in [0, 1), got {value!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        for arg, value in (("sample_alpha", sample_alpha), ("logq", logq), ("bpreg", bpreg), ("elu_param", elu_param)):
            if not value >= 0:
                raise ValueError(f"{arg} must be >= 0, got {value!r}")
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.n_layers = n_layers
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.epochs = epochs
        self.loss_type = loss_type
        self.n_sample = n_sample
        self.sample_alpha = sample_alpha
        self.logq = logq
        self.bpreg = bpreg
        self.elu_param = elu_param
        self.constrained_embedding = constrained_embedding
        self.dropout_p_embed = dropout_p_embed
        self.optimizer = optimizer
        self.momentum = momentum
        self.max_history = max_history
        self.seed = seed
        self.device = device
        self.patience = patience
        self.show_progress = show_progress

    # ---------------------------------------------------------------- training data
    def _prepare_training(self, data: Interactions, events: pd.DataFrame) -> None:
        if SESSION_ID not in events.columns:
            from funnelrec.data.processors.session_builder import SessionBuilder

            events = SessionBuilder().build_sessions(events)
        items = self.item_map_.to_idx(events[ITEM_ID].to_numpy())
        visitors = self.visitor_map_.to_idx(events[VISITOR_ID].to_numpy())
        keys = events[SESSION_ID].to_numpy()
        ts = timestamp_ms(events)
        order = np.lexsort((events[EVENT].cat.codes.to_numpy(), ts, keys))
        sessions = sequences_from_sorted(keys[order], items[order])
        first = sessions.offsets[:-1]
        session_start = ts[order][first]
        session_visitor = visitors[order][first]

        # training: sessions of >= 2 events, entering the batches by start time
        trainable = np.flatnonzero(sessions.lengths >= 2)
        if trainable.size == 0:
            raise ValueError("GRU4Rec needs sessions with at least two events to learn from")
        by_time = trainable[np.argsort(session_start[trainable], kind="stable")]
        train = sessions.take(by_time)
        self._train_items = train.items
        self._train_offsets = train.offsets
        self._n_steps: int | None = None
        self._hidden: torch.Tensor | None = None

        counts = data.item_counts().astype(np.float64)
        counts = np.maximum(counts, 1.0)  # every catalogue item has an event; guard log(0) anyway
        self._sample_counts = counts
        self._log_counts = torch.tensor(np.log(counts), dtype=torch.float32, device=self.device_)
        self._items_t = torch.from_numpy(self._train_items).to(self.device_)

        # each visitor's most recent session, for recommend(visitor)
        by_visitor = np.lexsort((np.arange(len(sessions)), session_start, session_visitor))
        v_sorted = session_visitor[by_visitor]
        is_last = np.r_[v_sorted[1:] != v_sorted[:-1], True]
        last_session = np.full(len(self.visitor_map_), -1, dtype=np.int64)
        last_session[v_sorted[is_last]] = by_visitor[is_last]
        has = last_session >= 0
        lengths = np.zeros(len(self.visitor_map_), dtype=np.int64)
        lengths[has] = sessions.lengths[last_session[has]]
        chosen = sessions.take(last_session[has])
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        history = Sequences(chosen.items, offsets, np.arange(len(self.visitor_map_))).tails(self.max_history)
        self.history_items_, self.history_offsets_ = history.items, history.offsets

    def _build_network(self) -> nn.Module:
        return GRU4RecNet(
            n_items=self.n_items,
            embedding_dim=self.embedding_dim,
            hidden_dim=self.hidden_dim,
            n_layers=self.n_layers,
            dropout=self.dropout,
            dropout_p_embed=self.dropout_p_embed,
            constrained_embedding=self.constrained_embedding,
            sparse=True,
        )

    def _make_optimizer(self) -> torch.optim.Optimizer:
        if self.optimizer == "adagrad":
            return IndexedAdagradM(self.net_.parameters(), lr=self.learning_rate, momentum=self.momentum)
        # Adam: lazy (row-wise) updates of the item tables, so a step costs the same for any catalogue
        tables = [m.weight for m in self.net_.modules() if isinstance(m, nn.Embedding)]
        table_ids = {id(p) for p in tables}
        dense = [p for p in self.net_.parameters() if id(p) not in table_ids]
        return CombinedOptimizer(  # type: ignore[return-value]
            torch.optim.SparseAdam(tables, lr=self.learning_rate),
            torch.optim.Adam(dense, lr=self.learning_rate),
        )

    def _on_epoch_start(self, epoch: int) -> None:
        self._hidden = None

    def _n_batches(self) -> int | None:
        if self._n_steps is None:
            self._n_steps = sum(1 for _ in session_parallel_batches(self._train_offsets, self.batch_size))
        return self._n_steps

    def _batches(self, rng: np.random.Generator) -> Iterator[_Batch]:
        device = self.device_
        sampler = None
        if self.n_sample > 0:
            sampler = PopularitySampler(self._sample_counts, self.sample_alpha, self.n_sample, rng, device)
        for step in session_parallel_batches(self._train_offsets, self.batch_size):
            positions = torch.from_numpy(step.positions).to(device)
            yield _Batch(
                inputs=self._items_t[positions],
                targets=self._items_t[positions + 1],
                reset=torch.from_numpy(step.reset).to(device) if step.reset.any() else None,
                carry=None if step.carry is None else torch.from_numpy(step.carry).to(device),
                samples=None if sampler is None else sampler.sample(),
            )

    def _loss(self, batch: _Batch) -> torch.Tensor:
        n_rows = len(batch.inputs)
        hidden = self._hidden
        if hidden is None:
            hidden = torch.zeros(self.n_layers, n_rows, self.hidden_dim, device=self.device_)
        else:
            if batch.carry is not None:
                hidden = hidden[:, batch.carry]
            if batch.reset is not None:
                hidden = hidden.masked_fill(batch.reset[None, :, None], 0.0)
        out, hidden = self.net_.step(batch.inputs, hidden)
        self._hidden = hidden.detach()  # truncated BPTT: one step
        columns = batch.targets if batch.samples is None else torch.cat([batch.targets, batch.samples])
        logits = self.net_.score_columns(out, columns)
        return self._output_loss(logits, batch.targets, batch.samples) / self.batch_size

    def _output_loss(
        self, logits: torch.Tensor, targets: torch.Tensor, samples: torch.Tensor | None
    ) -> torch.Tensor:
        """Summed loss of ``logits [B, B + n_sample]`` whose column ``r`` is row ``r``'s target."""
        if self.loss_type == "ce":
            if self.logq > 0:
                log_q = self._log_counts[targets]
                if samples is not None:
                    log_q = torch.cat([log_q, self.sample_alpha * self._log_counts[samples]])
                logits = logits - self.logq * log_q
            rows = torch.arange(logits.shape[0], device=logits.device)
            return F.cross_entropy(logits, rows, reduction="sum")
        if logits.shape[1] < 2:  # a lone session and no samples: nothing to rank against
            return logits.sum() * 0.0
        if self.elu_param > 0:
            logits = F.elu(logits, self.elu_param)
        if self.loss_type == "bpr-max":
            return bpr_max_loss(logits, self.bpreg)
        return top1_max_loss(logits)

    # ---------------------------------------------------------------- scoring
    def _score_sessions(self, sessions: Sequences) -> np.ndarray:
        lengths = sessions.lengths
        scores = np.empty((len(sessions), self.n_items), dtype=np.float32)
        order = np.argsort(-lengths, kind="stable")  # packing wants descending lengths
        with self._inference():
            lo = 0
            while lo < len(order):
                max_len = int(lengths[order[lo]])
                rows = min(SCORE_BLOCK_ROWS, SCORE_BLOCK_POSITIONS // max_len, SCORE_BLOCK_FLOATS // self.n_items)
                rows = max(rows, 1)
                block = order[lo : lo + rows]
                lo += len(block)
                padded, block_lengths = _padded(sessions, block)
                hidden = self.net_.encode(
                    torch.from_numpy(padded).to(self.device_), torch.from_numpy(block_lengths)
                )
                scores[block] = self.net_.score_all(hidden).float().cpu().numpy()
        return scores

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        history = Sequences(self.history_items_, self.history_offsets_, np.arange(len(self.history_offsets_) - 1))
        return self.score_sessions(history.take(user_idx))

    def _item_vectors(self) -> np.ndarray:
        return self.net_.item_out.weight.detach().float().cpu().numpy()

    # ---------------------------------------------------------------- persistence
    def _model_arrays(self) -> dict[str, np.ndarray]:
        return {"history_items": self.history_items_, "history_offsets": self.history_offsets_}

    def _validate_state(self, state: StateArrays) -> None:
        state.sequences("history_items", "history_offsets", len(self.visitor_map_), self.n_items)

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.history_items_ = arrays["history_items"]
        self.history_offsets_ = arrays["history_offsets"]


# --------------------------------------------------------------------------- helpers
def _padded(sessions: Sequences, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``[len(rows), max length]`` item matrix of ``rows`` and their lengths."""
    block = sessions.take(rows)
    lengths = block.lengths
    padded = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)
    row_of = np.repeat(np.arange(len(rows)), lengths)
    col_of = np.arange(len(block.items)) - np.repeat(block.offsets[:-1], lengths)
    padded[row_of, col_of] = block.items
    return padded, lengths


__all__ = ["GRU4RecNet", "GRU4RecRecommender", "IndexedAdagradM", "PopularitySampler", "session_parallel_batches"]
