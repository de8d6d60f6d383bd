"""Per-user fixed-window counters in Redis, shared by every safety replica.

One script increments the minute and the day counter together, so two replicas can never both
let the 21st message of a minute through. Windows are aligned to UTC (minute, day).

A message is counted once however often it is delivered: the script remembers the counts it gave
each message (by event id) and gives the same ones again. Counting a redelivery again could turn
the second delivery of an accepted message into a blocked one — two outcomes, an answer and a
notice, for one message.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from wxbot_common.redis_scripts import BatchedScripts

_HIT = """
local seen = redis.call('GET', KEYS[3])
if seen then
  local sep = string.find(seen, ':', 1, true)
  return {tonumber(string.sub(seen, 1, sep - 1)), tonumber(string.sub(seen, sep + 1))}
end
local m = redis.call('INCR', KEYS[1])
if m == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local d = redis.call('INCR', KEYS[2])
if d == 1 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
redis.call('SET', KEYS[3], m .. ':' .. d, 'EX', ARGV[3])
return {m, d}
"""
COUNTED_TTL_S = 900  # how long a message's counts are remembered: beyond its last redelivery (minutes)


class RateCounter:
    def __init__(self, redis: Redis, *, scripts: BatchedScripts | None = None) -> None:
        self._hit = (scripts or BatchedScripts(redis)).register_script(_HIT)  # a busy turn's counts: one round trip

    async def hit(self, user_key: str, event_id: str, now: float | None = None) -> tuple[int, int]:
        """Count the message `event_id` (once, however often asked); the user's counts in its minute
        and day, this message included."""
        t = int(time.time() if now is None else now)
        base = f"wxbot:rate:{{{user_key}}}"  # one hash tag: one Redis Cluster slot per user
        keys = [f"{base}:m:{t // 60}", f"{base}:d:{t // 86400}", f"{base}:ev:{event_id}"]
        minute, day = await self._hit(keys=keys, args=[65, 86400 + 60, COUNTED_TTL_S])
        return int(minute), int(day)
