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
endpoint but ``/health`` (and the OpenAPI docs) requires the ``X-API-Key`` header.
"""

from __future__ import annotations

import json
import secrets
import sys
import zipfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Security, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from loguru import logger
from threadpoolctl import threadpool_limits

from funnelrec import __version__
from funnelrec.config import settings
from funnelrec.models.base import REGISTRY, ArtifactError, Recommender, get_model_class
from funnelrec.models.explainable.explainer import RecommendationExplainer
from funnelrec.serving.schemas import (
    DEFAULT_N,
    ID_MAX,
    ID_MIN,
    MAX_BODY_BYTES,
    MAX_N,
    ErrorResponse,
    HealthResponse,
    ModelInfo,
    ModelsResponse,
    RecommendationResponse,
    SessionRequest,
    SimilarItemsResponse,
)

#: Model types preferred as the default model, best first (matched on the registry key).
PREFERRED_MODELS: tuple[str, ...] = (
    "funnel_hybrid", "sasrec", "gru4rec", "two_tower", "als", "item2vec", "session_knn", "popular",
)
EXPLAINER_DIR = "explainer"
API_KEY_HEADER = "X-API-Key"
CONFIG_FILE = "config.json"


class _FromSettings:
    def __repr__(self) -> str:
        return "<settings.api_key>"


#: Default of ``create_app(api_key=...)``: read ``settings.api_key`` (``FUNNELREC_API_KEY``).
FROM_SETTINGS = _FromSettings()


# --------------------------------------------------------------------------- artifacts
def find_model_dirs(artifacts_dir: str | Path) -> dict[str, Path]:
    """Subfolders of ``artifacts_dir`` holding a registered model: ``{folder name: path}``.

    ``artifacts_dir`` may also be a single model folder (served under its own name). A
    ``config.json`` that cannot be read raises :class:`ArtifactError` naming it; a folder whose
    model type is not registered (or without a ``"model"`` key, like the explainer) is skipped.
    """
    root = Path(artifacts_dir)
    if not root.is_dir():
        return {}
    get_model_class("popular")  # imports funnelrec.models, which registers the built-in models
    candidates = [root] if (root / CONFIG_FILE).is_file() else sorted(
        p for p in root.iterdir() if (p / CONFIG_FILE).is_file()
    )
    found: dict[str, Path] = {}
    for folder in candidates:
        config_path = folder / CONFIG_FILE
        try:
            config = json.loads(config_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{config_path} is corrupted: {exc}") from exc
        key = config.get("model") if isinstance(config, dict) else None
        if key is None:
            continue
        if key not in REGISTRY:
            logger.warning("Skipping {}: model type {!r} is not registered", folder, key)
            continue
        found[folder.name] = folder
    return found


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

    Raises :class:`ArtifactError` (naming the file) when an artifact cannot be read or when
    there is no model at all.
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
        artifacts.anonymous_visitor = anonymous_visitor_id(explainer)
    artifacts.infos = {key: _model_info(key, model, key == default) for key, model in models.items()}
    logger.info(
        "Serving {} model(s) from {} (default {}), explainer: {}",
        len(models), root, default, "yes" if explainer is not None else "no",
    )
    return artifacts


def anonymous_visitor_id(explainer: RecommendationExplainer) -> int:
    """A visitor id ``explainer`` has never seen: it explains a live session without a visitor."""
    known = explainer.visitor_map_.ids
    return -1 if -1 not in explainer.visitor_map_ else int(known.min()) - 1


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
    str | None, Query(description="Model key (see /models); the default model when omitted.")
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


_API_KEY_SCHEME = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


def require_api_key(
    request: Request, provided: Annotated[str | None, Security(_API_KEY_SCHEME)]
) -> None:
    """401 unless the ``X-API-Key`` header equals the configured key (constant-time compare)."""
    expected: bytes = request.app.state.api_key
    if provided is None or not secrets.compare_digest(provided.encode("utf-8"), expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"missing or wrong {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )


# --------------------------------------------------------------------------- routes
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "Unknown model or item (the message says which)."},
}

router = APIRouter()


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
    responses=_ERRORS,
)
def session_recommendations(artifacts: ArtifactsDep, body: SessionRequest) -> dict[str, Any]:
    """Next items for a live session (item ids in the order viewed).

    With a ``visitor_id`` the model knows, the visitor's recommendations are asked for with the
    live session as context: session models rank from the session, history models (ALS,
    Popular) from the history, the Two-Tower reads both, the hybrid fuses both by attention;
    the visitor's past items are excluded.
    Otherwise the session alone is used; a session of items unknown to the model, or an empty
    one, gets popular items (``is_fallback``).
    """
    key, recommender = artifacts.get(body.model)
    items = list(body.item_ids)
    with _client_errors():
        if body.visitor_id is not None and _is_known_visitor(recommender, body.visitor_id):
            recs = recommender.recommend(body.visitor_id, n_items=body.n, session_item_ids=items)
        else:
            recs = recommender.recommend_by_item_ids(items, n_items=body.n)
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


# --------------------------------------------------------------------------- the app
def create_app(
    artifacts_dir: str | Path,
    api_key: str | None | _FromSettings = FROM_SETTINGS,
    *,
    blas_threads: int | None = 1,
) -> FastAPI:
    """The FastAPI app serving the artifacts in ``artifacts_dir`` (loaded once, at start-up).

    ``api_key``: required in the ``X-API-Key`` header of every endpoint but ``/health``;
    ``None`` disables the check; by default ``settings.api_key`` (``FUNNELREC_API_KEY``).
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

    app = FastAPI(
        title="funnelrec",
        version=__version__,
        description="Funnel-aware e-commerce recommendations with explanations.",
        lifespan=lifespan,
    )
    app.state.artifacts = None
    app.state.startup_error = None

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next):
        # a session is at most MAX_SESSION_ITEMS ids: anything far larger is refused unread
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return JSONResponse(status_code=413, content={
                "detail": f"request body larger than {MAX_BODY_BYTES} bytes"})
        return await call_next(request)

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    def health(request: Request) -> HealthResponse:
        """Liveness and what is loaded (never needs the API key)."""
        artifacts: Artifacts = request.app.state.artifacts
        return HealthResponse(
            models=sorted(artifacts.models),
            default_model=artifacts.default_model,
            explainer=artifacts.explainer is not None,
            version=__version__,
        )

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
    "anonymous_visitor_id",
    "create_app",
    "default_model_key",
    "find_model_dirs",
    "load_artifacts",
]
