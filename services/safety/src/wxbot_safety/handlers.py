"""The two safety stages as consumer handlers: gather facts, decide (pure policy), publish the verdict.

Every block is recorded in the log as an InboundBlocked / ReplyBlocked event with its reason
(the audit trail); logs carry the reason and a hashed user id, never the message text. Whatever a
user will be sent (an approved reply, a notice) is queued in its conversation's outbox before it
is published, so that the gateway keeps the conversation's order even if the replica that
receives it dies at once (`wxbot_common.outbox`).
"""

from __future__ import annotations

import time

from google.protobuf.message import Message
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from redis.exceptions import RedisError

from wxbot_common.errors import TransientError
from wxbot_common.ids import user_hash
from wxbot_common.logs import get_logger
from wxbot_common.meta import derive_meta
from wxbot_common.nats.consumer import Delivery
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.outbox import Outbox
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_safety.injection import InjectionDetector
from wxbot_safety.lexicon import Lexicon
from wxbot_safety.policy import (
    OUTPUT_NOTICE,
    InjectionAction,
    Limits,
    OutputAction,
    RateFacts,
    Verdict,
    approved_media,
    check_inbound,
    check_outbound,
    unavailable_verdict,
)
from wxbot_safety.ratelimit import RateCounter


class SafetyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.decisions = Counter(
            "wxbot_safety_decisions",
            "Safety decisions by stage, verdict and reason",
            ["stage", "verdict", "reason"],
            registry=registry,
        )
        self.flags = Counter(
            "wxbot_safety_flags", "Non-blocking findings on accepted messages", ["flag"], registry=registry
        )
        self.latency = Histogram(
            "wxbot_safety_check_seconds",
            "Time to decide one message",
            ["stage"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=registry,
        )
        self.redis_errors = Counter(
            "wxbot_safety_redis_errors",
            "Rate counter lookups that failed, by the policy applied",
            ["policy"],
            registry=registry,
        )
        self.lexicon_terms = Gauge("wxbot_safety_lexicon_terms", "Terms in the lexicon in service", registry=registry)


class SafetyStages:
    def __init__(
        self,
        publisher: EventPublisher,
        rate: RateCounter,
        lexicon: Lexicon,
        limits: Limits,
        metrics: SafetyMetrics,
        outbox: Outbox,
        *,
        fail_open: bool = True,
        injection_action: InjectionAction = "flag",
        output_action: OutputAction = "mask",
        blocked_users: frozenset[str] = frozenset(),
    ) -> None:
        self._publisher = publisher
        self._rate = rate
        self._limits = limits
        self._metrics = metrics
        self._outbox = outbox
        self._fail_open = fail_open
        self._detector = InjectionDetector()
        self._injection_action = injection_action
        self._output_action = output_action
        self._blocked = blocked_users
        self._log = get_logger("wxbot.safety")
        self.lexicon = lexicon
        self.swap_lexicon(lexicon)

    def swap_lexicon(self, lexicon: Lexicon) -> None:
        self.lexicon = lexicon  # one reference swap: in-flight checks finish with the old automaton
        self._metrics.lexicon_terms.set(lexicon.size)

    async def _rate_facts(self, received: ev.MessageReceived) -> RateFacts | None:
        """The user's counts; None when Redis is down and the policy is fail-closed."""
        user = received.reply_to
        try:
            user_key = user_hash(f"{received.meta.channel}:{user.corp_id}:{user.user_id}")
            minute, day = await self._rate.hit(user_key, received.meta.event_id)
            return RateFacts(minute, day)
        except (RedisError, OSError) as exc:
            policy = "open" if self._fail_open else "closed"
            self._metrics.redis_errors.labels(policy).inc()
            self._log.warning("rate_counter_unavailable", policy=policy, error=repr(exc))
            return RateFacts(None, None) if self._fail_open else None

    async def inbound(self, delivery: Delivery) -> None:
        received = delivery.event
        assert isinstance(received, ev.MessageReceived)
        started = time.perf_counter()
        user = received.reply_to.user_id
        blocked_user = user in self._blocked or user_hash(user) in self._blocked
        unlimited = self._limits.per_minute <= 0 and self._limits.per_day <= 0  # nothing to count
        rate = RateFacts(None, None) if blocked_user or unlimited else await self._rate_facts(received)
        verdict: Verdict = (
            unavailable_verdict()
            if rate is None
            else check_inbound(
                received.text, rate, self._limits, self.lexicon, self._detector, self._injection_action, blocked_user
            )
        )
        self._metrics.latency.labels("inbound").observe(time.perf_counter() - started)
        origin = delivery.stream_sequence
        if verdict.allowed:
            accepted = ev.InboundAccepted(message=received, flags=verdict.flags)
            derive_meta(accepted.meta, received.meta, "safety", "accepted", origin)
            await self._publisher.publish(accepted)
            for flag in verdict.flags:
                self._metrics.flags.labels(flag.split(":", 1)[0]).inc()
            if verdict.flags:
                self._log.info("inbound_flagged", flags=verdict.flags, user=user_hash(user))
        else:
            blocked = ev.InboundBlocked(reply_to=received.reply_to, reason=verdict.reason, notice=verdict.notice)
            derive_meta(blocked.meta, received.meta, "safety", "blocked", origin)
            await self._publish_for_delivery(blocked, blocked.meta, bool(verdict.notice))
            self._log.info(
                "inbound_blocked", reason=verdict.reason, user=user_hash(user), notified=bool(verdict.notice)
            )
        self._metrics.decisions.labels(
            "inbound", "accepted" if verdict.allowed else "blocked", verdict.reason or "ok"
        ).inc()

    async def outbound(self, delivery: Delivery) -> None:
        drafted = delivery.event
        assert isinstance(drafted, ev.ReplyDrafted)
        with self._metrics.latency.labels("outbound").time():
            verdict = check_outbound(drafted.text, self.lexicon, self._output_action)
            media = approved_media(drafted.media, verdict.masked, self.lexicon)
        if verdict.blocked or media is None:
            reason = "sensitive_output" if verdict.blocked else "sensitive_image_prompt"
            notice = verdict.notice or OUTPUT_NOTICE
            blocked = ev.ReplyBlocked(reply_to=drafted.reply_to, reason=reason, notice=notice)
            derive_meta(blocked.meta, drafted.meta, "safety", "reply_blocked")
            await self._publish_for_delivery(blocked, blocked.meta, bool(notice))
            self._log.info("reply_blocked", reason=reason, user=user_hash(drafted.reply_to.user_id))
            self._metrics.decisions.labels("outbound", "blocked", reason).inc()
            return
        approved = ev.ReplyApproved(
            reply_to=drafted.reply_to, text=verdict.text, source=drafted.source, masked=verdict.masked, media=media
        )
        derive_meta(approved.meta, drafted.meta, "safety", "approved")
        await self._publish_for_delivery(approved, approved.meta, bool(approved.text or approved.media))
        self._metrics.decisions.labels("outbound", "approved", "masked" if verdict.masked else "ok").inc()

    async def _publish_for_delivery(self, event: Message, meta: ev.EventMeta, has_text: bool) -> None:
        """Queue what the gateway will send (nothing is sent for an empty notice), then publish it.

        Without Redis this fails and the input is retried: a reply published unqueued while Redis
        restarts could be overtaken by the next one, whose delivery found Redis back first (found
        by `make chaos`). Nothing is lost by waiting: no reply can be sent without Redis anyway.
        """
        if has_text:
            try:
                await self._outbox.enter(meta.conversation_id, meta.origin_sequence, meta.event_id)
            except (RedisError, OSError) as exc:
                raise TransientError(f"outbox unavailable: {exc!r}") from exc  # the durable's backoff
        await self._publisher.publish(event)
