"""Per-user fixed-window counters in Redis, shared by every safety replica."""

from __future__ import annotations

import time

from redis.asyncio import Redis

_INCR = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


class RateCounter:
    """Counts a user's messages in the current minute atomically (INCR + EXPIRE in one script)."""

    def __init__(self, redis: Redis) -> None:
        self._incr = redis.register_script(_INCR)

    async def hit(self, user_key: str, window_s: int = 60) -> int:
        window = int(time.time()) // window_s
        return int(await self._incr(keys=[f"wxbot:rate:{user_key}:{window_s}:{window}"], args=[window_s + 5]))
