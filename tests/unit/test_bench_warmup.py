"""What the bench's warm-up leaves behind: the connections the load will hold at once, already open,
so that the first round of callbacks does not wait for handshakes no later round waits for."""

from __future__ import annotations

import asyncio

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bench.load import open_connections
from wxbot_devkit.fakes.server import AppServer


async def test_warm_up_opens_as_many_connections_as_asked_and_the_load_reuses_them() -> None:
    clients: set[tuple[str, int]] = set()

    async def healthz(request: Request) -> PlainTextResponse:
        assert request.client is not None
        clients.add((request.client.host, request.client.port))
        await asyncio.sleep(0.05)  # an answer that takes a while: concurrent requests overlap
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/healthz", healthz), Route("/wecom/callback", healthz, methods=["POST"])])
    async with AppServer(app) as server:
        connector = aiohttp.TCPConnector(limit=8, limit_per_host=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            await open_connections(session, [server.base_url], 8)
            assert len(clients) == 8
            opened = set(clients)

            async def callback() -> None:
                async with session.post(f"{server.base_url}/wecom/callback", data=b"x") as resp:
                    await resp.read()

            await asyncio.gather(*(callback() for _ in range(8)))
            assert clients == opened  # eight callbacks at once, not one new connection
