"""The HTTP API over saved artifacts: ``create_app(artifacts_dir)``.

Layout read at start-up (what ``funnelrec demo`` writes)::

    ARTIFACTS_DIR/<key>/config.json, state.npz, ...   a saved Recommender, served as model <key>
    ARTIFACTS_DIR/explainer/config.json, state.npz    a saved RecommendationExplainer (optional)

Every subfolder whose ``config.json`` names a registered model is loaded once, in the app's
``lifespan``; a corrupted artifact makes start-up fail with an error naming the file. Endpoints
are plain ``def`` (model inference is CPU-bound, so FastAPI runs them in its thread pool).

Errors: unknown model or item -> 404 with the reason; invalid parameters -> 422 (FastAPI
validation or the model's own ``ValueError``); an unknown visitor is not an error (cold start:
``is_fallback`` true). With an API key configured (argument or ``FUNNELREC_API_KEY``) every
path but ``/``, ``/health`` and the docs requires the ``X-API-Key`` header; it is checked
before the request is read or validated (401 first, so an anonymous client learns nothing).
A body over ``MAX_BODY_BYTES`` is 413 and one not received within ``body_timeout_s`` is 408
(see :mod:`funnelrec.serving.guard`); a body that cannot be decoded is 400. JSON numbers and
validation errors: see :mod:`funnelrec.serving.validation`.

The docs (``/docs``, ``/redoc``) load their scripts from this server (the assets bundled by
the ``fastapi-offline`` package), so they work without internet.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import sys
import zipfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Query,
    Request,
    Response,
    Security,
    status,
)
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from loguru import logger
from threadpoolctl import threadpool_limits

from funnelrec import __version__
from funnelrec.config import settings
from funnelrec.models.base import ArtifactError, Recommender, find_model_dirs
from funnelrec.models.explainable.explainer import RecommendationExplainer
from funnelrec.serving.guard import API_KEY_HEADER, RequestGuard, key_matches
from funnelrec.serving.schemas import (
    DEFAULT_N,
    ID_MAX,
    ID_MIN,
    MAX_BODY_BYTES,
    MAX_MODEL_KEY_CHARS,
    MAX_N,
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    ModelsResponse,
    RecommendationResponse,
    ServiceIndex,
    SessionRequest,
    SimilarItemsResponse,
    ValidationErrorResponse,
)
from funnelrec.serving.validation import ExactNumbersRoute, validation_error_handler

#: Model types preferred as the default model, best first (matched on the registry key).
PREFERRED_MODELS: tuple[str, ...] = (
    "funnel_hybrid", "sasrec", "gru4rec", "two_tower", "als", "item2vec", "session_knn", "popular",
)
EXPLAINER_DIR = "explainer"
CONFIG_FILE = "config.json"
#: Seconds a client has to send a request body once its headers are in (408 past it).
DEFAULT_BODY_TIMEOUT_S = 10.0
#: Where the Swagger UI and ReDoc scripts are served from (the fastapi-offline package's copy).
DOCS_ASSETS_URL = "/docs-assets"
#: Paths served without the API key: the index, the health check and the API docs.
PUBLIC_PATHS = frozenset({"/", "/health", "/openapi.json", "/docs", "/redoc"})


class _FromSettings:
    def __repr__(self) -> str:
        return "<settings.api_key>"


#: Default of ``create_app(api_key=...)``: read ``settings.api_key`` (``FUNNELREC_API_KEY``).
FROM_SETTINGS = _FromSettings()


# --------------------------------------------------------------------------- artifacts
@dataclass
class Artifacts:
    """What the app serves: the loaded models, the default one and the explainer."""

    artifacts_dir: Path
    models: dict[str, Recommender]
    default_model: str
    explainer: RecommendationExplainer | None = None
    #: A visitor id the explainer has never seen: explains live sessions without a visitor.
    anonymous_visitor: int = -1
    infos: dict[str, ModelInfo] = field(default_factory=dict)

    def get(self, key: str | None) -> tuple[str, Recommender]:
        """``(key, model)`` for ``key`` (the default when ``None``); unknown -> 404 naming them."""
        key = self.default_model if key is None else key
        model = self.models.get(key)
        if model is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"unknown model {key!r}; available: {sorted(self.models)}",
            )
        return key, model


def load_artifacts(artifacts_dir: str | Path) -> Artifacts:
    """Load every model under ``artifacts_dir`` and the explainer when there is one.

    The folders are those of :func:`~funnelrec.models.base.find_model_dirs`: hidden folders
    (``.<name>.tmp-*`` / ``.<name>.old-*`` copies of a save in progress or interrupted) are
    never served. Raises :class:`ArtifactError` (naming the file) when an artifact cannot be
    read, fails its checksums or its checks, or when there is no model at all.
    """
    root = Path(artifacts_dir)
    dirs = find_model_dirs(root)
    if not dirs:
        raise ArtifactError(f"no saved models in {root}: expected subfolders with {CONFIG_FILE}")
    models: dict[str, Recommender] = {}
    for key, folder in dirs.items():
        try:
            models[key] = Recommender.load(folder)
        except ArtifactError:
            raise
        except Exception as exc:  # e.g. a truncated npz (zipfile.BadZipFile), a bad parameter
            where = folder / "state.npz" if isinstance(exc, zipfile.BadZipFile) else folder
            raise ArtifactError(
                f"{where} is corrupted: cannot load the model ({type(exc).__name__}: {exc})"
            ) from exc
    explainer = None
    explainer_dir = root / EXPLAINER_DIR
    if (explainer_dir / CONFIG_FILE).is_file():
        explainer = RecommendationExplainer.load(explainer_dir)
    default = _default_model(models)
    artifacts = Artifacts(root, models, default, explainer)
    if explainer is not None:
        artifacts.anonymous_visitor = explainer.anonymous_visitor_id
    artifacts.infos = {key: _model_info(key, model, key == default) for key, model in models.items()}
    logger.info(
        "Serving {} model(s) from {} (default {}), explainer: {}",
        len(models), root, default, "yes" if explainer is not None else "no",
    )
    return artifacts


def default_model_key(model_types: Mapping[str, str]) -> str:
    """The model served by default: the first type of :data:`PREFERRED_MODELS` present.

    ``model_types`` maps each model's key (its folder name) to its registry key (``"als"``...);
    with no preferred type present, the first key.
    """
    by_type: dict[str, str] = {}
    for key, model_type in model_types.items():
        by_type.setdefault(model_type, key)
    for wanted in PREFERRED_MODELS:
        if wanted in by_type:
            return by_type[wanted]
    return next(iter(model_types))


def _default_model(models: dict[str, Recommender]) -> str:
    return default_model_key({key: model.registry_key for key, model in models.items()})


def _model_info(key: str, model: Recommender, is_default: bool) -> ModelInfo:
    try:
        params = json.loads(json.dumps(model.get_params(), default=str))
    except (TypeError, ValueError):
        params = {}
    return ModelInfo(
        key=key,
        name=model.name,
        class_name=type(model).__name__,
        registry_key=model.registry_key,
        params=params,
        n_items=int(model.n_items),
        n_visitors=len(model.visitor_map_),
        is_default=is_default,
    )


# --------------------------------------------------------------------------- request helpers
def get_artifacts(request: Request) -> Artifacts:
    return request.app.state.artifacts


ArtifactsDep = Annotated[Artifacts, Depends(get_artifacts)]
ModelParam = Annotated[
    str | None,
    Query(max_length=MAX_MODEL_KEY_CHARS,
          description="Model key (see /models); the default model when omitted."),
]
NParam = Annotated[int, Query(ge=1, le=MAX_N, description="How many items.")]
ExplainParam = Annotated[bool, Query(description="Attach an explanation to every item.")]


@contextmanager
def _client_errors() -> Iterator[None]:
    """A model's ``KeyError`` becomes a 404, its ``ValueError``/``TypeError`` a 422."""
    try:
        yield
    except KeyError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0] if exc.args else exc)) from exc
    except (ValueError, TypeError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


def _recommendation_response(
    artifacts: Artifacts,
    key: str,
    model: Recommender,
    recs: Sequence[tuple[int, float]],
    *,
    visitor_id: int | None,
    session_item_ids: list[int] | None,
    explain: bool,
) -> dict[str, Any]:
    weights = getattr(recs, "component_weights", None)
    items: list[dict[str, Any]] = [
        {"item_id": int(item_id), "score": float(score)} for item_id, score in recs
    ]
    if explain:
        explainer = artifacts.explainer
        if explainer is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND,
                f"explanations are not available: no explainer in "
                f"{artifacts.artifacts_dir / EXPLAINER_DIR}",
            )
        anonymous = visitor_id is None
        with _client_errors():
            explanations = explainer.explain_batch(
                user_id=artifacts.anonymous_visitor if anonymous else visitor_id,
                recommendations=[(item["item_id"], item["score"]) for item in items],
                model_name=model.name,
                session_item_ids=session_item_ids,
                component_weights=weights,
                funnel_stage="new" if anonymous else None,
                is_fallback=bool(getattr(recs, "is_fallback", False)),
            )
        for item, explanation in zip(items, explanations, strict=True):
            item["explanation"] = explanation.to_dict()
            if anonymous:
                item["explanation"]["visitor_id"] = None
    return {
        "model": key,
        "visitor_id": visitor_id,
        "items": items,
        "is_fallback": bool(getattr(recs, "is_fallback", False)),
        "component_weights": None if weights is None else {str(k): float(v) for k, v in weights.items()},
    }


