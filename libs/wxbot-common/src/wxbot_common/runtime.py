"""The lifecycle every service shares, so each `app.py` only wires its own parts.

Order on start: logging → telemetry (before any gRPC/httpx/Redis client exists) → NATS →
topology → ops HTTP. Order on SIGTERM/SIGINT: not ready → stop fetching and finish in-flight
work → service shutdown hooks (LIFO) → drain NATS → stop HTTP → flush spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import uvloop
from nats.aio.client import Client
from nats.js import JetStreamContext
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Gauge
from starlette.types import ASGIApp

from wxbot_common.cpu_priority import lower_cpu_priority
from wxbot_common.logs import configure_logging, get_logger
from wxbot_common.nats.connection import connect_nats
from wxbot_common.nats.consumer import ConsumerLoop, ConsumerMetrics, Handler
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.topology import ConsumerSpec, StreamSettings, ensure_topology
from wxbot_common.ops import HttpServer, Readiness, ops_app
from wxbot_common.red_metrics import HttpRedMetrics
from wxbot_common.settings import CommonSettings
from wxbot_common.telemetry import Telemetry, setup_telemetry

ShutdownHook = Callable[[], Awaitable[None]]
GC_GEN0_THRESHOLD = 20_000  # allocations between young-generation collections (CPython's default: 700)


def settle_garbage_collector() -> None:
    """Move everything built at start-up out of the collector's sight, and collect less often.

    A service allocates short-lived objects for every message; with the default thresholds
    the collector ran full passes over the whole start-up heap (FastAPI, protobuf, OpenTelemetry,
    gRPC) many times a second, stalling the event loop for tens of milliseconds at a time.
    Frozen objects are never scanned again; young garbage is still collected promptly.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Entry point of every service process: `main()` on a uvloop event loop (about twice
    as fast as the default loop for this socket-bound work)."""
    uvloop.run(main())


class ServiceRuntime:
    """Owns the shared resources of one service process and their ordered shutdown."""

    def __init__(self, name: str, settings: CommonSettings, *, nats_echo: bool = True) -> None:
        """`nats_echo=False` for a service that publishes on a subject it also subscribes to and
        has no use for its own messages there."""
        self.name = name
        self.settings = settings
        self._nats_echo = nats_echo
        self.registry = CollectorRegistry()
        self.readiness = Readiness()
        self.log = get_logger(f"wxbot.{name}")
        self._hooks: list[ShutdownHook] = []
        self._loops: list[ConsumerLoop] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._http: HttpServer | None = None
        self._stop = asyncio.Event()
        self._telemetry: Telemetry | None = None
        self._nc: Client | None = None
        self._consumer_metrics: ConsumerMetrics | None = None
        self._publisher: EventPublisher | None = None
        Gauge("wxbot_up", "1 while the service runs", ["service"], registry=self.registry).labels(name).set(1)

    # -- start-up -----------------------------------------------------------------------------
    async def start(self) -> None:
        configure_logging(self.name, self.settings.log_level, self.settings.log_format)
        lowered = lower_cpu_priority(self.settings.cpu_nice)  # before any thread starts: they inherit it
        self._telemetry = setup_telemetry(self.name)
        self._nc = await connect_nats(self.settings, f"wxbot-{self.name}", echo=self._nats_echo)
        await ensure_topology(
            self.js,
            StreamSettings(
                max_age_days=self.settings.stream_max_age_days,
                replicas=self.settings.stream_replicas,
                media_ttl_s=self.settings.media_ttl_s,
            ),
        )
        self.readiness.set("nats", True)
        self._consumer_metrics = ConsumerMetrics(self.registry)
        self._publisher = EventPublisher(self.js, self.tracer)
        self.log.info(
            "started", exporting_traces=self._telemetry.exporting, cpu_nice=self.settings.cpu_nice, lowered=lowered
        )

    @property
    def nc(self) -> Client:
        assert self._nc is not None, "start() first"
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    @property
    def tracer(self) -> trace.Tracer:
        assert self._telemetry is not None, "start() first"
        return self._telemetry.tracer(f"wxbot.{self.name}")

    @property
    def publisher(self) -> EventPublisher:
        assert self._publisher is not None, "start() first"
        return self._publisher

    async def serve_http(
        self, app: ASGIApp | None, port: int, host: str | None = None, ws_max_bytes: int | None = None
    ) -> None:
        """Serve `app` (default: just the ops endpoints) on `port`; a WebSocket message over
        `ws_max_bytes` closes its socket with 1009."""
        served = HttpRedMetrics(app, self.registry) if app is not None else ops_app(self.readiness, self.registry)
        self._http = HttpServer(served, host or self.settings.http_host, port, ws_max_bytes=ws_max_bytes)
        await self._http.start()
        self.log.info("http_listening", host=host or self.settings.http_host, port=port)

    def consume(self, spec: ConsumerSpec, handler: Handler, concurrency: int = 256) -> None:
        """Run a consumer loop for `spec` until shutdown."""
        assert self._consumer_metrics is not None, "start() first"
        loop = ConsumerLoop(self.nc, spec, handler, self.publisher, self.tracer, self._consumer_metrics, concurrency)
        self._loops.append(loop)
        self.background(loop.run(), f"consumer:{spec.durable}")

    def background(self, coro: Awaitable[None], name: str) -> None:
        """Run a task for the life of the service; if it dies, the service stops (and restarts)."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("background_task_failed", task=name)
                self._stop.set()

        self._tasks.append(asyncio.create_task(guarded(), name=name))

    def on_shutdown(self, hook: ShutdownHook) -> None:
        self._hooks.append(hook)

    # -- run and stop --------------------------------------------------------------------------
    async def run_until_stopped(self) -> None:
        """Mark ready, wait for SIGTERM/SIGINT (or a dead background task), then shut down."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        settle_garbage_collector()
        self.readiness.set("started", True)
        self.log.info("ready")
        await self._stop.wait()
        await self.shutdown()

    def request_stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        self.log.info("stopping")
        self.readiness.stopping = True
        grace = self.settings.shutdown_grace_s
        await asyncio.gather(*(loop.stop(grace) for loop in self._loops), return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for hook in reversed(self._hooks):
            try:
                await hook()
            except Exception:
                self.log.exception("shutdown_hook_failed")
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.drain(), timeout=5)
        if self._http is not None:
            await self._http.stop()
        if self._telemetry is not None:
            self._telemetry.shutdown()
        self.log.info("stopped")
