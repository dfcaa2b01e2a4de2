"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The read-only folder of real data samples beside the repository; skips when absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"shared real-data folder not found: {SHARED_DATA_DIR}")
    return SHARED_DATA_DIR
