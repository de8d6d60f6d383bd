"""`/ws/bridge`: a WebSocket for third-party protocol clients (bridges from other chat networks).

Frames in: JSON `{"sender": "...", "content": "...", "msg_type": "text"}` (optional `msg_id` makes
a resend idempotent), or an image: `{"sender", "msg_type": "image", "image_url": "https://…"}` or
`"image_base64": "…"` instead of the URL, `content` an optional caption (docs/channels.md). The
image is fetched, converted and stored (images.py) before the message is published and acked.
Voice: `{"sender", "msg_type": "voice", "voice_base64": "…"}` (any format ffmpeg decodes: AMR,
WAV, MP3, Ogg/WebM Opus, M4A), transcribed before the ack as the WeCom app's voice is (voice.py).
Feedback on an answer: `{"sender", "msg_type": "feedback", "msg_id": <the answered message's>,
"rating": "up"|"down"}` → `{"type": "ack", "msg_id", "feedback": "recorded"|"duplicate"}` (feedback.py).
Frames out: `{"type": "ack", "msg_id"}` when the message is in the log,
`{"type": "reply", "to": sender, "content"}` for the bot's answer, `{"type": "error", "error"}`
for a bad frame, binary frames included (the socket stays open); a frame over GATEWAY_MAX_BODY_BYTES
closes it with 1009. A bearer token (`GATEWAY_BRIDGE_TOKEN`, in the
`Authorization` header or the `token` query parameter) is required; without it the handshake is
refused with 403.

Replies find their socket across replicas: each gateway replica listens on the core NATS subject
`wxbot.bridge.<replica id>`, the reply address carries `<replica id>:<socket id>`, and whichever
replica delivers the reply asks the owning replica (request/reply) to write it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import uuid
from typing import NamedTuple

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from wxbot_common.errors import TransientError
from wxbot_common.ids import inbound_event_id, now_timestamp
from wxbot_common.logs import get_logger
from wxbot_common.media.vision import IMAGE_TEXT
from wxbot_common.nats.publisher import EventPublisher
from wxbot_gateway.conversation import conversation_id
from wxbot_gateway.errors import DeliveryRefusedError
from wxbot_gateway.feedback import FeedbackCards, FeedbackRefusedError
from wxbot_gateway.images import ImageIntake
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.untrusted_json import UntrustedJsonError, encodable, load
from wxbot_gateway.voice import VoiceIntake
from wxbot_proto.events.v1 import events_pb2 as ev

CHANNEL = "bridge"
SUBJECT_PREFIX = "wxbot.bridge"
MAX_CONTENT_BYTES = 8192
MAX_URL_CHARS = 4096
VOICE_TEXT = "[voice]"  # a voice message's text until its transcript replaces it
SOCKET_GONE = -2  # errcode of a ReplyFailed whose socket has closed


class FrameError(ValueError):
    pass


class Frame(NamedTuple):
    sender: str
    content: str  # the text, or an image's caption ("" for none)
    msg_id: str | None
    image_url: str = ""
    image_data: bytes = b""
    rating: str = ""  # a feedback frame's "up" or "down"
    voice_data: bytes = b""

    @property
    def is_image(self) -> bool:
        return bool(self.image_url or self.image_data)


def _image_of(frame: dict[str, object]) -> tuple[str, bytes]:
    """(url, bytes) of an image frame: exactly one of `image_url` (http/https) and `image_base64`."""
    url, inline = frame.get("image_url"), frame.get("image_base64")
    if (url is None) == (inline is None):
        raise FrameError("an image frame needs exactly one of 'image_url' and 'image_base64'")
    if url is not None:
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")) or len(url) > MAX_URL_CHARS:
            raise FrameError(f"'image_url' must be an http(s) URL of at most {MAX_URL_CHARS} characters")
        if not encodable(url):
            raise FrameError("strings must not hold lone surrogates (\\ud800-style escapes)")
        return url, b""
    if not (data := _decoded(inline)):
        raise FrameError("'image_base64' must be non-empty standard base64")
    return "", data


def _decoded(inline: object) -> bytes:
    """`inline` decoded as standard base64; empty when it is not a string or not valid base64."""
    try:
        return base64.b64decode(inline, validate=True) if isinstance(inline, str) else b""
    except (binascii.Error, ValueError):
        return b""


def _feedback_of(frame: dict[str, object], sender: object) -> Frame:
    """A rating of the answer to the sender's message `msg_id`."""
    msg_id, rating = frame.get("msg_id"), frame.get("rating")
    if not isinstance(sender, str) or not sender.strip() or len(sender) > 128 or not encodable(sender):
        raise FrameError("'sender' must be a non-empty string of at most 128 characters")
    if not (isinstance(msg_id, str) and 0 < len(msg_id) <= 128 and encodable(msg_id)):
        raise FrameError("a feedback frame needs the 'msg_id' of the answered message (at most 128 characters)")
    if rating not in ("up", "down"):
        raise FrameError("'rating' must be 'up' or 'down'")
    return Frame(sender.strip(), "", msg_id, rating=str(rating))


