"""A lean tracer for the OpenTelemetry API: the SDK's sampling, limits and exporters, lighter spans.

The SDK's span costs ~28 µs from start to end here: a sampler call building a `SamplingResult`,
four locks, a `BoundedAttributes` and two `BoundedList`s per span, and at its end a `ReadableSpan`
copy handed to the processor. A traced message has ~18 spans, so that is ~0.5 ms of every
message's CPU before a byte is exported. `LeanSpan` is one object with plain fields: it is the
span while it runs and the finished span the processor batches and the exporter encodes (nothing
changes it after `end()`), and it honours the SDK's semantics where they show — the `OTEL_*`
span limits (the oldest attribute dropped, strings cut to the length limit, values cleaned as the
SDK cleans them), status rules (OK is final, UNSET ignored), exception events, `set_*` after
`end()` ignored. Sampling is the configured SDK sampler (`OTEL_TRACES_SAMPLER`); a parent-based
one with its default delegates is decided from the parent's flag without a call.

Processors get `on_end` only (`BatchSpanProcessor` and `SimpleSpanProcessor` do nothing on start).
It leans on a few SDK internals (the attribute cleaner, `ParentBased`'s delegates, the
`OTEL_TRACES_SAMPLER` reader, the API's context-manager decorator), which is why libs/wxbot-common
pins opentelemetry-api and -sdk to 1.45.x: `test_lean_tracer.py` compares it with the SDK again
before the bound moves.
"""

from __future__ import annotations

import logging
import os
import random
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from time import time_ns
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes, _clean_attribute_value
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.trace import sampling as sdk_sampling
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState
from opentelemetry.util import types
from opentelemetry.util._decorator import _agnosticcontextmanager

_log = logging.getLogger(__name__)

_UNSET = Status(StatusCode.UNSET)
_PLAIN = (str, bool, int, float)
_SAMPLED, _RANDOM = int(TraceFlags.SAMPLED), int(TraceFlags.RANDOM_TRACE_ID)
_FLAGS = {f: TraceFlags(f) for f in range(4)}  # the flag combinations a span here can carry
_SAMPLE, _DROP = sdk_sampling.Decision.RECORD_AND_SAMPLE, sdk_sampling.Decision.DROP


def _span_id() -> int:
    span_id = random.getrandbits(64)
    while not span_id:  # as the SDK's RandomIdGenerator: 0 is the invalid id
        span_id = random.getrandbits(64)
    return span_id


def _trace_id() -> int:
    trace_id = random.getrandbits(128)
    while not trace_id:
        trace_id = random.getrandbits(128)
    return trace_id


