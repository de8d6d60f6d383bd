"""The order of a conversation's replies across gateway replicas, retries and crashes.

Replies to one conversation are approved in order (context lets nlp answer message n+1 only once
n's reply is approved), but sends can still be reordered: a send of reply n that fails and is
retried later (WeCom unreachable, Redis or NATS restarting), or a gateway replica that dies holding
it, would let reply n+1 go first. So each reply is queued in its conversation's outbox — a Redis
sorted set scored by the stream sequence of the message it answers — and a gateway sends a reply
only when it is the first one queued, and takes it out once it was sent or given up.

The stage that publishes a deliverable event (safety: approved and blocked replies, notices)
queues it just before publishing it, so it is queued before any gateway can receive it: a gateway
that dies the instant it got reply n still leaves n in the outbox, and n+1 waits for n's
redelivery. The gateway queues each reply again when it starts delivering it (idempotent), which
covers events published by anything else.

Waiting costs nothing in the normal case (the predecessor left long ago). A waiter is woken when
a reply of its conversation leaves, on any replica (a core NATS message, outside the event log),
and looks again every `poll_s` besides, in case such a message was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from redis.asyncio import Redis

from wxbot_common.ids import conversation_key

LEFT_SUBJECT = "wxbot.outbox.left"  # core NATS, outside the event stream's subjects
OUTBOX_TTL_S = 24 * 3600


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class _Watch:
    """The waiters of one conversation in this process: woken together when a reply leaves."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0


class Outbox:
    """`enter` only needs Redis (the publishing stage); `wait_turn` and `leave` wake waiters on every
    replica through `nc` (the gateway)."""

    def __init__(self, redis: Redis, nc: Client | None = None, poll_s: float = 1.0) -> None:
        self._redis = redis
        self._nc = nc
        self._poll_s = poll_s
        self._watches: dict[str, _Watch] = {}
        self._sub: object | None = None

    async def start(self) -> None:
        if self._nc is not None:
            self._sub = await self._nc.subscribe(LEFT_SUBJECT, cb=self._on_left)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()  # type: ignore[attr-defined]

    @staticmethod
    def _key(ckey: str) -> str:
        return f"wxbot:outbox:{ckey}"

    async def enter(self, conversation_id: str, position: int, event_id: str) -> None:
        """Queue a reply to the message at stream sequence `position` (idempotent: a reply queued
        again keeps its place)."""
        key = self._key(conversation_key(conversation_id))
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {event_id: position}, nx=True)
            pipe.expire(key, OUTBOX_TTL_S)
            await pipe.execute()

    async def leave(self, conversation_id: str, event_id: str) -> None:
        """The reply was sent or given up: the next one of the conversation may go."""
        ckey = conversation_key(conversation_id)
        await self._redis.zrem(self._key(ckey), event_id)
        self._wake(ckey)
        if self._nc is not None:
            with contextlib.suppress(Exception):  # a lost wake-up costs the waiters one poll
                await self._nc.publish(LEFT_SUBJECT, ckey.encode())

    async def wait_turn(self, conversation_id: str, event_id: str, timeout_s: float) -> bool:
        """Wait until no earlier reply of the conversation is queued; False if that takes longer
        than `timeout_s` (an earlier reply still failing, or one whose replica died)."""
        ckey = conversation_key(conversation_id)
        key = self._key(ckey)
        deadline = time.monotonic() + timeout_s
        with self._watch(ckey) as watch:
            while True:
                event = watch.event  # taken before reading, so a wake-up in between is not missed
                first = await self._redis.zrange(key, 0, 0)
                if not first or _text(first[0]) == event_id:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, self._poll_s))

    @contextlib.contextmanager
    def _watch(self, ckey: str) -> Iterator[_Watch]:
        watch = self._watches.setdefault(ckey, _Watch())
        watch.waiters += 1
        try:
            yield watch
        finally:
            watch.waiters -= 1
            if watch.waiters == 0:
                del self._watches[ckey]

    def _wake(self, ckey: str) -> None:
        watch = self._watches.get(ckey)
        if watch is not None:
            watch.event.set()
            watch.event = asyncio.Event()  # the woken look again and wait on the new one

    async def _on_left(self, msg: Msg) -> None:
        self._wake(msg.data.decode(errors="replace"))
