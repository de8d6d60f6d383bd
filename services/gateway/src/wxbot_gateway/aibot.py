"""WeCom AI bot (智能机器人), webhook mode: `GET`/`POST /wecom/aibot/callback` with streaming replies.

A message is acknowledged at once with an encrypted stream reply (a stream id derived from the
msgid, `finish: false`, a "thinking" placeholder) and published like any other. WeCom then polls
with stream-refresh callbacks; each refresh is answered from the stream's state in Redis, which
delivery fills with the approved reply (cumulative content — the latest text replaces what the
user sees — and `finish: true`). Any replica can answer any refresh. Group chats carry `chatid`
and map to conversations per group or per member (CONVERSATION_GROUP_SCOPE).
"""

from __future__ import annotations

import hashlib
import json
import time

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from redis.asyncio import Redis
from redis.exceptions import RedisError

from wxbot_common.errors import TransientError
from wxbot_common.fast_http import RawRequest
from wxbot_common.ids import inbound_event_id, now_timestamp
from wxbot_common.logs import get_logger
from wxbot_common.media.vision import IMAGE_TEXT
from wxbot_common.nats.publisher import EventPublisher
from wxbot_common.nats.subjects import meta_of
from wxbot_gateway.aibot_payload import AibotCallback, parse_callback
from wxbot_gateway.callback_input import JSON_TYPES, RefusedError, checked_body
from wxbot_gateway.conversation import GroupScope, conversation_id
from wxbot_gateway.dedupe import SeenMessages
from wxbot_gateway.errors import DeliveryRefusedError
from wxbot_gateway.images import ImageIntake
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.settings import GatewaySettings
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.errors import SignatureError, WeComProtocolError
from wxbot_wecom.messages import parse_json_envelope

CHANNEL = "aibot"
THINKING = "正在思考…"
STREAM_TTL_S = 6 * 60 + 60  # WeCom polls for at most 6 minutes after the user's message
MAX_STREAM_BYTES = 20480
KINDS = {
    "text": ev.MESSAGE_KIND_TEXT,
    "voice": ev.MESSAGE_KIND_VOICE,
    "mixed": ev.MESSAGE_KIND_TEXT,
    "image": ev.MESSAGE_KIND_IMAGE,
    "file": ev.MESSAGE_KIND_FILE,
    "video": ev.MESSAGE_KIND_VIDEO,
}


def stream_id(msgid: str) -> str:
    """Stable across WeCom's redeliveries of one message, so a retry resumes the same stream."""
    return "wxbot-" + hashlib.sha256(msgid.encode()).hexdigest()[:24]


