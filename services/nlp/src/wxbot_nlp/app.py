"""Composition root of the nlp service."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from wxbot_common.http_client import TracedHttp, create_session
from wxbot_common.media.errors import FfmpegUnavailableError
from wxbot_common.media.ffmpeg import Ffmpeg
from wxbot_common.media.generation import ImageGenerator
from wxbot_common.media.speech import Speaker
from wxbot_common.media.store import MediaStore
from wxbot_common.nats.topology import NLP_DRAFTER
from wxbot_common.redis_client import create_redis
from wxbot_common.redis_scripts import BatchedScripts
from wxbot_common.rpc import create_channel
from wxbot_common.runtime import ServiceRuntime
from wxbot_nlp.answer_cache import AnswerCache
from wxbot_nlp.handlers import Drafter, DraftingPolicy, NlpMetrics
from wxbot_nlp.history_batch import BatchedHistory
from wxbot_nlp.kb_source import KbSource
from wxbot_nlp.media_out import Drawer, DrawTool, MediaOut, MediaOutMetrics, Voicer, VoiceReply
from wxbot_nlp.openai_compatible import OpenAICompatibleBackend
from wxbot_nlp.resilience import CircuitBreaker, ResilientBackend
from wxbot_nlp.settings import NlpSettings
from wxbot_nlp.skills.calls import SkillCaller, SkillMetrics
from wxbot_nlp.skills.commands import SkillCommands
from wxbot_nlp.skills.registry import SkillFilter, SkillRegistry
from wxbot_nlp.tool_loop import ToolLoop
from wxbot_nlp.variants import Variant
from wxbot_nlp.vision import PendingImages, Vision, VisionMetrics
from wxbot_proto.context.v1 import context_pb2_grpc as ctx_grpc

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from wxbot_nlp.skills.mcp import McpBridge


def _count_errors(metrics: NlpMetrics, variant: str) -> Callable[[str], None]:
    def count(kind: str) -> None:
        metrics.errors.labels(kind, variant).inc()

    return count


def _is_open(breaker: CircuitBreaker) -> Callable[[], float]:
    return lambda: float(breaker.open)


def _is_up(bridge: McpBridge) -> Callable[[], float]:
    return lambda: float(bridge.up)


def build_backends(
    settings: NlpSettings, http: TracedHttp, variants: list[Variant], metrics: NlpMetrics
) -> dict[str, ResilientBackend] | None:
    """One resilient backend per A/B variant (its model and temperature), or None without an LLM."""
    if not settings.llm_base_url:
        return None

    def endpoint(base_url: str, key: str, model: str, temperature: float) -> OpenAICompatibleBackend:
        return OpenAICompatibleBackend(
            http,
            base_url,
            key,
            model,
            settings.llm_timeout_s,
            settings.llm_max_tokens,
            temperature,
            settings.llm_stream,
        )

    backends: dict[str, ResilientBackend] = {}
    for v in variants:
        model = v.model or settings.llm_model
        temperature = settings.llm_temperature if v.temperature is None else v.temperature
        fallback = (
            endpoint(
                settings.llm_fallback_base_url,
                settings.llm_fallback_api_key,
                settings.llm_fallback_model or model,
                temperature,
            )
            if settings.llm_fallback_base_url
            else None
        )
        resilient = ResilientBackend(
            endpoint(settings.llm_base_url, settings.llm_api_key, model, temperature),
            attempts=settings.llm_retries + 1,
            backoff_base_s=settings.llm_backoff_base_s,
            breaker=CircuitBreaker(settings.llm_breaker_threshold, settings.llm_breaker_cooldown_s),
            fallback=fallback,
            on_error=_count_errors(metrics, v.name),
            attempt_timeout_s=settings.llm_timeout_s,
            deadline_s=settings.llm_answer_deadline_s,
        )
        metrics.circuit_open.labels(v.name).set_function(_is_open(resilient.breaker))
        backends[v.name] = resilient
    return backends


def build_vision(
    settings: NlpSettings,
    redis: Redis,
    runtime: ServiceRuntime,
    http: TracedHttp,
    metrics: NlpMetrics,
    scripts: BatchedScripts | None = None,
) -> Vision:
    """Images for the model: read from the media store; VISION_MODEL gets a backend of its own
    (else each variant's chat model reads them); a pending image per conversation for follow-ups."""
    backend = None
    if settings.vision_model and settings.vision_model != settings.llm_model:
        endpoint = OpenAICompatibleBackend(
            http,
            settings.llm_base_url,
            settings.llm_api_key,
            settings.vision_model,
            settings.llm_timeout_s,
            settings.llm_max_tokens,
            settings.llm_temperature,
            settings.llm_stream,
        )
        backend = ResilientBackend(
            endpoint,
            attempts=settings.llm_retries + 1,
            backoff_base_s=settings.llm_backoff_base_s,
            breaker=CircuitBreaker(settings.llm_breaker_threshold, settings.llm_breaker_cooldown_s),
            on_error=_count_errors(metrics, "vision"),
            attempt_timeout_s=settings.llm_timeout_s,
            deadline_s=settings.llm_answer_deadline_s,
        )
    pending = (
        PendingImages(redis, settings.image_followup_s, scripts=scripts) if settings.image_followup_s > 0 else None
    )
    store = MediaStore(runtime.js, max_bytes=settings.media_max_bytes)
    runtime.readiness.set("vision", True, f"model {settings.vision.model}")
    return Vision(store, pending, VisionMetrics(runtime.registry), backend)


def build_media_out(settings: NlpSettings, runtime: ServiceRuntime, http: TracedHttp) -> MediaOut:
    """Drawings when an image endpoint is configured (IMAGE_BASE_URL or LLM_BASE_URL), voice when
    VOICE_REPLY asks for it and a TTS endpoint is; both need ffmpeg. /readyz says which (`media`)."""
    wants_voice = settings.voice_reply is not VoiceReply.NEVER and settings.tts.configured
    draws = settings.image.configured and bool(settings.image.model)  # IMAGE_MODEL= (empty) turns drawing off
    if not draws and not wants_voice:
        runtime.readiness.set("media", True, "off: no image endpoint or IMAGE_MODEL, VOICE_REPLY=never")
        return MediaOut()
    try:
        ffmpeg = Ffmpeg.locate(timeout_s=max(settings.image_deadline_s, settings.tts_deadline_s))
    except FfmpegUnavailableError as exc:
        runtime.readiness.set("media", True, f"off: {exc}")
        return MediaOut()
    store = MediaStore(runtime.js, max_bytes=settings.media_max_bytes)
    metrics = MediaOutMetrics(runtime.registry)
    drawer = (
        Drawer(
            ImageGenerator(http, settings.image, settings.image_size, settings.image_max_bytes),
            ffmpeg,
            store,
            metrics,
            settings.image_deadline_s,
        )
        if draws
        else None
    )
    voicer = (
        Voicer(
            Speaker(http, settings.tts, settings.tts_voice),
            ffmpeg,
            store,
            metrics,
            settings.voice_reply,
            settings.tts_deadline_s,
        )
        if wants_voice
        else None
    )
    drawing = f"images by {settings.image.model}" if drawer else "no images"
    speaking = f"voice {settings.voice_reply.value} by {settings.tts.model}" if voicer else "no voice"
    runtime.readiness.set("media", True, f"on: {drawing}, {speaking}")
    return MediaOut(drawer, voicer)


async def main() -> None:
    settings = NlpSettings()
    runtime = ServiceRuntime("nlp", settings)
    await runtime.start()

    channel = create_channel(settings.context_grpc_addr)

    async def close_channel() -> None:
        await channel.close(grace=2)

    runtime.on_shutdown(close_channel)
    http = TracedHttp(create_session(settings.nlp_concurrency, settings.llm_timeout_s))
    runtime.on_shutdown(http.close)
    redis = create_redis(settings.redis_url, socket_timeout_s=2.0)
    runtime.on_shutdown(redis.aclose)
    scripts = BatchedScripts(redis)  # the answer cache's and the image claim's calls of a turn: one round trip
    metrics = NlpMetrics(runtime.registry)
    variants = settings.variants()
    backends = build_backends(settings, http, variants, metrics)
    # The shipped FAQ about wxbot stands in for a missing LLM; with an LLM only the operator's count.
    kb_source = KbSource(settings.kb_paths, include_shipped=backends is None)
    knowledge = kb_source.load()
    runtime.log.info("knowledge_loaded", entries=knowledge.size, variants=[v.name for v in variants])
    runtime.readiness.set(
        "llm", True, "configured" if backends else "not configured: answering from the knowledge base"
    )
    # MCP servers: this replica keeps its own session with each; their tools join the same registry.
    bridges: dict[str, McpBridge] = {}
    if servers := settings.mcp_servers():
        from wxbot_nlp.skills.mcp import McpBridge  # the mcp SDK: ~0.7 s and ~25 MB, only when used

        bridges = {s.name: McpBridge(s, settings.skills_discovery_interval_s) for s in servers}
    skills = SkillRegistry(
        runtime.nc,
        SkillFilter.parse(settings.skills_allow, settings.skills_deny),
        interval_s=settings.skills_discovery_interval_s,
        sources=list(bridges.values()),
    )
    runtime.background(skills.run(), "skills-discovery")
    skill_metrics = SkillMetrics(runtime.registry)
    skill_metrics.offered.set_function(lambda: float(len(skills.tools())))
    for bridge in bridges.values():
        runtime.background(bridge.run(), f"mcp-{bridge.name}")
        skill_metrics.mcp_up.labels(bridge.name).set_function(_is_up(bridge))
    caller = SkillCaller(runtime.nc, skills, skill_metrics, settings.skills_result_max_chars, bridges)
    cache = (
        AnswerCache(redis, settings.nlp_cache_ttl_s, max_wait_s=settings.llm_budget_s(), scripts=scripts)
        if settings.nlp_cache_ttl_s > 0
        else None
    )
    # Media endpoints answer in seconds to a minute: their own session, its timeout the longest deadline.
    media_http = TracedHttp(create_session(16, max(settings.image_deadline_s, settings.tts_deadline_s)))
    runtime.on_shutdown(media_http.close)
    media = build_media_out(settings, runtime, media_http)
    local_tools = [DrawTool(media.drawer)] if settings.image_tool and media.drawer is not None else []
    drafter = Drafter(
        runtime.publisher,
        BatchedHistory(ctx_grpc.ContextServiceStub(channel), settings.nlp_history_batch),
        backends,
        variants,
        knowledge,
        cache,
        DraftingPolicy(
            settings.nlp_history_budget,
            settings.nlp_context_timeout_s,
            settings.nlp_kb_min_score,
            settings.nlp_kb_direct_score,
            NLP_DRAFTER.max_deliver,
            settings.llm_answer_deadline_s,
        ),
        metrics,
        ToolLoop(skills, caller, settings.skills_max_rounds, settings.skills_call_timeout_s, local_tools),
        SkillCommands(skills, caller, min(settings.skills_call_timeout_s, settings.llm_answer_deadline_s)),
        build_vision(settings, redis, runtime, http, metrics, scripts) if backends else None,
        media=media,
    )
    runtime.consume(NLP_DRAFTER, drafter.handle, settings.nlp_concurrency)
    runtime.background(kb_source.watch(settings.nlp_kb_reload_s, drafter.swap_knowledge), "kb-reload")
    await runtime.serve_http(None, settings.nlp_http_port)
    await runtime.run_until_stopped()
