"""Hot HTTP endpoints served straight from ASGI, in front of a framework app.

A WeCom callback through FastAPI pays for its routing, its middleware stack and the
OpenTelemetry ASGI middleware — a large share of the gateway's CPU per message. `FastRoutes`
sends a few exact `(method, path)` pairs to plain handlers and everything else to the app
unchanged. Each fast request still gets what the framework gave it: a SERVER span (root of the
trace unless the caller sent `traceparent`), `scope["route"]` for the RED metrics middleware
around it (`HttpRedMetrics`), and Starlette's 500 answer when the handler raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Receive, Scope, Send

from wxbot_common.spans import ActiveSpan

TEXT_PLAIN = b"text/plain; charset=utf-8"


class BodyError(Exception):
    """A body that cannot be read whole: the handler answers `status` with `reason`."""

    status = 400
    reason = "incomplete_body"


class BodyTooLargeError(BodyError):
    """The declared or the received size exceeds the limit."""

    status = 413
    reason = "too_large"


class BodyTimeoutError(BodyError):
    """The body did not arrive in time (a stalled or slow-drip client holds a connection otherwise)."""

    status = 408
    reason = "body_timeout"


class BodyIncompleteError(BodyError):
    """The client went away before the declared body arrived (nobody reads the answer)."""


class RawRequest:
    """The parts of one HTTP request a fast handler needs, decoded as Starlette would."""

    __slots__ = ("_query", "_receive", "headers", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self._query: dict[str, str] | None = None
        # Names arrive lower-cased; the first of repeated headers wins (as `Request.headers.get`).
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}

    @property
    def query(self) -> Mapping[str, str]:
        """Query parameters; the last of repeated names wins (as FastAPI's scalar parameters)."""
        if self._query is None:
            self._query = dict(parse_qsl(self.scope["query_string"].decode("latin-1"), keep_blank_values=True))
        return self._query

    async def body(self, limit: int, timeout_s: float | None = None) -> bytes:
        """The whole body within `timeout_s`; `BodyTooLargeError` as soon as the declared or the
        received size exceeds `limit`, `BodyTimeoutError` when it is late, `BodyIncompleteError`
        when the client disconnects first."""
        declared = self.headers.get("content-length")
        if declared and declared.isascii() and declared.isdigit():
            digits = declared.lstrip("0") or "0"
            if len(digits) > 18 or int(digits) > limit:  # no int() of a huge string
                raise BodyTooLargeError
        try:
            async with asyncio.timeout(timeout_s):
                return await self._read(limit)
        except TimeoutError as exc:
            raise BodyTimeoutError from exc

    async def _read(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise BodyIncompleteError
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)


Handler = Callable[[RawRequest], Awaitable[tuple[int, str]]]
"""Answers `(status, text)`: a non-empty text goes out as text/plain, an empty one without a Content-Type."""


@dataclass(frozen=True, slots=True)
class FastRoute:
    method: str
    path: str  # exact; also the `route` label of the RED metrics (read as `scope["route"].path`)
    handler: Handler


async def respond(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-length", str(len(body)).encode())]
    if body:
        headers.append((b"content-type", TEXT_PLAIN))
    if status == 408:  # the rest of a stalled body is never read: the connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FastRoutes:
    """ASGI dispatcher: the listed routes are served directly, every other request by `app`."""

    def __init__(self, app: ASGIApp, routes: Sequence[FastRoute], tracer: trace.Tracer | None = None) -> None:
        self._app = app
        self._routes = {(r.method, r.path): r for r in routes}
        self._tracer = tracer or trace.get_tracer("wxbot.http.server")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get((scope["method"], scope["path"])) if scope["type"] == "http" else None
        if route is None:
            await self._app(scope, receive, send)
            return
        scope["route"] = route
        request = RawRequest(scope, receive)
        span = self._tracer.start_span(
            f"{route.method} {route.path}", context=propagate.extract(request.headers), kind=SpanKind.SERVER
        )
        with ActiveSpan(span):
            if span.is_recording():
                span.set_attributes(
                    {"http.request.method": route.method, "http.route": route.path, "url.path": route.path}
                )
            try:
                status, text = await route.handler(request)
            except Exception:
                # What Starlette's ServerErrorMiddleware does; the span records the exception and
                # the server logs it.
                span.set_attribute("http.response.status_code", 500)
                await respond(send, 500, "Internal Server Error")
                raise
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(StatusCode.ERROR)
            await respond(send, status, text)
