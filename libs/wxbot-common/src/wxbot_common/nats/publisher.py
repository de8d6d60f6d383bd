"""Traced, deduplicated publishing of events to the log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import nats.errors
from google.protobuf.message import Message
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import Error as JetStreamError
from nats.js.errors import NotFoundError
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from wxbot_common.errors import TransientError
from wxbot_common.nats.connection import CoalescingClient
from wxbot_common.nats.propagation import inject_headers
from wxbot_common.nats.subjects import (
    EVENTS_STREAM,
    HEADER_EVENT_TYPE,
    HEADER_MSG_ID,
    EventKind,
    dlq_subject,
    meta_of,
)
from wxbot_common.spans import ActiveSpan

SendAcked = Callable[[str, bytes, dict[str, str], float], Awaitable[PubAck]]


class EventPublisher:
    """Publishes one event per call and waits for the PubAck.

    The event id becomes `Nats-Msg-Id`, so republishing the same event within the stream's
    duplicate window is a no-op (`PubAck.duplicate`). Failures surface as `TransientError`, which
    a consumer loop turns into a delayed redelivery.
    """

    def __init__(self, js: JetStreamContext, tracer: trace.Tracer, timeout_s: float = 5.0) -> None:
        self._js = js
        self._tracer = tracer
        self._timeout_s = timeout_s
        client = getattr(js, "_nc", None)
        self._send: SendAcked = client.publish_acked if isinstance(client, CoalescingClient) else self._js_publish

    async def _js_publish(self, subject: str, payload: bytes, headers: dict[str, str], timeout_s: float) -> PubAck:
        return await self._js.publish(subject, payload, timeout=timeout_s, headers=headers)

    async def publish(self, event: Message) -> PubAck:
        kind = EventKind.of(event)
        meta = meta_of(event)
        if not meta.event_id or not meta.conversation_id:
            raise ValueError(f"{kind.name} event without event_id/conversation_id")
        subject = kind.subject(meta.conversation_id)
        event_type = event.DESCRIPTOR.full_name
        headers = {HEADER_MSG_ID: meta.event_id, HEADER_EVENT_TYPE: event_type}
        with ActiveSpan(self._tracer.start_span(f"send {kind.prefix}", kind=SpanKind.PRODUCER)) as span:
            recording = span.is_recording()
            if recording:
                span.set_attributes(
                    {
                        "messaging.system": "nats",
                        "messaging.operation.type": "send",
                        "messaging.destination.name": kind.template,
                        "messaging.destination.template": kind.template,
                        "messaging.message.id": meta.event_id,
                        "wxbot.event.type": event_type,
                    }
                )
            inject_headers(headers)
            try:
                ack = await self._send(subject, event.SerializeToString(), headers, self._timeout_s)
            except (TimeoutError, nats.errors.Error, JetStreamError) as exc:
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR, "publish failed")
                raise TransientError(f"publish {kind.name} failed: {exc!r}") from exc
            if recording:
                span.set_attribute("messaging.nats.stream_sequence", ack.seq)
                span.set_attribute("messaging.nats.duplicate", bool(ack.duplicate))
            return ack

    async def was_published(
        self, kind: EventKind, conversation_id: str, event_id: str, after_sequence: int, max_scan: int = 256
    ) -> bool:
        """Whether event `event_id` of `kind` is in the log after stream position `after_sequence`.

        For a redelivered input: its output, if any, was published after the input itself, so
        only the conversation's events of that kind since then are read (direct gets, a handful
        in practice). Unlike `Nats-Msg-Id` deduplication this holds past the duplicate window. A
        conversation with more than `max_scan` such events since is answered False (the caller
        then redoes the work and the duplicate window still applies).
        """
        subject = kind.subject(conversation_id)
        seq = after_sequence + 1
        try:
            for _ in range(max_scan):
                try:
                    msg = await self._js.get_msg(EVENTS_STREAM, seq, subject=subject, next=True, direct=True)
                except NotFoundError:
                    return False
                if (msg.headers or {}).get(HEADER_MSG_ID) == event_id:
                    return True
                seq = (msg.seq or seq) + 1
        except (TimeoutError, nats.errors.Error, JetStreamError) as exc:
            raise TransientError(f"reading {kind.name} events of the log failed: {exc!r}") from exc
        return False

    async def dead_letter(
        self, durable: str, subject: str, data: bytes, headers: dict[str, str], reason: str, seq: int
    ) -> None:
        """Keep an unprocessable message, with why, in the DLQ stream for operators."""
        dl_headers = {k: v for k, v in headers.items() if k != HEADER_MSG_ID}
        dl_headers.update(
            {
                HEADER_MSG_ID: f"dlq:{durable}:{seq}",
                "Wxbot-Dlq-Reason": reason[:500],
                "Wxbot-Dlq-Subject": subject,
                "Wxbot-Dlq-Sequence": str(seq),
            }
        )
        await self._js.publish(dlq_subject(durable), data, timeout=self._timeout_s, headers=dl_headers)
