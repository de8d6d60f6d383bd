"""A conversation whose sent reply Redis forgot to take out of the outbox moves on in seconds.

A crash of the machine under `appendfsync everysec` can lose the last second of Redis writes,
among them the removal of a reply that was sent. The next reply of that conversation would then
wait behind it for the whole delivery hold (60 s) and its redeliveries; instead the gateway finds
the reply recorded as sent in the event log and takes it out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from tests.e2e.harness import CONFIG, World, send_text
from wxbot_common.ids import conversation_key
from wxbot_gateway.inbound import wecom_conversation_id

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]


async def wait_until_async(read: Callable[[], Awaitable[int]], wanted: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (value := await read()) != wanted:
        assert time.monotonic() < deadline, f"still {value}, wanted {wanted}"
        await asyncio.sleep(0.05)


async def test_a_sent_reply_left_in_the_outbox_does_not_hold_the_next_one(world: World) -> None:
    user = "e2e-outbox-lost-removal"
    await send_text(world, user, "first question")
    await world.wecom.wait_for_messages(user, 1, timeout=30)

    # Redis "loses" the removal of the first reply: it is queued again, first for a while already.
    key = f"wxbot:outbox:{conversation_key(wecom_conversation_id(CONFIG['corpid'], CONFIG['agentid'], user))}"
    redis = Redis.from_url(world.stack.redis.url)
    try:
        # the reply leaves the outbox just after WeCom accepted it: wait for that
        await wait_until_async(lambda: redis.zcard(f"{key}:done"), 1, 10)
        done = await redis.zrange(f"{key}:done", 0, -1, withscores=True)
        event_id, position = (
            str(done[0][0], "utf-8") if isinstance(done[0][0], bytes) else str(done[0][0]),
            float(done[0][1]),
        )
        await redis.zrem(f"{key}:done", event_id)
        await redis.zadd(key, {event_id: position})
        await redis.hset(f"{key}:at", event_id, time.time() - 10)

        started = time.monotonic()
        await send_text(world, user, "second question")
        await world.wecom.wait_for_messages(user, 2, timeout=20)  # the hold alone would be 60 s
        waited = time.monotonic() - started
        # the forgotten reply is gone, and the second leaves just after its send
        await wait_until_async(lambda: redis.zcard(key), 0, 10)
    finally:
        await redis.aclose()
    texts = [m.content for m in world.wecom.messages_for(user)]
    assert texts == ["LLM says: first question (saw 2 messages)", "LLM says: second question (saw 4 messages)"]
    assert waited < 20
