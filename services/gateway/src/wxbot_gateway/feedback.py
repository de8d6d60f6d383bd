"""👍/👎 under LLM answers in the WeCom app, turned into `FeedbackGiven` events (docs/analytics.md).

After an approved LLM answer is sent, `FeedbackCards.offer` may send a `button_interaction`
template card (FEEDBACK=always, or a stable sample of answers with FEEDBACK=sampled) whose task
id is derived from the answer's event id — unique per app, and the same on a redelivery, so a
card is offered once (a Redis claim) and the task maps back to its answer for FEEDBACK_TTL_S.

A click arrives as a `template_card_event` callback (already verified and decrypted by the
callback route). It has no MsgId: its event id is uuid5 of user + task id + button key, so
WeCom's retries and repeated clicks on one button are one event (JetStream's window, then the
gateway's seen-records). Only the first publish updates the card (`update_template_card`, whose
response code is single-use). A click for an unknown or expired task, by another user, or with a
key that is not one of the card's is ignored: answered 200 (WeCom would only retry), counted in
`wxbot_gateway_feedback_total{outcome}`, nothing published.

Bridge clients draw their own buttons: with FEEDBACK on, every LLM answer delivered on the bridge is
remembered for FEEDBACK_TTL_S under the message it answered, and a feedback frame naming that
message's `msg_id` becomes one `FeedbackGiven` (the same rating again is the same event); a frame
for a message that got no answer, another sender's, or one older than that is refused.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from wxbot_common.errors import TransientError
from wxbot_common.ids import WXBOT_NAMESPACE, now_timestamp, user_hash
from wxbot_common.logs import get_logger
from wxbot_common.nats.publisher import EventPublisher
from wxbot_gateway.dedupe import SeenMessages
from wxbot_gateway.wecom_api import WeComClient
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_wecom.messages import InboundMessage

TASK_PREFIX = "fb-"
KEYS = {"up": ev.FEEDBACK_RATING_POSITIVE, "down": ev.FEEDBACK_RATING_NEGATIVE}
THANKS = {"up": "已反馈 👍", "down": "已反馈 👎"}


class FeedbackRefusedError(ValueError):
    """A bridge feedback frame that names no answer this sender may rate (unknown, foreign, expired)."""


def task_id_of(reply_event_id: str) -> str:
    """The card's task id: `[0-9A-Za-z_-@]`, ≤ 128 bytes, one per answer."""
    return TASK_PREFIX + uuid.UUID(reply_event_id).hex


def feedback_event_id(user_id: str, task_id: str, key: str) -> str:
    return str(uuid.uuid5(WXBOT_NAMESPACE, f"feedback:{user_id}:{task_id}:{key}"))


