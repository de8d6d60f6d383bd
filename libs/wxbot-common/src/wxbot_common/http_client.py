"""Outbound HTTP for every service (LLM, WeCom, Official Account): aiohttp with a cheap client span.

Why aiohttp and not httpx or the openai SDK: one small JSON POST costs about 0.14 ms of CPU with
aiohttp on the 2-core reference box, against 2.8 ms with httpx (its connection pool scans every
pooled connection on every request, so the cost grows with the calls in flight) and 1.9 ms with
the openai SDK on an aiohttp transport — a third of the whole pipeline's 6 ms budget per message
(`bench/`, docs/performance.md).

Tracing: each request is a CLIENT span carrying W3C `traceparent` to the upstream; URL query
values that look like credentials (WeCom puts `access_token` and the secret there) are redacted.
For an unsampled trace the span is a no-op and no attribute is computed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any, Self

import aiohttp
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode
from yarl import URL

from wxbot_common.spans import ActiveSpan
from wxbot_common.telemetry import redact_url

HttpError = (aiohttp.ClientError, TimeoutError)
"""What a request may raise besides cancellation: connection trouble, a bad response, a timeout."""


def create_session(max_connections: int, timeout_s: float, keepalive_s: float = 30.0) -> aiohttp.ClientSession:
    """A pooled session (call inside the running loop); `timeout_s` bounds each whole request."""
    connector = aiohttp.TCPConnector(limit=max_connections, limit_per_host=0, keepalive_timeout=keepalive_s)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s, connect=min(10.0, timeout_s)),
        raise_for_status=False,
        auto_decompress=True,
    )


class TracedHttp:
    """`request()` = one traced call on a shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, tracer: trace.Tracer | None = None) -> None:
        self.session = session
        self._tracer = tracer or trace.get_tracer("wxbot.http")

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    @contextlib.asynccontextmanager
    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send; yields the response with its headers read (read the body inside the block)."""
        with ActiveSpan(self._tracer.start_span(method, kind=SpanKind.CLIENT)) as span:
            sent_headers = dict(headers or {})
            propagate.inject(sent_headers)
            recording = span.is_recording()
            if recording:
                parsed = URL(url)
                full = str(parsed.update_query(dict(params))) if params else url
                span.set_attributes(
                    {"http.request.method": method, "url.full": redact_url(full), "server.address": parsed.host or ""}
                )
            if timeout_s is not None:
                kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout_s, connect=min(10.0, timeout_s))
            try:
                async with self.session.request(method, url, params=params, headers=sent_headers, **kwargs) as resp:
                    if recording:
                        span.set_attribute("http.response.status_code", resp.status)
                        if resp.status >= 500:
                            span.set_status(StatusCode.ERROR, f"HTTP {resp.status}")
                    yield resp
            except HttpError as exc:
                if recording:
                    span.set_attribute("error.type", type(exc).__name__)
                    span.set_status(StatusCode.ERROR, type(exc).__name__)
                raise
