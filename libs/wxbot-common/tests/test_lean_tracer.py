"""The lean tracer records what the SDK's tracer records: the same spans on the wire (ids and times
aside) for the same calls, under the default limits and under tight `OTEL_*` limits, and the same
sampling decisions for every sampler `OTEL_TRACES_SAMPLER` can name."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as WireSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace import sampling as sdk_sampling
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from wxbot_common.lean_tracer import LeanTracerProvider
from wxbot_common.spans import ActiveSpan

Provider = type[TracerProvider] | type[LeanTracerProvider]
REMOTE = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")]))


def _exercise(tracer: trace.Tracer) -> None:
    """A bit of everything the services do with spans, and some of what they should not."""
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes={"a": 1, "b": "x"}) as root:
        root.set_attribute("c", [1, 2, 3])
        root.set_attribute("a", 2)  # set again: the newest now
        root.set_attributes({"long": "y" * 40, "f": 0.5, "on": True, "d": {"k": "v"}})
        root.set_attribute("", "no key")
        root.set_attribute("none", None)
        for n in range(4):
            root.add_event(f"event {n}", {"n": n, "text": "z" * 20})
        with ActiveSpan(tracer.start_span("child", kind=SpanKind.CLIENT, links=[Link(REMOTE, {"why": "batch"})])):
            pass
        try:
            with ActiveSpan(tracer.start_span("failing", kind=SpanKind.CONSUMER)):
                raise ValueError("boom")
        except ValueError:
            pass
        with tracer.start_as_current_span("ok") as ok:
            ok.add_link(REMOTE, {"one": 1})
            ok.add_link(SpanContext(0x1, 0x2, is_remote=True), None)
            ok.set_status(Status(StatusCode.OK))
            ok.set_status(StatusCode.ERROR, "too late: OK is final")
        unset = tracer.start_span("unset")
        unset.set_status(StatusCode.ERROR, "first")
        unset.set_status(Status(StatusCode.UNSET))  # ignored
        unset.update_name("renamed")
        unset.end()
        unset.set_attribute("after", "end")  # ignored once ended
        unset.update_name("too late")
    under_remote = trace.set_span_in_context(NonRecordingSpan(REMOTE))
    tracer.start_span("remote child", context=under_remote, kind=SpanKind.PRODUCER).end()


def _wire_spans(make: Provider) -> list[WireSpan]:
    memory = InMemorySpanExporter()
    provider = make(resource=Resource.create({"service.name": "nlp"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    _exercise(provider.get_tracer("wxbot.test", "1.0"))
    spans = memory.get_finished_spans()
    request = encode_spans(spans)
    wire = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    names = {s.span_id: s.name for s in wire}
    for span in wire:  # ids and times differ from run to run; the tree and everything else must not
        assert span.end_time_unix_nano >= span.start_time_unix_nano > 0
        span.parent_span_id = names.get(span.parent_span_id, span.parent_span_id.hex()).encode()
        span.trace_id = b"remote" if span.trace_id == REMOTE.trace_id.to_bytes(16, "big") else b"local"
        span.span_id = b""
        span.start_time_unix_nano = span.end_time_unix_nano = 0
        for event in span.events:
            event.time_unix_nano = 0
            for kv in event.attributes:
                if kv.key == "exception.stacktrace":  # the frames differ (the SDK's __exit__ or ours)
                    kv.value.string_value = kv.value.string_value.strip().splitlines()[-1]
    return sorted(wire, key=lambda s: s.name)


@pytest.mark.parametrize(
    "limits",
    [
        {},
        {
            "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "3",
            "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "5",
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "6",
            "OTEL_SPAN_EVENT_COUNT_LIMIT": "2",
            "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "1",
            "OTEL_SPAN_LINK_COUNT_LIMIT": "1",
            "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT": "0",
        },
    ],
    ids=["default limits", "tight limits"],
)
def test_the_lean_tracer_records_what_the_sdk_records(monkeypatch: pytest.MonkeyPatch, limits: dict[str, str]) -> None:
    for name, value in limits.items():
        monkeypatch.setenv(name, value)
    sdk, lean = _wire_spans(TracerProvider), _wire_spans(LeanTracerProvider)
    assert [s.name for s in lean] == ["child", "failing", "ok", "remote child", "renamed", "root"]
    assert lean == sdk
    if limits:  # the limits did bite
        root = next(s for s in lean if s.name == "root")
        assert len(root.attributes) == 3 and root.dropped_attributes_count > 0 and root.dropped_events_count == 2


SAMPLERS: dict[str, Any] = {
    "always_on": sdk_sampling.ALWAYS_ON,
    "always_off": sdk_sampling.ALWAYS_OFF,
    "parentbased_always_on": sdk_sampling.DEFAULT_ON,
    "parentbased_always_off": sdk_sampling.DEFAULT_OFF,
    "parentbased_traceidratio=0": sdk_sampling.ParentBasedTraceIdRatio(0.0),
    "parentbased_traceidratio=1": sdk_sampling.ParentBasedTraceIdRatio(1.0),
    "traceidratio=0": sdk_sampling.TraceIdRatioBased(0.0),
    "parentbased, parent ignored": sdk_sampling.ParentBased(
        sdk_sampling.ALWAYS_OFF, remote_parent_not_sampled=sdk_sampling.ALWAYS_ON
    ),
}


@pytest.mark.parametrize("sampler", SAMPLERS.values(), ids=SAMPLERS.keys())
def test_sampling_decisions_are_the_sdk_s(sampler: sdk_sampling.Sampler) -> None:
    def decisions(make: Provider) -> list[tuple[bool, int, bool, bool]]:
        tracer = make(resource=Resource.create({}), sampler=sampler).get_tracer("t")
        seen = []
        for flags in (TraceFlags(0), TraceFlags(1), TraceFlags(3)):
            parent = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags)
            for context in (None, trace.set_span_in_context(NonRecordingSpan(parent))):
                span = tracer.start_span("s", context=context)
                ctx = span.get_span_context()
                local_root = context is None
                seen.append((span.is_recording(), int(ctx.trace_flags), ctx.trace_id == 0xABC, local_root))
                assert ctx.is_valid and ctx.span_id != 0xDEF  # a span of its own, recorded or not
                span.end()
        return seen

    assert decisions(LeanTracerProvider) == decisions(TracerProvider)


def test_otel_sdk_disabled_turns_tracing_off_as_with_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    memory = InMemorySpanExporter()
    provider = LeanTracerProvider(resource=Resource.create({}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    span = provider.get_tracer("t").start_span("s")
    assert not span.is_recording() and not span.get_span_context().is_valid
    span.end()
    assert memory.get_finished_spans() == ()
