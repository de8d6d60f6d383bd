"""Composition root of the console: sessions in Redis, the WeCom login, the playground's bridge,
the dead letters and audit on NATS, the metrics sampler, and the pages that use them."""

from __future__ import annotations

import secrets

from wxbot_common.http_client import TracedHttp, create_session
from wxbot_common.ops import ops_routes
from wxbot_common.redis_client import create_redis
from wxbot_common.runtime import ServiceRuntime
from wxbot_console.analytics import AnalyticsClient
from wxbot_console.audit import AuditLog
from wxbot_console.deadletters import DeadLetters
from wxbot_console.editable_files import EditableFiles
from wxbot_console.playground import Playground
from wxbot_console.sampler import MetricsSampler
from wxbot_console.security import Guard
from wxbot_console.sessions import SessionStore
from wxbot_console.settings import ConsoleSettings
from wxbot_console.web import Console, console_app
from wxbot_console.wecom_login import WeComApp, WeComLogin


async def main() -> None:
    settings = ConsoleSettings()
    runtime = ServiceRuntime("console", settings)
    await runtime.start()
    redis = create_redis(settings.redis_url)
    runtime.on_shutdown(redis.aclose)
    http = TracedHttp(create_session(16, 10.0), runtime.tracer)
    runtime.on_shutdown(http.close)
    secret_key = settings.console_secret_key or secrets.token_urlsafe(48)
    if not settings.console_secret_key:
        runtime.log.warning("console_secret_key_unset", effect="logins end when this process restarts")
    wecom = None
    if settings.wecom_login_configured:
        app = WeComApp(
            settings.wecom_corp_id,
            settings.wecom_agent_id,
            settings.wecom_secret,
            settings.wecom_api_base,
            settings.wecom_login_base,
        )
        wecom = WeComLogin(app, http)
    sampler = MetricsSampler(settings.services, http, settings.console_sample_s)
    console = Console(
        settings=settings,
        sessions=SessionStore(redis, secret_key, settings.console_session_ttl_s),
        wecom=wecom,
        playground=Playground(http.session, settings.gateway_url, settings.gateway_bridge_token),
        dead_letters=DeadLetters(runtime.js),
        audit=AuditLog(runtime.publisher, redis),
        files=EditableFiles(settings.kb_files, settings.lexicon_files, settings.console_max_upload_bytes),
        sampler=sampler,
        analytics=AnalyticsClient(settings.analytics_url, http),
        publisher=runtime.publisher,
    )
    runtime.background(sampler.run(), "metrics-sampler")
    app_routes = console_app(console, ops_routes(runtime.readiness, runtime.registry))
    await runtime.serve_http(
        Guard(app_routes, settings.console_max_upload_bytes),
        settings.console_port,
        settings.console_host,
        ws_max_bytes=settings.console_max_upload_bytes,  # a bigger playground frame closes its socket (1009)
    )
    runtime.log.info(
        "console_ready",
        url=settings.public_url,
        login="wecom" if wecom else ("local link" if settings.console_local_login_token else "none configured"),
        admins=sorted(settings.admins),
    )
    await runtime.run_until_stopped()
