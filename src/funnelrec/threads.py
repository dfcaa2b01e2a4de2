"""How many CPU threads funnelrec's numeric libraries use, and applying it to them.

One number, ``settings.threads`` (``FUNNELREC_THREADS``), drives torch's intra-op threads, BLAS
(threadpoolctl and the ``*_NUM_THREADS`` variables of libraries loaded later), FAISS's OpenMP
threads and implicit's ALS thread pool. Unset, it is the number of cores this process may use:
its CPU affinity (``os.sched_getaffinity``) capped by its cgroup CPU quota (v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), and by ``OMP_NUM_THREADS`` when that is set.
``os.cpu_count()`` is not used: in a container it counts the host's cores, and every library
starting that many threads on a 2-core quota is what made a demo 6x slower.

Where it is applied: the CLI applies it once, in its callback, before any command imports torch
(:func:`configure_threads`). A library user (a notebook) calls :func:`configure_threads` once;
ALS and FAISS read the setting at each fit or search whether or not it was called.
"""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path

from loguru import logger

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
#: Environment variables read by OpenMP, MKL, OpenBLAS and numexpr when they are first loaded.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")

_warned_deprecated = False
#: The OMP_NUM_THREADS value configure_threads() wrote (not the user's choice, so not a cap).
_written_omp: str | None = None
#: The count configure_threads() applied: what ALS and FAISS use afterwards, so they never
#: re-resolve to all cores past a --threads or an OMP_NUM_THREADS the process was started with.
_configured: int | None = None


def affinity_cores() -> int:
    """CPUs this process may run on (its affinity mask); ``os.cpu_count()`` where there is none."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)  # pragma: no cover - macOS, Windows


def _own_cgroup_dirs(root: Path, proc_cgroup: Path, controller: str | None) -> list[Path]:
    """This process's cgroup folder and its ancestors up to ``root`` (the limit is the tightest)."""
    relative = ""
    try:
        for line in proc_cgroup.read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (controller is None and controllers == "") or (
                controller is not None and controller in controllers.split(",")
            ):
                relative = path.strip("/")
                break
    except (OSError, ValueError):
        pass
    dirs = []
    parts = relative.split("/") if relative else []
    for depth in range(len(parts), -1, -1):
        dirs.append(root.joinpath(*parts[:depth]))
    return dirs


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The cgroup CPU quota in cores (e.g. ``1.5``), or ``None`` when there is no quota.

    cgroup v2: ``cpu.max`` holds ``"<quota> <period>"`` or ``"max <period>"``. cgroup v1:
    ``cpu.cfs_quota_us`` (``-1``: none) over ``cpu.cfs_period_us``, under ``cpu/`` or
    ``cpu,cpuacct/``. The folders of this process's own cgroup and of its ancestors are read
    (inside a container the root itself is usually the container's cgroup); the smallest
    quota wins. Unreadable or malformed files count as no quota.
    """
    limits: list[float] = []
    for folder in _own_cgroup_dirs(root, proc_cgroup, None):
        try:
            quota, period = (folder / "cpu.max").read_text().split()[:2]
            if quota != "max" and float(period) > 0:
                limits.append(float(quota) / float(period))
        except (OSError, ValueError):
            continue
    for v1 in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        base = root / v1
        if not base.is_dir():
            continue
        for folder in _own_cgroup_dirs(base, proc_cgroup, "cpu"):
            try:
                quota = float((folder / "cpu.cfs_quota_us").read_text().strip())
                period = float((folder / "cpu.cfs_period_us").read_text().strip())
                if quota > 0 and period > 0:
                    limits.append(quota / period)
            except (OSError, ValueError):
                continue
    return min(limits) if limits else None


@functools.lru_cache(maxsize=8)  # read per FAISS search: the files once, not per request
def available_cores(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """Cores this process may use: its affinity, capped by the cgroup quota (rounded up).

    Cached per process (``available_cores.cache_clear()`` to re-read)."""
    cores = affinity_cores()
    quota = cgroup_cpu_limit(root, proc_cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota - 1e-9)))
    return cores


def _env_threads() -> int | None:
    """``OMP_NUM_THREADS`` when the user set it to a positive integer (not when we wrote it)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value == _written_omp or not value.isdigit() or int(value) < 1:
        return None
    return int(value)


def resolve_threads(threads: int | None = None) -> int:
    """The thread count to use: ``threads``, else the count :func:`configure_threads` applied,
    else ``settings.threads`` (``FUNNELREC_THREADS``), else the available cores (capped by
    ``OMP_NUM_THREADS`` when that is set).

    The deprecated ``settings.faiss_threads`` (``FUNNELREC_FAISS_THREADS``) is read when
    ``threads`` is not set, with a warning.
    """
    if threads is None and _configured is not None:
        return _configured
    return _resolve(threads)


def _resolve(threads: int | None) -> int:
    global _warned_deprecated
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        return threads
    from funnelrec.config import settings

    if settings.threads is not None:
        return settings.threads
    if settings.faiss_threads is not None:
        if not _warned_deprecated:
            logger.warning("FUNNELREC_FAISS_THREADS is deprecated: use FUNNELREC_THREADS (torch, BLAS and "
                           "FAISS follow it); using {}", settings.faiss_threads)
            _warned_deprecated = True
        return settings.faiss_threads
    cores = available_cores()
    env = _env_threads()
    return min(cores, env) if env is not None else cores


#: Spins of a waiting GNU OpenMP thread before it sleeps (libgomp's default: 300,000).
OPENMP_SPIN_COUNT = 3000


def bound_openmp_spinning() -> None:
    """Let a waiting OpenMP thread spin only briefly before it sleeps (``GOMP_SPINCOUNT``).

    GNU OpenMP (torch's and FAISS's) spins a waiting thread 300,000 times by default. When another
    process holds a core, every parallel torch op then waits for a thread that is not running.
    GRU4Rec, one demo epoch on 2 cores and 2 threads, quiet / beside one CPU-bound process:
    libgomp's default 3.5 s / 35.5 s; ``GOMP_SPINCOUNT=3000`` 3.8 s / 7.3 s;
    ``OMP_WAIT_POLICY=PASSIVE`` (no spinning) 5.2 s / 5.9 s. 3,000 keeps the quiet speed and
    most of the busy one. OpenMP reads the variable once, when it is loaded: funnelrec sets it on
    import (and the CLI before anything imports torch), so import funnelrec before torch. A value
    the user set, or an ``OMP_WAIT_POLICY``, is kept.
    """
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(OPENMP_SPIN_COUNT))


def configure_threads(threads: int | None = None) -> int:
    """Apply :func:`resolve_threads` process-wide; returns the thread count applied.

    Sets torch's intra-op threads and FAISS's OpenMP threads when those are loaded, limits the
    BLAS libraries already loaded (threadpoolctl), and sets ``OMP_NUM_THREADS`` and the other
    ``*_NUM_THREADS`` variables so libraries loaded later (torch itself, when this runs first)
    start with the same count. Call it once, early; calling it again resolves and re-applies
    (after a change of ``settings.threads``, say).
    """
    global _written_omp, _configured
    bound_openmp_spinning()
    n = _resolve(threads)
    _configured = n
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(n)
    _written_omp = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    if "numpy" in sys.modules or "scipy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)  # kept: not used as a context manager
    logger.debug("Threads: {} (torch, BLAS, FAISS, ALS)", n)
    return n


__all__ = [
    "affinity_cores",
    "available_cores",
    "cgroup_cpu_limit",
    "configure_threads",
    "bound_openmp_spinning",
    "resolve_threads",
]
