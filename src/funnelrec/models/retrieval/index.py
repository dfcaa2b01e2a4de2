"""A FAISS index every vector model may rank with: exact or approximate, seen items filtered.

:class:`VectorIndex` wraps one FAISS index over item vectors and answers top-k queries in the
format of :func:`funnelrec.models.base.top_k` (best first; empty slots hold index ``-1`` and
score ``-inf``; ties ordered by index):

- ``metric="ip"`` ranks by inner product; ``metric="cosine"`` L2-normalises the vectors and the
  queries and then ranks by inner product (``IndexFlatIP``, never FAISS's default L2);
- ``kind="exact"`` is a flat index, ``"hnsw"`` a graph, ``"ivf"`` an inverted file; ``"auto"``
  picks exact below ``exact_threshold`` vectors and HNSW above;
- with ``exclude`` (a CSR of items to skip per query row, e.g. what a visitor has seen) the
  search over-fetches ``k + (most items excluded in any row)`` (capped at ``max_overfetch``)
  and filters; a row still left with fewer than ``k`` valid results (IVF returns ``-1`` when
  ``nprobe`` visits too few lists; a heavy visitor excluded more than the cap) is answered by
  an exact numpy search, so the answer always holds every item it can.

Inputs are converted to C-contiguous float32 (a documented copy when they are not already);
a wrong shape or a dimension that does not match the index is a ``ValueError`` naming the array.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from loguru import logger

from funnelrec.errors import ArtifactError
from funnelrec.models.artifacts import (
    CHECKSUM_KEY,
    atomic_dir,
    config_field,
    file_checksums,
    read_config,
    verify_checksums,
)
from funnelrec.threads import resolve_threads

__all__ = ["INDEX_KINDS", "METRICS", "VectorIndex"]

INDEX_KINDS = ("auto", "exact", "ivf", "hnsw")
METRICS = ("ip", "cosine")
INDEX_FILE = "index.faiss"
PARAMS_FILE = "index.json"
#: Query rows searched per FAISS call (bounds the over-fetched result arrays).
QUERY_BLOCK = 4096


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a core dependency
        raise ImportError("VectorIndex needs FAISS: pip install faiss-cpu") from exc
    return faiss


def _as_matrix(array: Any, name: str, dim: int | None = None) -> np.ndarray:
    """``array`` as a C-contiguous float32 matrix (copying only when it is not one already)."""
    matrix = np.asarray(array)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n, dim], got shape {matrix.shape}")
    if not (np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers, got dtype {matrix.dtype}")
    if dim is not None and matrix.shape[1] != dim:
        raise ValueError(
            f"{name} have dimension {matrix.shape[1]} (shape {matrix.shape}) but the index holds "
            f"{dim}-d vectors"
        )
    if matrix.dtype != np.float32 or not matrix.flags.c_contiguous:
        # FAISS reads raw float32 rows: convert (a copy) rather than fail on float64 or a view
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.size and not np.isfinite(matrix).all():
        bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
        raise ValueError(f"{name} hold NaN or infinite values in {len(bad)} rows, e.g. rows {bad[:5].tolist()}")
    return matrix


def _normalised(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)


def _sort_best_first(idx: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by score descending, ties by index, empty slots (-1) last."""
    key = np.where(idx >= 0, scores, -np.inf)
    tie = np.where(idx >= 0, idx, np.iinfo(np.int64).max)
    order = np.lexsort((tie, -key), axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    scores = np.take_along_axis(key, order, axis=1).astype(np.float32)
    return idx, scores


class VectorIndex:
    """Top-k search over item vectors with FAISS (see the module docstring).

    Parameters
    ----------
    kind:
        ``"exact"`` (``IndexFlatIP``), ``"hnsw"`` (``IndexHNSWFlat``), ``"ivf"``
        (``IndexIVFFlat``) or ``"auto"``: exact below ``exact_threshold`` vectors, else HNSW.
    metric:
        ``"ip"`` (inner product) or ``"cosine"`` (both sides L2-normalised, then inner product).
    nlist:
        IVF lists; ``None``: ``4 * sqrt(n)``, at most ``n // 39`` (FAISS's training minimum).
    nprobe:
        IVF lists visited per query.
    hnsw_m, ef_search, ef_construction:
        HNSW graph degree and search/construction beam widths (``ef_search`` is raised to the
        number of results fetched when that is larger).
    exact_threshold:
        Catalogue size from which ``"auto"`` goes approximate.
    max_overfetch:
        Most extra results fetched to survive seen-item filtering; rows that need more are
        answered exactly.
    n_threads:
        FAISS (OpenMP) threads while building and searching; ``None``: ``settings.threads``
        (``FUNNELREC_THREADS``, by default the cores this process may use; see
        :mod:`funnelrec.threads`). Restored afterwards.
    seed:
        Seed of the IVF k-means training.
    """

    def __init__(
        self,
        kind: str = "auto",
        metric: str = "ip",
        nlist: int | None = None,
        nprobe: int = 32,
        hnsw_m: int = 32,
        ef_search: int = 128,
        ef_construction: int = 200,
        exact_threshold: int = 50_000,
        max_overfetch: int = 1024,
        n_threads: int | None = None,
        seed: int = 42,
    ) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"kind must be one of {INDEX_KINDS}, got {kind!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        for arg, value in (("nprobe", nprobe), ("hnsw_m", hnsw_m), ("ef_search", ef_search),
                           ("ef_construction", ef_construction), ("exact_threshold", exact_threshold)):
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{arg} must be a positive integer, got {value!r}")
        if nlist is not None and (not isinstance(nlist, int | np.integer) or nlist < 1):
            raise ValueError(f"nlist must be a positive integer or None, got {nlist!r}")
        if not isinstance(max_overfetch, int | np.integer) or max_overfetch < 0:
            raise ValueError(f"max_overfetch must be a non-negative integer, got {max_overfetch!r}")
        if n_threads is not None and (not isinstance(n_threads, int | np.integer) or n_threads < 1):
            raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}")
        self.kind = kind
        self.metric = metric
        self.nlist = nlist
        self.nprobe = int(nprobe)
        self.hnsw_m = int(hnsw_m)
        self.ef_search = int(ef_search)
        self.ef_construction = int(ef_construction)
        self.exact_threshold = int(exact_threshold)
        self.max_overfetch = int(max_overfetch)
        self.n_threads = n_threads
        self.seed = seed
        self.index_: Any = None
        self.vectors_: np.ndarray | None = None
        self.kind_: str | None = None

    # ------------------------------------------------------------------ properties
    def get_params(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "metric": self.metric, "nlist": self.nlist, "nprobe": self.nprobe,
            "hnsw_m": self.hnsw_m, "ef_search": self.ef_search, "ef_construction": self.ef_construction,
            "exact_threshold": self.exact_threshold, "max_overfetch": self.max_overfetch,
            "n_threads": self.n_threads, "seed": self.seed,
        }

    def __repr__(self) -> str:
        built = f", n={self.n_vectors}, dim={self.dim}, built={self.kind_!r}" if self.is_built else ""
        return f"VectorIndex(kind={self.kind!r}, metric={self.metric!r}{built})"

    @property
    def is_built(self) -> bool:
        return self.index_ is not None

    def _check_built(self) -> None:
        if not self.is_built:
            from funnelrec.models.base import NotFittedError

            raise NotFittedError("VectorIndex is empty; call build(vectors) first")

    @property
    def n_vectors(self) -> int:
        self._check_built()
        return int(self.index_.ntotal)

    @property
    def dim(self) -> int:
        self._check_built()
        return int(self.index_.d)

    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        faiss = _faiss()
        n = resolve_threads(self.n_threads)
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(int(n))
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)

    # ------------------------------------------------------------------ building
    def _resolve_kind(self, n: int) -> str:
        if self.kind != "auto":
            return self.kind
        return "exact" if n < self.exact_threshold else "hnsw"

    def build(self, vectors: np.ndarray) -> VectorIndex:
        """Index ``vectors`` [n, dim] (row i gets index i). Rebuilding replaces the index."""
        faiss = _faiss()
        matrix = _as_matrix(vectors, "vectors")
        n, dim = matrix.shape
        if n == 0 or dim == 0:
            raise ValueError(f"cannot build an index over an empty matrix (shape {matrix.shape})")
        if self.metric == "cosine":
            matrix = _normalised(matrix)
        elif matrix is vectors:
            matrix = matrix.copy()  # the fallback search must not see later changes of the caller's array
        kind = self._resolve_kind(n)
        ip = faiss.METRIC_INNER_PRODUCT
        with self._threads():
            if kind == "exact":
                index = faiss.IndexFlatIP(dim)
            elif kind == "hnsw":
                index = faiss.IndexHNSWFlat(dim, self.hnsw_m, ip)
                index.hnsw.efConstruction = self.ef_construction
                index.hnsw.efSearch = self.ef_search
            else:
                nlist = self.nlist or int(4 * np.sqrt(n))
                nlist = max(1, min(nlist, n // 39 if n >= 39 else 1))
                index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, ip)
                index.cp.seed = int(self.seed)
                index.train(matrix)
                index.nprobe = min(self.nprobe, nlist)
            index.add(matrix)
            if kind == "ivf":
                index.make_direct_map()
        self.index_, self.vectors_, self.kind_ = index, matrix, kind
        logger.debug("Built a {} VectorIndex over {:,} x {} vectors ({})", kind, n, dim, self.metric)
        return self

    # ------------------------------------------------------------------ searching
    def search(
        self, queries: np.ndarray, k: int, exclude: sp.spmatrix | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` indices and scores per query row, best first, ``exclude`` rows filtered.

        ``exclude`` is a sparse matrix ``[n_queries, n_vectors]`` whose stored entries of row i
        are the indices query i must not get. Returns ``(idx int64, scores float32)`` of shape
        ``[n_queries, min(k, n_vectors)]``; slots left empty hold ``-1`` and ``-inf``.
        """
        self._check_built()
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        n = self.n_vectors
        q = _as_matrix(queries, "queries", dim=self.dim)
        if self.metric == "cosine":
            q = _normalised(q)
        k = min(int(k), n)
        if exclude is not None:
            if not sp.issparse(exclude):
                raise ValueError(f"exclude must be a scipy sparse matrix or None, got {type(exclude).__name__}")
            if exclude.shape != (len(q), n):
                raise ValueError(
                    f"exclude must have shape (n_queries, n_vectors) = {(len(q), n)}, got {exclude.shape}"
                )
            exclude = sp.csr_matrix(exclude)
            if not exclude.has_canonical_format:
                exclude = exclude.copy()
                exclude.sum_duplicates()
        out_idx = np.full((len(q), k), -1, dtype=np.int64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        with self._threads():
            for lo in range(0, len(q), QUERY_BLOCK):
                hi = min(lo + QUERY_BLOCK, len(q))
                block_excl = exclude[lo:hi] if exclude is not None else None
                out_idx[lo:hi], out_scores[lo:hi] = self._search_block(q[lo:hi], k, block_excl)
        return out_idx, out_scores

    def _search_block(
        self, q: np.ndarray, k: int, exclude: sp.csr_matrix | None
    ) -> tuple[np.ndarray, np.ndarray]:
        n = self.n_vectors
        n_excluded = np.diff(exclude.indptr) if exclude is not None else np.zeros(len(q), np.int64)
        extra = min(int(n_excluded.max()) if len(q) else 0, self.max_overfetch)
        fetch = min(n, k + extra)
        if self.kind_ == "hnsw":
            self.index_.hnsw.efSearch = max(self.ef_search, fetch)
        scores, idx = self.index_.search(q, fetch)
        idx = idx.astype(np.int64, copy=False)
        valid = idx >= 0
        if exclude is not None and exclude.nnz:
            # (row, item) keys of the exclusions are sorted in a canonical CSR: binary search
            rows = np.repeat(np.arange(len(q), dtype=np.int64), n_excluded)
            excluded_keys = rows * n + exclude.indices
            keys = np.arange(len(q), dtype=np.int64)[:, None] * n + np.maximum(idx, 0)
            pos = np.minimum(np.searchsorted(excluded_keys, keys), len(excluded_keys) - 1)
            valid &= excluded_keys[pos] != keys
        # keep the first k valid results of each row (FAISS returns them best first)
        order = np.argsort(~valid, axis=1, kind="stable")[:, :k]
        idx = np.where(np.take_along_axis(valid, order, axis=1), np.take_along_axis(idx, order, axis=1), -1)
        scores = np.take_along_axis(scores, order, axis=1)
        idx, scores = _sort_best_first(idx, scores)
        # rows with fewer than k valid results although more items are available: exact search
        available = np.minimum(k, n - n_excluded)
        short = np.flatnonzero((idx >= 0).sum(axis=1) < available)
        if len(short):
            idx[short], scores[short] = self._exact(q[short], k, exclude[short] if exclude is not None else None)
        return idx, scores

    def _exact(self, q: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact numpy search (the shared ranker's rule) for the rows FAISS left short."""
        from funnelrec.models.base import mask_rows, top_k

        scores = q @ self.vectors_.T
        if exclude is not None:
            mask_rows(scores, exclude)
        return top_k(scores, k)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the folder ``path`` atomically: ``index.faiss`` (FAISS I/O) and ``index.json``
        (parameters, and the SHA-256 of ``index.faiss``, checked by :meth:`load`)."""
        self._check_built()
        faiss = _faiss()
        path = Path(path)
        with atomic_dir(path) as tmp:
            faiss.write_index(self.index_, str(tmp / INDEX_FILE))
            meta = {"params": self.get_params(), "built_kind": self.kind_, "n_vectors": self.n_vectors,
                    "dim": self.dim, CHECKSUM_KEY: file_checksums(tmp, PARAMS_FILE)}
            (tmp / PARAMS_FILE).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> VectorIndex:
        """Read an index written by :meth:`save`; a damaged or altered one is an ``ArtifactError``
        naming the file (an index saved before checksums existed loads with a warning)."""
        faiss = _faiss()
        path = Path(path)
        meta_path = path / PARAMS_FILE
        meta = read_config(meta_path)
        verify_checksums(path, meta, meta_path)
        try:
            params = config_field(meta, "params", dict, meta_path)
            n_vectors = config_field(meta, "n_vectors", int, meta_path)
            dim = config_field(meta, "dim", int, meta_path)
            built_kind = config_field(meta, "built_kind", str, meta_path)
            if built_kind not in INDEX_KINDS[1:]:
                raise ArtifactError(f"{meta_path}: built_kind must be one of {INDEX_KINDS[1:]}, got {built_kind!r}")
            index = cls(**params)
            raw = faiss.read_index(str(path / INDEX_FILE))
        except ArtifactError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ArtifactError(f"cannot read a VectorIndex from {path}: {exc}") from exc
        if raw.ntotal != n_vectors or raw.d != dim:
            raise ArtifactError(
                f"{path / INDEX_FILE} holds {raw.ntotal} x {raw.d} vectors, {PARAMS_FILE} says {n_vectors} x {dim}"
            )
        vectors = np.ascontiguousarray(raw.reconstruct_n(0, raw.ntotal), dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise ArtifactError(f"{path / INDEX_FILE} holds NaN or infinite vectors")
        index.index_, index.kind_, index.vectors_ = raw, built_kind, vectors
        return index
