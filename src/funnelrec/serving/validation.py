"""How the API reads JSON numbers and answers validation errors.

JSON numbers: a body is parsed with every number that has a fraction or an exponent read as
an exact :class:`~decimal.Decimal`, so ``2460497.0`` and ``9007199254740993.0`` are the
integers they spell (JSON Schema's ``integer`` is a value, not a spelling) and ``1e400`` is
a number out of range rather than an infinity. ``NaN`` and ``Infinity`` (not JSON, but
Python's parser reads them) reach validation as floats and are refused there.

Validation errors (422): the list FastAPI builds, with the offending ``input`` echoed only
when it is a short string or a finite 64-bit number; containers, long strings and
non-finite numbers are left out, and long location parts and messages are cut. The answer
stays small and is always valid JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Coroutine
from decimal import Decimal
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic_core import PydanticCustomError

#: Longest string echoed in a validation error (location parts, messages, inputs).
MAX_ECHO_CHARS = 100
_INT64_LIMIT = 2**63
#: Largest float that is an exact integer: beyond it a float may not be the number sent.
_FLOAT_EXACT_LIMIT = 2**53


# --------------------------------------------------------------------------- integers
def integral_number(value: Any) -> Any:
    """JSON Schema's ``integer`` for pydantic: ``7``, ``7.0`` and ``7e0`` are the integer 7.

    Used as a ``BeforeValidator`` in front of ``StrictInt``: a float or Decimal with no
    fraction becomes an ``int``; anything else is returned unchanged for ``StrictInt`` to
    refuse (``7.5``, ``"7"``, ``true``). A non-finite number is refused with its own message.
    """
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _not_finite()
        if not value.is_integer():
            return value
        if abs(value) > _FLOAT_EXACT_LIMIT:
            raise PydanticCustomError(
                "int_from_inexact_float",
                "Input should be an integer written without a fraction: a float this large "
                "may not be the number sent",
            )
        return int(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _not_finite()
        if value.is_zero():
            return 0
        if value.adjusted() >= 19:  # 10**19 > 2**63: out of range, and int() of 1e999999 is slow
            raise PydanticCustomError(
                "int_too_large", "Input should be an integer within the signed 64-bit range"
            )
        if value != value.to_integral_value():
            return value
        return int(value)
    return value


def _not_finite() -> PydanticCustomError:
    return PydanticCustomError(
        "finite_number", "Input should be a finite number: NaN and Infinity are not JSON numbers"
    )


# --------------------------------------------------------------------------- parsing
class _ExactNumbersRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), parse_float=Decimal)
        return self._json


class ExactNumbersRoute(APIRoute):
    """An ``APIRoute`` whose JSON bodies read fractions and exponents as exact Decimals.

    A strict pydantic field refuses a Decimal unless a validator converts it (see
    :func:`integral_number`); a lax ``float`` field would accept it.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def exact_numbers_handler(request: Request) -> Response:
            return await handler(_ExactNumbersRequest(request.scope, request.receive))

        return exact_numbers_handler


# --------------------------------------------------------------------------- errors
async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's error list, made small and JSON-safe (see the module docstring)."""
    return JSONResponse(status_code=422, content={"detail": public_errors(exc.errors())})


def public_errors(errors: Any) -> list[dict[str, Any]]:
    """The validation errors as they may be shown to a client."""
    shown = []
    for error in errors:
        issue: dict[str, Any] = {
            "loc": [part if isinstance(part, int) else _cut(str(part)) for part in error.get("loc", ())],
            "msg": _cut(str(error.get("msg", ""))),
            "type": _cut(str(error.get("type", ""))),
        }
        if "input" in error and (value := _echoable(error["input"])) is not _OMIT:
            issue["input"] = value
        context = error.get("ctx")
        if isinstance(context, dict):
            issue["ctx"] = {_cut(str(k)): _context_value(v) for k, v in context.items()}
        shown.append(issue)
    return shown


_OMIT = object()


def _echoable(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, int):
        return value if -_INT64_LIMIT <= value < _INT64_LIMIT else _OMIT
    if isinstance(value, float | Decimal):
        number = float(value)
        return number if math.isfinite(number) and abs(number) < _INT64_LIMIT else _OMIT
    if isinstance(value, dict) and not value:
        return {}  # FastAPI's input of a JSON syntax error
    return _OMIT


def _context_value(value: Any) -> Any:
    shown = _echoable(value)
    return _cut(str(value)) if shown is _OMIT else shown


def _cut(text: str) -> str:
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "…"
