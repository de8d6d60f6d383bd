"""Composition root of the gateway."""

from __future__ import annotations

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
from wxbot_gateway.claims import SENDING_MARGIN_S, PartClaims
from wxbot_gateway.dedupe import SeenMessages
from wxbot_gateway.delivery import ReplyDelivery
from wxbot_gateway.metrics import GatewayMetrics
from wxbot_gateway.oa_api import official_account_sender
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
    voice: VoiceIntake | None = None,
) -> ASGIApp:
    """The message callbacks (`POST /wecom/callback`, `POST /wechat/callback`) are served in front
    of FastAPI, with a SERVER span of their own; every other route goes through FastAPI."""
    app = FastAPI(title="wxbot gateway", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(wecom_router(settings, metrics))
    app.include_router(bridge_router(hub, runtime.publisher, metrics))
    app.include_router(oa_router(settings, metrics))
    app.include_router(aibot_router(settings, runtime.publisher, seen, streams, metrics))
    app.router.routes.extend(ops_routes(runtime.readiness, runtime.registry))
    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics", exclude_spans=["receive", "send"])
    fast = [
        wecom_callback(settings, runtime.publisher, seen, metrics, voice),
        oa_callback(settings, runtime.publisher, seen, metrics),
    ]
    return FastRoutes(app, fast, runtime.tracer)


async def voice_intake(
    settings: GatewaySettings, runtime: ServiceRuntime, wecom: WeComClient | None
) -> VoiceIntake | None:
    """Voice in for the WeCom app when an ASR endpoint is configured (ASR_BASE_URL or LLM_BASE_URL)."""
    if wecom is None or not settings.asr.configured:
        runtime.readiness.set("voice", True, "off: needs WECOM_* and ASR_BASE_URL or LLM_BASE_URL")
        return None
    try:
        ffmpeg = Ffmpeg.locate(timeout_s=settings.voice_deadline_s)
    except FfmpegUnavailableError as exc:
        runtime.readiness.set("voice", True, f"off: {exc}")
        return None
    asr_http = TracedHttp(create_session(8, settings.voice_deadline_s))
    runtime.on_shutdown(asr_http.close)
    runtime.readiness.set("voice", True, f"on: model {settings.asr.model}")
    return VoiceIntake(
        wecom,
        MediaStore(runtime.js, max_bytes=settings.media_max_bytes),
        ffmpeg,
        Transcriber(asr_http, settings.asr),
        VoiceMetrics(runtime.registry),
        deadline_s=settings.voice_deadline_s,
        max_bytes=settings.voice_max_bytes,
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
    if oa := official_account_sender(settings, http, redis, runtime.readiness, metrics):
        senders[ev.CHANNEL_OFFICIAL_ACCOUNT] = oa
    streams = StreamStore(redis)
    senders[ev.CHANNEL_WECOM_AIBOT] = AibotSender(streams)
    hub = BridgeHub(runtime.nc, settings.gateway_bridge_token)
    if hub.enabled:
        await hub.start()
        senders[ev.CHANNEL_WEBSOCKET] = BridgeSender(hub)
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
        )
        runtime.consume(GATEWAY_DELIVERY, delivery.handle)
    if settings.gateway_role == "delivery":  # sends replies; only the ops endpoints are served
        await runtime.serve_http(None, settings.gateway_port, settings.gateway_host)
    else:
        seen = SeenMessages(redis, settings.gateway_dedup_ttl_s)
        runtime.on_shutdown(seen.flush)  # before Redis closes (hooks run in reverse order)
        voice = await voice_intake(settings, runtime, wecom)
        app = build_http_app(settings, runtime, seen, metrics, hub, streams, voice)
        await runtime.serve_http(
            app,
            settings.gateway_port,
            settings.gateway_host,
            ws_max_bytes=settings.gateway_max_body_bytes,  # bridge frames: the same bound as callback bodies
        )
    runtime.log.info("gateway_role", role=settings.gateway_role)
    await runtime.run_until_stopped()
