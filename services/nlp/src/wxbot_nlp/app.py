"""Composition root of the nlp service."""

from __future__ import annotations

import httpx

from wxbot_common.nats.topology import NLP_DRAFTER
from wxbot_common.rpc import create_channel
from wxbot_common.runtime import ServiceRuntime
from wxbot_nlp.handlers import Drafter, NlpMetrics
from wxbot_nlp.llm import OpenAICompatibleBackend
from wxbot_nlp.settings import NlpSettings
from wxbot_proto.context.v1 import context_pb2_grpc as ctx_grpc


async def main() -> None:
    settings = NlpSettings()
    runtime = ServiceRuntime("nlp", settings)
    await runtime.start()

    channel = create_channel(settings.context_grpc_addr)

    async def close_channel() -> None:
        await channel.close(grace=2)

    runtime.on_shutdown(close_channel)
    http = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=settings.nlp_concurrency, max_keepalive_connections=64)
    )
    runtime.on_shutdown(http.aclose)
    backend = (
        OpenAICompatibleBackend(
            http,
            settings.llm_base_url,
            settings.llm_api_key,
            settings.llm_model,
            settings.llm_timeout_s,
            settings.llm_max_tokens,
            settings.llm_temperature,
        )
        if settings.llm_base_url
        else None
    )
    runtime.readiness.set("llm", True, "configured" if backend else "not configured: answering with a notice")
    drafter = Drafter(
        runtime.publisher,
        ctx_grpc.ContextServiceStub(channel),
        backend,
        settings.nlp_system_prompt,
        settings.nlp_history_budget,
        settings.nlp_context_timeout_s,
        NLP_DRAFTER.max_deliver,
        NlpMetrics(runtime.registry),
    )
    runtime.consume(NLP_DRAFTER, drafter.handle, settings.nlp_concurrency)
    await runtime.serve_http(None, settings.nlp_http_port)
    await runtime.run_until_stopped()
