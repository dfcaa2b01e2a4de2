"""The HTTP API against a real uvicorn server on loopback, over artifacts saved from tiny data.

Start-up failures and settings are checked in-process with FastAPI's TestClient.
"""

from __future__ import annotations

import shutil
import threading
import time
import warnings
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

import funnelrec
from funnelrec.cli import app as cli_app
from funnelrec.config import settings
from funnelrec.models import (
    ALSRecommender,
    FunnelAwareHybridRecommender,
    PopularItemsRecommender,
    SessionKNNRecommender,
)
from funnelrec.models.base import ArtifactError, Recommender
from funnelrec.models.explainable.explainer import RecommendationExplainer
from funnelrec.serving.app import API_KEY_HEADER, create_app
from funnelrec.serving.schemas import MAX_N, MAX_SESSION_ITEMS

API_KEY = "test-key-0123456789"
MODELS = ["als", "funnel_hybrid", "popular", "session_knn"]
UNKNOWN_VISITOR = 987_654_321
UNKNOWN_ITEM = 123_456_789


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def train(tiny_split):
    return tiny_split[0]


@pytest.fixture(scope="module")
def hybrid(tiny_split) -> FunnelAwareHybridRecommender:
    train, val, _ = tiny_split
    return FunnelAwareHybridRecommender(
        popular_model=PopularItemsRecommender(),
        cf_model=ALSRecommender(factors=8, iterations=3, random_state=0),
        session_model=SessionKNNRecommender(),
        epochs=20,
        max_training_examples=500,
        seed=0,
    ).fit(train, val_events=val)


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory, train, hybrid) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    hybrid.save(root / "funnel_hybrid")
    PopularItemsRecommender().fit(train).save(root / "popular")
    ALSRecommender(factors=8, iterations=3).fit(train).save(root / "als")
    SessionKNNRecommender().fit(train).save(root / "session_knn")
    RecommendationExplainer().fit(train).save(root / "explainer")
    (root / "notes").mkdir()  # a folder without config.json is ignored
    return root


