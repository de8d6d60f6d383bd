"""NATS connection that never gives up reconnecting, and retries its first connect."""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.aio.client import Client
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from wxbot_common.logs import get_logger
from wxbot_common.settings import CommonSettings


class CoalescingClient(Client):
    """nats-py's client whose flusher lets one more turn of the event loop run before it writes.

    nats-py writes the pending commands as soon as its flusher task runs, i.e. at the end of the
    loop turn in which the first publish or ack was made. Under load the next turn brings the
    socket reads that were ready meanwhile and the handlers they wake, whose acks and publishes
    then share that one write. A write to a loopback socket is a syscall plus a wake-up of the
    server (each about as dear as a handler's Python work here), and the yield costs one pass of
    the loop, microseconds, so an idle process loses nothing. Measured with `bench --scenario
    fast` (docs/performance.md): nats-server reads per reply 7.6 → 4.3, the services' CPU per
    reply down by about a sixth. The body is nats-py 2.16's `_flusher` otherwise, which is why
    libs/wxbot-common pins nats-py to 2.16.x (re-check this method before raising the bound).
    """

    async def _flusher(self) -> None:
        assert self._transport and self._flush_queue
        while True:
            if not self.is_connected or self.is_connecting:
                break
            futures: list[asyncio.Future[Any]] = [await self._flush_queue.get()]
            try:
                await asyncio.sleep(0)
                while not self._flush_queue.empty():
                    futures.append(self._flush_queue.get_nowait())
                if self._pending_data_size > 0:
                    self._transport.writelines(self._pending[:])
                    self._pending = []
                    self._pending_data_size = 0
                    await self._transport.drain()  # type: ignore[no-untyped-call]
            except OSError as e:
                await self._error_cb(e)
                await self._process_op_err(e)
                break
            except (asyncio.CancelledError, RuntimeError, AttributeError):
                break
            finally:
                for f in futures:
                    if not f.done():
                        f.set_result(None)


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
            nc: Client = CoalescingClient()
            await nc.connect(
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
