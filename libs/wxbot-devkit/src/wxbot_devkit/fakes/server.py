"""Run an ASGI app with uvicorn in-process (asyncio task or background thread) or as a small CLI process.

The socket is bound before uvicorn starts, so port 0 works and `.base_url` is known immediately.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from wxbot_common.http_protocol import OneSendHttpProtocol

Endpoint = Callable[[Request], Awaitable[Response]]

STARTUP_TIMEOUT_S = 10.0
# Longer than any client pool's idle expiry (httpx: 5 s), so the server never closes a connection
# the client is about to reuse.
KEEP_ALIVE_S = 75


class _NoSignalServer(uvicorn.Server):
    """uvicorn.Server that leaves SIGINT/SIGTERM to the host process (pytest, the stack supervisor)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AppServer:
    """One uvicorn server for one ASGI app on `host` (default 127.0.0.1) and `port` (0 = any free port)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        handle_signals: bool = False,
        graceful_timeout_s: float = 1.0,
        lifespan: bool = False,
    ) -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self._handle_signals = handle_signals
        self._graceful_timeout_s = graceful_timeout_s
        self._lifespan = lifespan  # run the app's startup/shutdown (an app that starts tasks there)
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None

    @property
    def port(self) -> int:
        if self._sock is None:
            raise RuntimeError("server not started")
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def _prepare(self) -> tuple[uvicorn.Server, socket.socket]:
        if self._server is not None:
            raise RuntimeError("server already started")
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
        # and without it every response pays a ~40 ms Nagle/delayed-ACK stall.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._requested_port))
        except OSError:
            sock.close()
            raise
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="on" if self._lifespan else "off",
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=int(max(1.0, self._graceful_timeout_s)),
            backlog=4096,
            http=OneSendHttpProtocol,
        )
        server = uvicorn.Server(config) if self._handle_signals else _NoSignalServer(config)
        self._server, self._sock = server, sock
        return server, sock

    # -- asyncio task mode -------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve on the running loop; returns once the socket accepts connections."""
        server, sock = self._prepare()
        self._task = asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn:{self.port}")
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if self._task.done():
                self._task.result()  # re-raises the startup error
                raise RuntimeError("uvicorn exited during startup")
            if time.monotonic() >= deadline:
                raise TimeoutError("uvicorn did not start")
            await asyncio.sleep(0.005)

    async def wait_closed(self) -> None:
        """Block until the server exits (by stop() or, with handle_signals, by SIGINT/SIGTERM)."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._reset()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- background thread mode (own event loop), for sync callers -----------------------------------

    def start_in_thread(self) -> None:
        server, sock = self._prepare()

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except BaseException as exc:  # surfaced by start_in_thread / stop_thread
                self._thread_error = exc

        self._thread = threading.Thread(target=run, name=f"uvicorn:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive():
                raise RuntimeError("uvicorn exited during startup") from self._thread_error
            if time.monotonic() >= deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.005)

    def stop_thread(self, timeout: float = 10.0) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        alive = self._thread.is_alive()
        self._reset()
        if alive:
            raise TimeoutError("uvicorn thread did not stop")

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._server = self._sock = self._task = self._thread = None


class FakeService:
    """Base for a fake: subclasses hold the state and build `app`; this adds in-process start/stop,
    and an outage: `refuse_connections` closes the listening socket and every open connection, so
    clients get "connection refused" (not an HTTP error) until it listens again on the same port."""

    lifespan = False  # True: the app has startup/shutdown of its own (see AppServer)

    def __init__(self) -> None:
        self._app: ASGIApp | None = None
        self._server: AppServer | None = None
        self._closing = False  # set while stopping, so handlers parked by fault modes give up
        self._address: tuple[str, int] | None = None  # kept while offline: clients keep the same URL
        self._reopen: asyncio.Task[None] | None = None
        self._offline = False

    def build_app(self) -> ASGIApp:
        raise NotImplementedError

    # -- the control routes every fake shares (`/_fake/...`); subclasses give `reset` and `stats` --

    def reset(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        raise NotImplementedError

    def control_routes(self, faults: Endpoint, requests: Endpoint) -> list[Route]:
        """`/_fake/faults` (POST) and `/_fake/requests` (GET) as the fake defines them; `/_fake/reset`
        (POST) and `/_fake/stats` (GET) answering `stats()`."""

        async def reset(request: Request) -> Response:
            self.reset()
            return JSONResponse(self.stats())

        async def stats(request: Request) -> Response:
            return JSONResponse(self.stats())

        return [
            Route("/_fake/faults", faults, methods=["POST"]),
            Route("/_fake/requests", requests, methods=["GET"]),
            Route("/_fake/reset", reset, methods=["POST"]),
            Route("/_fake/stats", stats, methods=["GET"]),
        ]

    @property
    def app(self) -> ASGIApp:
        if self._app is None:
            self._app = self.build_app()
        return self._app

    @property
    def base_url(self) -> str:
        if self._address is None:
            raise RuntimeError(f"{type(self).__name__} not started")
        return f"http://{self._address[0]}:{self._address[1]}"

    @property
    def offline(self) -> bool:
        """True from the moment `refuse_connections` has closed the socket until it listens again."""
        return self._offline

    async def start(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._closing = False
        self._server = AppServer(self.app, host=host, port=port, lifespan=self.lifespan)
        await self._server.start()
        self._address = (host, self._server.port)

    async def stop(self) -> None:
        if self._reopen is not None:
            self._reopen.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopen
            self._reopen = None
        if self._server is not None:
            self._closing = True
            await self._server.stop()
            self._server = None
        self._address = None
        self._offline = False

    async def refuse_connections(self, seconds: float | None = None) -> None:
        """Stop listening (connection refused) and close open connections, as a host that went
        away; listen again on the same port after `seconds`, or at `accept_connections()`.

        Requests in flight get up to the graceful timeout (1 s) to finish, then are cut off.
        Needs `start()` (the fake on this event loop).
        """
        if self._server is None or self._address is None:
            raise RuntimeError(f"{type(self).__name__} is not serving (refuse_connections needs start())")
        server, self._server = self._server, None
        self._closing = True  # calls parked by a fault mode (a hung LLM) give up
        await server.stop()
        self._offline = True
        if seconds is not None:
            self._reopen = asyncio.create_task(self._accept_after(seconds), name="fake-reopen")

    async def _accept_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # the length of the outage, not a wait for a condition
        await self._listen_again()

    async def accept_connections(self) -> None:
        """End an outage now: listen again on the same host and port."""
        if self._reopen is not None and self._reopen is not asyncio.current_task():
            self._reopen.cancel()
            self._reopen = None
        await self._listen_again()

    async def _listen_again(self) -> None:
        if self._server is not None or self._address is None:
            return
        host, port = self._address
        server = AppServer(self.app, host=host, port=port, lifespan=self.lifespan)
        await server.start()
        self._closing = False
        self._server = server
        self._offline = False

    def start_in_thread(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self._closing = False
        self._server = AppServer(self.app, host=host, port=port, lifespan=self.lifespan)
        self._server.start_in_thread()
        self._address = (host, self._server.port)

    def stop_thread(self) -> None:
        if self._server is not None:
            self._closing = True
            self._server.stop_thread()
            self._server = None
        self._address = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def base_arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    return parser


def serve_forever(app: ASGIApp, host: str, port: int, banner: Sequence[str] = (), lifespan: bool = False) -> None:
    """CLI entry: serve until SIGINT/SIGTERM; the first stdout line is the base URL (for supervisors)."""

    async def run() -> None:
        server = AppServer(app, host=host, port=port, handle_signals=True, lifespan=lifespan)
        await server.start()
        print(server.base_url, flush=True)
        for line in banner:
            print(line, flush=True)
        await server.wait_closed()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())