def _is_known_visitor(model: Recommender, visitor_id: int) -> bool:
    return bool(model.visitor_map_.to_idx(np.array([visitor_id], dtype=np.int64))[0] >= 0)


_API_KEY_SCHEME = APIKeyHeader(
    name=API_KEY_HEADER,
    scheme_name="ApiKey",
    description="The service's key (`funnelrec serve` reads it from `FUNNELREC_API_KEY`).",
    auto_error=False,
)


def require_api_key(
    request: Request, provided: Annotated[str | None, Security(_API_KEY_SCHEME)]
) -> None:
    """401 unless the ``X-API-Key`` header is the configured key.

    :class:`RequestGuard` has already refused such a request before reading it; this
    dependency declares the scheme in the OpenAPI schema and checks once more.
    """
    if not key_matches(provided, request.app.state.api_key):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"missing or wrong {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )


# --------------------------------------------------------------------------- routes
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown model or item (the message says which)."},
    422: {
        "model": ValidationErrorResponse,
        "description": "Invalid parameters (a list of errors), or the model refused the request "
        "(its reason, as text).",
    },
}
#: The answers of an endpoint that reads a JSON body, besides its own.
_BODY_ERRORS: dict[int | str, dict[str, Any]] = _ERRORS | {
    400: {"model": ErrorResponse,
          "description": "There was an error parsing the body (not UTF-8, or nested too deep)."},
    408: {"model": ErrorResponse, "description": "The body was not received in time."},
    413: {"model": ErrorResponse, "description": f"The body is larger than {MAX_BODY_BYTES} bytes."},
}

