"""RED metrics (rate, errors, duration) of the HTTP and gRPC servers, by route — the same names in
every service so one dashboard row and one alert rule cover them all."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class HttpRedMetrics:
    """ASGI middleware: `wxbot_http_requests_total{route,method,status}` and a duration histogram.

    The route is the matched template (`/wecom/callback`), never the raw path, so label
    cardinality stays bounded: the `path` of `scope["route"]`, set by Starlette's router and by
    `fast_http.FastRoutes`. Health, readiness and scrape traffic is left out.
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self._app = app
        self._requests = Counter(
            "wxbot_http_requests", "HTTP requests served", ["route", "method", "status"], registry=registry
        )
        self._duration = Histogram(
            "wxbot_http_request_seconds",
            "HTTP request duration",
            ["route", "method"],
            buckets=BUCKETS,
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPS_PATHS:
            await self._app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = str(scope.get("method", ""))
            self._requests.labels(route, method, str(status)).inc()
            self._duration.labels(route, method).observe(time.perf_counter() - started)


class GrpcRedMetrics:
    """`wxbot_grpc_server_requests_total{method,code}` and a duration histogram (fed by `rpc.observe_servicer`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._requests = Counter(
            "wxbot_grpc_server_requests", "gRPC calls served", ["method", "code"], registry=registry
        )
        self._duration = Histogram(
            "wxbot_grpc_server_seconds", "gRPC call duration", ["method"], buckets=BUCKETS, registry=registry
        )

    def observe(self, method: str, code: str, seconds: float) -> None:
        self._requests.labels(method, code).inc()
        self._duration.labels(method).observe(seconds)
