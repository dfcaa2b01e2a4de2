"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

import funnelrec  # noqa: F401  (first, so that OpenMP spins only briefly whichever test imports torch)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The read-only folder of real data samples beside the repository; skips when absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"shared real-data folder not found: {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR


@pytest.fixture(scope="session")
def tiny_data():
    """The synthetic generator at tiny scale (ground truth included), made once per run."""
    from funnelrec.data.synthetic import generate

    return generate("tiny", seed=7)


@pytest.fixture(scope="session")
def tiny_split(tiny_data):
    """``(train, val, test)`` of the tiny synthetic events, sessions built by SessionBuilder."""
    from funnelrec.data.processors.session_builder import SessionBuilder
    from funnelrec.data.processors.splitter import TimeBasedSplitter

    events = SessionBuilder().build_sessions(tiny_data.canonical_events(with_sessions=False))
    return TimeBasedSplitter(0.8, 0.1, 0.1).split(events)


@pytest.fixture(scope="session")
def small_split():
    """A small shop with many returning visitors: enough warm visitors to compare models."""
    from funnelrec.data.processors.session_builder import SessionBuilder
    from funnelrec.data.processors.splitter import TimeBasedSplitter
    from funnelrec.data.synthetic import ScaleConfig, generate

    config = ScaleConfig("small", n_visitors=40_000, n_items=800, n_categories=60, n_roots=6, return_rate=0.3)
    events = SessionBuilder().build_sessions(generate(config, seed=11).canonical_events(with_sessions=False))
    return TimeBasedSplitter(0.8, 0.1, 0.1).split(events)
