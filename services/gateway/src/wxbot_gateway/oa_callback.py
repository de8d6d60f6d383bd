"""`GET`/`POST /wechat/callback`: the WeChat Official Account (公众号), plain and safe mode.

GET answers the raw echostr after checking the 3-value `signature`. POST checks `signature`
(plain mode) or, with `encrypt_type=aes`, the 4-value `msg_signature` and decrypts with the AppID
as receive id (safe/compat mode). The answer is `success` at once — the OA shows users an error
for anything else — and the reply goes out later through the customer-service API.

`POST` is a `FastRoute` like `POST /wecom/callback` (no FastAPI routing or middleware per
message); `GET` stays on FastAPI.
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
from wxbot_gateway.inbound import Origin, channel_event, received
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.settings import GatewaySettings
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.errors import SignatureError, WeComProtocolError
from wxbot_wecom.messages import parse_envelope, parse_inbound
from wxbot_wecom.signature import verify_plain_signature

CHANNEL = "wechat"
PATH = "/wechat/callback"


def oa_router(settings: GatewaySettings, metrics: GatewayMetrics) -> APIRouter:
    """`GET /wechat/callback`: the URL check of the OA's server configuration."""
    router = APIRouter()
    token = settings.wechat_token

    def reject(status: int, reason: str) -> Response:
        metrics.callbacks.labels(CHANNEL, reason).inc()
        return PlainTextResponse(reason, status_code=status)

    @router.get(PATH)
    async def verify(signature: str = "", timestamp: str = "", nonce: str = "", echostr: str = "") -> Response:
        if not token:
            return reject(503, "wechat_not_configured")
        try:
            verify_plain_signature(signature, token, timestamp, nonce)
        except SignatureError:
            return reject(403, "bad_signature")
        metrics.callbacks.labels(CHANNEL, "url_verified").inc()
        return PlainTextResponse(echostr)

    return router


def oa_callback(
    settings: GatewaySettings,
    publisher: EventPublisher,
    seen: SeenMessages,
    metrics: GatewayMetrics,
    media: ChannelMedia | None = None,
) -> FastRoute:
    """`POST /wechat/callback`: one message or event; answers `success` once it is published."""
    log = get_logger("wxbot.gateway.oa")
    token = settings.wechat_token
    crypto = (
        CallbackCrypto(token, settings.wechat_encoding_aes_key, settings.wechat_app_id)
        if token and settings.wechat_encoding_aes_key and settings.wechat_app_id
        else None
    )
    origin = Origin(CHANNEL, ev.CHANNEL_OFFICIAL_ACCOUNT, settings.wechat_app_id, "")

    def reject(status: int, reason: str) -> tuple[int, str]:
        metrics.callbacks.labels(CHANNEL, reason).inc()
        return status, reason

    async def receive(request: RawRequest) -> tuple[int, str]:
        if not token or not settings.wechat_app_id:
            return reject(503, "wechat_not_configured")
        try:
            body = await checked_body(request, XML_TYPES, settings)
        except RefusedError as exc:
            return reject(exc.status, exc.reason)
        query = request.query
        timestamp, nonce = query["timestamp"], query.get("nonce", "")
        try:
            if query.get("encrypt_type", "") == "aes":
                if crypto is None:
                    return reject(400, "safe_mode_not_configured")
                envelope = parse_envelope(body)
                plain = crypto.verify_and_decrypt(query.get("msg_signature", ""), timestamp, nonce, envelope.encrypt)
            else:
                verify_plain_signature(query.get("signature", ""), token, timestamp, nonce)
                plain = body
            message = parse_inbound(plain)
        except SignatureError:
            return reject(403, "bad_signature")
        except WeComProtocolError as exc:
            return reject(400, exc.code)
        event: Message = channel_event(message, origin) if message.msg_type == "event" else received(message, origin)
        # Voice without `Recognition` is transcribed, an image stored, with the OA's own media/get.
        if media is not None:
            await media.fill(event, seen)
        try:
            ack = await seen.publish_once(event, publisher, message.create_time)
        except TransientError as exc:
            log.error("publish_failed", error=str(exc))
            return reject(503, "unavailable")
        outcome = (
            "duplicate" if ack is None or ack.duplicate else ("event" if message.msg_type == "event" else "accepted")
        )
        metrics.callbacks.labels(CHANNEL, outcome).inc()
        return 200, "success"

    return FastRoute("POST", PATH, receive)
