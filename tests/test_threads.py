"""Thread counts: cores from affinity and cgroup quota, the FUNNELREC_THREADS setting, applying it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from loguru import logger
from typer.testing import CliRunner

import funnelrec.config
from funnelrec import threads
from funnelrec.config import Settings


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch):
    """Fresh settings, no inherited thread variables, torch's thread count restored afterwards."""
    for name in list(os.environ):
        if name.upper().startswith("FUNNELREC_"):
            monkeypatch.delenv(name, raising=False)
    for name in threads.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(funnelrec.config, "settings", Settings())
    monkeypatch.setattr(threads, "_warned_deprecated", False)
    cached = threads.available_cores  # tests may replace it
    cached.cache_clear()
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    cached.cache_clear()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _proc(tmp_path: Path, text: str = "0::/\n") -> Path:
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text(text)
    return proc


# --------------------------------------------------------------------------- core counting
def test_affinity_not_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert threads.affinity_cores() == 2


def test_cgroup_v2_quota(tmp_path):
    _write(tmp_path / "cpu.max", "150000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path, _proc(tmp_path)) == pytest.approx(1.5)


def test_cgroup_v2_unlimited_and_malformed(tmp_path):
    _write(tmp_path / "cpu.max", "max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path, _proc(tmp_path)) is None
    _write(tmp_path / "cpu.max", "garbage\n")
    assert threads.cgroup_cpu_limit(tmp_path, _proc(tmp_path)) is None
    assert threads.cgroup_cpu_limit(tmp_path / "missing", tmp_path / "no_proc_file") is None


def test_cgroup_v2_nested_takes_the_tightest_ancestor(tmp_path):
    # the process sits in /a/b; its own cgroup has no quota, its parent allows one core
    _write(tmp_path / "a" / "b" / "cpu.max", "max 100000\n")
    _write(tmp_path / "a" / "cpu.max", "100000 100000\n")
    _write(tmp_path / "cpu.max", "400000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path, _proc(tmp_path, "0::/a/b\n")) == pytest.approx(1.0)


def test_cgroup_v1_quota(tmp_path):
    base = tmp_path / "cpu,cpuacct"
    _write(base / "cpu.cfs_quota_us", "200000\n")
    _write(base / "cpu.cfs_period_us", "100000\n")
    proc = _proc(tmp_path, "5:memory:/\n4:cpu,cpuacct:/\n")
    assert threads.cgroup_cpu_limit(tmp_path, proc) == pytest.approx(2.0)
    _write(base / "cpu.cfs_quota_us", "-1\n")  # no quota
    assert threads.cgroup_cpu_limit(tmp_path, proc) is None


def test_available_cores_is_affinity_capped_by_quota(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    _write(tmp_path / "cpu.max", "250000 100000\n")  # 2.5 cores -> 3 threads
    assert threads.available_cores(tmp_path, _proc(tmp_path)) == 3
    other = tmp_path / "other"
    _write(other / "cpu.max", "50000 100000\n")  # half a core -> still one thread
    assert threads.available_cores(other, _proc(tmp_path)) == 1
    unlimited = tmp_path / "unlimited"
    _write(unlimited / "cpu.max", "max 100000\n")
    assert threads.available_cores(unlimited, _proc(tmp_path)) == 8


# --------------------------------------------------------------------------- the setting
@pytest.fixture(autouse=True)
def _nothing_configured(monkeypatch):
    """Each test starts as a fresh process: no count applied yet (CLI tests elsewhere apply one)."""
    monkeypatch.setattr(threads, "_configured", None)
    monkeypatch.setattr(threads, "_written_omp", None)


def test_env_var_sets_the_thread_count(monkeypatch):
    monkeypatch.setenv("FUNNELREC_THREADS", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the explicit funnelrec setting wins
    monkeypatch.setattr(funnelrec.config, "settings", Settings())
    assert funnelrec.config.settings.threads == 3
    assert threads.resolve_threads() == 3
    assert threads.resolve_threads(2) == 2  # an explicit argument wins over both
    with pytest.raises(ValueError, match="threads"):
        threads.resolve_threads(0)


def test_default_is_the_available_cores_capped_by_omp_num_threads(monkeypatch):
    monkeypatch.setattr(threads, "available_cores", lambda *a: 4)
    assert threads.resolve_threads() == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.resolve_threads() == 1


def test_deprecated_faiss_threads_still_works_and_says_so(monkeypatch):
    monkeypatch.setenv("FUNNELREC_FAISS_THREADS", "2")
    monkeypatch.setattr(funnelrec.config, "settings", Settings())
    messages: list[str] = []
    logger.enable("funnelrec")
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    try:
        assert threads.resolve_threads() == 2
        assert threads.resolve_threads() == 2
    finally:
        logger.remove(sink)
        logger.disable("funnelrec")
    assert sum("FUNNELREC_FAISS_THREADS is deprecated" in m for m in messages) == 1


# --------------------------------------------------------------------------- applying it
def test_configure_threads_applies_to_torch_and_later_libraries(monkeypatch):
    monkeypatch.setattr(funnelrec.config.settings, "threads", 3)
    assert threads.configure_threads() == 3
    assert torch.get_num_threads() == 3
    assert all(os.environ[name] == "3" for name in threads.THREAD_ENV_VARS)
    # the variable written here is not mistaken for the user's cap on the next call
    monkeypatch.setattr(funnelrec.config.settings, "threads", None)
    monkeypatch.setattr(threads, "available_cores", lambda *a: 5)
    assert threads.configure_threads() == 5 and torch.get_num_threads() == 5


def test_cli_applies_the_setting(tmp_path):
    from funnelrec.cli import app

    torch.set_num_threads(2)
    result = CliRunner().invoke(app, ["--threads", "1", "describe", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2  # no data there; the callback ran first
    assert torch.get_num_threads() == 1
    assert CliRunner().invoke(app, ["--threads", "0", "describe"]).exit_code == 2


@pytest.mark.parametrize("how", ["cli flag", "OMP_NUM_THREADS"])
def test_als_and_faiss_keep_the_count_that_was_configured(monkeypatch, how):
    # they resolve the count at each fit or search: they must not go back to all the cores
    faiss = pytest.importorskip("faiss")
    from funnelrec.models.retrieval.index import VectorIndex

    monkeypatch.setattr(threads, "available_cores", lambda *a: 4)
    monkeypatch.setattr(funnelrec.config.settings, "threads", None)
    for name in threads.THREAD_ENV_VARS:
        monkeypatch.setenv(name, os.environ.get(name, ""))  # restored afterwards
    torch_threads = torch.get_num_threads()
    try:
        if how == "cli flag":
            assert threads.configure_threads(1) == 1
        else:
            monkeypatch.setenv("OMP_NUM_THREADS", "1")
            assert threads.configure_threads() == 1
        assert threads.resolve_threads() == 1
        with VectorIndex(kind="exact")._threads():
            assert faiss.omp_get_max_threads() == 1
    finally:
        torch.set_num_threads(torch_threads)


def test_faiss_follows_the_setting(monkeypatch):
    faiss = pytest.importorskip("faiss")
    from funnelrec.models.retrieval.index import VectorIndex

    monkeypatch.setattr(funnelrec.config.settings, "threads", 1)
    index = VectorIndex(kind="exact")
    before = faiss.omp_get_max_threads()
    with index._threads():
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    with VectorIndex(kind="exact", n_threads=2)._threads():
        assert faiss.omp_get_max_threads() == 2


def test_als_uses_the_setting_and_its_factors_do_not_depend_on_it(monkeypatch, tiny_split):
    from funnelrec.models.collaborative.als import ALSRecommender

    train, _, _ = tiny_split
    factors = []
    for n in (1, 2):
        monkeypatch.setattr(funnelrec.config.settings, "threads", n)
        model = ALSRecommender(factors=8, iterations=3, random_state=0).fit(train)
        assert model._backend.num_threads == n
        factors.append(model.item_factors_)
    assert np.array_equal(factors[0], factors[1])


@pytest.mark.parametrize(("env", "expected"), [
    ({}, "3000"), ({"GOMP_SPINCOUNT": "50"}, "50"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "unset")])
def test_openmp_threads_spin_only_briefly_unless_the_user_chose(env, expected):
    # libgomp's long spin made 2-thread fits 5x slower than 1 thread beside another process
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import os, funnelrec, torch; print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == expected
