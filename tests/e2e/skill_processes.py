"""Third-party skill processes for the end-to-end tests: `python -m tests.e2e.skill_processes sdk|raw`.

`sdk`: written with wxbot-skill — an order lookup (with a command) and a skill that never answers.
`raw`: written against nats.micro alone, misbehaving — a reply that is not JSON, and 1 MB of text.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import nats
from nats.micro import add_service
from nats.micro.request import Request

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
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()
    await nc.drain()


if __name__ == "__main__":
    if sys.argv[1] == "sdk":
        orders.run()
    else:
        asyncio.run(raw())
