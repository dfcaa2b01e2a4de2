"""Fixtures of the HTTP tests: small saved artifacts and a real uvicorn server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn


@pytest.fixture(scope="session")
def served_artifacts(tmp_path_factory, tiny_split) -> Path:
    """Popular, ALS, SessionKNN, a small hybrid and the explainer, saved from the tiny data."""
    from funnelrec.models import (
        ALSRecommender,
        FunnelAwareHybridRecommender,
        PopularItemsRecommender,
        SessionKNNRecommender,
    )
    from funnelrec.models.explainable.explainer import RecommendationExplainer

    train, val, _ = tiny_split
    root = tmp_path_factory.mktemp("served")
    FunnelAwareHybridRecommender(
        popular_model=PopularItemsRecommender(),
        cf_model=ALSRecommender(factors=8, iterations=3, random_state=0),
        session_model=SessionKNNRecommender(),
        epochs=5,
        max_training_examples=200,
        seed=0,
    ).fit(train, val_events=val).save(root / "funnel_hybrid")
    PopularItemsRecommender().fit(train).save(root / "popular")
    ALSRecommender(factors=8, iterations=3, random_state=0).fit(train).save(root / "als")
    SessionKNNRecommender().fit(train).save(root / "session_knn")
    RecommendationExplainer().fit(train).save(root / "explainer")
    return root


@contextmanager
def live_server(app, **config: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread on a free loopback port; yield its URL.

    ``config`` goes to ``uvicorn.Config`` (e.g. ``timeout_keep_alive``). Stopped on exit.
    """
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **config)
    )
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "the test server did not stop"


@pytest.fixture(scope="session")
def serve():
    """``serve(app, **uvicorn_config)``: the :func:`live_server` context manager."""
    return live_server
