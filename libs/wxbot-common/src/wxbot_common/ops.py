"""Health, readiness and Prometheus endpoints, and an in-loop uvicorn server to serve them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from wxbot_common.http_protocol import OneSendHttpProtocol


class Readiness:
    """Named readiness checks; the pod is ready when every check is true and it is not stopping."""

    def __init__(self) -> None:
        self._checks: dict[str, bool] = {}
        self._details: dict[str, str] = {}
        self.stopping = False

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        self._checks[name] = ok
        if detail:
            self._details[name] = detail
        else:
            self._details.pop(name, None)

    @property
    def ready(self) -> bool:
        return not self.stopping and bool(self._checks) and all(self._checks.values())

    def report(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "stopping": self.stopping,
            "checks": dict(self._checks),
            "details": dict(self._details),
        }


def ops_routes(readiness: Readiness, registry: CollectorRegistry) -> list[BaseRoute]:
    """`/healthz` (process alive), `/readyz` (503 until ready or while stopping), `/metrics`."""

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        return JSONResponse(readiness.report(), status_code=200 if readiness.ready else 503)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]


def ops_app(readiness: Readiness, registry: CollectorRegistry) -> Starlette:
    return Starlette(routes=ops_routes(readiness, registry))


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling (the service runtime owns SIGTERM/SIGINT) and without
    its ten wake-ups a second: uvicorn's loop polls `should_exit` every 0.1 s, which on an idle
    service was most of its CPU; here `exit()` wakes it and the tick (the Date header's refresh,
    once a second in uvicorn too) runs once a second."""

    TICK_S = 1.0

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # on_tick refreshes the date on multiples of ten ticks
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), self.TICK_S)


class HttpServer:
    """Runs an ASGI app with uvicorn inside the service's event loop (no signal handlers of its own)."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        limit_concurrency: int | None = None,
        ws_max_bytes: int | None = None,
    ) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            http=OneSendHttpProtocol,
            limit_concurrency=limit_concurrency,
            timeout_graceful_shutdown=5,
            ws_max_size=ws_max_bytes or 16 * 1024 * 1024,  # uvicorn's default
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # surfaces bind errors
                raise RuntimeError("HTTP server exited before it started")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.exit()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
