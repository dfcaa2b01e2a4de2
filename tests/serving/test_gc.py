"""The loaded models are kept out of the garbage collector's scans while the service runs."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from funnelrec.serving.app import create_app


def test_loaded_models_are_frozen_out_of_collections_while_serving(served_artifacts):
    # a full collection scanning every loaded object stalled all requests in flight (~90 ms at
    # demo scale): the long-lived objects loaded at start-up are frozen, and unfrozen on shutdown
    app = create_app(served_artifacts)
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        model = app.state.artifacts.models["als"]
        assert gc.get_freeze_count() > 0
        assert not any(obj is model for obj in gc.get_objects())
    assert gc.get_freeze_count() == 0
    assert any(obj is model for obj in gc.get_objects())
