"""A service's HTTP server sends each ordinary response in one write, never holds a stream back, and
lets its process sleep while idle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from wxbot_common.ops import HttpServer
from wxbot_devkit.launch import free_port

pytestmark = pytest.mark.timeout(30)

REQUESTS = 40


def _writes_so_far() -> int:
    """Write syscalls of this whole process (every thread), from the kernel's own count."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("syscw:"):
            return int(line.split()[1])
    raise AssertionError("no syscw in /proc/self/io")


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(v) for k, _, v in (h.partition(b": ") for h in head.split(b"\r\n")) if k == b"content-length")
    return head + await reader.readexactly(length)


class _PlainUvicorn:
    """uvicorn as it comes (httptools), for the contrast: the same start and stop as `HttpServer`."""

    def __init__(self, app: Starlette, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            assert not self._task.done(), "uvicorn exited before it started"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


async def _writes_per_response(server: HttpServer | _PlainUvicorn, port: int) -> float:
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n")  # the first one sets the connection up
        await _read_response(reader)
        before = _writes_so_far()
        for _ in range(REQUESTS):
            writer.write(b"GET /hello HTTP/1.1\r\nhost: t\r\n\r\n")
            response = await _read_response(reader)
            assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\nhello")
        spent = _writes_so_far() - before
        writer.close()
        return (spent - REQUESTS) / REQUESTS  # the client's own writes are one per request
    finally:
        await server.stop()


def _hello_app() -> Starlette:
    async def hello(_: Request) -> Response:
        return PlainTextResponse("hello")

    return Starlette(routes=[Route("/hello", hello)])


def test_a_response_is_one_write_where_plain_uvicorn_takes_two() -> None:
    # uvloop, as the services run: its sockets write with write(2), which the kernel's syscw counts
    port_a, port_b = free_port(), free_port()
    ours = uvloop.run(_writes_per_response(HttpServer(_hello_app(), "127.0.0.1", port_a), port_a))
    theirs = uvloop.run(_writes_per_response(_PlainUvicorn(_hello_app(), port_b), port_b))

    assert theirs >= 1.9, f"the measurement should see uvicorn's head and body writes ({theirs:.2f} per response)"
    assert ours <= 1.1, f"{ours:.2f} writes per response"


async def test_a_streamed_response_sends_its_head_before_its_body_exists() -> None:
    port = free_port()
    head_seen = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        await head_seen.wait()  # produced only once the client has the head: a held-back head would hang here
        yield b"late"

    async def stream(_: Request) -> Response:
        return StreamingResponse(body(), media_type="text/plain")

    server = HttpServer(Starlette(routes=[Route("/stream", stream)]), "127.0.0.1", port)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nhost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head
        head_seen.set()
        chunk = await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        assert chunk == b"4\r\nlate\r\n0\r\n\r\n"
        writer.close()
    finally:
        await server.stop()


def _times_scheduled() -> int:
    """How many times the kernel has put this thread on a CPU (each wake-up of the event loop is one)."""
    return int(Path("/proc/thread-self/schedstat").read_text().split()[2])


async def _wakeups_while_idle(server: HttpServer | _PlainUvicorn, idle_s: float) -> int:
    await server.start()
    try:
        before = _times_scheduled()
        await asyncio.sleep(idle_s)  # the idle period being measured, not a wait for something
        return _times_scheduled() - before
    finally:
        await server.stop()


def test_an_idle_server_wakes_its_process_about_once_a_second_where_uvicorn_wakes_it_ten_times() -> None:
    app = _hello_app()
    port_a, port_b = free_port(), free_port()
    ours = uvloop.run(_wakeups_while_idle(HttpServer(app, "127.0.0.1", port_a), 2.0))
    theirs = uvloop.run(_wakeups_while_idle(_PlainUvicorn(app, port_b), 2.0))

    assert theirs >= 15, f"the measurement should see uvicorn's 0.1 s ticks ({theirs} wake-ups in 2 s)"
    assert ours <= 8, f"{ours} wake-ups in 2 s of idling"