@pytest.fixture(scope="module")
def base_url(artifacts_dir):
    """A real server in a background thread, loopback only, on a free port; stopped at teardown."""
    config = uvicorn.Config(
        create_app(artifacts_dir, api_key=API_KEY), host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("the test server did not start")
        time.sleep(0.02)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    assert host == "127.0.0.1"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive(), "the test server did not stop"


@pytest.fixture(scope="module")
def client(base_url):
    with httpx.Client(base_url=base_url, headers={API_KEY_HEADER: API_KEY}, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def anonymous(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def visitor(train) -> int:
    """The training visitor with the most events."""
    return int(train["visitor_id"].value_counts().index[0])


@pytest.fixture(scope="module")
def session_items(train) -> list[int]:
    """The items of one real multi-item session, in order."""
    sizes = train.groupby("session_id").size()
    session = sizes[sizes >= 3].index[0]
    return train.loc[train["session_id"] == session].sort_values("timestamp")["item_id"].tolist()


def TestClient(app):  # noqa: N802  (imported lazily: starlette warns about httpx on import)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient as _TestClient
    return _TestClient(app)


def detail(response: httpx.Response) -> str:
    return str(response.json()["detail"])


# --------------------------------------------------------------------------- service endpoints
def test_health_is_open_and_lists_models(anonymous):
    response = anonymous.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "models": MODELS,
        "default_model": "funnel_hybrid",
        "explainer": True,
        "version": funnelrec.__version__,
    }


def test_models_describe_each_model(client, artifacts_dir, train):
    response = client.get("/models")
    assert response.status_code == 200
    body = response.json()
    assert body["default_model"] == "funnel_hybrid"
    by_key = {m["key"]: m for m in body["models"]}
    assert sorted(by_key) == MODELS
    als = by_key["als"]
    assert als["class"] == "ALSRecommender" and als["name"] == "ALS" and not als["is_default"]
    assert by_key["funnel_hybrid"]["is_default"]
    assert als["params"]["factors"] == 8
    assert als["n_items"] == train["item_id"].nunique()
    assert als["n_visitors"] == train["visitor_id"].nunique()
    assert by_key["popular"]["class"] == "PopularItemsRecommender"


def test_openapi_lists_every_path(anonymous):
    response = anonymous.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert {
        "/health",
        "/models",
        "/visitors/{visitor_id}/recommendations",
        "/sessions/recommendations",
        "/items/{item_id}/similar",
    } <= set(spec["paths"])
    assert API_KEY_HEADER in str(spec["components"]["securitySchemes"])


# --------------------------------------------------------------------------- visitor recommendations
def test_visitor_recommendations_match_the_model(client, artifacts_dir, visitor):
    response = client.get(f"/visitors/{visitor}/recommendations", params={"n": 5, "model": "als"})
    assert response.status_code == 200
    body = response.json()
    expected = Recommender.load(artifacts_dir / "als").recommend(visitor, n_items=5)
    assert body["model"] == "als" and body["visitor_id"] == visitor
    assert [i["item_id"] for i in body["items"]] == expected.item_ids
    assert [i["score"] for i in body["items"]] == pytest.approx([s for _, s in expected])
    assert body["is_fallback"] is False
    assert body["component_weights"] is None
    assert all(i["explanation"] is None for i in body["items"])


def test_hybrid_passes_component_weights_to_the_explanations(client, visitor, session_items):
    response = client.get(f"/visitors/{visitor}/recommendations", params={"explain": True, "n": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "funnel_hybrid" and body["is_fallback"] is False
    weights = body["component_weights"]
    assert set(weights) == {"popular", "cf", "session"} and sum(weights.values()) == pytest.approx(1, abs=1e-3)
    for item in body["items"]:
        kinds = [r["evidence"]["kind"] for r in item["explanation"]["reasons"]]
        assert "component_weights" in kinds
    session = client.post("/sessions/recommendations", json={"item_ids": session_items, "n": 3})
    assert session.status_code == 200 and session.json()["component_weights"]


def test_unknown_visitor_gets_a_marked_fallback(client):
    response = client.get(f"/visitors/{UNKNOWN_VISITOR}/recommendations", params={"model": "popular"})
    assert response.status_code == 200
    body = response.json()
    assert body["is_fallback"] is True and len(body["items"]) == 10


def test_explanations_are_the_explainers(client, artifacts_dir, visitor):
    response = client.get(
        f"/visitors/{visitor}/recommendations", params={"explain": "true", "n": 4, "model": "session_knn"}
    )
    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 4
    explainer = RecommendationExplainer.load(artifacts_dir / "explainer")
    model = Recommender.load(artifacts_dir / "session_knn")
    expected = explainer.explain_batch(visitor, model.recommend(visitor, n_items=4), model.name)
    for item, explanation in zip(items, expected, strict=True):
        got = item["explanation"]
        assert got["item_id"] == item["item_id"] and got["visitor_id"] == visitor
        assert got["reasons"]
        assert got["summary"] == "Ranked by SessionKNN (similar sessions). " + got["reasons"][0]["text"]
        assert got == explanation.to_dict()


@pytest.mark.parametrize("live", [False, True], ids=["no-session", "live-session"])
def test_hybrid_explanations_say_only_what_the_request_had(client, visitor, session_items, live):
    """Without a live session no sentence speaks of one (issue 18 item 2); with one, the
    component reason says the session model read it. Evidence comes before the weights."""
    if live:
        response = client.post("/sessions/recommendations",
                               json={"item_ids": session_items, "visitor_id": visitor, "n": 5, "explain": True})
    else:
        response = client.get(f"/visitors/{visitor}/recommendations", params={"explain": True, "n": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "funnel_hybrid" and not body["is_fallback"]
    for item in body["items"]:
        explanation = item["explanation"]
        texts = " ".join([explanation["summary"], *(r["text"] for r in explanation["reasons"])])
        assert explanation["summary"].startswith("Ranked by the funnel-aware hybrid. ")
        if not live:
            assert "current session" not in texts and "just viewed" not in texts
        kinds = [r["evidence"]["kind"] for r in explanation["reasons"]]
        assert kinds[-1] == "component_weights" and kinds[0] != "component_weights"
        weights_text = explanation["reasons"][-1]["text"]
        if "the session model" in weights_text:
            read = "on your current session" if live else "on your earlier visits"
            assert f"the session model {read}" in weights_text


def test_explanations_for_a_cold_visitor(client):
    response = client.get(f"/visitors/{UNKNOWN_VISITOR}/recommendations", params={"explain": True, "n": 3})
    assert response.status_code == 200
    body = response.json()
    assert body["is_fallback"] is True
    for item in body["items"]:
        assert item["explanation"]["funnel_stage"] == "new"
        assert item["explanation"]["summary"].startswith(
            "Ranked by popularity, because the funnel-aware hybrid had nothing to personalise from. ")
        assert item["explanation"]["reasons"]


@pytest.mark.parametrize("n", [0, -1, MAX_N + 1, "ten"])
def test_bad_n_is_422(client, visitor, n):
    response = client.get(f"/visitors/{visitor}/recommendations", params={"n": n})
    assert response.status_code == 422
    assert "n" in str(response.json()["detail"][0]["loc"])


def test_n_at_the_bound_is_accepted(client, visitor):
    response = client.get(f"/visitors/{visitor}/recommendations", params={"n": MAX_N})
    assert response.status_code == 200 and len(response.json()["items"]) == MAX_N


@pytest.mark.parametrize("bad", ["abc", "1.5", str(2**70)])
def test_non_int64_visitor_is_422(client, bad):
    response = client.get(f"/visitors/{bad}/recommendations")
    assert response.status_code == 422
    assert "visitor_id" in str(response.json()["detail"][0]["loc"])


def test_unknown_model_is_404_listing_the_models(client, visitor):
    response = client.get(f"/visitors/{visitor}/recommendations", params={"model": "nope"})
    assert response.status_code == 404
    assert "nope" in detail(response)
    assert all(key in detail(response) for key in MODELS)


# --------------------------------------------------------------------------- sessions
def test_session_recommendations(client, artifacts_dir, session_items):
    body = {"item_ids": session_items, "model": "session_knn", "n": 5}
    response = client.post("/sessions/recommendations", json=body)
    assert response.status_code == 200
    got = response.json()
    expected = Recommender.load(artifacts_dir / "session_knn").recommend_by_item_ids(session_items, 5)
    assert [i["item_id"] for i in got["items"]] == expected.item_ids
    assert got["is_fallback"] is False and got["visitor_id"] is None


def test_session_with_explanations_is_anonymous(client, session_items):
    body = {"item_ids": session_items, "n": 3, "explain": True}
    response = client.post("/sessions/recommendations", json=body)
    assert response.status_code == 200
    for item in response.json()["items"]:
        explanation = item["explanation"]
        assert explanation["visitor_id"] is None and explanation["funnel_stage"] == "new"
        assert explanation["reasons"]


def test_session_with_a_known_visitor(client, visitor, session_items):
    body = {"item_ids": session_items, "n": 3, "visitor_id": visitor, "explain": True, "model": "als"}
    response = client.post("/sessions/recommendations", json=body)
    assert response.status_code == 200
    got = response.json()
    assert got["visitor_id"] == visitor and got["is_fallback"] is False
    assert all(i["explanation"]["visitor_id"] == visitor for i in got["items"])


@pytest.mark.parametrize("item_ids", [[], [UNKNOWN_ITEM, UNKNOWN_ITEM + 1]])
def test_empty_or_unknown_session_falls_back(client, item_ids):
    response = client.post("/sessions/recommendations", json={"item_ids": item_ids, "n": 4})
    assert response.status_code == 200
    assert response.json()["is_fallback"] is True and len(response.json()["items"]) == 4


def test_session_length_is_capped(client, session_items):
    at_cap = (session_items * MAX_SESSION_ITEMS)[:MAX_SESSION_ITEMS]
    assert client.post("/sessions/recommendations", json={"item_ids": at_cap}).status_code == 200
    response = client.post("/sessions/recommendations", json={"item_ids": at_cap + at_cap[:1]})
    assert response.status_code == 422
    assert str(MAX_SESSION_ITEMS) in response.text


@pytest.mark.parametrize(
    "body",
    [
        {"item_ids": ["a"]},
        {"item_ids": ["12"]},
        {"item_ids": [1.5]},
        {"item_ids": [2**70]},
        {"item_ids": 5},
        {},
        {"item_ids": [1], "n": 0},
        {"item_ids": [1], "n": MAX_N + 1},
        {"item_ids": [1], "visitor_id": "x"},
        {"item_ids": [1], "nn": 3},
    ],
)
def test_bad_session_bodies_are_422(client, body):
    response = client.post("/sessions/recommendations", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["msg"]


def test_session_unknown_model_is_404(client):
    response = client.post("/sessions/recommendations", json={"item_ids": [1], "model": "nope"})
    assert response.status_code == 404 and "available" in detail(response)


# --------------------------------------------------------------------------- similar items
@pytest.mark.parametrize("model", MODELS)
def test_similar_items(client, artifacts_dir, train, model):
    item = int(train["item_id"].value_counts().index[0])
    response = client.get(f"/items/{item}/similar", params={"model": model, "n": 6})
    assert response.status_code == 200
    body = response.json()
    assert body["item_id"] == item and body["model"] == model
    expected = Recommender.load(artifacts_dir / model).get_similar_items(item, 6)
    assert [i["item_id"] for i in body["items"]] == expected.item_ids
    assert item not in expected.item_ids


def test_similar_unknown_item_is_404_naming_it(client):
    response = client.get(f"/items/{UNKNOWN_ITEM}/similar")
    assert response.status_code == 404
    assert str(UNKNOWN_ITEM) in detail(response)


def test_similar_bad_parameters(client):
    assert client.get("/items/xyz/similar").status_code == 422
    assert client.get("/items/1/similar", params={"n": 0}).status_code == 422
    assert client.get("/items/1/similar", params={"model": "nope"}).status_code == 404


# --------------------------------------------------------------------------- API key
@pytest.mark.parametrize(
    ("method", "path", "json"),
    [
        ("GET", "/models", None),
        ("GET", "/visitors/1/recommendations", None),
        ("POST", "/sessions/recommendations", {"item_ids": [1]}),
        ("GET", "/items/1/similar", None),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong", API_KEY + "x", "é".encode("latin-1")])
def test_api_key_is_required(anonymous, method, path, json, key):
    headers = {} if key is None else {API_KEY_HEADER: key}
    response = anonymous.request(method, path, json=json, headers=headers)
    assert response.status_code == 401
    assert API_KEY_HEADER in detail(response)


def test_the_right_key_opens_every_endpoint(anonymous):
    headers = {API_KEY_HEADER: API_KEY}
    assert anonymous.get("/models", headers=headers).status_code == 200
    assert anonymous.get("/visitors/1/recommendations", headers=headers).status_code == 200


def test_api_key_defaults_to_settings(artifacts_dir, monkeypatch):
    monkeypatch.setattr(settings, "api_key", "from-env")
    with TestClient(create_app(artifacts_dir)) as test_client:
        assert test_client.get("/health").status_code == 200
        assert test_client.get("/models").status_code == 401
        assert test_client.get("/models", headers={API_KEY_HEADER: "from-env"}).status_code == 200


def test_no_key_configured_means_open(artifacts_dir):
    with TestClient(create_app(artifacts_dir, api_key=None)) as test_client:
        assert test_client.get("/models").status_code == 200


def test_empty_api_key_is_refused(artifacts_dir):
    with pytest.raises(ValueError, match="api_key"):
        create_app(artifacts_dir, api_key="")


# --------------------------------------------------------------------------- start-up
@pytest.fixture
def copy_of(artifacts_dir, tmp_path):
    def copy(*names: str) -> Path:
        root = tmp_path / "copy"
        for name in names:
            shutil.copytree(artifacts_dir / name, root / name)
        return root

    return copy


@pytest.mark.parametrize(
    ("folder", "file", "content"),
    [
        ("als", "state.npz", b"PK\x03\x04 truncated"),
        ("als", "config.json", b'{"format_version": 99, "model": "als", "params": {}}'),
        ("als", "state.npz", b"not an npz at all"),
        ("popular", "config.json", b"{not json"),
        ("explainer", "state.npz", b"PK\x03\x04 truncated"),
        ("explainer", "config.json", b'{"format_version": 99, "params": {}, "n_ranked_items": 1, "stages": []}'),
    ],
)
def test_corrupted_artifact_fails_startup_naming_the_file(copy_of, folder, file, content):
    root = copy_of("als", "popular", "explainer")
    (root / folder / file).write_bytes(content)
    app = create_app(root, api_key=None)
    with pytest.raises(ArtifactError, match=str(root / folder / file)), TestClient(app):
        pass
    assert str(root / folder / file) in app.state.startup_error


def test_no_models_fails_startup(tmp_path):
    with pytest.raises(ArtifactError, match="no saved models"), TestClient(create_app(tmp_path, api_key=None)):
        pass


def test_explain_without_an_explainer_is_404(copy_of):
    with TestClient(create_app(copy_of("popular"), api_key=None)) as test_client:
        assert test_client.get("/health").json()["explainer"] is False
        response = test_client.get("/visitors/1/recommendations", params={"explain": True})
        assert response.status_code == 404 and "explainer" in response.json()["detail"]
        assert test_client.get("/visitors/1/recommendations").status_code == 200


def test_blas_threads_are_limited_while_serving_and_restored(copy_of):
    import faiss  # noqa: F401  (loads the OpenMP-threaded OpenBLAS that CI once tripped on)
    from threadpoolctl import threadpool_info

    def threads() -> list[int]:
        # pthreads BLAS pools are process-wide; an OpenMP-threaded one (faiss bundles such an
        # OpenBLAS) keeps its limit per calling thread, so the test thread cannot see it
        return [i["num_threads"] for i in threadpool_info()
                if i["user_api"] == "blas" and i.get("threading_layer") != "openmp"]

    root = copy_of("popular")
    before = threads()
    with TestClient(create_app(root, api_key=None, blas_threads=1)):
        assert set(threads()) <= {1}
    assert threads() == before
    with pytest.raises(ValueError, match="blas_threads"):
        create_app(root, blas_threads=0)


def test_a_single_model_folder_is_served_under_its_name(artifacts_dir):
    with TestClient(create_app(artifacts_dir / "popular", api_key=None)) as test_client:
        health = test_client.get("/health").json()
        assert health["models"] == ["popular"] and health["explainer"] is False


def test_serve_without_models_exits_2(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli_app, ["serve", "--artifacts", str(tmp_path)])
    assert result.exit_code == 2
    assert "no saved models" in result.output
    missing = runner.invoke(cli_app, ["serve", "--artifacts", str(tmp_path / "missing")])
    assert missing.exit_code == 2 and "no saved models" in missing.output


def test_serve_with_a_corrupted_artifact_exits_2_naming_it(copy_of):
    root = copy_of("als", "popular")
    (root / "als" / "state.npz").write_bytes(b"PK\x03\x04 truncated")
    result = CliRunner().invoke(cli_app, ["--quiet", "serve", "--artifacts", str(root), "--port", "0"])
    assert result.exit_code == 2
    assert "state.npz" in result.output and "corrupted" in result.output


def test_oversized_body_is_refused_unread(client):
    big = b'{"item_ids": [' + b"1," * 40_000 + b'1]}'
    response = client.post("/sessions/recommendations", content=big,
                           headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]
