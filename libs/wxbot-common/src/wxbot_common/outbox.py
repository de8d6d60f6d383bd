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
covers events published by anything else. A reply that left is remembered as done (the latest
`DONE_KEPT` of each conversation) and never queued again: a publisher or a delivery that runs a
second time — NATS lost an acknowledgement when it restarted — would otherwise queue a reply that
nobody will take out again, and hold its conversation up. Should such an entry appear anyway (a
bug, an event lost), it is dropped once it has been first for `STALE_S`, logged as an error.

A reply whose removal Redis lost (a crash of the machine loses the last second of writes under
`appendfsync everysec`) would hold its conversation up until then. So a waiter that finds the
same reply first for `CHECK_AFTER_S` asks the gateway's `Resolver` whether the event log already
records it as sent or given up, and if so takes it out itself (logged as a warning).

Waiting costs nothing in the normal case (the predecessor left long ago). A waiter is woken when
a reply of its conversation leaves, on any replica (a core NATS message, outside the event log),
and looks again every `poll_s` besides, in case such a message was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.aio.msg import Msg
from redis.asyncio import Redis

from wxbot_common.ids import conversation_key
from wxbot_common.logs import get_logger
from wxbot_common.redis_scripts import BatchedScripts

LEFT_SUBJECT = "wxbot.outbox.left"  # core NATS, outside the event stream's subjects
OUTBOX_TTL_S = 24 * 3600


DONE_KEPT = 100  # per conversation: the replies most recently sent or given up, never queued again
# A reply first in its queue for this long is dropped from it: well beyond a delivery's whole
# budget (six deliveries of up to a minute each, and the backoffs between: ~7 minutes), so only an
# entry nobody will take out (a bug, a lost event) gets there, and its conversation moves on.
STALE_S = 15 * 60
# A reply first for this long is looked up in the event log (see `Resolver`): far longer than a
# send takes, short enough that a conversation held up by a lost removal moves on in seconds.
CHECK_AFTER_S = 5.0

# KEYS: the queue, the done set, the times of entry[, a claim]. ARGV: position, event id, ttl, now[,
# claim value, claim ms]. A reply already done (a publisher or a delivery run again, e.g. after NATS
# lost an acknowledgement) is not queued again: {-1}. Otherwise queue it (NX: queued again, it keeps
# its place and its time) and say whether it is first: {1} or {0}. With a claim (the sender's claim
# on the reply's first part, taken in the same round trip when the reply is first): {1, 1} when it
# was taken, {1, 0} when someone holds it.
_ENTER = """
if redis.call('ZSCORE', KEYS[2], ARGV[2]) then return {-1} end
redis.call('ZADD', KEYS[1], 'NX', ARGV[1], ARGV[2])
redis.call('HSETNX', KEYS[3], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
if redis.call('ZRANGE', KEYS[1], 0, 0)[1] ~= ARGV[2] then return {0} end
if not KEYS[4] then return {1} end
if redis.call('SET', KEYS[4], ARGV[5], 'NX', 'PX', ARGV[6]) then return {1, 1} end
return {1, 0}
"""
# Take a reply out and remember it as done; how many are still queued (someone to wake, or nobody).
# With a record (KEYS[4], ARGV[5], ARGV[6] s): written first, in the same round trip (the sender's
# record of the reply's last part).
_LEAVE = """
if KEYS[4] then redis.call('SET', KEYS[4], ARGV[5], 'EX', ARGV[6]) end
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[4]) - 1)
redis.call('EXPIRE', KEYS[2], ARGV[3])
return redis.call('ZCARD', KEYS[1])
"""

# Is the reply ARGV[1] first ({1}), behind another ({0, first's id, its position, seconds it has
# been first}), or was the first one stale and dropped ({2})? ARGV: event id, now, stale after. An
# entry without a time gets one now.
_FIRST = """
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if not first[1] or first[1] == ARGV[1] then return {1} end
local at = tonumber(redis.call('HGET', KEYS[2], first[1]))
if not at then
  redis.call('HSET', KEYS[2], first[1], ARGV[2])
  return {0, first[1], first[2], '0'}
end
local age = tonumber(ARGV[2]) - at
if age > tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[1], first[1])
  redis.call('HDEL', KEYS[2], first[1])
  return {2}
end
return {0, first[1], first[2], tostring(age)}
"""

# Does the event log record the reply (conversation id, event id, position) as sent or given up?
Resolver = Callable[[str, str, int], Awaitable[bool]]


class Turn(enum.Enum):
    FIRST = 1  # no earlier reply queued: send it now
    WAIT = 0  # an earlier reply is still queued
    DONE = -1  # already sent or given up: nothing to do


