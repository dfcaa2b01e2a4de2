"""Implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) on the `implicit` library."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from funnelrec.data.encoding import Interactions, Sequences
from funnelrec.models.base import Recommender, StateArrays, register
from funnelrec.threads import resolve_threads


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """The BLAS libraries of the process, found once: finding them reads /proc/self/maps, which
    cost 1 ms on every live-session request when done per call."""
    return ThreadpoolController()


def _one_blas_thread():
    """Context: BLAS on one thread (implicit runs its own thread pool around BLAS calls)."""
    return _blas_controller().limit(limits=1, user_api="blas")


@register("als")
class ALSRecommender(Recommender):
    """Alternating least squares over the visitor x item matrix of event weights.

    Parameters
    ----------
    factors, iterations, regularization, alpha:
        As in :class:`implicit.cpu.als.AlternatingLeastSquares`; confidence is
        ``1 + alpha * weight`` where ``weight`` sums the visitor's event weights on the item.
    random_state:
        Seed of the factor initialisation (``None``: ``settings.random_seed``).

    implicit's thread pool runs ``settings.threads`` threads (``FUNNELREC_THREADS``), with BLAS
    kept to one thread inside it; the factors are the same for every thread count.

    Live sessions (``recommend_by_item_ids``) are folded in: the session's items are solved for
    a visitor vector with the item factors fixed, one least-squares step, as for a new user.
    """

    name = "ALS"

    def __init__(
        self,
        factors: int = 64,
        iterations: int = 10,
        regularization: float = 0.05,
        alpha: float = 10.0,
        random_state: int | None = None,
    ) -> None:
        for arg, value in (("factors", factors), ("iterations", iterations)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if regularization < 0 or alpha <= 0:
            raise ValueError(f"regularization must be >= 0 and alpha > 0, got {regularization}, {alpha}")
        self.factors = factors
        self.iterations = iterations
        self.regularization = regularization
        self.alpha = alpha
        self.random_state = random_state

    def _new_backend(self):
        from implicit.cpu.als import AlternatingLeastSquares

        from funnelrec.config import settings

        seed = settings.random_seed if self.random_state is None else self.random_state
        with _one_blas_thread():  # implicit checks this when built
            return AlternatingLeastSquares(
                factors=self.factors,
                iterations=self.iterations,
                regularization=self.regularization,
                alpha=self.alpha,
                random_state=seed,
                # settings.threads; each visitor's (item's) solve is independent of the others,
                # so the factors do not depend on the thread count
                num_threads=resolve_threads(),
            )

    def _fit(self, data: Interactions, events: pd.DataFrame, val_events: pd.DataFrame | None) -> None:
        backend = self._new_backend()
        # implicit >= 0.5 takes visitor x item; one BLAS thread: implicit runs its own thread pool
        with _one_blas_thread():
            backend.fit(data.matrix, show_progress=False)
        self._backend = backend
        self.user_factors_ = np.ascontiguousarray(backend.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(backend.item_factors, dtype=np.float32)

    def _score_users(self, user_idx: np.ndarray) -> np.ndarray:
        return self.user_factors_[user_idx] @ self.item_factors_.T

    def _score_sessions(self, sessions: Sequences) -> np.ndarray:
        rows = np.repeat(np.arange(len(sessions)), sessions.lengths)
        session_items = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, sessions.items)),
            shape=(len(sessions), self.n_items),
        )
        session_items.sum_duplicates()
        with _one_blas_thread():
            user_vectors = self._backend.recalculate_user(np.arange(len(sessions)), session_items)
        return np.asarray(user_vectors, dtype=np.float32).reshape(len(sessions), -1) @ self.item_factors_.T

    def _item_vectors(self) -> np.ndarray:
        return self.item_factors_

    def _get_state(self) -> dict[str, np.ndarray]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _validate_state(self, state: StateArrays) -> None:
        state.get("user_factors", "f", (len(self.visitor_map_), self.factors), finite=True)
        state.get("item_factors", "f", (self.n_items, self.factors), finite=True)

    def _set_state(self, arrays, path) -> None:
        # implicit's fold-in reads float32 rows
        self.user_factors_ = np.ascontiguousarray(arrays["user_factors"], dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(arrays["item_factors"], dtype=np.float32)
        self._backend = self._new_backend()
        self._backend.user_factors = self.user_factors_
        self._backend.item_factors = self.item_factors_