router = APIRouter(route_class=ExactNumbersRoute)


@router.get("/models", response_model=ModelsResponse, tags=["models"])
def list_models(artifacts: ArtifactsDep) -> ModelsResponse:
    """The loaded models: key, display name, class, parameters and catalogue size."""
    return ModelsResponse(default_model=artifacts.default_model, models=list(artifacts.infos.values()))


@router.get(
    "/visitors/{visitor_id}/recommendations",
    response_model=RecommendationResponse,
    tags=["recommendations"],
    responses=_ERRORS,
)
def visitor_recommendations(
    artifacts: ArtifactsDep,
    visitor_id: Annotated[int, PathParam(ge=ID_MIN, le=ID_MAX, description="The visitor id.")],
    model: ModelParam = None,
    n: NParam = DEFAULT_N,
    explain: ExplainParam = False,
) -> dict[str, Any]:
    """Top ``n`` items for a visitor (items they interacted with excluded).

    An unknown visitor gets popular items, marked ``is_fallback``.
    """
    key, recommender = artifacts.get(model)
    with _client_errors():
        recs = recommender.recommend(visitor_id, n_items=n)
    return _recommendation_response(
        artifacts, key, recommender, recs, visitor_id=visitor_id, session_item_ids=None, explain=explain
    )


@router.post(
    "/sessions/recommendations",
    response_model=RecommendationResponse,
    tags=["recommendations"],
    responses=_BODY_ERRORS,
)
def session_recommendations(artifacts: ArtifactsDep, body: SessionRequest) -> dict[str, Any]:
    """Next items for a live session (item ids in the order viewed).

    With a ``visitor_id`` the model knows, the visitor's recommendations are asked for with the
    live session as context: session models rank from the session, history models (ALS,
    Popular) from the history, the Two-Tower reads both, the hybrid fuses both by attention;
    the visitor's past items are excluded.
    Otherwise the session alone is used; a session of items unknown to the model, or an empty
    one, gets popular items (``is_fallback``). The session's own items are left out of the
    answer unless ``exclude_session_items`` is false.
    """
    key, recommender = artifacts.get(body.model)
    items = list(body.item_ids)
    exclude = body.exclude_session_items
    with _client_errors():
        if body.visitor_id is not None and _is_known_visitor(recommender, body.visitor_id):
            recs = recommender.recommend(body.visitor_id, n_items=body.n, session_item_ids=items,
                                         exclude_session_items=exclude)
        else:
            recs = recommender.recommend_by_item_ids(items, n_items=body.n, exclude_session_items=exclude)
    return _recommendation_response(
        artifacts, key, recommender, recs,
        visitor_id=body.visitor_id, session_item_ids=items, explain=body.explain,
    )


