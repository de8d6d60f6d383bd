"""Delivering approved replies and notices to users, once each.

Each reply is claimed in Redis before the send (SET NX): a redelivered event finds the claim and
sends nothing. A transient failure releases the claim so the retry can send; a crash between
claim and send therefore loses that one reply rather than sending it twice.
"""

from __future__ import annotations

from google.protobuf.message import Message
from redis.asyncio import Redis

from wxbot_common.errors import TransientError
from wxbot_common.ids import user_hash
from wxbot_common.logs import get_logger
from wxbot_common.meta import derive_meta
from wxbot_common.nats.consumer import Delivery
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import meta_of
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.wecom_api import BAD_SECRET, WeComApiError, WeComClient
from wxbot_proto.events.v1 import events_pb2 as ev

CLAIM_TTL_S = 24 * 3600


def _reply_of(event: Message) -> tuple[ev.ReplyAddress, str]:
    if isinstance(event, ev.ReplyApproved):
        return event.reply_to, event.text
    if isinstance(event, ev.ReplyBlocked | ev.InboundBlocked):
        return event.reply_to, event.notice
    raise TypeError(f"cannot deliver {event.DESCRIPTOR.full_name}")


class ReplyDelivery:
    def __init__(
        self, wecom: WeComClient | None, redis: Redis, publisher: EventPublisher, metrics: GatewayMetrics
    ) -> None:
        self._wecom = wecom
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
        if self._wecom is None or meta.channel != ev.CHANNEL_WECOM_APP:
            self._metrics.deliveries.labels("wecom", "no_channel", "").inc()
            await self._failed(meta, 0, "channel not configured in this gateway", retryable=False)
            return
        claim = f"wxbot:gateway:delivery:{meta.event_id}"
        if not await self._redis.set(claim, "1", nx=True, ex=CLAIM_TTL_S):
            self._metrics.deliveries.labels("wecom", "already_sent", "").inc()
            return
        try:
            msgids = await self._wecom.send_text(address.user_id, text)
        except TransientError:
            await self._redis.delete(claim)
            self._metrics.deliveries.labels("wecom", "retry", "").inc()
            raise
        except WeComApiError as exc:
            self._metrics.deliveries.labels("wecom", "failed", str(exc.errcode)).inc()
            if exc.errcode == BAD_SECRET:
                self._log.error("wecom_config_error", errcode=exc.errcode)
            self._log.warning("delivery_failed", errcode=exc.errcode, user=user_hash(address.user_id))
            await self._failed(meta, exc.errcode, str(exc), retryable=False)
            return
        self._metrics.deliveries.labels("wecom", "sent", "0").inc()
        sent = ev.ReplySent(parts=len(msgids), provider_msg_ids=msgids)
        derive_meta(sent.meta, meta, "gateway", "sent")
        await self._publisher.publish(sent)

    async def _failed(self, meta: ev.EventMeta, errcode: int, error: str, retryable: bool) -> None:
        failed = ev.ReplyFailed(errcode=errcode, error=error[:500], retryable=retryable)
        derive_meta(failed.meta, meta, "gateway", "failed")
        await self._publisher.publish(failed)
