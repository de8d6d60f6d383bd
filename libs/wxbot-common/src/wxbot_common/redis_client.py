"""The Redis client every service uses.

`driver_info=None`: a new connection skips `CLIENT SETINFO` (a round trip) and redis-py's reading
of its own package metadata (an e-mail-header parse) — both paid for each connection the pool
opens, and a burst of concurrent commands opens dozens at once. Maintenance notifications are
off: redis-py 8 asks for them (`CLIENT MAINT_NOTIFICATIONS`, a Redis Enterprise feature) on
every new connection, and open-source Redis answers each with an error.

At most 16 connections per process: Redis runs one command at a time, so more connections add
no throughput, only connects — a `burst` opened 640 of them (three round trips each) in its
measured window with 256 allowed, 195 with 64, 51 with 16 (commands beyond wait their turn in the
pool below); `burst` 147.8 against 140.7 replies/s with 16 against 64 (4 interleaved pairs).

The pool waits for a free connection instead of failing: redis-py's default pool raises
`MaxConnectionsError` once 100 commands are in flight, which a backlog after a crash reaches at
once (hundreds of GetHistory calls woken together), turning a slow moment into a storm of
failed handlers and retries that never caught up (found by `make chaos`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.maint_notifications import MaintNotificationsConfig

MAX_CONNECTIONS = 16  # per client (process); Redis itself accepts 10 000 clients
POOL_WAIT_S = 10.0  # how long a command waits for a connection before it fails


class WaitingPool(ConnectionPool):
    """A pool that waits (up to `timeout` s) for a connection when all are in use, and costs
    little when one is free — which is nearly always.

    redis-py's `BlockingConnectionPool` takes an `asyncio.Condition`, an `async_timeout` and the
    pool lock around every command, and both of redis-py's pools record connection metrics (no-ops
    unless redis-py's own observability is set up) and dispatch a release event after it. That is
    about half of a GET's client-side CPU: `python -m bench.redis_pool` on the reference box,
    83 against 143 µs per command one at a time, 27 against 57 µs with 20 in flight.
    Waiters queue in order and are woken one per released connection.
    A connection handed out is checked as redis-py checks it (connected, nothing unread left by an
    interrupted command). It uses redis-py 8.1's pool internals (`get_available_connection`,
    `can_get_connection`, `_in_use_connections`), so libs/wxbot-common pins redis to 8.1.x.
    """

    def __init__(self, *, timeout: float = POOL_WAIT_S, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._wait_s = timeout
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> AbstractConnection:
        if self._waiters or not self.can_get_connection():
            await self._wait_for_room()
        connection: AbstractConnection = self.get_available_connection()  # type: ignore[no-untyped-call]
        try:
            if not connection.is_connected:
                await connection.connect()  # type: ignore[no-untyped-call]
            elif await connection.can_read():  # a reply left unread: start afresh
                await connection.disconnect()
                await connection.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def _wait_for_room(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while self._waiters or not self.can_get_connection():
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except BaseException as exc:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken just as the deadline passed or the caller was cancelled: pass it on
                if isinstance(exc, TimeoutError):
                    raise RedisConnectionError("No connection available.") from None
                raise
            finally:
                if not waiter.done():
                    waiter.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            if self.can_get_connection():
                return

    async def release(self, connection: AbstractConnection) -> None:
        self._in_use_connections.discard(connection)
        if connection.should_reconnect():  # type: ignore[no-untyped-call]
            await connection.disconnect()
        self._available_connections.append(connection)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break


def create_redis(url: str, *, socket_timeout_s: float | None = None, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A client on `url` (REDIS_URL); commands in flight at once each get a pooled connection, up to
    `max_connections`; more wait (up to POOL_WAIT_S) for one to be free."""
    pool = WaitingPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=2.0,
        driver_info=None,
        maint_notifications_config=MaintNotificationsConfig(enabled=False),
    )
    return Redis.from_pool(pool)
