"""The HTTP service against hostile and careless clients: non-finite numbers, oversized and slow
bodies, authentication before parsing, integer and boolean semantics, HEAD, offline docs.

Transport-level behaviour (keep-alive reuse, chunked uploads, a body that never ends) is tested
against a real uvicorn server on loopback, with httpx or a raw socket: TestClient runs the app
in-process and has no connection to keep or to cut.
"""

from __future__ import annotations

import json
import re
import socket
import time
import warnings
from urllib.parse import urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from funnelrec.models.base import Recommender
from funnelrec.serving.app import API_KEY_HEADER, create_app
from funnelrec.serving.schemas import ID_MAX, ID_MIN, MAX_BODY_BYTES

API_KEY = "hardening-key-42"
SESSIONS = "/sessions/recommendations"
#: Body-read deadline of the test server (seconds): short, so a stalled upload is cut quickly.
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def base_url(served_artifacts, serve):
    app = create_app(served_artifacts, api_key=API_KEY, body_timeout_s=BODY_TIMEOUT_S)
    with serve(app) as url:
        yield url


@pytest.fixture
def client(base_url):
    with httpx.Client(base_url=base_url, headers={API_KEY_HEADER: API_KEY}, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def item(tiny_split) -> int:
    return int(tiny_split[0]["item_id"].value_counts().index[0])


@pytest.fixture(scope="module")
def visitor(tiny_split) -> int:
    return int(tiny_split[0]["visitor_id"].value_counts().index[0])


def _strict_json(text: str):
    """``json.loads`` that refuses NaN/Infinity (they are not JSON)."""
    def refuse(name: str):
        raise ValueError(f"{name} in a response body")

    return json.loads(text, parse_constant=refuse)


def _local_port(response: httpx.Response) -> int:
    """The client-side port of the connection that carried ``response``."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def _raw_exchange(base_url: str, head: bytes, body_parts=(), pause_s: float = 0.0,
                  read_timeout_s: float = 5.0) -> bytes:
    """Send ``head`` then ``body_parts`` over a fresh socket; return what the server answers.

    Stops sending as soon as the server has answered (or closed); an empty result means the
    server said nothing within ``read_timeout_s``.
    """
    parts = urlsplit(base_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=read_timeout_s) as sock:
        sock.sendall(head)
        for part in body_parts:
            try:
                sock.sendall(part)
            except OSError:  # the server answered and closed while we were still sending
                break
            time.sleep(pause_s)
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            pass
        return received


def _status(raw: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.1 (\d{3})", raw)
    return int(match.group(1)) if match else None


# --------------------------------------------------------------------------- non-finite numbers
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]
PLACES = [
    '{{"item_ids": [{v}]}}',
    '{{"item_ids": [1, 2, {v}], "n": 3}}',
    '{{"item_ids": [1], "n": {v}}}',
    '{{"item_ids": [1], "visitor_id": {v}}}',
    '{{"item_ids": [1], "explain": {v}}}',
    '{{"item_ids": [1], "model": {v}}}',
    '{{"item_ids": [1], "surprise": {v}}}',
    '{{"item_ids": {v}}}',
    "{v}",
    "[{v}]",
]


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("template", PLACES)
def test_non_finite_numbers_are_a_422_that_does_not_echo_them(client, value, template):
    response = client.post(SESSIONS, content=template.format(v=value),
                           headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    body = _strict_json(response.text)  # valid JSON: no NaN/Infinity token in the answer
    assert body["detail"] and all(issue["msg"] for issue in body["detail"])
    echoed = json.dumps([{k: v for k, v in issue.items() if k != "msg"} for issue in body["detail"]])
    for token in ("NaN", "Infinity", "1e400", "1E+400", "inf"):
        assert token not in echoed
    # the keep-alive connection survives the error and serves the next request
    after = client.get("/health")
    assert after.status_code == 200
    assert _local_port(after) == _local_port(response)


def test_non_finite_error_says_why_and_where(client):
    response = client.post(SESSIONS, content='{"item_ids": [1, NaN]}',
                           headers={"content-type": "application/json"})
    issue = response.json()["detail"][0]
    assert issue["loc"] == ["body", "item_ids", 1]
    assert "finite" in issue["msg"] and "input" not in issue


# --------------------------------------------------------------------------- body size
def _chunked(size: int, chunk: int = 8192):
    body = b'{"item_ids": [' + b"1," * (size // 2) + b"1]}"
    for start in range(0, len(body), chunk):
        piece = body[start:start + chunk]
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def _head(path: str, key: str | None, extra: str) -> bytes:
    key_line = "" if key is None else f"{API_KEY_HEADER}: {key}\r\n"
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"{key_line}{extra}\r\n").encode()


def test_chunked_upload_over_the_limit_is_413_without_reading_it_all(base_url):
    head = _head(SESSIONS, API_KEY, "Transfer-Encoding: chunked\r\n")
    parts = _chunked(64 * MAX_BODY_BYTES)  # 4 MB, never sent in full: the server cuts it short
    raw = _raw_exchange(base_url, head, parts, pause_s=0.001)
    assert _status(raw) == 413, raw[:300]
    assert b"larger than" in raw
    assert next(parts, None) is not None, "the whole body was sent before the answer"


def test_a_body_at_the_limit_is_read(client, item):
    head = f'{{"item_ids": [{item}], "n": 2'.encode()
    body = head + b" " * (MAX_BODY_BYTES - len(head) - 1) + b"}"
    assert len(body) == MAX_BODY_BYTES
    response = client.post(SESSIONS, content=iter([body[:1000], body[1000:]]),  # chunked
                           headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) == 2


def test_a_long_model_name_is_not_echoed(client):
    body = {"item_ids": [1], "model": "x" * (MAX_BODY_BYTES - 100)}
    response = client.post(SESSIONS, json=body)
    assert response.status_code == 422 and len(response.content) < 2000
    response = client.get("/items/1/similar", params={"model": "y" * 20_000})
    assert response.status_code == 422 and len(response.content) < 2000


def test_unauthenticated_upload_is_refused_before_its_body(base_url):
    for key in (None, "wrong"):
        head = _head(SESSIONS, key, "Transfer-Encoding: chunked\r\n")
        raw = _raw_exchange(base_url, head)  # headers only: a body would never come
        assert _status(raw) == 401, raw[:300]
        head = _head(SESSIONS, key, f"Content-Length: {10 * MAX_BODY_BYTES}\r\n")
        assert _status(_raw_exchange(base_url, head)) == 401


# --------------------------------------------------------------------------- slow clients
def test_a_body_that_stalls_is_cut_with_408(base_url):
    head = _head(SESSIONS, API_KEY, "Content-Length: 100\r\n")
    started = time.monotonic()
    raw = _raw_exchange(base_url, head, [b'{"item_ids": '], read_timeout_s=4 * BODY_TIMEOUT_S + 5)
    assert _status(raw) == 408, raw[:300]
    assert time.monotonic() - started < 4 * BODY_TIMEOUT_S + 5
    assert b"connection: close" in raw.lower()


def test_serve_passes_the_timeouts_to_uvicorn(served_artifacts, monkeypatch):
    import uvicorn

    from funnelrec.cli import app as cli_app

    seen = {}

    def fake_run(server, *args, **kwargs):
        seen["timeout_keep_alive"] = server.config.timeout_keep_alive
        seen["body_timeout_s"] = server.config.app.state.body_timeout_s

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    result = CliRunner().invoke(cli_app, [
        "--quiet", "serve", "--artifacts", str(served_artifacts), "--port", "0",
        "--timeout-keep-alive", "3", "--body-timeout", "7.5",
    ])
    assert seen == {"timeout_keep_alive": 3, "body_timeout_s": 7.5}, result.output
    bad = CliRunner().invoke(cli_app, ["serve", "--artifacts", str(served_artifacts),
                                       "--body-timeout", "0"])
    assert bad.exit_code == 2


def test_body_timeout_must_be_positive(served_artifacts):
    with pytest.raises(ValueError, match="body_timeout_s"):
        create_app(served_artifacts, api_key=None, body_timeout_s=0)


# --------------------------------------------------------------------------- authentication first
@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        ("POST", SESSIONS, b"{not json"),
        ("POST", SESSIONS, b'{"item_ids": "x", "n": 0}'),
        ("POST", SESSIONS, b"\xff\xfe"),
        ("GET", "/visitors/abc/recommendations?n=0", None),
        ("GET", "/items/1.5/similar?explain=maybe", None),
        ("GET", "/nowhere", None),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong"])
def test_the_key_is_checked_before_the_request_is_parsed(base_url, method, path, content, key):
    headers = {"content-type": "application/json"} | ({} if key is None else {API_KEY_HEADER: key})
    with httpx.Client(base_url=base_url, timeout=10) as anonymous:
        response = anonymous.request(method, path, content=content, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": f"missing or wrong {API_KEY_HEADER} header"}


def test_public_paths_need_no_key(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as anonymous:
        for path in ("/", "/health", "/openapi.json", "/docs", "/redoc"):
            assert anonymous.get(path).status_code == 200, path


def test_the_right_key_still_gets_the_validation_error(client):
    response = client.post(SESSIONS, content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"][0]["type"] == "json_invalid"


def test_a_body_that_is_not_utf8_is_the_documented_400(client):
    response = client.post(SESSIONS, content=b'{"item_ids": [1], "model": "\xff"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "There was an error parsing the body"}


def test_openapi_documents_every_answer_of_a_body_endpoint(client):
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                assert {"400", "401", "408", "413", "422"} <= set(operation["responses"]), (method, path)
                assert "parsing the body" in operation["responses"]["400"]["description"]


# --------------------------------------------------------------------------- large input not echoed
@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"item_ids": [1], "x" * 50_000: 1}).encode(),
        json.dumps({"item_ids": [1], "model": ["y" * 50_000]}).encode(),
        json.dumps({"item_ids": ["z" * 50_000]}).encode(),
        json.dumps({"item_ids": [1], "n": "9" * 4000}).encode(),
        b'{"item_ids": [1], "n": ' + b"9" * 4000 + b"}",
    ],
    ids=["long-key", "long-list", "long-string", "long-digit-string", "huge-integer"],
)
def test_validation_errors_do_not_echo_large_input(client, content):
    assert len(content) <= MAX_BODY_BYTES
    response = client.post(SESSIONS, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert len(response.content) < 2000, response.text[:300]
    assert response.json()["detail"][0]["msg"]


def test_short_input_is_still_echoed(client):
    response = client.post(SESSIONS, json={"item_ids": ["abc"]})
    assert response.json()["detail"][0]["input"] == "abc"


# --------------------------------------------------------------------------- integers and booleans
def test_an_integral_number_is_an_integer_everywhere(client, served_artifacts, item, visitor):
    plain = client.post(SESSIONS, json={"item_ids": [item], "n": 3, "model": "session_knn"})
    as_float = client.post(SESSIONS, content=f'{{"item_ids": [{item}.0], "n": 3.0, '
                                             f'"model": "session_knn"}}'.encode(),
                           headers={"content-type": "application/json"})
    assert plain.status_code == as_float.status_code == 200, as_float.text
    assert as_float.json() == plain.json() and len(plain.json()["items"]) == 3
    exponent = client.post(SESSIONS, content=f'{{"item_ids": [1], "visitor_id": {visitor}e0, "model": '
                                             f'"als"}}'.encode(), headers={"content-type": "application/json"})
    assert exponent.status_code == 200 and exponent.json()["visitor_id"] == visitor
    expected = Recommender.load(served_artifacts / "als").recommend(visitor, n_items=10, session_item_ids=[1])
    assert [i["item_id"] for i in exponent.json()["items"]] == expected.item_ids
    # the query string and the path say it the same way
    assert client.get(f"/items/{item}/similar", params={"n": "3.0", "model": "als"}).status_code == 200


def _post_visitor(client, literal: str) -> httpx.Response:
    return client.post(SESSIONS, content=f'{{"item_ids": [], "visitor_id": {literal}}}'.encode(),
                       headers={"content-type": "application/json"})


def test_numbers_are_read_exactly(client):
    response = _post_visitor(client, f"{ID_MAX}.0")
    assert response.status_code == 200 and response.json()["visitor_id"] == ID_MAX
    # as a float, 9007199254740990.5 would round to the integer ...990 and be taken for it
    assert _post_visitor(client, "9007199254740990.5").status_code == 422
    assert _post_visitor(client, "90071992547409905e-1").status_code == 422


@pytest.mark.parametrize("literal", [str(ID_MAX + 1), str(ID_MIN - 1), f"{ID_MAX + 1}.0", "1e16"])
def test_ids_outside_the_exact_json_range_are_refused(client, literal):
    response = _post_visitor(client, literal)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "visitor_id"]
    assert client.get(f"/visitors/{literal}/recommendations").status_code == 422


@pytest.mark.parametrize(
    "fragment",
    [
        '"n": 2.5',
        '"n": "3"',
        '"n": true',
        '"item_ids": [1.5]',
        '"item_ids": ["1"]',
        '"item_ids": [true]',
        '"item_ids": [1e19]',
        '"visitor_id": 9223372036854775808.0',
        '"explain": 0',
        '"explain": 1',
        '"explain": "true"',
        '"explain": null',
        '"model": 5',
    ],
)
def test_what_the_schema_does_not_call_an_integer_or_a_boolean_is_refused(client, fragment):
    content = ('{"item_ids": [1], ' + fragment + "}").replace('"item_ids": [1], "item_ids"', '"item_ids"')
    response = client.post(SESSIONS, content=content.encode(), headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text


def test_the_schema_says_what_is_enforced(client):
    spec = client.get("/openapi.json").json()
    session = spec["components"]["schemas"]["SessionRequest"]["properties"]
    assert session["explain"]["type"] == "boolean"
    assert session["n"]["type"] == "integer"
    item_id = {"type": "integer", "minimum": ID_MIN, "maximum": ID_MAX}
    assert session["item_ids"]["items"] == item_id
    assert item_id in session["visitor_id"]["anyOf"]
    path = spec["paths"]["/visitors/{visitor_id}/recommendations"]["get"]["parameters"][0]
    assert {k: path["schema"][k] for k in item_id} == item_id
    assert (session["n"]["minimum"], session["n"]["maximum"]) == (1, 100)


# --------------------------------------------------------------------------- HEAD, root, docs
def test_head_health_is_200_without_a_body(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as anonymous:
        response = anonymous.head("/health")
    assert response.status_code == 200 and response.content == b""


def test_root_points_to_the_docs_and_the_health_check(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as anonymous:
        root = anonymous.get("/").json()
        assert root["docs"] == "/docs" and root["redoc"] == "/redoc" and root["health"] == "/health"
        assert root["openapi"] == "/openapi.json"
        assert "planned" in root["shop"]  # no shop page is served yet
        for key in ("docs", "redoc", "health", "openapi"):
            assert anonymous.get(root[key]).status_code == 200


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_server(base_url, page):
    with httpx.Client(base_url=base_url, timeout=10) as anonymous:
        html = anonymous.get(page).text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        urls += re.findall(r"""url: ['"]([^'"]+)['"]""", html)
        urls += re.findall(r"""spec-url=["']([^"']+)["']""", html)
        assert urls and "http" not in html.replace("http-equiv", "")
        if page == "/docs":
            assert '"validatorUrl": null' in html  # Swagger UI would call swagger.io otherwise
        assert any(u.endswith(".js") for u in urls)
        for url in urls:
            asset = anonymous.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 100, url


def test_the_api_key_is_a_security_scheme_of_the_protected_operations(client):
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    (name, scheme), = schemes.items()
    assert scheme == {"type": "apiKey", "in": "header", "name": API_KEY_HEADER,
                      "description": scheme["description"]}
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            public = path in ("/", "/health")
            assert (operation.get("security") == [{name: []}]) != public, path


def test_no_security_scheme_without_a_key(served_artifacts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    with TestClient(create_app(served_artifacts, api_key=None)) as test_client:
        spec = test_client.get("/openapi.json").json()
        assert "securitySchemes" not in spec.get("components", {})
        assert test_client.get("/models").status_code == 200
