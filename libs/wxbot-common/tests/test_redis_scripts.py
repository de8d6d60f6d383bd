"""Script calls of one loop turn as one pipeline, against a real redis-server: each caller gets its
own result or error, a flushed script cache is survived, a dead server fails every caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from wxbot_common.redis_client import create_redis
from wxbot_common.redis_scripts import BatchedScripts
from wxbot_devkit.launch import RedisServer, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def redis(server: RedisServer) -> AsyncIterator[Redis]:
    client = create_redis(server.url)
    try:
        yield client
    finally:
        await client.aclose()


INCR_BY = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
FAIL_ON_ZERO = "if ARGV[1] == '0' then return redis.error_reply('zero refused') end return tonumber(ARGV[1]) * 2"


async def test_same_turn_calls_share_one_connection_and_each_gets_its_result(redis: Redis, server: RedisServer) -> None:
    admin = create_redis(server.url)
    try:
        incr = BatchedScripts(redis).register_script(INCR_BY)
        results = await asyncio.gather(*(incr(keys=[f"k{n % 3}"], args=[n]) for n in range(30)))
        running, expected = [0, 0, 0], []
        for n in range(30):  # each call sees the calls made before it on its key, and its own
            running[n % 3] += n
            expected.append(running[n % 3])
        assert results == expected
        assert [int(await redis.get(f"k{r}") or 0) for r in range(3)] == [sum(range(r, 30, 3)) for r in range(3)]
        assert len(await admin.client_list()) - 1 == 1  # thirty calls, one connection: one pipeline
    finally:
        await admin.aclose()


async def test_one_calls_error_is_its_own(redis: Redis) -> None:
    double = BatchedScripts(redis).register_script(FAIL_ON_ZERO)
    outcomes = await asyncio.gather(*(double(args=[n]) for n in (3, 0, 5)), return_exceptions=True)
    assert outcomes[0] == 6 and outcomes[2] == 10
    assert isinstance(outcomes[1], ResponseError) and "zero refused" in str(outcomes[1])


async def test_scripts_flushed_from_redis_are_loaded_again(redis: Redis) -> None:
    incr = BatchedScripts(redis).register_script(INCR_BY)
    assert await incr(keys=["n"], args=[1]) == 1
    await redis.script_flush()  # as after a Redis restart without persistence
    assert sorted(await asyncio.gather(*(incr(keys=["n"], args=[1]) for _ in range(4)))) == [2, 3, 4, 5]
    await redis.script_flush()
    assert await incr(keys=["n"], args=[1]) == 6  # a lone call too


async def test_a_caller_that_gives_up_leaves_the_others_their_answers(redis: Redis) -> None:
    incr = BatchedScripts(redis).register_script(INCR_BY)
    first = asyncio.ensure_future(incr(keys=["n"], args=[1]))
    second = asyncio.ensure_future(incr(keys=["n"], args=[10]))
    await asyncio.sleep(0)  # both queued in this turn
    first.cancel()
    assert await second in (10, 11)  # the first may or may not have run: it was sent already
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_an_unreachable_redis_fails_every_caller() -> None:
    unreachable = create_redis(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=2.0)
    try:
        incr = BatchedScripts(unreachable).register_script(INCR_BY)
        outcomes = await asyncio.gather(*(incr(keys=["n"], args=[1]) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(o, RedisConnectionError) for o in outcomes), outcomes
    finally:
        await unreachable.aclose()