@router.get(
    "/items/{item_id}/similar",
    response_model=SimilarItemsResponse,
    tags=["items"],
    responses=_ERRORS,
)
def similar_items(
    artifacts: ArtifactsDep,
    item_id: Annotated[int, PathParam(ge=ID_MIN, le=ID_MAX, description="The item id.")],
    model: ModelParam = None,
    n: NParam = DEFAULT_N,
) -> dict[str, Any]:
    """The ``n`` items most similar to ``item_id`` under the model (404 for an unknown item)."""
    key, recommender = artifacts.get(model)
    with _client_errors():
        try:
            recs = recommender.get_similar_items(item_id, n_items=n)
        except NotImplementedError as exc:
            raise ValueError(f"model {key!r} cannot find similar items; choose another model") from exc
    return {
        "model": key,
        "item_id": item_id,
        "items": [{"item_id": int(i), "score": float(s)} for i, s in recs],
    }


# --------------------------------------------------------------------------- service pages
service_router = APIRouter(tags=["service"])


@service_router.get("/", response_model=ServiceIndex)
def index(request: Request) -> ServiceIndex:
    """Where the service's pages are (never needs the API key)."""
    root = request.scope.get("root_path", "")
    has_shop = any(getattr(route, "path", None) == "/shop" for route in request.app.routes)
    return ServiceIndex(
        name=request.app.title,
        version=__version__,
        docs=f"{root}/docs",
        redoc=f"{root}/redoc",
        openapi=f"{root}{request.app.openapi_url}",
        health=f"{root}/health",
        shop=f"{root}/shop" if has_shop else "planned: not served yet",
    )


@service_router.get("/health", response_model=HealthResponse)
def health(request: Request) -> HealthResponse:
    """Liveness and what is loaded (never needs the API key)."""
    artifacts: Artifacts = request.app.state.artifacts
    return HealthResponse(
        models=sorted(artifacts.models),
        default_model=artifacts.default_model,
        explainer=artifacts.explainer is not None,
        version=__version__,
    )


@service_router.head(
    "/health", response_class=Response, responses={200: {"description": "Alive (no body)."}}
)
def health_head() -> Response:
    """Liveness only, for load balancers: 200 and no body."""
    return Response(status_code=status.HTTP_200_OK)


@service_router.get("/docs", include_in_schema=False)
def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
        oauth2_redirect_url=None,
        # no badge from swagger.io's online validator: nothing on the page leaves this server
        swagger_ui_parameters={"validatorUrl": None},
    )


@service_router.get("/redoc", include_in_schema=False)
def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{DOCS_ASSETS_URL}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon.png",
        with_google_fonts=False,
    )


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(DOCS_ASSETS_URL + "/")