@dataclass(frozen=True)
class SideWrite:
    """A key the caller writes in the same round trip as entering (a claim, set only if absent and
    only when the reply is first) or leaving (a record)."""

    key: str
    value: str
    ttl_s: float


@dataclass
class _Watch:
    """The waiters of one conversation in this process: woken together when a reply leaves."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0


class Outbox:
    """`enter` only needs Redis (the publishing stage); `wait_turn` and `leave` wake waiters on every
    replica through `nc` (the gateway)."""

    def __init__(
        self,
        redis: Redis,
        nc: Client | None = None,
        poll_s: float = 1.0,
        stale_s: float = STALE_S,
        resolver: Resolver | None = None,
        check_after_s: float = CHECK_AFTER_S,
        scripts: BatchedScripts | None = None,
    ) -> None:
        self._redis = redis
        self._stale_s = stale_s
        self._resolver = resolver
        self._check_after_s = check_after_s
        self._nc = nc
        self._poll_s = poll_s
        self._watches: dict[str, _Watch] = {}
        self._sub: object | None = None
        scripts = scripts or BatchedScripts(redis)  # a busy turn's enters and leaves: one round trip
        self._enter = scripts.register_script(_ENTER)
        self._leave = scripts.register_script(_LEAVE)
        self._first = scripts.register_script(_FIRST)
        self._log = get_logger("wxbot.outbox")

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

    async def enter(self, conversation_id: str, position: int, event_id: str) -> Turn:
        """Queue a reply to the message at stream sequence `position` (idempotent: a reply queued
        again keeps its place; one already done is not queued again)."""
        turn, _ = await self.enter_claiming(conversation_id, position, event_id, None)
        return turn

    async def enter_claiming(
        self, conversation_id: str, position: int, event_id: str, claim: SideWrite | None
    ) -> tuple[Turn, bool]:
        """`enter`, and when the reply is first also take `claim` if nobody holds it: whether it was
        taken (False when not first, done, or held by someone else)."""
        key = self._key(conversation_key(conversation_id))
        keys = [key, f"{key}:done", f"{key}:at"]
        args: list[str | int | float] = [position, event_id, OUTBOX_TTL_S, time.time()]
        if claim is not None:
            keys.append(claim.key)
            args += [claim.value, int(claim.ttl_s * 1000)]
        result = await self._enter(keys=keys, args=args)
        return Turn(int(result[0])), len(result) > 1 and int(result[1]) == 1

    async def leave(self, conversation_id: str, position: int, event_id: str, record: SideWrite | None = None) -> None:
        """The reply was sent or given up: the next one of the conversation may go. `record` is
        written first, in the same round trip."""
        ckey = conversation_key(conversation_id)
        key = self._key(ckey)
        keys = [key, f"{key}:done", f"{key}:at"]
        args: list[str | int | float] = [position, event_id, OUTBOX_TTL_S, DONE_KEPT]
        if record is not None:
            keys.append(record.key)
            args += [record.value, max(1, int(record.ttl_s))]
        behind = await self._leave(keys=keys, args=args)
        if not behind:
            return  # nobody queued behind it: nobody to wake
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
        checked: set[bytes] = set()  # firsts the log did not know as done: asked once per wait
        with self._watch(ckey) as watch:
            while True:
                event = watch.event  # taken before reading, so a wake-up in between is not missed
                turn = await self._first(keys=[key, f"{key}:at"], args=[event_id, time.time(), self._stale_s])
                if turn[0] == 1:
                    return True
                if turn[0] == 2:
                    self._log.error("outbox_stale_entry_dropped", conversation=ckey, stale_after_s=self._stale_s)
                    continue
                first, position, age = turn[1], int(float(turn[2])), float(turn[3])
                if age >= self._check_after_s and first not in checked:
                    checked.add(first)
                    if await self._heal(conversation_id, first.decode(), position):
                        continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), min(remaining, self._poll_s))

    async def _heal(self, conversation_id: str, event_id: str, position: int) -> bool:
        """Take out a first reply the event log records as done (its removal was lost)."""
        if self._resolver is None:
            return False
        try:
            done = await self._resolver(conversation_id, event_id, position)
        except Exception as exc:  # the log unreachable: the waiter simply goes on waiting
            self._log.warning("outbox_check_failed", error=repr(exc))
            return False
        if done:
            self._log.warning("outbox_entry_healed", conversation=conversation_key(conversation_id), position=position)
            await self.leave(conversation_id, position, event_id)
        return done

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
