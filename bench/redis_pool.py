"""`python -m bench.redis_pool`: client-side CPU per Redis command, the services' pool against redis-py's.

Starts a redis-server on loopback and runs GETs one at a time and 20 at once through
`wxbot_common.redis_client.create_redis` (`WaitingPool`) and through redis-py's
`BlockingConnectionPool`, alternating, and prints CPU µs per command (the best of `--rounds`).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import uvloop
from redis.asyncio import BlockingConnectionPool, Redis

from wxbot_common.redis_client import create_redis
from wxbot_devkit.launch import RedisServer


async def cpu_us_per_command(redis: Redis, commands: int, in_flight: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            await redis.get("k")

    started = time.process_time()
    await asyncio.gather(*(worker(commands // in_flight) for _ in range(in_flight)))
    return (time.process_time() - started) / commands * 1e6


async def run(commands: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="wxbot-redis-bench-") as tmp:
        server = RedisServer(Path(tmp))
        await server.start()
        try:
            clients = {
                "wxbot WaitingPool": create_redis(server.url),
                "redis-py BlockingConnectionPool": Redis.from_pool(
                    BlockingConnectionPool.from_url(server.url, max_connections=256, timeout=10, driver_info=None)
                ),
            }
            best: dict[tuple[str, int], float] = {}
            for client in clients.values():
                await client.set("k", "v")
            for _ in range(rounds):
                for name, client in clients.items():
                    for in_flight in (1, 20):
                        us = await cpu_us_per_command(client, commands, in_flight)
                        best[(name, in_flight)] = min(best.get((name, in_flight), us), us)
            for client in clients.values():
                await client.aclose()
        finally:
            await server.stop()
    print(f"client CPU per GET (best of {rounds} rounds of {commands} commands)")
    for (name, in_flight), us in best.items():
        print(f"  {name:34s} {in_flight:3d} in flight  {us:6.1f} µs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--commands", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    uvloop.run(run(args.commands, args.rounds))


if __name__ == "__main__":
    main()
