"""Images for the chat model: an image message is asked about with an `image_url` content part.

The gateway stored a vision-ready JPEG/PNG and put its `MediaRef` in the event (docs/media.md);
here it is read back, sent inline as a base64 data URL (every OpenAI-compatible server takes those,
few can reach our store by URL), with the caption as the question or, for an image alone, a
request for a short description.

An image followed within `IMAGE_FOLLOWUP_S` by a text question from the same conversation is sent
again with that question ("what breed is it?"). The pending image is a Redis hash per
conversation (restart-safe, shared by every replica) holding the reference, the image's stream
sequence and time; the first later text message of the window claims it by event id, so a
redelivery of that message gets the image again and any other message does not. History keeps
text only — "[image]" or the caption, then the description — so old images are never re-sent.

The claim is a Redis round trip before every question's LLM call, and most conversations never
send an image: context marks the user turn of an image message (`Turn.image`), so a question whose
history shows no image turn within the window skips it (`may_have_image`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from wxbot_common.logs import get_logger
from wxbot_common.media.errors import MediaError as ConversionError
from wxbot_common.media.image import Image
from wxbot_common.media.sniff import sniff_image
from wxbot_common.media.store import MediaError as StoreError
from wxbot_common.media.store import MediaRef, MediaStore
from wxbot_common.media.vision import IMAGE_TEXT
from wxbot_common.redis_scripts import BatchedScripts
from wxbot_nlp.resilience import ResilientBackend
from wxbot_proto.context.v1 import context_pb2 as ctx
from wxbot_proto.events.v1 import events_pb2 as ev

DESCRIBE_PROMPT = (
    "用户发来了一张图片。请用两三句话简短描述图片内容。"
    "(The user sent this image: describe it briefly, in two or three sentences, in the user's language.)"
)
KEY_MARGIN_S = 60  # the hash outlives the window a little: the claim compares event times, not the TTL

# KEYS: the hash. ARGV: name, size, content type, sha256, sequence, time, ttl s.
# A redelivered older image never replaces a newer one.
_REMEMBER = """
local seq = tonumber(redis.call('hget', KEYS[1], 'seq') or '0')
if seq > tonumber(ARGV[5]) then return 0 end
redis.call('del', KEYS[1])
redis.call('hset', KEYS[1], 'name', ARGV[1], 'size', ARGV[2], 'type', ARGV[3], 'sha256', ARGV[4],
  'seq', ARGV[5], 'at', ARGV[6])
redis.call('expire', KEYS[1], ARGV[7])
return 1
"""
# KEYS: the hash. ARGV: event id, sequence, time, window s. The image, when this message may use it.
_CLAIM = """
local f = redis.call('hmget', KEYS[1], 'name', 'size', 'type', 'sha256', 'seq', 'at', 'used_by')
if not f[1] then return nil end
if tonumber(f[5]) >= tonumber(ARGV[2]) then return nil end
if tonumber(ARGV[3]) - tonumber(f[6]) > tonumber(ARGV[4]) then return nil end
if f[7] and f[7] ~= ARGV[1] then return nil end
redis.call('hset', KEYS[1], 'used_by', ARGV[1])
return {f[1], f[2], f[3], f[4]}
"""


class VisionError(Exception):
    """The image could not be read back (expired from the store, not an image): one notice."""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PendingImages:
    """The last image of each conversation, for the question that may follow it."""

    def __init__(self, redis: Redis, window_s: float, *, scripts: BatchedScripts | None = None) -> None:
        self._redis = redis
        self.window_s = window_s
        # EVALSHA, loaded on first use: the claim runs for every question, so not the script text each time.
        scripts = scripts or BatchedScripts(redis)  # the calls of one loop turn: one round trip
        self._remember = scripts.register_script(_REMEMBER)
        self._claim = scripts.register_script(_CLAIM)

    @staticmethod
    def _key(conversation_id: str) -> str:
        return f"wxbot:nlp:image:{conversation_id}"

    async def remember(self, conversation_id: str, ref: MediaRef, seq: int, at: float) -> None:
        ttl = int(self.window_s) + KEY_MARGIN_S
        args = (ref.name, ref.size, ref.content_type, ref.sha256, seq, repr(at), ttl)
        await self._remember(keys=[self._key(conversation_id)], args=args)

    async def claim(self, conversation_id: str, event_id: str, seq: int, at: float) -> MediaRef | None:
        args = (event_id, seq, repr(at), repr(self.window_s))
        found = await self._claim(keys=[self._key(conversation_id)], args=args)
        if not found:
            return None
        name, size, content_type, sha256 = (_text(v) for v in found)
        return MediaRef(name, int(size), content_type, sha256)

    async def forget(self, conversation_id: str) -> None:
        await self._redis.delete(self._key(conversation_id))


@dataclass(frozen=True)
class VisionTurn:
    """The user's turn as content parts: the question (or the description request) and the image."""

    text: str
    data_url: str
    use: str  # describe | caption | follow_up (metric label)

    def content(self) -> list[dict[str, Any]]:
        return [{"type": "text", "text": self.text}, {"type": "image_url", "image_url": {"url": self.data_url}}]


class VisionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.images = Counter(
            "wxbot_nlp_images",
            "Images sent to the vision model, by use (describe: an image alone, caption: with its text, follow_up: "
            "a later question about it), and images that could not be read back (unreadable)",
            ["use"],
            registry=registry,
        )


def may_have_image(
    turns: Sequence[ctx.Turn], complete: bool, truncated: bool, asked_at: float, window_s: float
) -> bool:
    """Whether a pending image may wait for a question with this history (GetHistory's `turns`,
    oldest first, `complete` and `truncated`, for the question that arrived at `asked_at`): False
    only when it cannot. The image message leaves a user turn marked `image`, projected before the
    question's history is answered (that waits for earlier messages), so an image within the window
    shows in the history — unless the history is not complete, or was cut inside the window. (The
    store keeps `CONTEXT_MAX_TURNS` turns, 50: an image turn it dropped had 25 messages after it,
    and the first text question among them claimed the image, unless all 25 were commands.)"""
    if not complete or any(turn.image for turn in turns):
        return True
    if not truncated:
        return False
    if not turns:
        return True  # nothing fitted the budget: nothing to go by
    oldest = turns[0].at.seconds + turns[0].at.nanos / 1e9  # when it was projected: after it arrived
    return oldest >= asked_at - window_s  # cut inside the window: an image turn may have been left out


def occurred_at(accepted: ev.InboundAccepted) -> float:
    """When the user's message arrived at the gateway (unix seconds), the same on every redelivery."""
    at = accepted.message.meta.occurred_at
    return at.seconds + at.nanos / 1e9


class Vision:
    """Builds the vision turn of an image message or of the question that follows one."""

    def __init__(
        self,
        store: MediaStore,
        pending: PendingImages | None,
        metrics: VisionMetrics,
        backend: ResilientBackend | None = None,
    ) -> None:
        self._store = store
        self._pending = pending
        self._metrics = metrics
        self.backend = backend  # VISION_MODEL's, when it is not the chat model
        self._tracer = trace.get_tracer("wxbot.nlp.vision")
        self._log = get_logger("wxbot.nlp.vision")

    async def for_image(self, accepted: ev.InboundAccepted) -> VisionTurn:
        """The turn of an image message (its caption, else a description request); VisionError when unreadable."""
        message, meta = accepted.message, accepted.meta
        ref = MediaRef.from_proto(message.media)
        try:
            data_url = await self._data_url(ref)
        except VisionError:
            self._metrics.images.labels("unreadable").inc()
            raise
        if self._pending is not None:
            try:
                await self._pending.remember(meta.conversation_id, ref, meta.origin_sequence, occurred_at(accepted))
            except RedisError as exc:  # the image is still answered; only a follow-up will not see it
                self._log.warning("pending_image_unavailable", error=repr(exc))
        caption = message.text.strip()
        turn = (
            VisionTurn(caption, data_url, "caption")
            if caption and caption != IMAGE_TEXT
            else VisionTurn(DESCRIBE_PROMPT, data_url, "describe")
        )
        self._metrics.images.labels(turn.use).inc()
        return turn

    def may_follow_image(self, history: ctx.GetHistoryResponse, accepted: ev.InboundAccepted) -> bool:
        """Whether `for_follow_up` may find an image for this question, judged from its history."""
        if self._pending is None:
            return False
        return may_have_image(
            history.turns, history.complete, history.truncated, occurred_at(accepted), self._pending.window_s
        )

    async def for_follow_up(self, accepted: ev.InboundAccepted) -> VisionTurn | None:
        """The turn of a text question about the conversation's recent image, or None (no image, too late)."""
        if self._pending is None:
            return None
        meta = accepted.meta
        try:
            ref = await self._pending.claim(
                meta.conversation_id, meta.event_id, meta.origin_sequence, occurred_at(accepted)
            )
        except RedisError as exc:
            self._log.warning("pending_image_unavailable", error=repr(exc))
            return None
        if ref is None:
            return None
        try:
            data_url = await self._data_url(ref)
        except VisionError as exc:  # expired meanwhile: answer the question as text
            self._log.warning("follow_up_image_unreadable", error=str(exc))
            self._metrics.images.labels("unreadable").inc()
            return None
        self._metrics.images.labels("follow_up").inc()
        return VisionTurn(accepted.message.text, data_url, "follow_up")

    async def forget(self, conversation_id: str) -> None:
        """After /reset: the pending image goes with the rest of the memory."""
        if self._pending is None:
            return
        try:
            await self._pending.forget(conversation_id)
        except RedisError as exc:
            self._log.warning("pending_image_unavailable", error=repr(exc))

    async def _data_url(self, ref: MediaRef) -> str:
        with self._tracer.start_as_current_span("vision.load") as span:
            span.set_attributes({"wxbot.media.size": ref.size, "wxbot.media.type": ref.content_type})
            try:
                data = await self._store.get(ref)
                return Image(data, sniff_image(data)).data_url()
            except (StoreError, ConversionError) as exc:
                span.set_attribute("error.type", type(exc).__name__)
                raise VisionError(str(exc)) from exc
