"""The one training loop of every PyTorch model (GRU4Rec, SASRec, Two-Tower).

A subclass provides the network and its batches; this base class does the rest: seeding,
device selection, epochs, the optimiser step, a NaN-loss check, a tqdm bar with the running
loss, a per-epoch log line, early stopping on a validation frame, and safe persistence (weights
in safetensors, never pickle).
"""

from __future__ import annotations

import copy
import random
import time
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from loguru import logger
from torch import nn

from funnelrec.data.encoding import (
    Interactions,
    Sequences,
    next_item_targets,
    sequences_from_sorted,
    take_prefixes,
)
from funnelrec.data.schema import ITEM_ID, SESSION_ID, timestamp_ms
from funnelrec.models.base import ArtifactError, Recommender
from funnelrec.progress import progress_bar

WEIGHTS_FILE = "weights.safetensors"


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (third-party code may still use the global state)
    torch.manual_seed(seed)


def resolve_device(device: str | None) -> torch.device:
    """``None``/``"auto"``: the settings' device, ``cuda`` when available, else ``cpu``."""
    from funnelrec.config import settings

    name = settings.resolve_device() if device in (None, "auto") else device
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but no CUDA device is available")
    return torch.device(name)


def validation_sessions(model: Recommender, events: pd.DataFrame) -> Sequences:
    """Sessions of ``events`` as sequences of the model's item indices (unknown items dropped)."""
    ts = timestamp_ms(events)
    order = np.lexsort((ts, events[SESSION_ID].to_numpy()))
    idx = model.item_map_.to_idx(events[ITEM_ID].to_numpy()[order])
    keys = events[SESSION_ID].to_numpy()[order]
    keep = idx >= 0
    return sequences_from_sorted(keys[keep], idx[keep])


class CombinedOptimizer:
    """Several optimisers stepped as one (the loop only calls ``zero_grad`` and ``step``)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


def clip_gradients(parameters: Iterator[nn.Parameter], max_norm: float) -> float:
    """Scale all gradients so their joint L2 norm is at most ``max_norm``; returns the norm.

    ``nn.utils.clip_grad_norm_`` with sparse gradients (a sparse embedding table) is not
    implemented; the norm of a sparse gradient is the norm of its (coalesced) values.
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    squares = [(g.coalesce().values() if g.is_sparse else g).pow(2).sum() for g in grads]
    total = float(torch.stack(squares).sum().sqrt())
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g.mul_(scale)
    return total


def next_item_mrr(model: Recommender, sessions: Sequences, cutoff: int = 20, max_events: int = 5000) -> float:
    """MRR@cutoff of predicting each next item from its prefix (ties counted against the model).

    A quick validation signal for early stopping on a fixed subsample of at most ``max_events``
    predictions; the Evaluator is the reference protocol.
    """
    session_row, prefix_length, targets = next_item_targets(sessions)
    if len(targets) == 0:
        return 0.0
    rows = np.arange(len(targets))
    if len(rows) > max_events:
        rows = np.sort(np.random.default_rng(0).choice(len(rows), max_events, replace=False))
    rr = []
    for lo in range(0, len(rows), 512):
        block_rows = rows[lo : lo + 512]
        block = take_prefixes(sessions, session_row[block_rows], prefix_length[block_rows])
        scores = model.score_sessions(block)
        target_scores = scores[np.arange(len(block_rows)), targets[block_rows]]
        rank = (scores >= target_scores[:, None]).sum(axis=1)  # ties against the model
        rr.append(np.where(rank <= cutoff, 1.0 / rank, 0.0))
    return float(np.concatenate(rr).mean())


