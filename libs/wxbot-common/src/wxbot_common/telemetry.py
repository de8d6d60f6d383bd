"""OpenTelemetry setup from the standard `OTEL_*` variables only.

No endpoint configured → spans are still created (trace ids appear in logs) but nothing is
exported, and nothing fails. `OTEL_EXPORTER_OTLP_PROTOCOL` (or the `_TRACES_` variant) picks
`grpc` (default, port 4317) or `http/protobuf` (port 4318); `OTEL_TRACES_EXPORTER=none` turns
export off, `console` prints spans. `OTEL_TRACES_SAMPLER` (e.g. `parentbased_traceidratio` with
`OTEL_TRACES_SAMPLER_ARG=0.1`) is honoured by the SDK: an unsampled message costs almost nothing,
and a sampled one is complete in every service because each stage follows its parent's decision.

Context travels as W3C `traceparent` only: OpenTelemetry's default adds the `baggage`
propagator, which nothing here uses and which costs a header scan per hop; `OTEL_PROPAGATORS`
(e.g. `tracecontext,baggage`) still decides when it is set.

Spans are `wxbot_common.lean_tracer.LeanSpan`s (the SDK's sampler, limits, processors and
exporters; a lighter span object).

Redis commands get spans only with `TRACE_REDIS=true`: a span per command roughly doubles the
cost of a Redis call, and the service spans around them already time each stage.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from wxbot_common.lean_tracer import LeanTracerProvider


@dataclass
class Telemetry:
    """The configured tracer provider; `shutdown()` flushes spans before the process exits."""

    provider: LeanTracerProvider
    exporting: bool

    def tracer(self, name: str) -> trace.Tracer:
        return self.provider.get_tracer(name)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _exporter(env: Mapping[str, str]) -> SpanExporter | None:
    kind = env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower()
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if not (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return None
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).lower()
    from wxbot_common.span_export import LeanOtlpHttpSpanExporter, LeanOtlpSpanExporter

    if protocol.startswith("http"):
        return LeanOtlpHttpSpanExporter()

    return LeanOtlpSpanExporter()


def setup_telemetry(service_name: str, env: Mapping[str, str] | None = None) -> Telemetry:
    """Install the global tracer provider and the library instrumentations.

    Must run before any Redis client is created (its instrumentation wraps the constructor).
    Outbound HTTP is traced by `wxbot_common.http_client`, gRPC by `wxbot_common.rpc`.
    """
    env = os.environ if env is None else env
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service_name})
    exporter = _exporter(env)
    # Nothing to export and no sampler asked for: record nothing. Spans still get ids (so logs
    # carry trace ids and the context still propagates), but cost a tenth of a recorded span.
    sampler = ALWAYS_OFF if exporter is None and not env.get("OTEL_TRACES_SAMPLER") else None
    provider = LeanTracerProvider(resource, sampler)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if not env.get("OTEL_PROPAGATORS"):
        propagate.set_global_textmap(TraceContextTextMapPropagator())
    _instrument_libraries(provider, redis=env.get("TRACE_REDIS", "false").strip().lower() in ("1", "true", "yes"))
    return Telemetry(provider=provider, exporting=exporter is not None)


_SECRET_PARAM = re.compile(r"token|secret|key|sig|password|code", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` with the values of credential-like query parameters replaced (WeCom puts the
    access token and the app secret in the query string; spans must never carry them)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [
        (k, "REDACTED" if _SECRET_PARAM.search(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urlunsplit(parts._replace(query=urlencode(query, safe="")))


def _instrument_libraries(provider: LeanTracerProvider, redis: bool) -> None:
    if redis:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument(tracer_provider=provider)