class LeanSpan(trace_api.Span):
    """A recording span; after `end()` it is the finished span exporters read (`ReadableSpan`'s fields)."""

    __slots__ = (
        "_limits",
        "_on_end",
        "_record_exception",
        "_set_status_on_exception",
        "attributes",
        "context",
        "dropped_attributes",
        "dropped_events",
        "dropped_links",
        "end_time",
        "events",
        "instrumentation_scope",
        "kind",
        "links",
        "name",
        "parent",
        "resource",
        "start_time",
        "status",
    )

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[Link],
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.resource: Resource = tracer.resource
        self.instrumentation_scope: InstrumentationScope = tracer.scope
        self._limits: SpanLimits = tracer.limits
        self._on_end = tracer.provider.on_end
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self.attributes: dict[str, types.AnyValue] = {}
        self.dropped_attributes = self.dropped_events = self.dropped_links = 0
        self.events: list[Event] = []
        self.links: list[Link] = []
        self.status = _UNSET
        self.end_time: int | None = None
        if attributes:
            self.set_attributes(attributes)
        for link in links:
            self.add_link(link.context, link.attributes)
        self.start_time = start_time if start_time is not None else time_ns()

    # -- the API ------------------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self.end_time is not None:
            _log.warning("Setting attribute on ended span.")
            return
        if not key or not isinstance(key, str):
            _log.warning("invalid key `%s`. must be non-empty string. Dropping key from attributes.", key)
            self.dropped_attributes += 1
            return
        limits = self._limits
        max_len = limits.max_span_attribute_length
        if type(value) not in _PLAIN or (max_len is not None and type(value) is str):
            value = _clean_attribute_value(value, max_len)
        attributes = self.attributes
        if key in attributes:
            del attributes[key]  # as BoundedAttributes: a key set again becomes the newest
        elif limits.max_span_attributes is not None and len(attributes) >= limits.max_span_attributes:
            if not limits.max_span_attributes:
                self.dropped_attributes += 1
                return
            del attributes[next(iter(attributes))]  # the oldest goes
            self.dropped_attributes += 1
        attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self.end_time is not None:
            _log.warning("Calling add_event() on an ended span.")
            return
        limits = self._limits
        bounded = BoundedAttributes(
            limits.max_event_attributes, attributes, immutable=True, max_value_len=limits.max_attribute_length
        )
        if limits.max_events is not None and len(self.events) >= limits.max_events:
            self.dropped_events += 1
            if not self.events:
                return
            del self.events[0]  # as BoundedList: the oldest goes
        self.events.append(Event(name, bounded, timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self.end_time is not None:
            _log.warning("Calling add_link() on an ended span.")
            return
        if context is None or not (context.is_valid or attributes or context.trace_state):
            return  # the SDK's rule for a link worth keeping
        limits = self._limits
        bounded = BoundedAttributes(
            limits.max_link_attributes, attributes, immutable=True, max_value_len=limits.max_attribute_length
        )
        if limits.max_links is not None and len(self.links) >= limits.max_links:
            self.dropped_links += 1
            if not self.links:
                return
            del self.links[0]
        self.links.append(Link(context, bounded))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return  # ended, or OK already: final
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self.status = status
        elif status is not StatusCode.UNSET:
            self.status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module, qualname = type(exception).__module__, type(exception).__qualname__
        recorded: dict[str, types.AnyValue] = {
            EXCEPTION_TYPE: f"{module}.{qualname}" if module and module != "builtins" else qualname,
            EXCEPTION_MESSAGE: str(exception),
            EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            EXCEPTION_ESCAPED: str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            _log.warning("Calling end() on an ended span.")
            return
        self.end_time = end_time if end_time is not None else time_ns()
        self._on_end(self)

    def __exit__(self, exc_type: Any, exc_val: BaseException | None, exc_tb: Any) -> None:
        if exc_val is not None and self.end_time is None:
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        super().__exit__(exc_type, exc_val, exc_tb)

    # -- as a finished span ---------------------------------------------------------------------

    def to_json(self, indent: int | None = 4) -> str:
        """As `ReadableSpan.to_json` (the console exporter prints it)."""
        finished = ReadableSpan(
            name=self.name,
            context=self.context,
            parent=self.parent,
            resource=self.resource,
            attributes=self.attributes,
            events=self.events,
            links=self.links,
            kind=self.kind,
            status=self.status,
            start_time=self.start_time,
            end_time=self.end_time,
            instrumentation_scope=self.instrumentation_scope,
        )
        return str(finished.to_json(indent))

    def __repr__(self) -> str:
        return f'LeanSpan(name="{self.name}", context={self.context})'


class LeanTracer(trace_api.Tracer):
    """Starts `LeanSpan`s for one instrumentation scope."""

    def __init__(self, provider: LeanTracerProvider, scope: InstrumentationScope) -> None:
        self.resource = provider.resource
        self.scope = scope
        self.limits = provider.limits
        self.provider = provider

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        parent: SpanContext | None = trace_api.get_current_span(context).get_span_context()
        provider = self.provider
        if parent is not None and parent.is_valid:
            trace_id, random_id = parent.trace_id, parent.trace_flags & _RANDOM
        else:
            parent, trace_id, random_id = None, _trace_id(), _RANDOM
        state: TraceState | None
        if parent is not None and provider.follows_parent:  # parent-based, default delegates
            sampled = recording = bool(parent.trace_flags & _SAMPLED)
            state = parent.trace_state
        else:
            result = provider.sampler.should_sample(context, trace_id, name, kind, attributes, links or ())
            sampled, recording = result.decision is _SAMPLE, result.decision is not _DROP
            state, attributes = result.trace_state, result.attributes  # as the SDK: the sampler's attributes
        flags = _FLAGS[(_SAMPLED if sampled else 0) | random_id]
        span_context = SpanContext(trace_id, _span_id(), is_remote=False, trace_flags=flags, trace_state=state)
        if not recording:
            return trace_api.NonRecordingSpan(span_context)
        return LeanSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            attributes,
            links or (),
            start_time,
            record_exception,
            set_status_on_exception,
        )

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace_api.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace_api.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class LeanTracerProvider(trace_api.TracerProvider):
    """The tracer provider of every service: SDK sampler, limits and processors, `LeanSpan`s."""

    def __init__(self, resource: Resource, sampler: sdk_sampling.Sampler | None = None) -> None:
        self.resource = resource
        self.disabled = os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"  # as the SDK
        self.sampler = sampler if sampler is not None else sdk_sampling._get_from_env_or_default()
        self.limits = SpanLimits()
        self.follows_parent = _follows_parent(self.sampler)
        self._processors: list[SpanProcessor] = []
        self.on_end: Callable[[Any], None] = _ignore
        self._tracers: dict[tuple[str, str | None, str | None], LeanTracer] = {}

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace_api.Tracer:
        if self.disabled:
            return trace_api.NoOpTracer()
        key = (instrumenting_module_name, instrumenting_library_version, schema_url)
        tracer = self._tracers.get(key) if not attributes else None
        if tracer is None:
            version = instrumenting_library_version
            scope = InstrumentationScope(instrumenting_module_name, version, schema_url, attributes)
            tracer = LeanTracer(self, scope)
            if not attributes:
                self._tracers[key] = tracer
        return tracer

    def add_span_processor(self, processor: SpanProcessor) -> None:
        self._processors.append(processor)
        self.on_end = processor.on_end if len(self._processors) == 1 else self._on_end_each

    def _on_end_each(self, span: Any) -> None:
        for processor in self._processors:
            processor.on_end(span)

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all([processor.force_flush(timeout_millis) for processor in self._processors])

    def shutdown(self) -> None:
        for processor in self._processors:
            processor.shutdown()


def _ignore(span: Any) -> None:
    """The end hook of a provider without processors."""


def _follows_parent(sampler: sdk_sampling.Sampler) -> bool:
    """A parent-based sampler whose decision under a parent is the parent's flag (the defaults)."""
    if not isinstance(sampler, sdk_sampling.ParentBased):
        return False
    on, off = sdk_sampling.ALWAYS_ON, sdk_sampling.ALWAYS_OFF
    delegates = (
        getattr(sampler, "_remote_parent_sampled", None),
        getattr(sampler, "_remote_parent_not_sampled", None),
        getattr(sampler, "_local_parent_sampled", None),
        getattr(sampler, "_local_parent_not_sampled", None),
    )
    return delegates == (on, off, on, off)
