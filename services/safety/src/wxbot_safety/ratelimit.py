"""Per-user fixed-window counters in Redis, shared by every safety replica.

One script increments the minute and the day counter together, so two replicas can never both
let the 21st message of a minute through. Windows are aligned to UTC (minute, day).
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

_HIT = """
local m = redis.call('INCR', KEYS[1])
if m == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local d = redis.call('INCR', KEYS[2])
if d == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return {m, d}
"""


class RateCounter:
    def __init__(self, redis: Redis) -> None:
        self._hit = redis.register_script(_HIT)

    async def hit(self, user_key: str, now: float | None = None) -> tuple[int, int]:
        """Count one message; the user's counts in the current minute and day, this one included."""
        t = int(time.time() if now is None else now)
        keys = [f"wxbot:rate:{{{user_key}}}:m:{t // 60}", f"wxbot:rate:{{{user_key}}}:d:{t // 86400}"]
        minute, day = await self._hit(keys=keys, args=[65, 86400 + 60])
        return int(minute), int(day)
