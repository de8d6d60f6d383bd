"""`GET`/`POST /wecom/callback`: verify, decrypt, publish, answer at once.

The handler does no slow work (no LLM): WeCom retries any callback that takes over 5 s. The
exceptions are media: a voice message is downloaded and transcribed within `VOICE_DEADLINE_S`
(voice.py) so that safety checks its transcript, an image fetched and stored within
`IMAGE_DEADLINE_S` (images.py); a retry meanwhile carries the same event id, so it is still one
message. A bad request gets a 4xx and publishes nothing.

`POST` carries every message, so it is a `FastRoute` (served from ASGI directly, with its own
SERVER span: no FastAPI routing or middleware per message); the rare `GET` URL check stays on
FastAPI.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse
from google.protobuf.message import Message

from wxbot_common.errors import TransientError
from wxbot_common.fast_http import FastRoute, RawRequest
from wxbot_common.logs import get_logger
from wxbot_common.nats.publisher import EventPublisher
from wxbot_gateway.callback_input import XML_TYPES, RefusedError, checked_body
from wxbot_gateway.channel_media import ChannelMedia
from wxbot_gateway.dedupe import SeenMessages
from wxbot_gateway.feedback import FeedbackCards
from wxbot_gateway.inbound import channel_event_from_wecom, received_from_wecom
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.settings import GatewaySettings
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.errors import SignatureError, WeComProtocolError
from wxbot_wecom.messages import parse_envelope, parse_inbound

CHANNEL = "wecom"
PATH = "/wecom/callback"


def _crypto(settings: GatewaySettings) -> CallbackCrypto | None:
    if not settings.wecom_configured:
        return None
    return CallbackCrypto(settings.wecom_token, settings.wecom_encoding_aes_key, settings.wecom_corp_id)


def wecom_router(settings: GatewaySettings, metrics: GatewayMetrics) -> APIRouter:
    """`GET /wecom/callback`: the URL check WeCom makes when the callback is configured."""
    router = APIRouter()
    crypto = _crypto(settings)

    def reject(status: int, reason: str) -> Response:
        metrics.callbacks.labels(CHANNEL, reason).inc()
        return PlainTextResponse(reason, status_code=status)

    @router.get(PATH)
    async def verify_url(msg_signature: str = "", timestamp: str = "", nonce: str = "", echostr: str = "") -> Response:
        if crypto is None:
            return reject(503, "wecom_not_configured")
        try:
            echo = crypto.verify_url(msg_signature, timestamp, nonce, echostr)
        except SignatureError:
            return reject(403, "bad_signature")
        except WeComProtocolError as exc:
            return reject(400, exc.code)
        metrics.callbacks.labels(CHANNEL, "url_verified").inc()
        return PlainTextResponse(echo)

    return router


def wecom_callback(
    settings: GatewaySettings,
    publisher: EventPublisher,
    seen: SeenMessages,
    metrics: GatewayMetrics,
    media: ChannelMedia | None = None,
    feedback: FeedbackCards | None = None,
) -> FastRoute:
    """`POST /wecom/callback`: one message or event; answers 200 with an empty body once it is published."""
    log = get_logger("wxbot.gateway.callback")
    crypto = _crypto(settings)

    def reject(status: int, reason: str) -> tuple[int, str]:
        metrics.callbacks.labels(CHANNEL, reason).inc()
        return status, reason

    async def receive(request: RawRequest) -> tuple[int, str]:
        if crypto is None:
            return reject(503, "wecom_not_configured")
        try:
            body = await checked_body(request, XML_TYPES, settings)
        except RefusedError as exc:
            return reject(exc.status, exc.reason)
        query = request.query
        try:
            envelope = parse_envelope(body)
            plain = crypto.verify_and_decrypt(
                query.get("msg_signature", ""), query["timestamp"], query.get("nonce", ""), envelope.encrypt
            )
            message = parse_inbound(plain)
        except SignatureError:
            return reject(403, "bad_signature")
        except WeComProtocolError as exc:
            return reject(400, exc.code)
        # Signed and addressed to this corp, but for another app or another receiver: not ours to answer.
        if settings.wecom_agent_id and message.agent_id and message.agent_id != settings.wecom_agent_id:
            return reject(403, "unknown_agent")
        if message.to_user_name != settings.wecom_corp_id:
            return reject(403, "wrong_receiver")
        if feedback is not None and message.msg_type == "event" and message.event == "template_card_event":
            status, reason = await feedback.on_click(message)  # a 👍/👎 on an answer (feedback.py)
            metrics.callbacks.labels(CHANNEL, "feedback" if status == 200 else reason).inc()
            return status, reason
        # Events (enter_agent, subscribe, click…) need no answer: they are logged, never sent to the LLM.
        event: Message = (
            channel_event_from_wecom(message, settings.wecom_corp_id, settings.wecom_agent_id)
            if message.msg_type == "event"
            else received_from_wecom(message, settings.wecom_corp_id, settings.wecom_agent_id)
        )
        # A voice's transcript becomes the text safety checks, an image is stored for the model.
        if media is not None:
            await media.fill(event, seen)
        try:
            ack = await seen.publish_once(event, publisher, message.create_time)
        except TransientError as exc:
            log.error("publish_failed", error=str(exc))
            return reject(503, "unavailable")  # WeCom retries; the event id keeps it one message
        outcome = (
            "duplicate" if ack is None or ack.duplicate else ("event" if message.msg_type == "event" else "accepted")
        )
        metrics.callbacks.labels(CHANNEL, outcome).inc()
        return 200, ""

    return FastRoute("POST", PATH, receive)
