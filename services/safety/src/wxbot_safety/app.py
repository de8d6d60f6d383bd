"""Composition root of the safety service."""

from __future__ import annotations

from redis.asyncio import Redis

from wxbot_common.nats.topology import SAFETY_INBOUND, SAFETY_OUTBOUND
from wxbot_common.runtime import ServiceRuntime
from wxbot_safety.handlers import SafetyMetrics, SafetyStages
from wxbot_safety.lexicon import Lexicon, load_terms
from wxbot_safety.ratelimit import RateCounter
from wxbot_safety.settings import SafetySettings


async def main() -> None:
    settings = SafetySettings()
    runtime = ServiceRuntime("safety", settings)
    await runtime.start()

    redis = Redis.from_url(settings.redis_url)
    runtime.on_shutdown(redis.aclose)
    lexicon = Lexicon(load_terms(settings.safety_wordlist_files, settings.safety_words))
    runtime.log.info("lexicon_loaded", terms=lexicon.size)
    stages = SafetyStages(
        runtime.publisher, RateCounter(redis), lexicon, settings.safety_rate_per_minute, SafetyMetrics(runtime.registry)
    )
    runtime.consume(SAFETY_INBOUND, stages.inbound, settings.safety_concurrency)
    runtime.consume(SAFETY_OUTBOUND, stages.outbound, settings.safety_concurrency)
    await runtime.serve_http(None, settings.safety_http_port)
    await runtime.run_until_stopped()
