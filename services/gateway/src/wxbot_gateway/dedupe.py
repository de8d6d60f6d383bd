"""Remembering which provider messages were already published, beyond JetStream's duplicate window.

WeCom retries a callback up to three times; JetStream's `Nats-Msg-Id` dedupe covers retries
within its window (and concurrent deliveries to different replicas). A record per event id in
Redis, with a TTL, covers late retries. The record is written only after the publish succeeded,
so a failed publish never hides the retry that would have fixed it.

A message created recently (its signed `CreateTime`) cannot have been published before the
start of the window, so JetStream alone dedupes its retries and the Redis lookup is skipped:
one round trip less on the callback's path for almost every message. The margin absorbs clock
skew between WeCom and this host. Such a message is also remembered off the callback's path:
its record only matters to a retry later than the window, which WeCom never sends (its three
retries come within seconds), so the answer to WeCom does not wait for it. Those records are
written together: the ones of the callbacks answered in one event-loop turn go to Redis as one
pipelined write (a burst of callbacks would otherwise take a pooled connection and a write each).
"""

from __future__ import annotations

import asyncio
import time

from google.protobuf.message import Message
from nats.js.api import PubAck
from redis.asyncio import Redis
from redis.exceptions import RedisError

from wxbot_common.logs import get_logger
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import meta_of
from wxbot_common.nats.topology import StreamSettings

SKEW_MARGIN_S = 120.0
FRESH_FOR_S = StreamSettings().duplicate_window_s - SKEW_MARGIN_S


def within_log_window(create_time: int, now: float | None = None) -> bool:
    """True when every earlier delivery of a message created at `create_time` is still inside
    JetStream's duplicate window."""
    age = (time.time() if now is None else now) - create_time
    return -SKEW_MARGIN_S <= age < FRESH_FOR_S


class SeenMessages:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._log = get_logger("wxbot.gateway.dedupe")
        self._writes: set[asyncio.Task[None]] = set()  # records written off the callback's path
        self._unwritten: list[str] = []  # event ids to remember in the next batch

    @staticmethod
    def _key(event_id: str) -> str:
        return f"wxbot:gateway:seen:{event_id}"

    async def seen(self, event_id: str) -> bool:
        """True when the event was published before; Redis trouble answers False (JetStream still dedupes)."""
        try:
            return bool(await self._redis.exists(self._key(event_id)))
        except RedisError as exc:
            self._log.warning("dedupe_unavailable", error=repr(exc))
            return False

    async def remember(self, event_id: str) -> None:
        await self._remember_all([event_id])

    async def publish_once(self, event: Message, publisher: EventPublisher, created_at: int) -> PubAck | None:
        """Publish `event` unless its id was published before (then None, or an ack marked
        `duplicate` within the window), and remember it after.

        A failed publish raises `TransientError` and is not remembered: the callback is answered
        with a 5xx and WeCom's retry publishes it.
        """
        event_id = meta_of(event).event_id
        fresh = within_log_window(created_at)
        if not fresh and await self.seen(event_id):
            return None
        ack = await publisher.publish(event)
        if fresh:
            self._unwritten.append(event_id)
            if len(self._unwritten) == 1:
                asyncio.get_running_loop().call_soon(self._write_batch)
        else:
            await self.remember(event_id)
        return ack

    def _write_batch(self) -> None:
        event_ids, self._unwritten = self._unwritten, []
        if not event_ids:
            return  # written already by `flush`
        task = asyncio.get_running_loop().create_task(self._remember_all(event_ids))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _remember_all(self, event_ids: list[str]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event_id in event_ids:
                    pipe.set(self._key(event_id), "1", ex=self._ttl_s)
                await pipe.execute()
        except RedisError as exc:
            self._log.warning("dedupe_unavailable", error=repr(exc), records=len(event_ids))

    async def flush(self) -> None:
        """Wait for the records still being written (at shutdown)."""
        if self._unwritten:
            self._write_batch()
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=2.0)
