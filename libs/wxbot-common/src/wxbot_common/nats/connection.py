"""NATS connection that never gives up reconnecting, and retries its first connect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import NO_RESPONDERS_STATUS, Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import PubAck
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from wxbot_common.logs import get_logger
from wxbot_common.settings import CommonSettings

FLUSH_TURNS = 2  # event-loop turns the flusher lets run before it writes what they queued


def _expire(future: asyncio.Future[Msg]) -> None:
    if not future.done():
        future.set_exception(nats.errors.TimeoutError())


class CoalescingClient(Client):
    """nats-py's client, leaner on the paths every event takes.

    **Writes.** The flusher lets `FLUSH_TURNS` more turns of the event loop run before it writes.

    nats-py writes the pending commands as soon as its flusher task runs, i.e. at the end of the
    loop turn in which the first publish or ack was made. Under load the next turn brings the
    socket reads that were ready meanwhile and the handlers they wake, whose acks and publishes
    then share that one write. A write to a loopback socket is a syscall plus a wake-up of the
    server (each about as dear as a handler's Python work here), and the yield costs one pass of
    the loop, microseconds, so an idle process loses nothing. Measured with `bench --scenario
    fast` (docs/performance.md): nats-server reads per reply 7.6 → 4.3, the services' CPU per
    reply down by about a sixth. A second turn gathers the handlers the first one woke (a
    PubAck wakes the handler that acks its input): `burst` service CPU per reply 5.3–5.5 →
    4.2–5.0 ms in six of six interleaved pairs, throughput up 4 %. The body is nats-py 2.16's
    `_flusher` otherwise, which is why libs/wxbot-common pins nats-py to 2.16.x (re-check these
    methods before raising the bound).

    **Reads.** nats-py hands each message of a subscription to a queue, which a task of the
    subscription drains, awaiting the callback: a queue hand-off and a task switch per message.
    `subscribe_direct` subscriptions skip both: their plain-function handler runs as the message
    is parsed. The consume loop's inbox and the PubAcks of `publish_acked` use it.

    **JetStream publish.** `js.publish` is a request: a random token (a `getrandom` syscall), a
    future with two callbacks, `asyncio.wait_for`, and a PubAck built field by field through
    `dataclasses.fields`. `publish_acked` does the same exchange with a counter for the token, a
    timer handle for the timeout and the PubAck's fields read directly; same errors.
    """

    def __init__(self) -> None:
        super().__init__()
        self._direct: dict[int, Callable[[Msg], None]] = {}
        self._acks: dict[str, asyncio.Future[Msg]] = {}
        self._ack_prefix = ""
        self._ack_count = 0
        self._ack_lock = asyncio.Lock()

    async def subscribe_direct(self, subject: str, handler: Callable[[Msg], None]) -> Subscription:
        """Subscribe with `handler` called for each message as it is read (it must not block;
        what it raises goes to the error callback, the connection carries on)."""

        async def queued(msg: Msg) -> None:  # the subscription's queue task: nothing reaches it
            handler(msg)

        sub = await self.subscribe(subject, cb=queued)
        self._direct[sub._id] = handler
        return sub

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        handler = self._direct.get(sid)
        if handler is None or sid not in self._subs:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        hdr = await self._process_headers(headers) if headers else None
        try:
            handler(self._build_message(sid, subject, reply, data, hdr))
        except Exception as exc:  # a handler's bug must not end the read loop (and the connection)
            await self._error_cb(exc)

    async def publish_acked(self, subject: str, payload: bytes, headers: dict[str, str], timeout_s: float) -> PubAck:
        """Publish to a JetStream stream and wait for its PubAck, as `js.publish` does."""
        if not self._ack_prefix:
            async with self._ack_lock:
                if not self._ack_prefix:
                    prefix = f"{self._inbox_prefix.decode()}.{self._nuid.next().decode()}."
                    await self.subscribe_direct(prefix + "*", self._on_pub_ack)
                    self._ack_prefix = prefix
        self._ack_count += 1
        token = str(self._ack_count)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Msg] = loop.create_future()
        self._acks[token] = future
        timer = loop.call_later(timeout_s, _expire, future)
        try:
            await self.publish(subject, payload, reply=self._ack_prefix + token, headers=headers)
            reply = await future
        finally:
            timer.cancel()
            self._acks.pop(token, None)
        if reply.headers and reply.headers.get("Status") == NO_RESPONDERS_STATUS:
            raise nats.js.errors.NoStreamResponseError
        resp = json.loads(reply.data)
        if "error" in resp:
            raise nats.js.errors.APIError.from_error(resp["error"])
        return PubAck(
            stream=resp["stream"], seq=resp["seq"], domain=resp.get("domain"), duplicate=resp.get("duplicate")
        )

    def _on_pub_ack(self, msg: Msg) -> None:
        future = self._acks.get(msg.subject[len(self._ack_prefix) :])
        if future is not None and not future.done():
            future.set_result(msg)

    async def _flusher(self) -> None:
        assert self._transport and self._flush_queue
        while True:
            if not self.is_connected or self.is_connecting:
                break
            futures: list[asyncio.Future[Any]] = [await self._flush_queue.get()]
            try:
                for _ in range(FLUSH_TURNS):
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


async def connect_nats(
    settings: CommonSettings, name: str, first_connect_timeout_s: float = 60.0, echo: bool = True
) -> Client:
    """Connect with unlimited reconnects (the client default gives up after ~2 minutes).

    `echo=False`: the server keeps what this connection publishes from its own subscriptions
    (JetStream deliveries come from the server and are not affected)."""
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
                no_echo=not echo,
            )
            return nc
    raise RuntimeError("unreachable")
