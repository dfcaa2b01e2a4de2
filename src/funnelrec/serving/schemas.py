"""Request and response schemas of the HTTP API (pydantic), and the bounds they enforce."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from funnelrec.serving.validation import integral_number

#: Recommendations per request: ``1 <= n <= MAX_N``.
MAX_N = 100
DEFAULT_N = 10
#: Longest live session accepted by ``POST /sessions/recommendations``.
MAX_SESSION_ITEMS = 200
#: Longest model key accepted (keys are folder names).
MAX_MODEL_KEY_CHARS = 255
#: Largest accepted request body (a full session of 64-bit ids fits many times over).
MAX_BODY_BYTES = 64 * 1024
#: Ids accepted by the API (422 outside): the I-JSON range (RFC 7493), where every JSON
#: parser and schema validator reads an integer exactly. Beyond 2**53 most of them (JavaScript's,
#: and float-based validators) round it, so a client could not tell which id it sent.
ID_MIN = -(2**53 - 1)
ID_MAX = 2**53 - 1

#: An integer as JSON Schema means it: ``7`` and ``7.0`` yes; ``7.5``, ``"7"``, ``true`` no.
JsonInt = Annotated[StrictInt, BeforeValidator(integral_number)]
# the bounds go on StrictInt, inside the validator: outside it they would reach the OpenAPI
# schema as unknown "ge"/"le" keywords instead of "minimum"/"maximum"
ExternalId = Annotated[StrictInt, Field(ge=ID_MIN, le=ID_MAX), BeforeValidator(integral_number)]


# --------------------------------------------------------------------------- service
class HealthResponse(BaseModel):
    status: Literal["ok"] = "ok"
    models: list[str] = Field(description="Keys of the loaded models (the `model` parameter).")
    default_model: str
    explainer: bool = Field(description="Whether explanations are available (`explain=true`).")
    version: str = Field(description="funnelrec version.")


class ModelInfo(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    key: str = Field(description="Folder name of the artifact; the value of `model=`.")
    name: str = Field(description="Display name.")
    class_name: str = Field(alias="class", description="Python class of the model.")
    registry_key: str = Field(description="Registered model type, e.g. `als`.")
    params: dict[str, Any]
    n_items: int
    n_visitors: int
    is_default: bool


class ModelsResponse(BaseModel):
    default_model: str
    models: list[ModelInfo]


# --------------------------------------------------------------------------- explanations
class ReasonOut(BaseModel):
    type: str = Field(description="collaborative | content | intent | session | popularity")
    text: str
    weight: float = Field(description="Share of the explanation; the weights sum to 1.")
    evidence: dict[str, Any] = Field(description="The ids and counts the reason rests on.")


class ExplanationOut(BaseModel):
    item_id: int
    score: float
    model_name: str
    visitor_id: int | None
    funnel_stage: str
    confidence: float = Field(ge=0, le=1)
    summary: str
    reasons: list[ReasonOut]


# --------------------------------------------------------------------------- recommendations
class RecommendedItem(BaseModel):
    item_id: int
    score: float
    explanation: ExplanationOut | None = Field(
        None, description="Present when the request asked for `explain=true`."
    )


class RecommendationResponse(BaseModel):
    model: str = Field(description="Key of the model that answered.")
    visitor_id: int | None = None
    items: list[RecommendedItem]
    is_fallback: bool = Field(
        description="True when the model could not personalise (cold start) and answered with "
        "popular items."
    )
    component_weights: dict[str, float] | None = Field(
        None, description="How much each component weighed (hybrid models only)."
    )


class SessionRequest(BaseModel):
    """A live session: the items viewed so far, oldest first.

    Strict: each field takes exactly the JSON type the schema names (``"explain": 0`` and
    ``"n": "3"`` are refused), integers as JSON Schema defines them (``3.0`` is 3).
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    item_ids: list[ExternalId] = Field(
        max_length=MAX_SESSION_ITEMS,
        description=f"Item ids of the live session, oldest first (at most {MAX_SESSION_ITEMS}).",
    )
    model: StrictStr | None = Field(
        None, max_length=MAX_MODEL_KEY_CHARS, description="Model key; the default model when omitted."
    )
    n: JsonInt = Field(DEFAULT_N, ge=1, le=MAX_N, description="How many recommendations.")
    visitor_id: ExternalId | None = Field(
        None, description="The visitor, when known: their history is combined with the session."
    )
    explain: StrictBool = Field(False, description="Attach an explanation to every item.")
    exclude_session_items: StrictBool = Field(
        True, description="Leave the session's own items out of the answer (as on a shop page); "
        "false lets them in (repeat views).",
    )


class SimilarItem(BaseModel):
    item_id: int
    score: float


class SimilarItemsResponse(BaseModel):
    model: str
    item_id: int
    items: list[SimilarItem]


class ErrorResponse(BaseModel):
    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(description="Where: `body`, `query` or `path`, then the field.")
    msg: str
    type: str
    input: Any = Field(
        None,
        description="The offending value when it is short (strings cut at 100 characters); "
        "left out for containers, long numbers and non-finite numbers.",
    )
    ctx: dict[str, Any] | None = Field(None, description="The bound that was violated, if any.")


class ValidationErrorResponse(BaseModel):
    detail: list[ValidationIssue] | str = Field(
        description="The request's validation errors, or (text) the model's reason to refuse "
        "a well-formed request."
    )


class ServiceIndex(BaseModel):
    """``GET /``: where the service's pages are."""

    name: str
    version: str
    docs: str = Field(description="Swagger UI (served locally, works offline).")
    redoc: str = Field(description="ReDoc (served locally, works offline).")
    openapi: str = Field(description="The OpenAPI schema.")
    health: str = Field(description="Liveness and the loaded models.")
    shop: str = Field(description="The demo shop page, or `planned` while it is not served.")