def parse_frame(raw: str) -> Frame:
    """The sender, text or caption, msg_id and image of a client frame, or FrameError saying what is wrong (pure)."""
    try:
        frame = load(raw)
    except UntrustedJsonError as exc:
        raise FrameError("frame is not JSON (or nested too deep)") from exc
    if not isinstance(frame, dict):
        raise FrameError("frame must be a JSON object")
    sender, msg_type = frame.get("sender"), frame.get("msg_type", "text")
    if msg_type not in ("text", "image", "voice", "feedback"):
        raise FrameError("msg_type must be 'text', 'image', 'voice' or 'feedback'")
    if msg_type == "feedback":
        return _feedback_of(frame, sender)
    content = frame.get("content", "" if msg_type in ("image", "voice") else None)
    if not isinstance(sender, str) or not sender.strip() or len(sender) > 128:
        raise FrameError("'sender' must be a non-empty string of at most 128 characters")
    if not isinstance(content, str) or (msg_type == "text" and not content.strip()):
        raise FrameError("'content' must be a non-empty string")
    if not (encodable(sender) and encodable(content)):
        raise FrameError("strings must not hold lone surrogates (\\ud800-style escapes)")
    if len(content.encode()) > MAX_CONTENT_BYTES:
        raise FrameError(f"'content' exceeds {MAX_CONTENT_BYTES} bytes")
    msg_id = frame.get("msg_id")
    if msg_id is not None and not (isinstance(msg_id, str) and 0 < len(msg_id) <= 128 and encodable(msg_id)):
        raise FrameError("'msg_id' must be a string of at most 128 characters")
    url, data = _image_of(frame) if msg_type == "image" else ("", b"")
    voice = _voice_of(frame) if msg_type == "voice" else b""
    return Frame(sender.strip(), content, msg_id, url, data, voice_data=voice)


def _voice_of(frame: dict[str, object]) -> bytes:
    """The audio of a voice frame: `voice_base64`, non-empty standard base64."""
    if not (data := _decoded(frame.get("voice_base64"))):
        raise FrameError("a voice frame needs 'voice_base64': non-empty standard base64 of the audio")
    return data