def sampled(reply_event_id: str, rate: float) -> bool:
    """A stable choice per answer (a redelivery decides the same)."""
    point = int(hashlib.sha256(f"fb:{reply_event_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return point < rate


def card_for(task_id: str) -> dict[str, object]:
    return {
        "card_type": "button_interaction",
        "main_title": {"title": "这个回答有帮助吗？", "desc": "Was this answer helpful?"},
        "task_id": task_id,
        "button_list": [
            {"type": 0, "text": "👍 有用", "style": 1, "key": f"fb:up:{task_id}"},
            {"type": 0, "text": "👎 没用", "style": 2, "key": f"fb:down:{task_id}"},
        ],
    }


def rating_event(answer: dict[str, Any], user: str, rating: str, event_id: str, correlation: str) -> ev.FeedbackGiven:
    """An explicit rating of a remembered answer (its Redis record): the fields both ways to rate share."""
    event = ev.FeedbackGiven(reply_event_id=answer["reply"], rating=KEYS[rating], kind=ev.FEEDBACK_KIND_EXPLICIT)
    event.reply_to.user_id = user
    meta = event.meta
    meta.event_id = event_id
    meta.conversation_id = answer["conversation"]
    meta.causation_id = answer["reply"]
    meta.correlation_id = correlation
    meta.origin_sequence = int(answer["origin_sequence"])
    meta.occurred_at.CopyFrom(now_timestamp())
    return event


class FeedbackCards:
    def __init__(
        self,
        client: WeComClient | None,
        redis: Redis,
        publisher: EventPublisher,
        seen: SeenMessages | None,
        registry: CollectorRegistry,
        mode: str,
        sample_rate: float,
        ttl_s: int,
    ) -> None:
        self._client = client
        self._redis = redis
        self._publisher = publisher
        self._seen = seen
        self._mode = mode
        self._rate = 1.0 if mode == "always" else sample_rate
        self._ttl_s = ttl_s
        self._log = get_logger("wxbot.gateway.feedback")
        self._outcomes = Counter(
            "wxbot_gateway_feedback",
            "Feedback cards offered and clicks taken, by outcome",
            ["outcome"],
            registry=registry,
        )

    @staticmethod
    def _task_key(task_id: str) -> str:
        return f"wxbot:gateway:feedback:{task_id}"

    @staticmethod
    def _bridge_key(correlation_id: str) -> str:
        return f"wxbot:gateway:feedback:bridge:{correlation_id}"

    # -- after an answer was sent ----------------------------------------------------------------
    async def offer(self, approved: ev.ReplyApproved) -> None:
        """Send the card under an answer just delivered, once; never raises (a card is optional)."""
        if approved.meta.channel == ev.CHANNEL_WEBSOCKET:
            await self._remember_bridge_answer(approved)
            return
        if (
            self._mode == "off"
            or self._client is None
            or approved.meta.channel != ev.CHANNEL_WECOM_APP
            or approved.source != ev.REPLY_SOURCE_LLM
            or not sampled(approved.meta.event_id, self._rate)
        ):
            return
        task_id = task_id_of(approved.meta.event_id)
        record = json.dumps(
            {
                "reply": approved.meta.event_id,
                "correlation": approved.meta.correlation_id,
                "conversation": approved.meta.conversation_id,
                "origin_sequence": approved.meta.origin_sequence,
                "corp": approved.reply_to.corp_id,
                "agent": approved.reply_to.agent_id,
                "user": approved.reply_to.user_id,
            }
        )
        try:
            if not await self._redis.set(self._task_key(task_id), record, nx=True, ex=self._ttl_s):
                return  # offered by an earlier delivery of this answer
            await self._client.send_card(approved.reply_to.user_id, card_for(task_id))
        except Exception as exc:  # the answer is delivered; a missing card is only logged
            self._outcomes.labels("card_failed").inc()
            self._log.warning("feedback_card_failed", error=repr(exc), user=user_hash(approved.reply_to.user_id))
            return
        self._outcomes.labels("card_sent").inc()

    async def _remember_bridge_answer(self, approved: ev.ReplyApproved) -> None:
        """The bridge's client may rate this answer by the msg_id of the message it answered."""
        if self._mode == "off" or approved.source != ev.REPLY_SOURCE_LLM:
            return
        record = json.dumps(
            {
                "reply": approved.meta.event_id,
                "conversation": approved.meta.conversation_id,
                "origin_sequence": approved.meta.origin_sequence,
                "user": approved.reply_to.user_id,
            }
        )
        try:
            await self._redis.set(self._bridge_key(approved.meta.correlation_id), record, ex=self._ttl_s)
        except RedisError as exc:  # the answer is delivered; only its rating is lost
            self._log.warning("feedback_unavailable", error=repr(exc))
            return
        self._outcomes.labels("bridge_offered").inc()

    async def from_bridge(self, sender: str, msg_id: str, correlation: str, rating: str) -> bool:
        """A bridge feedback frame on the answer to `msg_id` (whose inbound event id is `correlation`):
        True when recorded, False when it was recorded before.
        `FeedbackRefusedError` when there is nothing this sender may rate; `TransientError` when
        Redis or NATS is down (the client resends)."""
        if self._mode == "off":
            self._outcomes.labels("off").inc()
            raise FeedbackRefusedError("feedback is off (FEEDBACK=off)")
        try:
            raw = await self._redis.get(self._bridge_key(correlation))
        except RedisError as exc:
            raise TransientError(f"feedback store unavailable: {exc!r}") from exc
        answer = json.loads(raw) if raw is not None else None
        if answer is None or answer["user"] != sender:
            self._outcomes.labels("unknown_task").inc()
            raise FeedbackRefusedError(
                f"no answer to rate for msg_id {msg_id!r}: not answered by the bot, or older than the feedback window"
            )
        event = rating_event(
            answer, sender, rating, feedback_event_id(sender, f"bridge:{correlation}", rating), correlation
        )
        event.meta.channel = ev.CHANNEL_WEBSOCKET
        ack = await self._publisher.publish(event)
        if ack is None or ack.duplicate:
            self._outcomes.labels("duplicate").inc()
            return False
        self._outcomes.labels(f"recorded_{rating}").inc()
        return True

    # -- a click -----------------------------------------------------------------------------------
    async def on_click(self, message: InboundMessage) -> tuple[int, str]:
        """Handle a verified template_card_event callback; the HTTP answer."""
        task_id = message.fields.get("TaskId", "")
        key = message.event_key or ""
        user = message.from_user_name
        parts = key.split(":")
        if len(parts) != 3 or parts[0] != "fb" or parts[1] not in KEYS or parts[2] != task_id:
            return self._ignored("bad_key")
        try:
            raw = await self._redis.get(self._task_key(task_id))
        except RedisError as exc:
            self._log.warning("feedback_unavailable", error=repr(exc))
            return 503, "unavailable"  # WeCom retries; the event id keeps it one click
        if raw is None:
            return self._ignored("unknown_task")  # never offered here, or older than FEEDBACK_TTL_S
        task = json.loads(raw)
        if task["user"] != user:
            return self._ignored("wrong_user")
        event = rating_event(task, user, parts[1], feedback_event_id(user, task_id, key), task["correlation"])
        event.task_id, event.key = task_id, key
        event.reply_to.corp_id, event.reply_to.agent_id = task["corp"], task["agent"]
        event.meta.channel = ev.CHANNEL_WECOM_APP
        try:
            if self._seen is not None:
                ack = await self._seen.publish_once(event, self._publisher, message.create_time)
            else:
                ack = await self._publisher.publish(event)
        except TransientError as exc:
            self._log.error("feedback_publish_failed", error=str(exc))
            return 503, "unavailable"
        if ack is None or ack.duplicate:
            self._outcomes.labels("duplicate").inc()
            return 200, ""
        self._outcomes.labels(f"recorded_{parts[1]}").inc()
        response_code = message.fields.get("ResponseCode", "")
        if self._client is not None and response_code:
            try:
                await self._client.update_card_button(user, response_code, THANKS[parts[1]])
            except Exception as exc:  # the vote is recorded; the card keeps its buttons
                self._outcomes.labels("update_failed").inc()
                self._log.warning("feedback_card_update_failed", error=repr(exc), user=user_hash(user))
        return 200, ""

    def _ignored(self, why: str) -> tuple[int, str]:
        self._outcomes.labels(why).inc()
        return 200, ""
