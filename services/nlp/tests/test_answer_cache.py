"""The answer cache against a real Redis: TTL, single flight for concurrent identical questions,
and degrading to "no cache" when Redis is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from wxbot_devkit.launch import RedisServer, free_port
from wxbot_nlp.answer_cache import AnswerCache

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
async def redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Redis]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis")))
    await server.start()
    client = Redis.from_url(server.url)
    yield client
    await client.aclose()
    await server.stop()


async def test_answers_are_stored_under_the_normalised_question_with_the_ttl(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=5)
    await cache.put("v1", "What is wxbot?", "a bot")
    assert await cache.get("v1", "  what is WXBOT ") == "a bot"
    assert await cache.get("v2", "What is wxbot?") is None  # another variant, another answer
    assert 0 < await redis.ttl(AnswerCache.key("v1", "what is wxbot")) <= 120


async def test_a_concurrent_identical_question_waits_for_the_first_answer(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=10)
    token = await cache.claim("v1", "今天开会吗")
    assert token is not None
    assert await cache.claim("v1", "今天开会吗？") is None  # the same question is already being asked
    waiter = asyncio.create_task(cache.wait_for_answer("v1", "今天开会吗"))
    await asyncio.sleep(0.2)  # the first asker's LLM call
    assert not waiter.done()
    await cache.put("v1", "今天开会吗", "下午三点开会")
    await cache.release("v1", "今天开会吗", token)
    assert await asyncio.wait_for(waiter, 5) == "下午三点开会"
    assert await cache.claim("v1", "今天开会吗") is not None  # released: the next asker may claim it


async def test_when_the_first_asker_fails_the_waiter_is_told_at_once(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=60)
    token = await cache.claim("v1", "will this fail")
    assert token is not None
    waiter = asyncio.create_task(cache.wait_for_answer("v1", "will this fail"))
    await cache.release("v1", "will this fail", token)  # gave up without an answer (the user got an apology)
    assert await asyncio.wait_for(waiter, 5) is None  # long before the 60 s claim would expire


async def test_a_claim_is_kept_alive_while_the_call_runs_and_released_when_it_fails(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=10, claim_ttl_s=0.3)
    token = await cache.claim("v1", "slow model")
    assert token is not None
    with pytest.raises(RuntimeError):
        async with cache.holding("v1", "slow model", token):
            await asyncio.sleep(1.0)  # a call three times longer than the claim's TTL
            assert await cache.claim("v1", "slow model") is None  # still held: renewed meanwhile
            raise RuntimeError("the LLM call failed")
    assert await cache.claim("v1", "slow model") is not None  # released at once


async def test_a_claim_expires_by_itself(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=10, claim_ttl_s=0.3)
    assert await cache.claim("v1", "crashed asker") is not None  # and never released: its replica died
    assert await asyncio.wait_for(cache.wait_for_answer("v1", "crashed asker"), 5) is None
    assert await cache.claim("v1", "crashed asker") is not None


async def test_a_stale_token_cannot_release_someone_elses_claim(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=10)
    mine = await cache.claim("v1", "shared")
    assert mine is not None
    await cache.release("v1", "shared", "not-the-token")
    assert await cache.claim("v1", "shared") is None


async def test_without_redis_the_cache_steps_aside() -> None:
    gone = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    cache = AnswerCache(gone, ttl_s=120, max_wait_s=10)
    try:
        assert await cache.get("v1", "q") is None
        await cache.put("v1", "q", "a")  # no error
        token = await cache.claim("v1", "q")
        assert token is not None  # ask the LLM as if uncached
        await cache.release("v1", "q", token)
        assert await cache.wait_for_answer("v1", "q") is None
    finally:
        await gone.aclose()
