"""One projecting replica at a time: a Redis lease, and the watermark the leader announces.

Before this, every context replica read the whole log and repeated every Redis write: a second
replica doubled the projection's cost and added no capacity. Now the replica holding the lease
projects, and all of them answer GetHistory from the same Redis state. After each batch the
leader announces on core NATS how far it has applied and which conversations it touched, which
is what a follower needs for read-your-writes and for its order waits.

Safety does not depend on the lease: the store applies each event once by its sequence, so two
replicas projecting at once (a leader that has not noticed it lost the lease) write nothing
twice. An announcement is at-most-once, so a follower with readers waiting also reads the
applied position from Redis now and then. A replica that stops releases the lease; one that dies
holds it until it expires, unless it comes back under the same replica id (a restarted pod)
and takes it straight back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError

from wxbot_common.logs import get_logger
from wxbot_context.projection import Watermark
from wxbot_context.store import ContextStore

LEASE_KEY = "wxbot:ctx:projector"
APPLIED_SUBJECT = "wxbot.ctx.applied"  # core NATS, outside the event stream's subjects

# Take the lease if it is free or already ours (a restarted replica); keep it only while ours.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def encode_applied(seq: int, ckeys: list[str]) -> bytes:
    return json.dumps({"seq": seq, "c": ckeys}, separators=(",", ":")).encode()


def decode_applied(data: bytes) -> tuple[int, list[str]]:
    """(sequence, touched conversation keys); ValueError on anything else."""
    body = json.loads(data)
    if not isinstance(body, dict) or not isinstance(body.get("seq"), int) or not isinstance(body.get("c"), list):
        raise ValueError("not an applied announcement")
    return body["seq"], [str(c) for c in body["c"]]


class Announcer:
    """The leader's side: tells the followers what a batch applied (fire and forget)."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc

    async def __call__(self, seq: int, ckeys: list[str]) -> None:
        with contextlib.suppress(Exception):  # a lost announcement costs a follower one Redis read
            await self._nc.publish(APPLIED_SUBJECT, encode_applied(seq, ckeys))


class ProjectionLease:
    """Runs `start_projecting` while this replica holds the lease and `stop_projecting` when it
    loses it; follows the leader's announcements all the time."""

    def __init__(
        self,
        redis: Redis,
        nc: Client,
        store: ContextStore,
        watermark: Watermark,
        replica_id: str,
        start_projecting: Callable[[], Awaitable[None]],
        stop_projecting: Callable[[], Awaitable[None]],
        registry: CollectorRegistry,
        ttl_s: float = 5.0,
    ) -> None:
        self._redis = redis
        self._nc = nc
        self._store = store
        self._watermark = watermark
        self._id = replica_id
        self._start = start_projecting
        self._stop = stop_projecting
        self._ttl_ms = int(ttl_s * 1000)
        self._renew_s = ttl_s / 3
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self.leading = False
        self._leader_gauge = Gauge(
            "wxbot_context_projection_leader", "1 while this replica holds the projection lease", registry=registry
        )
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._sub: object | None = None
        self._log = get_logger("wxbot.context.lease").bind(replica=replica_id)

    async def start(self) -> None:
        """Subscribe to announcements, then try for the lease once before serving."""
        self._sub = await self._nc.subscribe(APPLIED_SUBJECT, cb=self._on_applied)
        self._watermark.advance(await self._store.position(), None)
        await self._try_lead()
        self._tasks = [
            asyncio.create_task(self._hold(), name="projection-lease"),
            asyncio.create_task(self._catch_up(), name="projection-catch-up"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()  # type: ignore[attr-defined]
        if self.leading:
            await self._stop()
            with contextlib.suppress(RedisError, OSError):
                await self._release(keys=[LEASE_KEY], args=[self._id])  # the next replica need not wait
            self._set_leading(False)

    def _set_leading(self, leading: bool) -> None:
        self.leading = leading
        self._leader_gauge.set(1 if leading else 0)

    async def _try_lead(self) -> None:
        try:
            held = bool(await self._acquire(keys=[LEASE_KEY], args=[self._id, self._ttl_ms]))
        except (RedisError, OSError) as exc:
            self._log.warning("lease_unavailable", error=repr(exc))
            held = False
        if held and not self.leading:
            self._log.info("projection_lease_taken")
            await self._start()
            self._set_leading(True)
        elif not held and self.leading:
            self._log.warning("projection_lease_lost")
            self._set_leading(False)
            await self._stop()

    async def _hold(self) -> None:
        """Renew (leader) or bid (follower) every third of the lease's life."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._renew_s)
            if not self._stopping.is_set():
                await self._try_lead()

    async def _on_applied(self, msg: Msg) -> None:
        try:
            seq, ckeys = decode_applied(msg.data)
        except ValueError:
            return
        for ckey in ckeys:
            self._watermark.advance(seq, ckey)
        self._watermark.advance(seq, None)

    async def _catch_up(self, every_s: float = 0.2) -> None:
        """A follower whose readers wait reads the position itself (announcements can be lost)."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):  # a leader only looks again after its next renewal
                await asyncio.wait_for(self._stopping.wait(), self._renew_s if self.leading else every_s)
            if self.leading or not self._watermark.has_waiters():
                continue
            with contextlib.suppress(RedisError, OSError):
                position = await self._store.position()
                if position > self._watermark.applied:
                    self._watermark.advance(position, None)
                    self._watermark.touch_all()
