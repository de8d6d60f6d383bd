"""Composition root of the gateway."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.types import ASGIApp

from wxbot_common.fast_http import FastRoutes
from wxbot_common.http_client import TracedHttp, create_session
from wxbot_common.media.asr import Transcriber
from wxbot_common.media.errors import FfmpegUnavailableError
from wxbot_common.media.ffmpeg import Ffmpeg
from wxbot_common.media.store import MediaStore
from wxbot_common.nats.topology import GATEWAY_DELIVERY
from wxbot_common.ops import ops_routes
from wxbot_common.outbox import Outbox
from wxbot_common.redis_client import create_redis
from wxbot_common.runtime import ServiceRuntime
from wxbot_gateway.aibot import AibotSender, StreamStore, aibot_router
from wxbot_gateway.callback import wecom_callback, wecom_router
from wxbot_gateway.channel_media import ChannelMedia
from wxbot_gateway.claims import SENDING_MARGIN_S, PartClaims
from wxbot_gateway.dedupe import SeenMessages
from wxbot_gateway.delivery import ReplyDelivery
from wxbot_gateway.feedback import FeedbackCards
from wxbot_gateway.images import ImageIntake, ImageMetrics
from wxbot_gateway.media_send import MediaMetrics, MediaSender
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.oa_api import official_account_client, official_account_sender
from wxbot_gateway.oa_callback import oa_callback, oa_router
from wxbot_gateway.reply_log import ReplyLog
from wxbot_gateway.senders import ReplySender, WeComAppSender
from wxbot_gateway.settings import GatewaySettings
from wxbot_gateway.voice import VoiceIntake, VoiceMetrics
from wxbot_gateway.wecom_api import WeComClient
from wxbot_gateway.ws_bridge import BridgeHub, BridgeSender, bridge_router
from wxbot_proto.events.v1 import events_pb2 as ev


def build_http_app(
    settings: GatewaySettings,
    runtime: ServiceRuntime,
    seen: SeenMessages,
    metrics: GatewayMetrics,
    hub: BridgeHub,
    streams: StreamStore,
    media: MediaSteps | None = None,
    feedback: FeedbackCards | None = None,
) -> ASGIApp:
    """The message callbacks (`POST /wecom/callback`, `POST /wechat/callback`) are served in front
    of FastAPI, with a SERVER span of their own; every other route goes through FastAPI."""
    app = FastAPI(title="wxbot gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(wecom_router(settings, metrics))
    media = media or MediaSteps()
    app.include_router(bridge_router(hub, runtime.publisher, metrics, media.images, feedback, media.voice))
    app.include_router(oa_router(settings, metrics))
    app.include_router(aibot_router(settings, runtime.publisher, seen, streams, metrics, media.images))
    app.router.routes.extend(ops_routes(runtime.readiness, runtime.registry))
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics", exclude_spans=["receive", "send"])
    fast = [
        wecom_callback(settings, runtime.publisher, seen, metrics, media.wecom, feedback),
        oa_callback(settings, runtime.publisher, seen, metrics, media.oa),
    ]
    return FastRoutes(app, fast, runtime.tracer)


@dataclass(frozen=True)
class MediaSteps:
    """What each channel does with media before publishing (None: that step is off)."""

    wecom: ChannelMedia | None = None
    oa: ChannelMedia | None = None
    images: ImageIntake | None = None  # for the AI bot and the bridge, which fetch by URL or inline
    voice: VoiceIntake | None = None  # for the bridge, whose voice frames carry the audio


def media_steps(
    settings: GatewaySettings, runtime: ServiceRuntime, wecom: WeComClient | None, oa: WeComClient | None
) -> MediaSteps:
    """Voice in (an ASR endpoint: ASR_BASE_URL or LLM_BASE_URL) and image in (a vision model: LLM_BASE_URL),
    both needing ffmpeg; `/readyz` says which are on (`voice`, `images`)."""
    try:
        ffmpeg = Ffmpeg.locate(timeout_s=max(settings.voice_deadline_s, settings.image_in_deadline_s))
    except FfmpegUnavailableError as exc:
        runtime.readiness.set("voice", True, f"off: {exc}")
        runtime.readiness.set("images", True, f"off: {exc}")
        return MediaSteps()
    store = MediaStore(runtime.js, max_bytes=settings.media_max_bytes)
    voice: dict[str, VoiceIntake] = {}
    if settings.asr.configured:
        asr_http = TracedHttp(create_session(8, settings.voice_deadline_s))
        runtime.on_shutdown(asr_http.close)
        transcriber = Transcriber(asr_http, settings.asr)
        metrics = VoiceMetrics(runtime.registry)
        for name, client in (("wecom", wecom), ("oa", oa), ("bridge", None)):
            if client is not None or name == "bridge":
                voice[name] = VoiceIntake(
                    client,
                    store,
                    ffmpeg,
                    transcriber,
                    metrics,
                    deadline_s=settings.voice_deadline_s,
                    max_bytes=settings.voice_max_bytes,
                )
        runtime.readiness.set("voice", True, f"on: model {settings.asr.model}")
    else:
        runtime.readiness.set("voice", True, "off: needs ASR_BASE_URL or LLM_BASE_URL")
    images: ImageIntake | None = None
    if settings.vision.configured:
        image_http = TracedHttp(create_session(8, settings.image_in_deadline_s))
        runtime.on_shutdown(image_http.close)
        images = ImageIntake(
            image_http,
            store,
            ffmpeg,
            ImageMetrics(runtime.registry),
            deadline_s=settings.image_in_deadline_s,
            max_bytes=settings.image_in_max_bytes,
            allow_private=settings.image_in_allow_private,
        )
        runtime.readiness.set("images", True, f"on: model {settings.vision.model}")
    else:
        runtime.readiness.set("images", True, "off: needs LLM_BASE_URL (the vision model's endpoint)")
    return MediaSteps(
        ChannelMedia(wecom, voice.get("wecom"), images) if wecom is not None else None,
        ChannelMedia(oa, voice.get("oa"), images) if oa is not None else None,
        images,
        voice.get("bridge"),
    )


async def main() -> None:
    settings = GatewaySettings()
    runtime = ServiceRuntime("gateway", settings)
    await runtime.start()

    metrics = GatewayMetrics(runtime.registry)
    redis = create_redis(settings.redis_url)
    runtime.on_shutdown(redis.aclose)
    # WeCom answers in tens of milliseconds: a few dozen connections carry hundreds of sends per second.
    http = TracedHttp(create_session(settings.wecom_max_connections, settings.wecom_timeout_s))
    runtime.on_shutdown(http.close)

    def config_error(errcode: int, reason: str) -> None:
        # Stays ready (callbacks still work), but the detail and the metric say what is wrong.
        metrics.config_errors.labels("wecom", str(errcode)).inc()
        runtime.readiness.set("wecom", True, f"{reason} (errcode {errcode}): fix it")

    wecom = (
        WeComClient(
            http,
            redis,
            settings.wecom_api_base,
            settings.wecom_corp_id,
            settings.wecom_secret,
            settings.wecom_agent_id,
            on_config_error=config_error,
        )
        if settings.wecom_configured and settings.wecom_secret
        else None
    )
    runtime.readiness.set(
        "wecom", True, "configured" if wecom else "not configured: set WECOM_* to receive and send messages"
    )
    senders: dict[int, ReplySender] = {}
    if wecom is not None:
        senders[ev.CHANNEL_WECOM_APP] = WeComAppSender(wecom, settings.wecom_reply_format)
    oa = official_account_client(settings, http, redis, runtime.readiness, metrics)
    if oa is not None:
        senders[ev.CHANNEL_OFFICIAL_ACCOUNT] = official_account_sender(oa)
    streams = StreamStore(redis)
    senders[ev.CHANNEL_WECOM_AIBOT] = AibotSender(streams)
    hub = BridgeHub(runtime.nc, settings.gateway_bridge_token)
    if hub.enabled:
        await hub.start()
        senders[ev.CHANNEL_WEBSOCKET] = BridgeSender(hub)
    seen = SeenMessages(redis, settings.gateway_dedup_ttl_s)
    feedback = FeedbackCards(
        wecom,
        redis,
        runtime.publisher,
        seen,
        runtime.registry,
        settings.feedback,
        settings.feedback_sample_rate,
        settings.feedback_ttl_s,
    )
    if settings.gateway_role != "ingress":
        outbox = Outbox(redis, runtime.nc, resolver=ReplyLog(runtime.js).is_done)
        await outbox.start()
        runtime.on_shutdown(outbox.stop)
        delivery = ReplyDelivery(
            senders,
            PartClaims(redis, sending_ttl_s=settings.wecom_timeout_s + SENDING_MARGIN_S),
            outbox,
            runtime.publisher,
            metrics,
            GATEWAY_DELIVERY.max_deliver,
            retry_base_s=settings.gateway_retry_base_s,
            retry_max_s=settings.gateway_retry_max_s,
            hold_s=settings.gateway_delivery_hold_s,
            media=MediaSender(
                MediaStore(runtime.js, max_bytes=settings.media_max_bytes), redis, MediaMetrics(runtime.registry)
            ),
            after_sent=feedback.offer,
        )
        runtime.consume(GATEWAY_DELIVERY, delivery.handle)
    if settings.gateway_role == "delivery":  # sends replies; only the ops endpoints are served
        await runtime.serve_http(None, settings.gateway_port, settings.gateway_host)
    else:
        runtime.on_shutdown(seen.flush)  # before Redis closes (hooks run in reverse order)
        media = media_steps(settings, runtime, wecom, oa)
        app = build_http_app(settings, runtime, seen, metrics, hub, streams, media, feedback)
        await runtime.serve_http(
            app,
            settings.gateway_port,
            settings.gateway_host,
            ws_max_bytes=settings.gateway_max_body_bytes,  # bridge frames: the same bound as callback bodies
        )
    runtime.log.info("gateway_role", role=settings.gateway_role)
    await runtime.run_until_stopped()