def stream_reply(sid: str, content: str, finish: bool) -> str:
    return json.dumps(
        {"msgtype": "stream", "stream": {"id": sid, "finish": finish, "content": content}},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def truncate_utf8(text: str, limit: int = MAX_STREAM_BYTES) -> str:
    return text.encode()[:limit].decode(errors="ignore")


class StreamStore:
    """Stream states in Redis: `{content, finish}` per stream id, shared by every replica."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    @staticmethod
    def _key(sid: str) -> str:
        return f"wxbot:aibot:stream:{sid}"

    async def open(self, sid: str) -> None:
        await self._redis.set(
            self._key(sid), json.dumps({"content": THINKING, "finish": False}), nx=True, ex=STREAM_TTL_S
        )

    async def finish(self, sid: str, content: str) -> bool:
        """Store the final answer; False when the stream has expired (WeCom stopped polling)."""
        key = self._key(sid)
        state = json.dumps({"content": truncate_utf8(content), "finish": True}, ensure_ascii=False)
        return bool(await self._redis.set(key, state, xx=True, keepttl=True))

    async def read(self, sid: str) -> tuple[str, bool] | None:
        raw = await self._redis.get(self._key(sid))
        if raw is None:
            return None
        state = json.loads(raw)
        return str(state["content"]), bool(state["finish"])


class AibotSender:
    """ReplySender for CHANNEL_WECOM_AIBOT: the whole answer becomes the stream's final content."""

    name = CHANNEL

    def __init__(self, streams: StreamStore) -> None:
        self._streams = streams

    def split(self, text: str) -> list[str]:
        return [text]

    async def send_part(self, address: ev.ReplyAddress, part: str) -> str:
        try:
            alive = await self._streams.finish(address.session, part)
        except RedisError as exc:
            raise TransientError(f"stream store unavailable: {exc!r}") from exc
        if not alive:
            raise DeliveryRefusedError(-3, "the AI-bot stream expired before the answer was ready")
        return address.session


def aibot_router(
    settings: GatewaySettings,
    publisher: EventPublisher,
    seen: SeenMessages,
    streams: StreamStore,
    metrics: GatewayMetrics,
    images: ImageIntake | None = None,
) -> APIRouter:
    router = APIRouter()
    log = get_logger("wxbot.gateway.aibot")
    crypto = (
        CallbackCrypto(settings.aibot_token, settings.aibot_encoding_aes_key, "")
        if settings.aibot_token and settings.aibot_encoding_aes_key
        else None
    )
    scope: GroupScope = settings.conversation_group_scope

    def reject(status: int, reason: str) -> Response:
        metrics.callbacks.labels(CHANNEL, reason).inc()
        # 408: the rest of a stalled body is never read, so the connection cannot carry another request.
        headers = {"connection": "close"} if status == 408 else None
        return PlainTextResponse(reason, status_code=status, headers=headers)

    def encrypted(reply_json: str, nonce: str) -> Response:
        assert crypto is not None
        body = crypto.encrypt_reply_json(reply_json, str(int(time.time())), nonce)
        return Response(body, media_type="application/json")

    @router.get("/wecom/aibot/callback")
    async def verify(msg_signature: str = "", timestamp: str = "", nonce: str = "", echostr: str = "") -> Response:
        if crypto is None:
            return reject(503, "aibot_not_configured")
        try:
            return PlainTextResponse(crypto.verify_url(msg_signature, timestamp, nonce, echostr))
        except SignatureError:
            return reject(403, "bad_signature")
        except WeComProtocolError as exc:
            return reject(400, exc.code)

    @router.post("/wecom/aibot/callback")
    async def receive(request: Request, msg_signature: str = "", timestamp: str = "", nonce: str = "") -> Response:
        if crypto is None:
            return reject(503, "aibot_not_configured")
        try:
            body = await checked_body(RawRequest(request.scope, request.receive), JSON_TYPES, settings)
        except RefusedError as exc:
            return reject(exc.status, exc.reason)
        try:
            plain = crypto.verify_and_decrypt(msg_signature, timestamp, nonce, parse_json_envelope(body))
            message = parse_callback(plain)
        except SignatureError:
            return reject(403, "bad_signature")
        except WeComProtocolError as exc:
            return reject(400, exc.code)
        if message.kind == "stream":  # a refresh poll: answer from the stream's state, whichever replica wrote it
            try:
                state = await streams.read(message.stream_id)
            except RedisError as exc:
                log.error("stream_store_unavailable", error=repr(exc))
                return reject(503, "unavailable")  # WeCom polls again
            content, finish = state if state is not None else ("", True)
            metrics.callbacks.labels(CHANNEL, "refresh").inc()
            return encrypted(stream_reply(message.stream_id, content, finish), nonce)
        event = _event(message, scope)
        event_id = meta_of(event).event_id
        sid = stream_id(message.msgid)
        is_event = message.kind == "event"
        try:
            if not await seen.seen(event_id):
                # The image behind its encrypted URL is fetched, decrypted and stored before publishing.
                if images is not None and isinstance(event, ev.MessageReceived) and message.image_url:
                    await images.fill(event, images.from_url(message.image_url, crypto))
                if not is_event:
                    await streams.open(sid)
                ack = await publisher.publish(event)
                await seen.remember(event_id)
                outcome = "duplicate" if ack.duplicate else ("event" if is_event else "accepted")
                metrics.callbacks.labels(CHANNEL, outcome).inc()
            else:
                metrics.callbacks.labels(CHANNEL, "duplicate").inc()
            if is_event:
                return Response(status_code=200)  # logged only: events never reach the LLM
            state = await streams.read(sid)
        except (TransientError, RedisError) as exc:
            log.error("publish_failed", error=repr(exc))
            return reject(503, "unavailable")  # WeCom redelivers; the msgid keeps it one message
        content, finish = state if state is not None else (THINKING, False)
        return encrypted(stream_reply(sid, content, finish), nonce)

    return router


def _event(message: AibotCallback, scope: GroupScope) -> ev.MessageReceived | ev.ChannelEventReceived:
    """The event a callback stands for; its id comes from the msgid, so redeliveries are one event."""
    out: ev.ChannelEventReceived | ev.MessageReceived
    if message.kind == "event":
        out = ev.ChannelEventReceived(event=message.event)
    else:
        kind = ev.MESSAGE_KIND_IMAGE if message.image_url else KINDS.get(message.kind, ev.MESSAGE_KIND_UNSPECIFIED)
        # An image with text (`mixed`) keeps the text as its caption; an image alone reads "[image]".
        text = (message.text.strip() or IMAGE_TEXT) if message.image_url else message.text
        out = ev.MessageReceived(provider_msg_id=message.msgid, kind=kind, text=text)
        out.reply_to.session = stream_id(message.msgid)
    out.meta.event_id = inbound_event_id(CHANNEL, message.bot, message.msgid)
    out.meta.conversation_id = conversation_id(CHANNEL, message.bot, message.user, message.chat, scope)
    out.meta.correlation_id = out.meta.event_id
    out.meta.channel = ev.CHANNEL_WECOM_AIBOT
    out.meta.occurred_at.CopyFrom(now_timestamp())
    out.reply_to.corp_id = message.bot
    out.reply_to.user_id = message.user
    out.reply_to.chat_id = message.chat
    return out
