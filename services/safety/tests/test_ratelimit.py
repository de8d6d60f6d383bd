"""The per-user counters against a real Redis: a message counts once however often it is delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from wxbot_devkit.launch import redis_client
from wxbot_safety.ratelimit import RateCounter

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[Redis]:
    async with redis_client(tmp_path) as client:
        yield client


async def test_a_redelivered_message_gets_the_counts_of_its_first_delivery(redis: Redis) -> None:
    rate = RateCounter(redis)
    now = 1_764_000_000.0
    assert await rate.hit("u", "event-1", now) == (1, 1)
    assert await rate.hit("u", "event-2", now) == (2, 2)
    # event-1 delivered again (its acknowledgement was lost): the same verdict, nothing counted twice
    assert await rate.hit("u", "event-1", now + 30) == (1, 1)
    assert await rate.hit("u", "event-3", now + 30) == (3, 3)
    assert await rate.hit("u", "event-4", now + 60) == (1, 4)  # a new minute, the same day
    assert await rate.hit("other", "event-5", now) == (1, 1)
