"""The lean span encoder produces the request the official OTLP encoder does, for every kind of span,
the SDK's and the lean tracer's."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.span import TraceState

from wxbot_common.lean_tracer import LeanTracerProvider
from wxbot_common.span_export import SpanEncoder


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def export(self, spans: object) -> SpanExportResult:
        self.spans.extend(spans)  # type: ignore[arg-type]
        return SpanExportResult.SUCCESS


Provider = type[TracerProvider] | type[LeanTracerProvider]


def _spans(make: Provider) -> list[ReadableSpan]:
    kept = _Keep()
    provider = make(resource=Resource.create({"service.name": "nlp", "replica": 2, "on": True}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    other = make(resource=Resource.create({"service.name": "gateway"}))
    other.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("wxbot.nats", "1.0", schema_url="https://opentelemetry.io/schemas/1.21.0")
    remote = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")]))
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
        root.set_attributes(
            {
                "s": "text 中文",
                "empty": "",
                "i": -42,
                "big": 2**62,
                "f": 1.5,
                "b": False,
                "strs": ["a", "b"],
                "ints": [1, -2],
                "bools": [True],
                "floats": [0.25],
            }
        )
        root.add_event("retry", {"attempt": 2})
        root.add_event("bare")
        with tracer.start_as_current_span("child", kind=SpanKind.CLIENT, links=[Link(remote, {"why": "batch"})]):
            pass
        with tracer.start_as_current_span("failing") as failing:
            failing.set_status(Status(StatusCode.ERROR, "boom"))
    under_remote = set_span_in_context(NonRecordingSpan(remote))
    tracer.start_span("remote child", context=under_remote, kind=SpanKind.CONSUMER).end()
    ok = provider.get_tracer("wxbot.other").start_span("ok", kind=SpanKind.PRODUCER)
    ok.set_status(Status(StatusCode.OK))
    ok.end()
    other.get_tracer("wxbot.http").start_span("elsewhere").end()
    return kept.spans


@pytest.mark.parametrize("make", [TracerProvider, LeanTracerProvider], ids=["sdk-spans", "lean-spans"])
def test_the_lean_encoder_equals_the_official_one(make: Provider) -> None:
    spans = _spans(make)
    encoder = SpanEncoder()
    for _ in range(2):  # the second time from the caches
        assert ExportTraceServiceRequest.FromString(encoder.encode(spans)) == encode_spans(spans)
    for span in spans:  # and one span at a time
        assert ExportTraceServiceRequest.FromString(encoder.encode([span])) == encode_spans([span])


def test_an_attribute_that_cannot_be_encoded_is_left_out_as_officially() -> None:
    spans = _spans(TracerProvider)
    root = next(s for s in spans if s.name == "root")
    root._attributes = dict(root.attributes or {}, huge=2**70)
    assert ExportTraceServiceRequest.FromString(SpanEncoder().encode([root])) == encode_spans([root])
