"""Third-party skill processes for the end-to-end tests: `python -m tests.e2e.skill_processes sdk|raw|twin-a|twin-b`.

`sdk`: written with wxbot-skill — an order lookup (with a command) and a skill that never answers.
`raw`: written against nats.micro alone, misbehaving — a reply that is not JSON, and 1 MB of text.
`twin-a`, `twin-b`: two instances of one service, same name and version, whose one tool disagrees
on its schema (a botched deploy): a call could reach either.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import nats
from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from wxbot_common.skill_contract import tool_metadata
from wxbot_skill import Skill

orders = Skill("orders", "1.0.0", "Order lookups")
HUGE_CHARS = 1_000_000  # within NATS's default 1 MiB max payload


@orders.tool(command="/order")
async def lookup_order(order_id: str) -> dict[str, str]:
    """Look up the status of an order by its id."""
    return {"order_id": order_id, "status": "shipped", "eta": "明天"}


@orders.tool
async def sleep_forever() -> str:
    """Check the warehouse (takes a very long time)."""
    await asyncio.Event().wait()
    return "never"


async def serve_until_stopped(nc: Client, service: Service) -> None:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()
    await nc.drain()


async def raw() -> None:
    nc = await nats.connect(os.environ["NATS_URL"])

    async def prose(request: Request) -> None:
        await request.respond(b"sunny, probably")

    async def huge(request: Request) -> None:
        await request.respond(json.dumps("x" * HUGE_CHARS).encode())

    service = await add_service(nc, name="misbehaving", version="0.0.1")
    for handler in (prose, huge):
        meta = tool_metadata(f"{handler.__name__} things", {"type": "object", "properties": {}})
        await service.add_endpoint(name=handler.__name__, handler=handler, metadata=meta)
    await serve_until_stopped(nc, service)


async def twin(variant: str) -> None:
    nc = await nats.connect(os.environ["NATS_URL"])

    async def twin_lookup(request: Request) -> None:
        await request.respond(json.dumps({"variant": variant, "got": json.loads(request.data)}).encode())

    key = {"type": "string"} if variant == "a" else {"type": "integer"}
    schema = {"type": "object", "properties": {"key": key}, "required": ["key"]}
    service = await add_service(nc, name="twins", version="1.0.0")
    await service.add_endpoint(
        name="twin_lookup", handler=twin_lookup, metadata=tool_metadata(f"Look a key up ({variant})", schema)
    )
    await serve_until_stopped(nc, service)


if __name__ == "__main__":
    if sys.argv[1] == "sdk":
        orders.run()
    elif sys.argv[1].startswith("twin-"):
        asyncio.run(twin(sys.argv[1].removeprefix("twin-")))
    else:
        asyncio.run(raw())
