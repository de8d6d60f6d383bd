"""Delivering approved replies and notices to users, once each.

Each part of a reply is claimed in Redis before it is sent (SET NX): a redelivered event finds
the claims of the parts already sent and sends only the rest. A transient failure releases the
claim of the failing part so the retry can send it; a crash between claim and send therefore
loses that one part rather than sending it twice.

A failed send ends in one of two ways (which errcodes give up at once: `errcodes`). A refusal no
retry can fix (configuration, recipient, content) is recorded at once as
ReplyFailed(retryable=false). Anything else is retried through the consumer's redelivery with
jittered exponential backoff; if the durable's last allowed delivery fails too, the failure is
recorded as ReplyFailed(retryable=true) with the last errcode and logged as an error — a reply
is never dropped without a record.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

from google.protobuf.message import Message
from redis.asyncio import Redis
from redis.exceptions import RedisError

from wxbot_common.errors import TransientError
from wxbot_common.ids import user_hash
from wxbot_common.logs import get_logger
from wxbot_common.meta import derive_meta
from wxbot_common.nats.consumer import Delivery
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import meta_of
from wxbot_gateway.errors import DeliveryRefusedError, errcode_of
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.senders import ReplySender
from wxbot_proto.events.v1 import events_pb2 as ev

CLAIM_TTL_S = 24 * 3600
MAX_RETRY_DELAY_S = 120.0


def retry_delay(attempt: int, base_s: float) -> float:
    """Exponential backoff with full jitter in [½, 1½]: replicas that hit a rate limit together spread out."""
    exponential: float = base_s * 2.0 ** max(0, attempt - 1)
    return min(MAX_RETRY_DELAY_S, exponential) * random.uniform(0.5, 1.5)


def _reply_of(event: Message) -> tuple[ev.ReplyAddress, str]:
    if isinstance(event, ev.ReplyApproved):
        return event.reply_to, event.text
    if isinstance(event, ev.ReplyBlocked | ev.InboundBlocked):
        return event.reply_to, event.notice
    raise TypeError(f"cannot deliver {event.DESCRIPTOR.full_name}")


class ReplyDelivery:
    def __init__(
        self,
        senders: Mapping[int, ReplySender],
        redis: Redis,
        publisher: EventPublisher,
        metrics: GatewayMetrics,
        max_deliver: int,
        retry_base_s: float = 2.0,
    ) -> None:
        """`max_deliver`: the delivery durable's; a send still failing on that delivery is recorded."""
        self._senders = senders
        self._max_deliver = max_deliver
        self._retry_base_s = retry_base_s
        self._order: dict[str, list[Any]] = {}
        self._redis = redis
        self._publisher = publisher
        self._metrics = metrics
        self._log = get_logger("wxbot.gateway.delivery")

    async def handle(self, delivery: Delivery) -> None:
        event = delivery.event
        meta = meta_of(event)
        address, text = _reply_of(event)
        if not text:
            return  # a notice-less block: the user is deliberately told nothing
        sender = self._senders.get(meta.channel)
        channel = ev.Channel.Name(meta.channel).removeprefix("CHANNEL_").lower()
        if sender is None:
            self._metrics.deliveries.labels(channel, "no_channel", "").inc()
            await self._failed(meta, 0, f"channel {channel} not configured in this gateway", retryable=False)
            return
        async with self._in_order(meta.conversation_id):
            await self._send_parts(delivery, meta, sender, address, text)

    @contextlib.asynccontextmanager
    async def _in_order(self, conversation: str) -> AsyncIterator[None]:
        """One send at a time per conversation, in arrival (= log) order: reply n+1 is approved only
        after reply n, but without this a slow send of n (e.g. a token refresh) let n+1 overtake it."""
        entry = self._order.setdefault(conversation, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._order[conversation]

    async def _send_parts(
        self, delivery: Delivery, meta: ev.EventMeta, sender: ReplySender, address: ev.ReplyAddress, text: str
    ) -> None:
        msgids: list[str] = []
        try:
            for index, part in enumerate(sender.split(text)):
                claim = f"wxbot:gateway:delivery:{meta.event_id}:{index}"
                if not await self._redis.set(claim, "1", nx=True, ex=CLAIM_TTL_S):
                    continue  # sent by an earlier delivery of this event
                try:
                    msgids.append(await sender.send_part(address, part))
                except TransientError:
                    await self._redis.delete(claim)
                    raise
        except (TransientError, RedisError) as exc:
            errcode = errcode_of(exc)
            if delivery.num_delivered >= self._max_deliver:  # no redelivery will follow: record it
                self._metrics.deliveries.labels(sender.name, "gave_up", str(errcode)).inc()
                self._log.error(
                    "delivery_gave_up",
                    errcode=errcode,
                    deliveries=delivery.num_delivered,
                    error=str(exc),
                    user=user_hash(address.user_id),
                )
                await self._failed(meta, errcode, str(exc), retryable=True)
                return
            self._metrics.deliveries.labels(sender.name, "retry", str(errcode)).inc()
            base = exc.delay_s if isinstance(exc, TransientError) and exc.delay_s is not None else self._retry_base_s
            raise TransientError(str(exc), delay_s=retry_delay(delivery.num_delivered, base)) from exc
        except DeliveryRefusedError as exc:
            self._metrics.deliveries.labels(sender.name, "failed", str(exc.errcode)).inc()
            self._log.warning("delivery_refused", errcode=exc.errcode, error=str(exc), user=user_hash(address.user_id))
            await self._failed(meta, exc.errcode, str(exc), retryable=False)
            return
        if not msgids:
            self._metrics.deliveries.labels(sender.name, "already_sent", "").inc()
            return
        self._metrics.deliveries.labels(sender.name, "sent", "0").inc()
        sent = ev.ReplySent(parts=len(msgids), provider_msg_ids=msgids)
        derive_meta(sent.meta, meta, "gateway", "sent")
        await self._publisher.publish(sent)

    async def _failed(self, meta: ev.EventMeta, errcode: int, error: str, retryable: bool) -> None:
        failed = ev.ReplyFailed(errcode=errcode, error=error[:500], retryable=retryable)
        derive_meta(failed.meta, meta, "gateway", "failed")
        await self._publisher.publish(failed)
