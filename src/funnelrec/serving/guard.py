"""The ASGI gate in front of the API: key check, body size and body-read deadline, before any work.

FastAPI reads and parses a request body before it solves dependencies, so a key checked in a
dependency is checked after the parse (a 400/422 that reveals the schema to anyone) and after
reading however many bytes the client chooses to send. :class:`RequestGuard` sits in front, on
the raw ASGI messages, and in this order:

1. with a key configured, a request to a path that is not public and without the right
   ``X-API-Key`` header gets 401 before one byte of its body is read;
2. a declared ``Content-Length`` above the limit gets 413, unread;
3. the body is read under a deadline (408 past it, so a client trickling bytes cannot hold a
   worker) and counted as it arrives: 413 as soon as the limit is crossed, chunked uploads
   (no ``Content-Length``) included;
4. the app then gets the whole body, already read (at most ``max_body_bytes``).

A refusal sent before the body was read in full carries ``Connection: close``: the rest of
the upload is not worth reading.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_KEY_HEADER = "X-API-Key"


def key_matches(provided: str | None, expected: bytes) -> bool:
    """Whether the ``X-API-Key`` header value is the key (constant-time compare).

    Header values reach the app decoded as latin-1 (the ASGI rule), so encoding them back gives
    the bytes the client sent; the key is compared as its UTF-8 bytes.
    """
    return provided is not None and secrets.compare_digest(provided.encode("latin-1"), expected)


class RequestGuard:
    """Pure ASGI middleware: authenticate, then read the body within a size and a time limit.

    ``api_key``: the key's bytes, or ``None`` for an open service. ``is_public(path)``: paths
    served without a key (health check, docs). Every other path, unknown ones included, needs
    the key, so an anonymous client learns nothing about routes or schemas.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        api_key: bytes | None,
        is_public: Callable[[str], bool],
        max_body_bytes: int,
        body_timeout_s: float,
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.is_public = is_public
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.api_key is not None and not self.is_public(_app_path(scope)):
            if not key_matches(headers.get(API_KEY_HEADER), self.api_key):
                await _refuse(scope, send, 401, f"missing or wrong {API_KEY_HEADER} header",
                              close=_may_have_body(headers),
                              headers={"WWW-Authenticate": API_KEY_HEADER})
                return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            await _refuse(scope, send, 413, self._too_large(), close=True)
            return

        chunks: list[bytes] = []
        size = 0
        refusal: tuple[int, str] | None = None
        try:
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client left: nobody to answer
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        refusal = (413, self._too_large())
                        break
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            refusal = (408, f"request body not received within {self.body_timeout_s:g} s")
        if refusal is not None:
            await _refuse(scope, send, *refusal, close=True)
            return

        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            # the buffered body first, then the server's own messages (a later disconnect)
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"request body larger than {self.max_body_bytes} bytes"


def _app_path(scope: Scope) -> str:
    """The request path below the app's mount point (``root_path``), as the routes see it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path


def _may_have_body(headers: Headers) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


async def _refuse(
    scope: Scope, send: Send, status_code: int, detail: str, *, close: bool,
    headers: dict[str, str] | None = None,
) -> None:
    headers = dict(headers or {})
    if close:
        headers["Connection"] = "close"
    response = JSONResponse({"detail": detail}, status_code=status_code, headers=headers)

    async def no_receive() -> Message:  # a plain response never reads the request
        return {"type": "http.disconnect"}

    await response(scope, no_receive, send)
