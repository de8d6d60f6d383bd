"""The Redis client every service uses.

`driver_info=None`: a new connection skips `CLIENT SETINFO` (a round trip) and redis-py's reading
of its own package metadata (an e-mail-header parse) — both paid for each connection the pool
opens, and a burst of concurrent commands opens dozens at once.

The pool waits for a free connection instead of failing: redis-py's default pool raises
`MaxConnectionsError` once 100 commands are in flight, which a backlog after a crash reaches at
once (hundreds of GetHistory calls woken together), turning a slow moment into a storm of
failed handlers and retries that never caught up (found by `make chaos`).
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

MAX_CONNECTIONS = 256  # per client (process); Redis itself accepts 10 000 clients
POOL_WAIT_S = 10.0  # how long a command waits for a connection before it fails


def create_redis(url: str, *, socket_timeout_s: float | None = None, max_connections: int = MAX_CONNECTIONS) -> Redis:
    """A client on `url` (REDIS_URL); commands in flight at once each get a pooled connection, up to
    `max_connections`; more wait (up to POOL_WAIT_S) for one to be free."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=2.0,
        driver_info=None,
    )
    return Redis.from_pool(pool)
