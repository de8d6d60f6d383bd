"""A standalone question's two lookups, asked together against real Redis and a real media store:
the recent image it may be about and the answer cache. The claim a question takes on the cache is
given back when the question turns out to be about an image, so that others asking the same
question do not wait on an answer that will never be stored."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from wxbot_common.media.store import MediaStore
from wxbot_devkit.fakes.media_files import png_bytes
from wxbot_devkit.launch import nats_client, redis_client
from wxbot_nlp.answer_cache import AnswerCache, Claim
from wxbot_nlp.handlers import image_and_cached
from wxbot_nlp.vision import PendingImages, Vision, VisionMetrics
from wxbot_proto.events.v1 import events_pb2 as ev

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def nc(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    async with nats_client(Path(tmp_path_factory.mktemp("nats"))) as client:
        yield client


@pytest.fixture(scope="module")
async def redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Redis]:
    async with redis_client(Path(tmp_path_factory.mktemp("redis"))) as client:
        yield client


def question(conversation: str, text: str, seq: int) -> ev.InboundAccepted:
    accepted = ev.InboundAccepted(message=ev.MessageReceived(text=text))
    accepted.meta.conversation_id = conversation
    accepted.meta.event_id = f"{conversation}-{seq}"
    accepted.meta.origin_sequence = seq
    accepted.message.meta.occurred_at.FromSeconds(int(time.time()))
    return accepted


@pytest.fixture
def vision(nc: Client, redis: Redis) -> Vision:
    store = MediaStore(nc.jetstream())
    return Vision(store, PendingImages(redis, window_s=300), VisionMetrics(CollectorRegistry()))


async def test_a_standalone_question_gets_its_cache_claim_and_no_image(vision: Vision, redis: Redis) -> None:
    cache = AnswerCache(redis, ttl_s=60, max_wait_s=5)
    turn, found = await image_and_cached(vision, cache, question("c-plain", "what is wxbot?", 5), "v1")
    assert turn is None and isinstance(found, Claim)
    assert await cache.get_or_claim("v1", "what is wxbot?") is None  # held: the next asker waits for it


async def test_a_question_about_a_recent_image_is_asked_with_it_and_gives_its_claim_back(
    vision: Vision, nc: Client, redis: Redis
) -> None:
    cache = AnswerCache(redis, ttl_s=60, max_wait_s=5)
    ref = await MediaStore(nc.jetstream()).put(png_bytes(), "image/png")
    await PendingImages(redis, window_s=300).remember("c-image", ref, seq=10, at=time.time())
    turn, found = await image_and_cached(vision, cache, question("c-image", "what breed is it?", 12), "v1")
    assert turn is not None and turn.use == "follow_up" and turn.data_url.startswith("data:image/png;base64,")
    assert found is None
    # The claim was released: the next asker of the same question is not kept waiting for an answer
    # that will never be stored, it is the one to ask.
    assert isinstance(await cache.get_or_claim("v1", "what breed is it?"), Claim)


async def test_a_failed_image_lookup_gives_the_cache_claim_back_and_fails_the_question(
    vision: Vision, redis: Redis
) -> None:
    cache = AnswerCache(redis, ttl_s=60, max_wait_s=5)
    fields = {"name": "sha256-cc", "size": "not-a-size", "type": "image/png", "sha256": "cc" * 32}
    await redis.hset("wxbot:nlp:image:c-broken", mapping={**fields, "seq": 1, "at": repr(time.time())})
    with pytest.raises(ValueError, match="not-a-size"):  # redelivered by the consumer, as any handler error
        await image_and_cached(vision, cache, question("c-broken", "and this?", 2), "v3")
    assert isinstance(await cache.get_or_claim("v3", "and this?"), Claim)  # not held by the failed attempt


async def test_without_a_cache_only_the_image_is_looked_up_and_without_vision_only_the_cache(
    vision: Vision, redis: Redis
) -> None:
    cache = AnswerCache(redis, ttl_s=60, max_wait_s=5)
    await cache.put_and_release(await claim(cache, "v2", "hello?"), "hi")
    assert await image_and_cached(vision, None, question("c-none", "hello?", 3), "v2") == (None, None)
    assert await image_and_cached(None, cache, question("c-none", "hello?", 3), "v2") == (None, "hi")


async def claim(cache: AnswerCache, scope: str, text: str) -> Claim:
    found = await cache.get_or_claim(scope, text)
    assert isinstance(found, Claim)
    return found
