"""Delivering approved replies and notices to users: each once, in conversation order.

Order: a reply is sent only when no earlier reply of its conversation is still queued in the
`Outbox` (Redis, shared by the replicas), so a reply whose send is being retried, or whose
replica died, is never overtaken. Once: each part is claimed before it is sent and recorded after
(`PartClaims`), so a redelivered reply sends only the parts that have not gone out, and a crash
mid-send can at most send one part twice, never lose it.

A failed send ends in one of three ways (which errcodes give up at once: `errcodes`). A refusal no
retry can fix (configuration, recipient, content) is recorded at once as
ReplyFailed(retryable=false). Anything else — WeCom unreachable or busy, Redis or NATS restarting —
is first retried within the delivery, which keeps the reply's place and its consumer slot, with
jittered backoff up to `retry_max_s`, for up to `hold_s`; after that it is handed back to
JetStream (nak with backoff from `retry_base_s`), so an outage has `max_deliver` × `hold_s` (and
the backoffs between) to end. If the durable's last allowed delivery fails too, the failure is
recorded as ReplyFailed(retryable=true) with the last errcode and logged as an error — a reply is
never dropped without a record.

Parts: the text's, then the reply's images and voice (`media_send`), each claimed and recorded alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping

from google.protobuf.message import Message
from redis.exceptions import RedisError

from wxbot_common.errors import TransientError
from wxbot_common.ids import user_hash
from wxbot_common.logs import get_logger
from wxbot_common.meta import derive_meta
from wxbot_common.nats.consumer import Delivery
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import meta_of
from wxbot_common.outbox import Outbox, SideWrite, Turn
from wxbot_gateway.claims import PartClaims
from wxbot_gateway.errors import DeliveryRefusedError, errcode_of
from wxbot_gateway.media_send import MEDIA_FAILED_NOTICE, MediaSender, MediaSkippedError, Part, reply_parts
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.senders import ReplySender
from wxbot_proto.events.v1 import events_pb2 as ev

MAX_RETRY_DELAY_S = 120.0
Retryable = (TransientError, RedisError, OSError)


def retry_delay(attempt: int, base_s: float, cap_s: float = MAX_RETRY_DELAY_S) -> float:
    """Exponential backoff with full jitter in [½, 1½]: replicas that hit a rate limit together spread out."""
    exponential: float = base_s * 2.0 ** max(0, attempt - 1)
    return min(cap_s, exponential) * random.uniform(0.5, 1.5)


def _reply_of(event: Message) -> tuple[ev.ReplyAddress, str, list[ev.MediaRef]]:
    if isinstance(event, ev.ReplyApproved):
        return event.reply_to, event.text, list(event.media)
    if isinstance(event, ev.ReplyBlocked | ev.InboundBlocked):
        return event.reply_to, event.notice, []
    raise TypeError(f"cannot deliver {event.DESCRIPTOR.full_name}")


class ReplyDelivery:
    def __init__(
        self,
        senders: Mapping[int, ReplySender],
        claims: PartClaims,
        outbox: Outbox,
        publisher: EventPublisher,
        metrics: GatewayMetrics,
        max_deliver: int,
        retry_base_s: float = 2.0,
        retry_max_s: float = 5.0,
        hold_s: float = 60.0,
        media: MediaSender | None = None,
        after_sent: Callable[[ev.ReplyApproved], Awaitable[None]] | None = None,
    ) -> None:
        """`max_deliver`: the delivery durable's; a send still failing on that delivery is recorded;
        `after_sent`: called once an approved reply is delivered (the feedback card)."""
        self._after_sent = after_sent
        self._senders = senders
        self._claims = claims
        self._outbox = outbox
        self._max_deliver = max_deliver
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._hold_s = hold_s
        self._publisher = publisher
        self._metrics = metrics
        self._media = media
        self._log = get_logger("wxbot.gateway.delivery")

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        meta = meta_of(event)
        address, text, media = _reply_of(event)
        if not text and not media:
            return  # a notice-less block: the user is deliberately told nothing
        sender = self._senders.get(meta.channel)
        channel = ev.Channel.Name(meta.channel).removeprefix("CHANNEL_").lower()
        if sender is None:
            self._metrics.deliveries.labels(channel, "no_channel", "").inc()
            await self._failed(meta, 0, f"channel {channel} not configured in this gateway", retryable=False)
            return
        last = delivery.num_delivered >= self._max_deliver  # no redelivery will follow
        deadline = time.monotonic() + self._hold_s
        attempt = 0
        while True:
            try:
                delivered = await self._deliver(meta, sender, address, reply_parts(sender, text, media), last, deadline)
                if delivered and self._after_sent is not None and isinstance(event, ev.ReplyApproved):
                    await self._after_sent(event)
                return
            except Retryable as exc:
                attempt += 1
                delay = retry_delay(attempt, self._base(exc), self._retry_max_s)
                if time.monotonic() + delay < deadline:  # keep the reply (and its place) a while longer
                    self._metrics.deliveries.labels(sender.name, "retry", str(errcode_of(exc))).inc()
                    await asyncio.sleep(delay)
                    continue
                if last:
                    await self._give_up(meta, sender, address, exc, delivery.num_delivered)
                    return
                self._metrics.deliveries.labels(sender.name, "handed_back", str(errcode_of(exc))).inc()
                delay = retry_delay(delivery.num_delivered, self._base(exc))
                raise TransientError(str(exc), delay_s=delay) from exc
            except Exception:
                if last:  # dead-lettered next: its conversation's later replies must not wait for it
                    with contextlib.suppress(*Retryable):
                        await self._outbox.leave(meta.conversation_id, meta.origin_sequence, meta.event_id)
                raise

    def _base(self, exc: BaseException) -> float:
        return exc.delay_s if isinstance(exc, TransientError) and exc.delay_s is not None else self._retry_base_s

    async def _deliver(
        self,
        meta: ev.EventMeta,
        sender: ReplySender,
        address: ev.ReplyAddress,
        parts: list[Part],
        last: bool,
        deadline: float,
    ) -> bool:
        """Send the reply's parts in its conversation's turn; whether the user has it."""
        conversation = meta.conversation_id
        # Entering the outbox also claims the first part when the reply is first: one round trip.
        claim = self._claims.new_claim(self._claims.key(meta.event_id, 0))
        turn, claimed = await self._outbox.enter_claiming(conversation, meta.origin_sequence, meta.event_id, claim)
        if turn is Turn.DONE:  # sent or given up by an earlier delivery (its acknowledgement was lost)
            self._metrics.deliveries.labels(sender.name, "already_sent", "0").inc()
            await self._published_sent(meta, len(parts))
            return True
        waited = turn is Turn.FIRST or await self._outbox.wait_turn(
            conversation, meta.event_id, deadline - time.monotonic()
        )
        if not waited:
            if not last:
                raise TransientError("an earlier reply of the conversation is still being delivered", delay_s=1.0)
            self._log.warning("order_wait_expired", user=user_hash(address.user_id))  # better late than never

        async def leave(record: SideWrite | None = None) -> None:
            await self._outbox.leave(conversation, meta.origin_sequence, meta.event_id, record)

        try:
            msgids = await self._send_parts(meta, sender, address, parts, claim.value if claimed else None, leave)
        except DeliveryRefusedError as exc:
            self._metrics.deliveries.labels(sender.name, "failed", str(exc.errcode)).inc()
            self._log.warning("delivery_refused", errcode=exc.errcode, error=str(exc), user=user_hash(address.user_id))
            await self._failed(meta, exc.errcode, str(exc), retryable=False)
            await leave()
            return False
        await self._publish_sent(meta, msgids)
        return True

    async def _publish_sent(self, meta: ev.EventMeta, msgids: list[str]) -> None:
        sent = ev.ReplySent(parts=len(msgids), provider_msg_ids=msgids)
        derive_meta(sent.meta, meta, "gateway", "sent")
        await self._publisher.publish(sent)  # the same id on a retry: JetStream keeps one

    async def _published_sent(self, meta: ev.EventMeta, parts: int) -> None:
        """A reply found done: its ReplySent is published after it left the outbox, so a delivery
        that died in between left it unpublished. Published (again: JetStream dedupes) when every
        part is recorded as sent; a reply given up has no such record."""
        msgids = [await self._claims.sent_id(self._claims.key(meta.event_id, i)) for i in range(parts)]
        if msgids and all(msgids):
            await self._publish_sent(meta, msgids)

    async def _send_parts(
        self,
        meta: ev.EventMeta,
        sender: ReplySender,
        address: ev.ReplyAddress,
        parts: list[Part],
        first_token: str | None,
        leave: Callable[[SideWrite | None], Awaitable[None]],
    ) -> list[str]:
        """Send every part not sent yet (the first under `first_token` when it was claimed already),
        then leave the outbox — with the record of the last part sent, in the same round trip; the
        provider msgids of all parts, in order."""
        msgids: list[str] = []
        fresh = 0
        final: tuple[str, str] | None = None  # the last part sent now: recorded while leaving
        for index, part in enumerate(parts):
            key = self._claims.key(meta.event_id, index)
            token = first_token if index == 0 and first_token else await self._claims.claim(key)
            if token is None:  # sent by an earlier delivery of this event
                msgids.append(await self._claims.sent_id(key))
                continue
            try:
                msgid = await self._send_one(sender, address, part, alone=len(parts) == 1)
            except BaseException:
                await self._claims.release(key, token)
                raise
            if index == len(parts) - 1:
                final = (key, msgid)
            else:
                await self._claims.record(key, msgid)
            msgids.append(msgid)
            fresh += 1
        if final is None:
            await leave(None)
        else:
            await self._claims.record(*final, write=leave)
        self._metrics.deliveries.labels(sender.name, "sent" if fresh else "already_sent", "0").inc()
        return msgids

    async def _send_one(self, sender: ReplySender, address: ev.ReplyAddress, part: Part, alone: bool) -> str:
        """A text part, or an image or voice (`media_send`). A media part that can never be sent is
        recorded as done (logged and counted there), so the reply goes on; when it was the whole
        reply (an image alone) the user gets `MEDIA_FAILED_NOTICE` in its place, not silence."""
        if isinstance(part, str):
            return await sender.send_part(address, part)
        try:
            if self._media is None:
                raise MediaSkippedError("unsupported", "no media sender in this gateway")
            # Reading the store, uploading and sending together within the part's claim, so that no
            # other delivery can take the part while this one still sends it (a timeout is retried).
            return await asyncio.wait_for(self._media.send(sender, address, part), self._claims.send_budget_s)
        except MediaSkippedError:
            return await sender.send_part(address, MEDIA_FAILED_NOTICE) if alone else ""

    async def _give_up(
        self, meta: ev.EventMeta, sender: ReplySender, address: ev.ReplyAddress, exc: BaseException, deliveries: int
    ) -> None:
        """The last delivery failed too: record it, and let the conversation's next reply go."""
        errcode = errcode_of(exc)
        self._metrics.deliveries.labels(sender.name, "gave_up", str(errcode)).inc()
        self._log.error(
            "delivery_gave_up", errcode=errcode, deliveries=deliveries, error=str(exc), user=user_hash(address.user_id)
        )
        with contextlib.suppress(*Retryable):  # Redis still away: the waiters go after their own hold
            await self._outbox.leave(meta.conversation_id, meta.origin_sequence, meta.event_id)
        await self._failed(meta, errcode, str(exc), retryable=True)  # if NATS is away: the dead-letter copy

    async def _failed(self, meta: ev.EventMeta, errcode: int, error: str, retryable: bool) -> None:
        failed = ev.ReplyFailed(errcode=errcode, error=error[:500], retryable=retryable)
        derive_meta(failed.meta, meta, "gateway", "failed")
        await self._publisher.publish(failed)