class BridgeHub:
    """The sockets of this replica, and the NATS side that lets other replicas reach them."""

    def __init__(self, nc: Client, token: str) -> None:
        self.replica = uuid.uuid4().hex[:12]
        self._nc = nc
        self._token = token
        self._sockets: dict[str, WebSocket] = {}
        self._log = get_logger("wxbot.gateway.bridge")

    @property
    def enabled(self) -> bool:
        return bool(self._token)

    def authorised(self, websocket: WebSocket) -> bool:
        header = websocket.headers.get("authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        given = given or websocket.query_params.get("token", "")
        return self.enabled and bool(given) and hmac.compare_digest(given.encode(), self._token.encode())

    async def start(self) -> None:
        await self._nc.subscribe(f"{SUBJECT_PREFIX}.{self.replica}", cb=self._on_reply)

    async def _on_reply(self, msg: Msg) -> None:
        data = json.loads(msg.data)
        socket = self._sockets.get(data["socket"])
        status = b"gone"
        if socket is not None:
            try:
                await socket.send_json({"type": "reply", "to": data["to"], "content": data["content"]})
                status = b"ok"
            except (RuntimeError, WebSocketDisconnect):
                status = b"gone"
        await msg.respond(status)

    def register(self, websocket: WebSocket) -> str:
        socket_id = secrets.token_hex(8)
        self._sockets[socket_id] = websocket
        return socket_id

    def unregister(self, socket_id: str) -> None:
        self._sockets.pop(socket_id, None)

    async def deliver(self, session: str, to: str, content: str) -> None:
        """Write `content` on the socket named by `session`, wherever it lives."""
        replica, _, socket_id = session.partition(":")
        payload = json.dumps({"socket": socket_id, "to": to, "content": content}).encode()
        try:
            answer = await self._nc.request(f"{SUBJECT_PREFIX}.{replica}", payload, timeout=5)
        except NoRespondersError as exc:
            raise DeliveryRefusedError(SOCKET_GONE, "the bridge socket's gateway replica is gone") from exc
        except NatsTimeoutError as exc:
            raise TransientError("the bridge socket's replica did not answer") from exc
        if answer.data != b"ok":
            raise DeliveryRefusedError(SOCKET_GONE, "the bridge socket has closed")


class BridgeSender:
    """ReplySender for CHANNEL_WEBSOCKET: no size limit to split for."""

    name = CHANNEL

    def __init__(self, hub: BridgeHub) -> None:
        self._hub = hub

    def split(self, text: str) -> list[str]:
        return [text]

    async def send_part(self, address: ev.ReplyAddress, part: str) -> str:
        await self._hub.deliver(address.session, address.user_id, part)
        return ""


def received_from_bridge(frame: Frame, msg_id: str, session: str) -> ev.MessageReceived:
    sender = frame.sender
    if frame.is_image:
        event = ev.MessageReceived(
            provider_msg_id=msg_id, kind=ev.MESSAGE_KIND_IMAGE, text=frame.content.strip() or IMAGE_TEXT
        )
    elif frame.voice_data:
        event = ev.MessageReceived(provider_msg_id=msg_id, kind=ev.MESSAGE_KIND_VOICE, text=VOICE_TEXT)
    else:
        event = ev.MessageReceived(provider_msg_id=msg_id, kind=ev.MESSAGE_KIND_TEXT, text=frame.content)
    event.meta.event_id = inbound_event_id(CHANNEL, sender, msg_id)
    event.meta.conversation_id = conversation_id(CHANNEL, "ws", sender)
    event.meta.correlation_id = event.meta.event_id
    event.meta.channel = ev.CHANNEL_WEBSOCKET
    event.meta.occurred_at.CopyFrom(now_timestamp())
    event.reply_to.user_id = sender
    event.reply_to.session = session
    return event


def bridge_router(
    hub: BridgeHub,
    publisher: EventPublisher,
    metrics: GatewayMetrics,
    images: ImageIntake | None = None,
    feedback: FeedbackCards | None = None,
    voice: VoiceIntake | None = None,
) -> APIRouter:
    router = APIRouter()
    log = get_logger("wxbot.gateway.bridge")

    @router.websocket("/ws/bridge")
    async def bridge(websocket: WebSocket) -> None:
        if not hub.authorised(websocket):
            metrics.callbacks.labels(CHANNEL, "unauthorised").inc()
            await websocket.close(code=1008)  # before accept: the handshake gets HTTP 403
            return
        await websocket.accept()
        socket_id = hub.register(websocket)
        session = f"{hub.replica}:{socket_id}"
        try:
            while True:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                try:
                    if frame.get("text") is None:
                        raise FrameError("frames must be text (JSON), not binary")
                    parsed = parse_frame(frame["text"])
                except FrameError as exc:
                    metrics.callbacks.labels(CHANNEL, "bad_frame").inc()
                    await websocket.send_json({"type": "error", "error": str(exc)})
                    continue
                if parsed.rating:
                    await websocket.send_json(await _rate(feedback, parsed))
                    continue
                msg_id = parsed.msg_id or uuid.uuid4().hex
                event = received_from_bridge(parsed, msg_id, session)
                if images is not None and parsed.is_image:  # without image in, nlp answers the text-only notice
                    fetch = (
                        images.from_url(parsed.image_url) if parsed.image_url else images.from_bytes(parsed.image_data)
                    )
                    await images.fill(event, fetch)
                if voice is not None and parsed.voice_data:  # without voice in, nlp answers the text-only notice
                    await voice.fill(event, parsed.voice_data)
                try:
                    await publisher.publish(event)
                except TransientError as exc:
                    log.error("publish_failed", error=str(exc))
                    await websocket.send_json({"type": "error", "error": "temporarily unavailable, resend"})
                    continue
                metrics.callbacks.labels(CHANNEL, "accepted").inc()
                await websocket.send_json({"type": "ack", "msg_id": msg_id})
        except WebSocketDisconnect:
            pass
        finally:
            hub.unregister(socket_id)

    return router


async def _rate(feedback: FeedbackCards | None, frame: Frame) -> dict[str, str]:
    """The answer to a feedback frame: an ack saying whether it was new, or an error frame."""
    assert frame.msg_id is not None
    if feedback is None:
        return {"type": "error", "error": "feedback is not taken here"}
    try:
        correlation = inbound_event_id(CHANNEL, frame.sender, frame.msg_id)  # the answered message's event id
        recorded = await feedback.from_bridge(frame.sender, frame.msg_id, correlation, frame.rating)
    except FeedbackRefusedError as exc:
        return {"type": "error", "error": str(exc)}
    except TransientError:
        return {"type": "error", "error": "temporarily unavailable, resend"}
    return {"type": "ack", "msg_id": frame.msg_id, "feedback": "recorded" if recorded else "duplicate"}