def _docs_assets_dir() -> Path:
    """The Swagger UI and ReDoc files bundled by the ``fastapi-offline`` package."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        raise ImportError("the API docs need the fastapi-offline package: pip install fastapi-offline")
    return Path(spec.origin).parent / "static"


# --------------------------------------------------------------------------- the app
def create_app(
    artifacts_dir: str | Path,
    api_key: str | None | _FromSettings = FROM_SETTINGS,
    *,
    blas_threads: int | None = 1,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> FastAPI:
    """The FastAPI app serving the artifacts in ``artifacts_dir`` (loaded once, at start-up).

    ``api_key``: required in the ``X-API-Key`` header of every path but :data:`PUBLIC_PATHS`
    and the docs' assets, checked before the request is read; ``None`` disables the check;
    by default ``settings.api_key`` (``FUNNELREC_API_KEY``).
    ``body_timeout_s``: seconds a client has to send its body once the headers are in; a
    slower one gets 408 and its connection is closed (idle keep-alive connections are
    uvicorn's ``timeout_keep_alive``).
    A start-up failure is raised from the lifespan (uvicorn then refuses to start) and its
    message is kept in ``app.state.startup_error``.

    ``blas_threads``: BLAS threads (threadpoolctl, process-wide) and torch intra-op threads
    while serving, restored at shutdown; ``None`` leaves them alone. Requests already run in parallel in the
    thread pool: letting each one start its own BLAS threads oversubscribes the cores (measured
    on 2 cores at 100 req/s: p99 over 15 s with the default 2 OpenBLAS threads, under 5 ms with 1).
    OpenMP-threaded pools (faiss bundles one) keep limits per thread and are not affected;
    single-query FAISS searches do not fan out, so they need no limit.
    """
    if blas_threads is not None and blas_threads < 1:
        raise ValueError(f"blas_threads must be >= 1 or None, got {blas_threads}")
    if not body_timeout_s > 0:
        raise ValueError(f"body_timeout_s must be > 0 seconds, got {body_timeout_s}")
    root = Path(artifacts_dir)
    if isinstance(api_key, _FromSettings):
        secret = settings.api_key
        api_key = None if secret is None else secret.get_secret_value()
    if api_key is not None and not api_key:
        raise ValueError("api_key must not be empty; pass None to serve without a key")
    expected = None if api_key is None else api_key.encode("utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            app.state.artifacts = load_artifacts(root)
        except ArtifactError as exc:
            app.state.startup_error = str(exc)
            logger.error("Start-up failed: {}", exc)
            raise
        # the loaded models are hundreds of thousands of long-lived objects: a full collection
        # scanning them took ~90 ms at demo scale, a stall of every request in flight. Frozen,
        # they are left out of every collection.
        gc.collect()
        gc.freeze()
        limiter = None if blas_threads is None else threadpool_limits(limits=blas_threads)
        torch = sys.modules.get("torch") if blas_threads is not None else None  # loaded by a model
        torch_threads = None if torch is None else torch.get_num_threads()
        if torch is not None:
            torch.set_num_threads(blas_threads)
        try:
            yield
        finally:
            if limiter is not None:
                limiter.restore_original_limits()
            if torch is not None:
                torch.set_num_threads(torch_threads)
            app.state.artifacts = None
            gc.unfreeze()

    app = FastAPI(
        title="funnelrec",
        version=__version__,
        description="Funnel-aware e-commerce recommendations with explanations.",
        lifespan=lifespan,
        docs_url=None,  # served by service_router from local assets, not from a CDN
        redoc_url=None,
        exception_handlers={RequestValidationError: validation_error_handler},
    )
    app.state.artifacts = None
    app.state.startup_error = None
    app.state.body_timeout_s = body_timeout_s
    # a session is at most MAX_SESSION_ITEMS ids: a body far larger is refused, unread
    app.add_middleware(
        RequestGuard,
        api_key=expected,
        is_public=_is_public,
        max_body_bytes=MAX_BODY_BYTES,
        body_timeout_s=body_timeout_s,
    )
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=_docs_assets_dir()), name="docs-assets")
    app.include_router(service_router)
    app.state.api_key = expected
    dependencies = [] if expected is None else [Depends(require_api_key)]
    error_401 = {401: {"model": ErrorResponse, "description": "Missing or wrong API key."}}
    app.include_router(
        router, dependencies=dependencies, responses=error_401 if expected is not None else None
    )
    return app


__all__ = [
    "API_KEY_HEADER",
    "FROM_SETTINGS",
    "PREFERRED_MODELS",
    "Artifacts",
    "create_app",
    "default_model_key",
    "find_model_dirs",
    "load_artifacts",
]
