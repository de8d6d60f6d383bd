"""What every request goes through: a body size limit, security headers, and where a WebSocket comes from.

The Content-Security-Policy allows scripts and styles from the console itself only, so text
that reaches a page (a chat message, a dead letter's reason) could not run even if it were not
escaped; it is escaped all the same (Jinja autoescape, `textContent` in the scripts).
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; frame-ancestors 'none'; form-action 'self' https: http:; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),  # the login code must not leak to another site
    (b"cache-control", b"no-store"),
]


class Guard:
    """ASGI middleware: 413 for a body over `max_bytes` (before the app sees any of it), and the
    security headers on every response."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self._max):
            await _too_large(self._max)(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self._max:
                await _too_large(self._max)(scope, receive, send)
                return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        await self._app(scope, replay, with_headers)


def _too_large(limit: int) -> PlainTextResponse:
    return PlainTextResponse(f"request body too large: at most {limit} bytes are accepted", status_code=413)


def same_origin(conn: HTTPConnection, public_url: str) -> bool:
    """A WebSocket handshake from a page of this console (browsers always send Origin on them)."""
    origin = conn.headers.get("origin", "")
    own = {public_url.rstrip("/"), f"{conn.url.scheme.replace('ws', 'http')}://{conn.headers.get('host', '')}"}
    return origin in own
