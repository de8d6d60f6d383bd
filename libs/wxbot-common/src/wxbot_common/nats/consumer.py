"""The consume loop of a durable pull consumer, with the ack discipline in one place.

Outcomes: handler returns → ack (after the handler has awaited its publishes' PubAcks);
`TransientError` or an unexpected exception → `nak(delay)` with exponential backoff;
`PermanentError`, an undecodable message, or the last allowed delivery → dead-letter + `term()`.
Long handlers are kept alive with `in_progress()` every third of `ack_wait`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import nats.errors
from google.protobuf.message import Message
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wxbot_common.errors import PermanentError, TransientError
from wxbot_common.logs import get_logger
from wxbot_common.nats.connection import CoalescingClient
from wxbot_common.nats.propagation import extract_context
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import EVENTS_STREAM, EventKind
from wxbot_common.nats.topology import ConsumerSpec
from wxbot_common.spans import ActiveSpan

PULL_BATCH_MAX = 128  # messages asked for in one pull request
PULL_EXPIRES_NS = 30 * 1_000_000_000  # a pull request lives this long on the server
PULL_HEARTBEAT_S = 2.5  # the server says it is alive this often while a request waits
PULL_HEARTBEAT_NS = int(PULL_HEARTBEAT_S * 1_000_000_000)
STATUS_HEADER = "Status"
PENDING_MSGS_HEADER = "Nats-Pending-Messages"


@dataclass
class Delivery:
    """One decoded event handed to a handler, with its position in the log."""

    kind: EventKind
    event: Message
    stream_sequence: int
    num_delivered: int
    msg: Msg

    async def in_progress(self) -> None:
        with contextlib.suppress(Exception):
            await self.msg.in_progress()


Handler = Callable[[Delivery], Awaitable[None]]


class ConsumerMetrics:
    """Per-durable outcome counts and handling latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "wxbot_consumer_messages",
            "Messages settled by a consumer, by outcome (ack, nak, dead_letter)",
            ["durable", "kind", "outcome"],
            registry=registry,
        )
        self.redeliveries = Counter(
            "wxbot_consumer_redeliveries",
            "Messages received more than once",
            ["durable"],
            registry=registry,
        )
        self.pending = Gauge(
            "wxbot_consumer_pending",
            "Messages in the stream that the durable has not delivered yet (consumer lag)",
            ["durable"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "wxbot_consumer_in_flight",
            "Messages this process is handling right now (saturation: compare with its concurrency)",
            ["durable"],
            registry=registry,
        )
        self.ack_pending = Gauge(
            "wxbot_consumer_ack_pending",
            "Messages delivered to the durable and not yet acknowledged",
            ["durable"],
            registry=registry,
        )
        self.duration = Histogram(
            "wxbot_consumer_handle_seconds",
            "Time from receipt to settlement of one message",
            ["durable", "kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )


def backoff_delay(num_delivered: int, cap_s: float = 30.0) -> float:
    """1 s, 2 s, 4 s … capped: spreads retries of a failing dependency."""
    return float(min(cap_s, 2 ** max(0, num_delivered - 1)))


class ConsumerLoop:
    """Keeps pull requests open on one durable and runs up to `concurrency` handlers at once.

    Rather than `fetch()` per batch (a no-wait probe, a lingering request and an
    `asyncio.wait_for` per message), the loop keeps enough messages requested to fill its free
    handler slots, as the NATS clients' `consume()` does: each message arrives on a private inbox
    and starts its handler at once. Credits of a request that expires come back with its 408
    status; after a reconnect (the server, or at least our connection, forgot every open
    request) or when the server goes silent for two heartbeats, the loop asks again.
    """

    def __init__(
        self,
        nc: Client,
        spec: ConsumerSpec,
        handler: Handler,
        publisher: EventPublisher,
        tracer: trace.Tracer,
        metrics: ConsumerMetrics,
        concurrency: int = 256,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._spec = spec
        self._handler = handler
        self._publisher = publisher
        self._tracer = tracer
        self._metrics = metrics
        self._concurrency = concurrency
        self._inflight: dict[asyncio.Task[None], tuple[Msg, float]] = {}
        self._requested = 0  # messages asked for and neither delivered nor expired
        self._heard_at = 0.0  # monotonic time of the last message or status from the server
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._in_flight_gauge = metrics.in_flight.labels(spec.durable)
        self._log = get_logger("wxbot.consumer").bind(durable=spec.durable)
        # metric children per event kind, made on first use (labels() takes a lock and builds a key)
        self._acked: dict[str, Counter] = {}
        self._durations: dict[str, Histogram] = {}

    async def run(self) -> None:
        """Pull until `stop()`; the durable itself is created by the topology."""
        await self._js.consumer_info(EVENTS_STREAM, self._spec.durable)  # fail fast if it is missing
        inbox = self._nc.new_inbox()
        if isinstance(self._nc, CoalescingClient):
            sub = await self._nc.subscribe_direct(inbox, self._on_message)
        else:
            sub = await self._nc.subscribe(inbox, cb=self._on_message_async)
        next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{EVENTS_STREAM}.{self._spec.durable}"
        self._log.info("consumer_started", concurrency=self._concurrency)
        self._in_flight_gauge.set(0)  # a series from the start, for dashboards
        side_tasks = [asyncio.create_task(self._watch_lag(), name=f"lag:{self._spec.durable}")]
        if self._spec.heartbeat:
            side_tasks.append(asyncio.create_task(self._heartbeats(), name=f"wpi:{self._spec.durable}"))
        refill_at = max(1, min(self._concurrency // 4, PULL_BATCH_MAX // 2))
        self._heard_at = time.monotonic()
        reconnects = self._nc.stats["reconnects"]
        try:
            while not self._stopping.is_set():
                silent = time.monotonic() - self._heard_at > 2 * PULL_HEARTBEAT_S + 1
                if silent or self._nc.stats["reconnects"] != reconnects:
                    if self._requested:
                        self._log.info("pull_requests_lost", requested=self._requested)
                    self._requested = 0  # the server forgot our requests (restart, reconnect)
                    self._heard_at = time.monotonic()
                    reconnects = self._nc.stats["reconnects"]
                free = self._concurrency - len(self._inflight) - self._requested
                while free >= refill_at or (free > 0 and self._requested == 0):  # fill every free slot
                    batch = min(free, PULL_BATCH_MAX)
                    request = {"batch": batch, "expires": PULL_EXPIRES_NS, "idle_heartbeat": PULL_HEARTBEAT_NS}
                    try:
                        await self._nc.publish(next_subject, json.dumps(request).encode(), reply=inbox)
                    except nats.errors.Error as exc:
                        self._log.warning("pull_request_failed", error=repr(exc))
                        break
                    self._requested += batch
                    free -= batch
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), PULL_HEARTBEAT_S)
        finally:
            for task in side_tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _on_message_async(self, msg: Msg) -> None:
        self._on_message(msg)

    def _on_message(self, msg: Msg) -> None:
        """Runs for every message on the inbox, in order: a status, or an event to handle."""
        self._heard_at = time.monotonic()
        status = msg.headers.get(STATUS_HEADER) if msg.headers else None
        if status is not None:
            if status != "100":  # anything but an idle heartbeat ends (part of) a request
                assert msg.headers is not None
                left = msg.headers.get(PENDING_MSGS_HEADER)
                self._requested = max(0, self._requested - int(left)) if left and left.isdigit() else 0
                if status not in ("404", "408"):
                    self._log.info("pull_status", status=status, description=msg.headers.get("Description", ""))
                self._wake.set()
            return
        self._requested = max(0, self._requested - 1)
        # arrived while stopping: hand it straight to another replica
        self._track(msg, self._nak(msg) if self._stopping.is_set() else self._settle(msg))

    def _track(self, msg: Msg, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._inflight[task] = (msg, time.monotonic())
        self._in_flight_gauge.inc()
        task.add_done_callback(self._done)

    @staticmethod
    async def _nak(msg: Msg) -> None:
        with contextlib.suppress(Exception):
            await msg.nak()

    async def _watch_lag(self, every_s: float = 10.0) -> None:
        """Publish the durable's lag as gauges (what the consumer-lag alert watches)."""
        durable = self._spec.durable
        while not self._stopping.is_set():
            try:
                info = await self._js.consumer_info(EVENTS_STREAM, durable)
                self._metrics.pending.labels(durable).set(info.num_pending or 0)
                self._metrics.ack_pending.labels(durable).set(info.num_ack_pending or 0)
            except (nats.errors.Error, TimeoutError) as exc:
                self._log.debug("consumer_info_failed", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), every_s)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._in_flight_gauge.dec()
        self._wake.set()

    async def stop(self, grace_s: float) -> None:
        """Stop fetching, then let in-flight handlers finish (unfinished ones are redelivered)."""
        self._stopping.set()
        self._wake.set()
        if self._inflight:
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace_s)
            for task in pending:
                task.cancel()

    async def _settle(self, msg: Msg) -> None:
        started = time.perf_counter()
        headers = msg.headers or {}
        md = msg.metadata
        seq, delivered = md.sequence.stream, md.num_delivered
        kind_label = "unknown"
        subject = msg.subject
        span = self._tracer.start_span(
            f"process {subject.rsplit('.', 1)[0]}", context=extract_context(headers), kind=SpanKind.CONSUMER
        )
        with ActiveSpan(span):
            if span.is_recording():
                span.set_attributes(
                    {
                        "messaging.system": "nats",
                        "messaging.operation.type": "process",
                        "messaging.consumer.group.name": self._spec.durable,
                        "messaging.message.id": headers.get("Nats-Msg-Id", ""),
                        "messaging.nats.stream_sequence": seq,
                        "messaging.nats.num_delivered": delivered,
                    }
                )
            if delivered > 1:
                self._metrics.redeliveries.labels(self._spec.durable).inc()
            try:
                kind = EventKind.from_subject(subject)
                kind_label = kind.name.lower()
                span.set_attribute("messaging.destination.name", kind.template)
                event = kind.decode(msg.data)
                await self._handler(Delivery(kind, event, seq, delivered, msg))
            except asyncio.CancelledError:
                # Shutting down mid-handler: hand the message back now rather than after ack_wait,
                # so another replica answers it at once (outputs so far are deduped by their ids).
                with contextlib.suppress(Exception):
                    await asyncio.shield(msg.nak())
                self._metrics.outcomes.labels(self._spec.durable, kind_label, "nak").inc()
                raise
            except PermanentError as exc:
                await self._dead_letter(msg, dict(headers), seq, f"permanent: {exc}", span, kind_label)
            except Exception as exc:
                span.record_exception(exc)
                if delivered >= self._spec.max_deliver:
                    await self._dead_letter(msg, dict(headers), seq, f"gave up: {exc!r}", span, kind_label)
                else:
                    delay = (
                        exc.delay_s
                        if isinstance(exc, TransientError) and exc.delay_s is not None
                        else backoff_delay(delivered)
                    )
                    self._log.warning("handler_failed", seq=seq, delivered=delivered, delay_s=delay, error=repr(exc))
                    span.set_status(trace.StatusCode.ERROR, type(exc).__name__)
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=delay)
                    self._metrics.outcomes.labels(self._spec.durable, kind_label, "nak").inc()
            else:
                await msg.ack()
                acked = self._acked.get(kind_label)
                if acked is None:
                    acked = self._metrics.outcomes.labels(self._spec.durable, kind_label, "ack")
                    self._acked[kind_label] = acked
                acked.inc()
            finally:
                duration = self._durations.get(kind_label)
                if duration is None:
                    duration = self._metrics.duration.labels(self._spec.durable, kind_label)
                    self._durations[kind_label] = duration
                duration.observe(time.perf_counter() - started)

    async def _heartbeats(self) -> None:
        """Tell the server that long handlers are still working (+WPI), one loop for all of them."""
        tick = max(0.5, self._spec.ack_wait_s / 6)  # so each handler is refreshed within ack_wait / 3
        while True:
            await asyncio.sleep(tick)
            due = time.monotonic() - tick
            for msg, started in list(self._inflight.values()):
                if started <= due:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()

    async def _dead_letter(
        self, msg: Msg, headers: dict[str, str], seq: int, reason: str, span: trace.Span, kind_label: str
    ) -> None:
        self._log.error("dead_letter", seq=seq, reason=reason)
        span.set_status(trace.StatusCode.ERROR, "dead-lettered")
        try:
            await self._publisher.dead_letter(self._spec.durable, msg.subject, msg.data, headers, reason, seq)
        except Exception as exc:  # keep the message: without its DLQ copy it must be redelivered
            self._log.error("dead_letter_failed", seq=seq, error=repr(exc))
            with contextlib.suppress(Exception):
                await msg.nak(delay=backoff_delay(msg.metadata.num_delivered))
            return
        await msg.term()
        self._metrics.outcomes.labels(self._spec.durable, kind_label, "dead_letter").inc()
