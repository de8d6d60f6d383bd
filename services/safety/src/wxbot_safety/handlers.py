"""The two safety stages as consumer handlers: check, then publish the verdict as an event."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from redis.exceptions import RedisError

from wxbot_common.errors import TransientError
from wxbot_common.ids import user_hash
from wxbot_common.logs import get_logger
from wxbot_common.meta import derive_meta
from wxbot_common.nats.consumer import Delivery
from wxbot_common.nats.publisher import EventPublisher
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_safety.lexicon import Lexicon
from wxbot_safety.policy import check_inbound, check_outbound
from wxbot_safety.ratelimit import RateCounter


class SafetyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "wxbot_safety_decisions",
            "Safety decisions by stage, verdict and reason",
            ["stage", "verdict", "reason"],
            registry=registry,
        )
        self.latency = Histogram(
            "wxbot_safety_check_seconds",
            "Time to decide one message",
            ["stage"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=registry,
        )


class SafetyStages:
    def __init__(
        self,
        publisher: EventPublisher,
        rate: RateCounter,
        lexicon: Lexicon,
        per_minute: int,
        metrics: SafetyMetrics,
    ) -> None:
        self._publisher = publisher
        self._rate = rate
        self.lexicon = lexicon
        self._per_minute = per_minute
        self._metrics = metrics
        self._log = get_logger("wxbot.safety")

    async def inbound(self, delivery: Delivery) -> None:
        received = delivery.event
        assert isinstance(received, ev.MessageReceived)
        with self._metrics.latency.labels("inbound").time():
            try:
                user = received.reply_to
                count = await self._rate.hit(user_hash(f"{received.meta.channel}:{user.corp_id}:{user.user_id}"))
            except RedisError as exc:
                raise TransientError(f"rate counter unavailable: {exc!r}") from exc
            verdict = check_inbound(received.text, count, self._per_minute, self.lexicon)
        origin = delivery.stream_sequence
        if verdict.allowed:
            accepted = ev.InboundAccepted(message=received)
            derive_meta(accepted.meta, received.meta, "safety", "accepted", origin)
            await self._publisher.publish(accepted)
        else:
            blocked = ev.InboundBlocked(reply_to=received.reply_to, reason=verdict.reason, notice=verdict.notice)
            derive_meta(blocked.meta, received.meta, "safety", "blocked", origin)
            await self._publisher.publish(blocked)
            self._log.info("inbound_blocked", reason=verdict.reason, user=user_hash(received.reply_to.user_id))
        self._metrics.decisions.labels(
            "inbound", "accepted" if verdict.allowed else "blocked", verdict.reason or "ok"
        ).inc()

    async def outbound(self, delivery: Delivery) -> None:
        drafted = delivery.event
        assert isinstance(drafted, ev.ReplyDrafted)
        with self._metrics.latency.labels("outbound").time():
            verdict = check_outbound(drafted.text, self.lexicon)
        approved = ev.ReplyApproved(
            reply_to=drafted.reply_to, text=verdict.text, source=drafted.source, masked=verdict.masked
        )
        derive_meta(approved.meta, drafted.meta, "safety", "approved", drafted.meta.origin_sequence)
        await self._publisher.publish(approved)
        self._metrics.decisions.labels("outbound", "approved", "masked" if verdict.masked else "ok").inc()
