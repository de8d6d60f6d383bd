"""Composition root of the safety service."""

from __future__ import annotations

from wxbot_common.nats.topology import SAFETY_INBOUND, SAFETY_OUTBOUND
from wxbot_common.outbox import Outbox
from wxbot_common.redis_client import create_redis
from wxbot_common.redis_scripts import BatchedScripts
from wxbot_common.runtime import ServiceRuntime
from wxbot_safety.handlers import SafetyMetrics, SafetyStages
from wxbot_safety.lexicon_source import LexiconSource
from wxbot_safety.policy import Limits
from wxbot_safety.ratelimit import RateCounter
from wxbot_safety.settings import SafetySettings


async def main() -> None:
    settings = SafetySettings()
    runtime = ServiceRuntime("safety", settings)
    await runtime.start()

    redis = create_redis(settings.redis_url, socket_timeout_s=2.0)
    runtime.on_shutdown(redis.aclose)
    scripts = BatchedScripts(redis)  # the rate counter's and the outbox's calls of a turn: one round trip
    source = LexiconSource(settings.safety_wordlist_files, settings.safety_words)
    lexicon = source.load()
    runtime.log.info("lexicon_loaded", terms=lexicon.size)
    blocked = frozenset(u.strip() for u in settings.safety_blocked_users.split(",") if u.strip())
    stages = SafetyStages(
        runtime.publisher,
        RateCounter(redis, scripts=scripts),
        lexicon,
        Limits(settings.safety_rate_per_minute, settings.safety_rate_per_day),
        SafetyMetrics(runtime.registry),
        Outbox(redis, scripts=scripts),
        fail_open=settings.safety_redis_failure == "open",
        injection_action=settings.safety_injection_action,
        output_action=settings.safety_output_action,
        blocked_users=blocked,
    )
    runtime.background(source.watch(settings.safety_lexicon_reload_s, stages.swap_lexicon), "lexicon-reload")
    runtime.consume(SAFETY_INBOUND, stages.inbound, settings.safety_concurrency)
    runtime.consume(SAFETY_OUTBOUND, stages.outbound, settings.safety_concurrency)
    await runtime.serve_http(None, settings.safety_http_port)
    await runtime.run_until_stopped()
