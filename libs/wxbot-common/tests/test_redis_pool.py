"""The services' Redis pool against a real redis-server: more commands than connections wait
their turn, a wait too long fails clearly, and an interrupted command leaves nothing behind."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from wxbot_common import redis_client
from wxbot_common.redis_client import create_redis
from wxbot_devkit.launch import RedisServer

pytestmark = pytest.mark.timeout(60)


async def blpop(redis: Redis, key: str, hold_s: float) -> object:
    return await redis.blpop([key], timeout=hold_s)


async def clients_connected(admin: Redis) -> int:
    return len(await admin.client_list()) - 1  # not the admin itself


async def test_more_commands_than_connections_all_succeed_on_at_most_that_many(server: RedisServer) -> None:
    redis = create_redis(server.url, max_connections=3)
    admin = Redis.from_url(server.url)
    try:
        # each BLPOP holds its connection 0.2 s; 12 of them on 3 connections take four rounds
        results = await asyncio.gather(*(redis.blpop([f"empty-{i}"], timeout=0.2) for i in range(12)))
        assert results == [None] * 12
        assert await clients_connected(admin) == 3
        await redis.set("k", "v")
        assert await redis.get("k") == b"v"
    finally:
        await redis.aclose()
        await admin.aclose()


async def test_a_command_that_cannot_get_a_connection_in_time_fails_clearly(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_client, "POOL_WAIT_S", 0.3)
    redis = create_redis(server.url, max_connections=1)
    try:
        holder = asyncio.create_task(blpop(redis, "empty", 2))
        await asyncio.sleep(0)  # let it take the only connection
        with pytest.raises(RedisConnectionError, match="No connection available"):
            await redis.get("k")
        assert await holder is None
        assert await redis.get("k") is None  # the pool still works once the connection is back
    finally:
        await redis.aclose()


async def test_a_command_cancelled_mid_reply_leaves_no_stale_answer_for_the_next(server: RedisServer) -> None:
    redis = create_redis(server.url, max_connections=1)
    admin = Redis.from_url(server.url)
    try:
        waiting = asyncio.create_task(blpop(redis, "queue", 5))
        deadline = asyncio.get_running_loop().time() + 5
        while (await admin.info("clients"))["blocked_clients"] == 0:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        waiting.cancel()
        await admin.rpush("queue", "late")  # may reach the cancelled command's socket
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await admin.set("k", "fresh")
        assert await redis.get("k") == b"fresh"
    finally:
        await redis.aclose()
        await admin.aclose()
