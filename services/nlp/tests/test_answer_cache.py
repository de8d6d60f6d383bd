"""The answer cache against a real Redis: TTL, single flight for concurrent identical questions,
and degrading to "no cache" when Redis is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from wxbot_devkit.launch import free_port, redis_client
from wxbot_nlp.answer_cache import AnswerCache, Claim

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
async def redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Redis]:
    async with redis_client(Path(tmp_path_factory.mktemp("redis"))) as client:
        yield client


async def claim(cache: AnswerCache, scope: str, question: str) -> Claim:
    found = await cache.get_or_claim(scope, question)
    assert isinstance(found, Claim)
    return found


async def test_answers_are_stored_under_the_normalised_question_with_the_ttl(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=5)
    await cache.put_and_release(await claim(cache, "v1", "What is wxbot?"), "a bot")
    assert await cache.get_or_claim("v1", "  what is WXBOT ") == "a bot"
    assert isinstance(await cache.get_or_claim("v2", "What is wxbot?"), Claim)  # another variant, another answer
    assert 0 < await redis.ttl(AnswerCache.key("v1", "what is wxbot")) <= 120
    assert await redis.exists(AnswerCache.key("v1", "what is wxbot") + ":claim") == 0  # released with the put


async def test_a_concurrent_identical_question_waits_for_the_first_answer(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=10)
    mine = await claim(cache, "v1", "今天开会吗")
    assert await cache.get_or_claim("v1", "今天开会吗？") is None  # the same question is already being asked
    waiter = asyncio.create_task(cache.wait_for_answer("v1", "今天开会吗"))
    await asyncio.sleep(0.2)  # the first asker's LLM call
    assert not waiter.done()
    await cache.put_and_release(mine, "下午三点开会")
    assert mine.settled
    assert await asyncio.wait_for(waiter, 5) == "下午三点开会"
    assert await cache.get_or_claim("v1", "今天开会吗") == "下午三点开会"  # the next asker gets a hit


async def test_when_the_first_asker_fails_the_waiter_is_told_at_once(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=60)
    mine = await claim(cache, "v1", "will this fail")
    waiter = asyncio.create_task(cache.wait_for_answer("v1", "will this fail"))
    await cache.release(mine)  # gave up without an answer (the user got an apology)
    assert await asyncio.wait_for(waiter, 5) is None  # long before the 60 s claim would expire
    await claim(cache, "v1", "will this fail")  # released: the next asker may claim it


async def test_a_claim_is_kept_alive_while_the_call_runs_and_released_when_it_fails(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=10, claim_ttl_s=0.3)
    mine = await claim(cache, "v1", "slow model")
    with pytest.raises(RuntimeError):
        async with cache.holding(mine):
            await asyncio.sleep(1.0)  # a call three times longer than the claim's TTL
            assert await cache.get_or_claim("v1", "slow model") is None  # still held: renewed meanwhile
            raise RuntimeError("the LLM call failed")
    await claim(cache, "v1", "slow model")  # released at once


async def test_an_answered_claim_is_not_released_twice(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=10)
    mine = await claim(cache, "v1", "answered")
    async with cache.holding(mine):
        await cache.put_and_release(mine, "yes")
        await redis.set(AnswerCache.key("v1", "answered") + ":claim", mine.token)  # stands in for a stray claim
    assert await redis.exists(AnswerCache.key("v1", "answered") + ":claim") == 1  # no release round trip after
    assert await cache.get_or_claim("v1", "answered") == "yes"


async def test_storing_an_answer_keeps_a_later_askers_claim(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=10, claim_ttl_s=0.3)
    stale = await claim(cache, "v1", "paused asker")
    await asyncio.sleep(0.5)  # its claim expired (a long pause) and another asker claimed the question
    later = await claim(cache, "v1", "paused asker")
    await cache.put_and_release(stale, "late answer")
    assert await redis.get(AnswerCache.key("v1", "paused asker") + ":claim") == later.token.encode()


async def test_a_claim_expires_by_itself(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=10, claim_ttl_s=0.3)
    await claim(cache, "v1", "crashed asker")  # and never released: its replica died
    assert await asyncio.wait_for(cache.wait_for_answer("v1", "crashed asker"), 5) is None
    await claim(cache, "v1", "crashed asker")


async def test_a_stale_token_cannot_release_someone_elses_claim(redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=120, max_wait_s=10)
    mine = await claim(cache, "v1", "shared")
    await cache.release(Claim(mine.key, "not-the-token"))
    assert await cache.get_or_claim("v1", "shared") is None


async def test_without_redis_the_cache_steps_aside() -> None:
    gone = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    cache = AnswerCache(gone, ttl_s=120, max_wait_s=10)
    try:
        mine = await claim(cache, "v1", "q")  # ask the LLM as if uncached
        async with cache.holding(mine):
            await cache.put_and_release(mine, "a")  # no error
        assert not mine.settled
        assert await cache.wait_for_answer("v1", "q") is None
    finally:
        await gone.aclose()
