"""Each part of a reply is sent once: a claim per part in Redis, taken before the send and
turned into a record of the send after it.

`sending:<token>` (expires after `sending_ttl_s`, longer than a send may take) marks a part being
sent; `sent:<provider msgid>` (kept a day) marks it sent. A redelivered reply skips the parts
marked sent. A part left `sending` by a delivery that died mid-send is sent again once that claim
expires: a crash can at most send a part twice (when it comes after the provider accepted the
part and before the record was written, a window of a Redis round trip), never lose it. A part
another live delivery is sending is waited for, not sent alongside.

A record that cannot be written (Redis restarting) is retried until the `sending` claim would
expire, so a Redis restart sends nothing twice.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from wxbot_common.errors import TransientError
from wxbot_common.logs import get_logger
from wxbot_common.outbox import SideWrite

SENT_TTL_S = 24 * 3600
SENDING_MARGIN_S = 5.0  # a `sending` claim outlives the send's own timeout by this much
LEGACY_SENT = "1"  # the claim value before sends were recorded: taken before the send, so "sent"
POLL_S = 0.2
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PartClaims:
    def __init__(self, redis: Redis, sending_ttl_s: float) -> None:
        self._redis = redis
        self._sending_ttl_s = sending_ttl_s
        # The longest a claimed part may take to send; past it the claim could lapse under the send.
        self.send_budget_s = max(0.1, sending_ttl_s - SENDING_MARGIN_S)
        self._release = redis.register_script(_RELEASE)
        self._log = get_logger("wxbot.gateway.claims")

    @staticmethod
    def key(event_id: str, part: int) -> str:
        return f"wxbot:gateway:delivery:{event_id}:{part}"

    def new_claim(self, key: str) -> SideWrite:
        """A claim to take in another round trip (the outbox's: entering and claiming at once)."""
        return SideWrite(key, f"sending:{secrets.token_hex(8)}", self._sending_ttl_s)

    async def claim(self, key: str) -> str | None:
        """The token to send the part under, or None if it was sent already (its msgid in `sent_id`).

        Waits while another delivery holds the part (`sending`); raises TransientError if that
        claim outlives its TTL by more than a poll (Redis clock trouble), so the caller retries.
        """
        token = f"sending:{secrets.token_hex(8)}"
        deadline = time.monotonic() + self._sending_ttl_s + 2 * POLL_S
        while True:
            if await self._redis.set(key, token, nx=True, px=int(self._sending_ttl_s * 1000)):
                return token
            value = await self._redis.get(key)
            if value is not None and not _text(value).startswith("sending:"):
                return None
            if time.monotonic() > deadline:
                raise TransientError("a part is claimed by a delivery that neither sent it nor let go", delay_s=1.0)
            if value is not None:
                await asyncio.sleep(POLL_S)  # another delivery is sending it, or died doing so

    async def sent_id(self, key: str) -> str:
        """The provider msgid recorded for a sent part ("" when not recorded)."""
        value = _text(await self._redis.get(key) or b"")
        return value.removeprefix("sent:") if value.startswith("sent:") else ""

    async def release(self, key: str, token: str) -> None:
        """The send failed: let a retry take the part (only if the claim is still ours)."""
        await self._release(keys=[key], args=[token])

    async def record(self, key: str, msgid: str, write: Callable[[SideWrite], Awaitable[None]] | None = None) -> None:
        """The part was sent: remember it for a day (with `write`: in another round trip, the
        outbox's leaving). Retried while Redis is away, for as long as the `sending` claim keeps
        other deliveries off the part."""
        deadline = time.monotonic() + self._sending_ttl_s
        delay = 0.05
        side = SideWrite(key, f"sent:{msgid}", SENT_TTL_S)
        while True:
            try:
                if write is None:
                    await self._redis.set(key, side.value, ex=SENT_TTL_S)
                else:
                    await write(side)
                return
            except (RedisError, OSError) as exc:
                if time.monotonic() + delay > deadline:
                    self._log.error("send_not_recorded", error=repr(exc), hint="a redelivery may send it again")
                    raise
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
