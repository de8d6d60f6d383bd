"""Fired reminders into the normal pipeline: each becomes one ReplyDrafted in the event log.

From there it goes the way every answer goes — safety checks it (and queues it in the
conversation's outbox), the gateway delivers it exactly once in conversation order, context
remembers it as the assistant's turn — so a reminder is never sent around the safety check or
twice.

Once across replicas and restarts: the fired messages are read through one durable pull consumer
shared by every skills replica (each message is with one replica at a time), acknowledged only
after the ReplyDrafted is stored. Its id (`Nats-Msg-Id`) is derived from the reminder and the
firing — `Nats-Schedule-Next` names each firing of a repeat, a one-off fires once — so a firing
handled again (a replica that died before acknowledging) is dropped by the event log's
deduplication, and past that window by the gateway's record of what it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import ValidationError

from wxbot_common.errors import TransientError
from wxbot_common.ids import derived_event_id, now_timestamp, user_hash
from wxbot_common.logs import get_logger
from wxbot_common.nats.consumer import backoff_delay
from wxbot_common.nats.publisher import EventPublisher
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_skills.reminders.book import DUE_DURABLE, DUE_FILTER, DUE_MAX_DELIVER, REMINDERS_STREAM
from wxbot_skills.reminders.metrics import ReminderMetrics
from wxbot_skills.reminders.records import Reminder

MESSAGE = "⏰ 提醒：{text}"
FETCH_WAIT_S = 5.0


def drafted_for(reminder: Reminder, firing: str) -> ev.ReplyDrafted:
    """The reminder's message as nlp would have drafted it; the same event for the same firing."""
    address = reminder.caller().reply_address() or ev.ReplyAddress()
    drafted = ev.ReplyDrafted(reply_to=address, text=MESSAGE.format(text=reminder.text), source=ev.REPLY_SOURCE_SKILL)
    meta = drafted.meta
    meta.event_id = derived_event_id("reminders", f"{reminder.owner}/{reminder.id}@{firing}", "drafted")
    meta.conversation_id = reminder.conversation_id
    meta.causation_id = reminder.message_id  # the message that asked for it
    meta.correlation_id = reminder.message_id or meta.event_id
    meta.channel = reminder.channel_number  # type: ignore[assignment]
    meta.origin_sequence = 0  # answers no message: context files it by its own position in the log
    meta.occurred_at.CopyFrom(now_timestamp())
    return drafted


def firing_of(msg: Msg) -> str:
    """Which firing this is: the next time a repeat fires (unique per firing), or `once`."""
    following = (msg.headers or {}).get("Nats-Schedule-Next", "")
    return following if following and following != "purge" else "once"


class DueReminders:
    """Takes fired reminders from the shared durable until cancelled."""

    def __init__(
        self,
        js: JetStreamContext,
        publisher: EventPublisher,
        tracer: trace.Tracer,
        metrics: ReminderMetrics,
        concurrency: int,
    ) -> None:
        self._js = js
        self._publisher = publisher
        self._tracer = tracer
        self._metrics = metrics
        self._concurrency = concurrency
        self._log = get_logger("wxbot.skills.reminders")

    async def run(self) -> None:
        sub = await self._js.pull_subscribe_bind(DUE_DURABLE, stream=REMINDERS_STREAM)
        self._log.info("reminders_consumer_started", durable=DUE_DURABLE, filter=DUE_FILTER)
        while True:
            try:
                batch = await sub.fetch(self._concurrency, timeout=FETCH_WAIT_S)
            except TimeoutError:
                continue  # nothing fired
            except nats.errors.Error as exc:  # NATS restarting: ask again shortly
                self._log.warning("reminders_fetch_failed", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            await asyncio.gather(*(self.handle(msg) for msg in batch))

    async def handle(self, msg: Msg) -> None:
        """Hand one fired reminder on; ack once its ReplyDrafted is stored, nak to try again later."""
        delivered = msg.metadata.num_delivered or 1
        with self._tracer.start_as_current_span(
            "process wxbot.remind.due",
            context=Context(),  # a new trace per firing (the one that created it may be days old)
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.consumer.group.name": DUE_DURABLE,
                "messaging.nats.stream_sequence": msg.metadata.sequence.stream,
                "messaging.nats.num_delivered": delivered,
            },
        ) as span:
            try:
                reminder = Reminder.model_validate_json(msg.data)
            except ValidationError as exc:
                await self._dead_letter(msg, f"unreadable reminder: {exc.error_count()} errors", span)
                return
            span.set_attribute("wxbot.reminder.id", reminder.id)
            try:
                await self._publisher.publish(drafted_for(reminder, firing_of(msg)))
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.shield(msg.nak())  # shutting down: another replica takes it now
                raise
            except ValueError as exc:  # no conversation to speak in: it can never be sent
                await self._dead_letter(msg, f"undeliverable: {exc}", span)
                return
            except TransientError as exc:
                if delivered >= DUE_MAX_DELIVER:
                    await self._dead_letter(msg, f"gave up: {exc}", span)
                    return
                span.set_status(StatusCode.ERROR, type(exc).__name__)
                self._metrics.fired.labels("retry").inc()
                self._log.warning("reminder_not_handed_on", error=str(exc), delivered=delivered)
                with contextlib.suppress(Exception):
                    await msg.nak(delay=backoff_delay(delivered))
                return
            with contextlib.suppress(Exception):
                await msg.ack()
            self._metrics.fired.labels("drafted").inc()
            fired_at = msg.metadata.timestamp
            if fired_at is not None:
                lag = datetime.now(UTC) - fired_at.astimezone(UTC)
                self._metrics.lag.observe(max(0.0, lag.total_seconds()))
            self._log.info(
                "reminder_fired",
                reminder=reminder.id,
                user=user_hash(reminder.owner),
                repeat=reminder.repeat if reminder.every_s is None else "every",
            )

    async def _dead_letter(self, msg: Msg, reason: str, span: trace.Span) -> None:
        seq = msg.metadata.sequence.stream
        span.set_status(StatusCode.ERROR, "dead-lettered")
        self._log.error("reminder_dead_letter", seq=seq, reason=reason)
        try:
            await self._publisher.dead_letter(DUE_DURABLE, msg.subject, msg.data, dict(msg.headers or {}), reason, seq)
        except Exception as exc:  # keep it: without its DLQ copy it must come back
            self._log.error("dead_letter_failed", seq=seq, error=repr(exc))
            with contextlib.suppress(Exception):
                await msg.nak(delay=backoff_delay(msg.metadata.num_delivered or 1))
            return
        with contextlib.suppress(Exception):
            await msg.term()
        self._metrics.fired.labels("dead_letter").inc()
