"""POST /sessions/recommendations leaves the session's own items out unless asked not to."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from funnelrec.models import (
    FunnelAwareHybridRecommender,
    PopularItemsRecommender,
    SessionKNNRecommender,
)
from funnelrec.serving.app import create_app


@pytest.fixture(scope="module")
def client(tmp_path_factory, tiny_split):
    train, val, _ = tiny_split
    root = tmp_path_factory.mktemp("session_items")
    PopularItemsRecommender().fit(train).save(root / "popular")
    SessionKNNRecommender().fit(train).save(root / "session_knn")
    FunnelAwareHybridRecommender(popular_model=PopularItemsRecommender(), session_model=SessionKNNRecommender(),
                                 epochs=5, max_training_examples=200, seed=0).fit(train, val_events=val).save(
        root / "funnel_hybrid")
    with TestClient(create_app(root, api_key=None)) as test_client:
        yield test_client


@pytest.mark.parametrize("model", [None, "popular", "session_knn", "funnel_hybrid"])
def test_the_viewed_item_is_not_recommended(client, tiny_split, model):
    train, _, _ = tiny_split
    viewed = int(train["item_id"].value_counts().index[0])  # the item most models rank first
    visitor = int(train["visitor_id"].value_counts().index[0])
    extra = {} if model is None else {"model": model}
    for who in ({}, {"visitor_id": visitor}):
        body = {"item_ids": [viewed], "n": 3, **extra, **who}
        answer = client.post("/sessions/recommendations", json=body)
        assert answer.status_code == 200, answer.text
        items = [item["item_id"] for item in answer.json()["items"]]
        assert len(items) == 3 and viewed not in items
        kept = client.post("/sessions/recommendations",
                           json={**body, "n": 100, "exclude_session_items": False}).json()["items"]
        assert viewed in [item["item_id"] for item in kept]


def test_exclude_session_items_must_be_a_boolean(client):
    answer = client.post("/sessions/recommendations", json={"item_ids": [1], "exclude_session_items": "no"})
    assert answer.status_code == 422
