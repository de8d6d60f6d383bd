"""NATS connection that never gives up reconnecting, and retries its first connect."""

from __future__ import annotations

import nats
from nats.aio.client import Client
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from wxbot_common.logs import get_logger
from wxbot_common.settings import CommonSettings


async def connect_nats(settings: CommonSettings, name: str, first_connect_timeout_s: float = 60.0) -> Client:
    """Connect with unlimited reconnects (the client default gives up after ~2 minutes)."""
    log = get_logger("wxbot.nats")

    async def on_error(exc: Exception) -> None:
        log.warning("nats_error", error=str(exc))

    async def on_disconnected() -> None:
        log.warning("nats_disconnected")

    async def on_reconnected() -> None:
        log.info("nats_reconnected")

    async for attempt in AsyncRetrying(
        stop=stop_after_delay(first_connect_timeout_s),
        wait=wait_exponential(multiplier=0.2, max=3),
        retry=retry_if_exception_type((OSError, nats.errors.NoServersError, TimeoutError)),
        reraise=True,
    ):
        with attempt:
            nc: Client = await nats.connect(
                servers=settings.nats_servers,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=1,
                connect_timeout=2,
                allow_reconnect=True,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
            return nc
    raise RuntimeError("unreachable")
