"""The Redis client every service uses.

`driver_info=None`: a new connection skips `CLIENT SETINFO` (a round trip) and redis-py's reading
of its own package metadata (an e-mail-header parse) — both paid for each connection the pool
opens, and a burst of concurrent commands opens dozens at once.
"""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(url: str, *, socket_timeout_s: float | None = None) -> Redis:
    """A client on `url` (REDIS_URL); commands in flight at once each get a pooled connection."""
    return Redis.from_url(url, socket_timeout=socket_timeout_s, socket_connect_timeout=2.0, driver_info=None)