class TorchRecommender(Recommender):
    """Base class of the PyTorch models: the training loop and persistence.

    Subclasses set their hyperparameters (including ``learning_rate``, ``batch_size``,
    ``epochs``, ``seed``, ``device``, ``patience``, ``show_progress``) and implement
    :meth:`_build_network`, :meth:`_prepare_training`, :meth:`_batches`, :meth:`_loss`, and the
    scoring hooks of :class:`Recommender`.
    """

    # defaults for subclasses that do not take these as arguments
    seed: int | None = None
    device: str | None = "auto"
    patience: int = 2
    show_progress: bool = True
    grad_clip: float | None = 5.0

    net_: nn.Module

    # ---------------------------------------------------------------- subclass hooks
    @abstractmethod
    def _build_network(self) -> nn.Module:
        """A fresh network for ``self.n_items`` (and any state set in :meth:`_prepare_training`)."""

    @abstractmethod
    def _prepare_training(self, data: Interactions, events: pd.DataFrame) -> None:
        """Derive training arrays (sequences, sampling tables) from the training data."""

    @abstractmethod
    def _batches(self, rng: np.random.Generator) -> Iterator[Any]:
        """Yield the training batches of one epoch."""

    @abstractmethod
    def _loss(self, batch: Any) -> torch.Tensor:
        """Scalar training loss of one batch (the network is in training mode)."""

    def _n_batches(self) -> int | None:
        """Number of batches per epoch, for the progress bar (``None`` if unknown)."""
        return None

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net_.parameters(), lr=self.learning_rate)

    def _on_epoch_start(self, epoch: int) -> None:
        """Called before each epoch (e.g. to reset recurrent state)."""

    def _model_arrays(self) -> dict[str, np.ndarray]:
        """Learned arrays besides the weights (e.g. visitors' last sessions) to save."""
        return {}

    def _restore_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_model_arrays` saved; called before :meth:`_build_network`."""

    # ---------------------------------------------------------------- the loop
    def _fit(self, data: Interactions, events: pd.DataFrame, val_events: pd.DataFrame | None) -> None:
        from funnelrec.config import settings

        seed = settings.random_seed if self.seed is None else self.seed
        seed_everything(seed)
        rng = np.random.default_rng(seed)
        self.device_ = resolve_device(self.device)
        # on CPU a fit repeats bit for bit for the same seed, data and thread count (see
        # funnelrec.threads): another count changes the order of float sums inside matmuls
        logger.info("{}: seed {}, {} torch thread(s) on {}", self.name, seed, torch.get_num_threads(), self.device_)
        self._prepare_training(data, events)
        self.net_ = self._build_network().to(self.device_)
        optimizer = self._make_optimizer()
        val_sessions = None
        if val_events is not None and len(val_events) and SESSION_ID in val_events.columns:
            val_sessions = validation_sessions(self, val_events)
        best_score, best_state, bad_epochs = -np.inf, None, 0
        self.history_: list[dict[str, float]] = []
        for epoch in range(1, self.epochs + 1):
            self.net_.train()
            self._on_epoch_start(epoch)
            started, total_loss, n_seen = time.perf_counter(), 0.0, 0
            bar = progress_bar(
                self._batches(rng), total=self._n_batches(), desc=f"{self.name} epoch {epoch}/{self.epochs}",
                enabled=self.show_progress, leave=False, unit="batch",
            )
            for batch in bar:
                loss = self._loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{self.name}: loss became {loss.item()} in epoch {epoch} after {n_seen} batches; "
                        f"lower learning_rate (now {self.learning_rate})"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.grad_clip:
                    clip_gradients(self.net_.parameters(), self.grad_clip)
                optimizer.step()
                total_loss += loss.item()
                n_seen += 1
                if n_seen % 20 == 0:
                    bar.set_postfix(loss=f"{total_loss / n_seen:.4f}")
            bar.close()
            record = {"epoch": epoch, "loss": total_loss / max(n_seen, 1), "seconds": time.perf_counter() - started}
            if val_sessions is not None:
                self.net_.eval()
                record["val_mrr@20"] = next_item_mrr(self, val_sessions)
            self.history_.append(record)
            logger.info(
                "{} epoch {}/{}: loss {:.4f}{} ({:.1f}s)", self.name, epoch, self.epochs, record["loss"],
                f", val MRR@20 {record['val_mrr@20']:.4f}" if "val_mrr@20" in record else "", record["seconds"],
            )
            if val_sessions is not None:
                if record["val_mrr@20"] > best_score:
                    best_score, bad_epochs = record["val_mrr@20"], 0
                    best_state = copy.deepcopy(self.net_.state_dict())
                else:
                    bad_epochs += 1
                    if bad_epochs >= self.patience:
                        logger.info("{}: early stop after epoch {} (best val MRR@20 {:.4f})", self.name, epoch, best_score)
                        break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.net_.eval()

    # ---------------------------------------------------------------- inference helper
    def _inference(self):
        """Context for scoring: eval mode, no gradients."""
        if self.net_.training:  # eval() walks every submodule: 0.2 ms a request when repeated
            self.net_.eval()
        return torch.inference_mode()

    # ---------------------------------------------------------------- persistence
    def _write_extra(self, path: Path) -> None:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE))

    def _get_state(self) -> dict[str, np.ndarray]:
        return self._model_arrays()

    def _set_state(self, arrays: dict[str, np.ndarray], path: Path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self._restore_arrays(arrays)
        self.device_ = resolve_device(self.device)
        weights = path / WEIGHTS_FILE
        # parameters made under a caller's torch.inference_mode() would be inference tensors,
        # which can never be trained again and carry no version counter
        with torch.inference_mode(False):
            self.net_ = self._build_network()
            try:
                state = load_file(str(weights))
                self.net_.load_state_dict(state)
            except (SafetensorError, FileNotFoundError, RuntimeError, OSError) as exc:
                raise ArtifactError(f"{weights} is missing or corrupted: {exc}") from exc
            # scores come from these weights: a NaN would reach a response as "score": null
            for name, tensor in state.items():
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise ArtifactError(f"{weights}: tensor {name!r} holds NaN or infinite values")
            self.net_.to(self.device_).eval()


__all__ = ["TorchRecommender", "next_item_mrr", "resolve_device", "seed_everything", "validation_sessions"]
