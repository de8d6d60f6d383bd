"""OTLP span export with a leaner encoder: the same request as the exporter's, built as bytes.

`opentelemetry-exporter-otlp`'s encoder builds a protobuf object per span, per attribute and per
attribute value through Python calls, and hashes the resource (a `json.dumps` of its attributes)
for every span to group them: ~40 µs per span here, and a traced message has ~18 spans. This
encoder writes the protobuf wire format directly, reuses the encoding of attributes that repeat
(`messaging.system=nats`, consumer names, destinations …) and of the resource and scopes, and hands
the gRPC channel those bytes as they are. The result equals the official encoder's
(`libs/wxbot-common/tests/test_span_export.py` compares them span by span).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any, cast

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http._common import RequestPayloadTooLargeError, _is_request_too_large
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, StatusCode

_log = logging.getLogger(__name__)

# Span.kind (field 6, a varint below 128): the whole field per kind.
_KIND_FIELD = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
_FLAGS_HAS_IS_REMOTE = 0x100
_FLAGS_IS_REMOTE = 0x200
_CACHE_MAX = 4096  # encoded attributes kept; cleared when full (unique values such as ids churn it)
_CACHEABLE = frozenset((str, bool, int, float))  # exact types: a subclass may hash or print otherwise
_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


_BYTE = [bytes((i,)) for i in range(128)]  # a varint below 128 is that one byte
_PACK_Q = struct.Struct("<Q").pack
_PACK_I = struct.Struct("<I").pack


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _str_field(field: int, text: str | None) -> bytes:
    return _len_field(field, text.encode()) if text else b""


def _uint_field(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value) if value else b""


def _fixed32_field(field: int, value: int) -> bytes:
    return _varint(field << 3 | 5) + _PACK_I(value) if value else b""


def _fixed64_field(field: int, value: int | None) -> bytes:
    return _varint(field << 3 | 1) + _PACK_Q(value) if value else b""


# The fields every span has, with their tags written out (Span: trace_id 1, span_id 2, parent 4,
# start 7, end 8, flags 16 — a fixed32 whose tag takes two bytes).
_TRACE_ID = b"\x0a\x10"
_SPAN_ID = b"\x12\x08"
_PARENT_ID = b"\x22\x08"
_START_TAG = b"\x39"
_END_TAG = b"\x41"
_FLAGS_TAG = b"\x85\x01"
_SPAN_TAG = b"\x12"  # ScopeSpans.spans (field 2, length-delimited)
_FLAGS_LOCAL_PARENT = _FLAGS_TAG + _PACK_I(_FLAGS_HAS_IS_REMOTE)
_FLAGS_REMOTE_PARENT = _FLAGS_TAG + _PACK_I(_FLAGS_HAS_IS_REMOTE | _FLAGS_IS_REMOTE)


def _any_value(value: Any) -> bytes:
    """An AnyValue message's body (its oneof member is written even when it is the default)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10" + (b"\x01" if value else b"\x00")
    if isinstance(value, str):
        return _len_field(1, value.encode())
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"{value} does not fit int64")
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, bytes):
        return _len_field(7, value)
    if isinstance(value, Sequence):
        return _len_field(5, b"".join(_len_field(1, _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _len_field(6, b"".join(_len_field(1, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_value(key: str, value: Any) -> bytes:
    return _str_field(1, key) + _len_field(2, _any_value(value))


def _span_flags(parent: SpanContext | None) -> int:
    return _FLAGS_HAS_IS_REMOTE | (_FLAGS_IS_REMOTE if parent is not None and parent.is_remote else 0)


def _trace_state(context: SpanContext) -> str:
    state = context.trace_state
    return ",".join(f"{k}={v}" for k, v in state.items()) if state is not None else ""


class SpanEncoder:
    """Encodes batches of finished spans as an `ExportTraceServiceRequest`'s wire bytes."""

    def __init__(self) -> None:
        self._attributes: dict[tuple[str, type, Any], bytes] = {}
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[InstrumentationScope | None, bytes] = {}
        self._names: dict[str, bytes] = {}  # span names repeat: their encoded field
        self._statuses: dict[tuple[str | None, StatusCode], bytes] = {}

    def _attribute_fields(self, field: int, attributes: Mapping[str, Any] | None) -> bytes:
        if not attributes:
            return b""
        cache = self._attributes
        parts = []
        for key, value in attributes.items():
            cacheable = type(value) in _CACHEABLE
            encoded = cache.get((key, type(value), value)) if cacheable else None
            if encoded is None:
                try:
                    encoded = _len_field(field, _key_value(key, value))
                except Exception as exc:  # as the official encoder: log and leave the attribute out
                    _log.exception("Failed to encode key %s: %s", key, exc)
                    continue
                if cacheable:
                    if len(cache) >= _CACHE_MAX:
                        cache.clear()
                    cache[(key, type(value), value)] = encoded
            parts.append(encoded)
        return b"".join(parts)

    def _resource(self, resource: Resource) -> bytes:
        known = self._resources.get(id(resource))
        if known is None or known[0] is not resource:
            known = (resource, _len_field(1, self._attribute_fields(1, resource.attributes)))
            self._resources[id(resource)] = known
        return known[1]

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        encoded = self._scopes.get(scope)
        if encoded is None:
            body = b""
            if scope is not None:
                body = _str_field(1, scope.name) + _str_field(2, scope.version)
                body += self._attribute_fields(3, scope.attributes)
            encoded = _len_field(1, body)
            self._scopes[scope] = encoded
        return encoded

    def _span(self, span: ReadableSpan) -> bytes:
        context = span.get_span_context()
        assert context is not None
        parent = span.parent
        start, end = span.start_time, span.end_time
        name = self._names.get(span.name)
        if name is None:
            name = _str_field(5, span.name)
            if len(self._names) < _CACHE_MAX:
                self._names[span.name] = name
        parts = [
            _TRACE_ID + context.trace_id.to_bytes(16, "big"),
            _SPAN_ID + context.span_id.to_bytes(8, "big"),
            _str_field(3, _trace_state(context)) if context.trace_state else b"",
            _PARENT_ID + parent.span_id.to_bytes(8, "big") if parent else b"",
            name,
            _KIND_FIELD[span.kind],
            _START_TAG + _PACK_Q(start) if start else b"",
            _END_TAG + _PACK_Q(end) if end else b"",
            self._attribute_fields(9, span.attributes),
        ]
        if span.dropped_attributes:
            parts.append(_uint_field(10, span.dropped_attributes))
        for event in span.events:
            body = (
                _fixed64_field(1, event.timestamp)
                + _str_field(2, event.name)
                + self._attribute_fields(3, event.attributes)
                + _uint_field(4, event.dropped_attributes)
            )
            parts.append(_len_field(11, body))
        if span.dropped_events:
            parts.append(_uint_field(12, span.dropped_events))
        for link in span.links:
            body = (
                _len_field(1, link.context.trace_id.to_bytes(16, "big"))
                + _len_field(2, link.context.span_id.to_bytes(8, "big"))
                + self._attribute_fields(4, link.attributes)
                + _uint_field(5, link.dropped_attributes)
                + _fixed32_field(6, _span_flags(link.context))
            )
            parts.append(_len_field(13, body))
        if span.dropped_links:
            parts.append(_uint_field(14, span.dropped_links))
        status = span.status
        key = (status.description, status.status_code)
        encoded_status = self._statuses.get(key)
        if encoded_status is None:
            code = status.status_code.value
            encoded_status = _len_field(15, _str_field(2, status.description) + _uint_field(3, code))
            if len(self._statuses) < _CACHE_MAX:
                self._statuses[key] = encoded_status
        parts.append(encoded_status)
        parts.append(_FLAGS_REMOTE_PARENT if parent is not None and parent.is_remote else _FLAGS_LOCAL_PARENT)
        body = b"".join(parts)
        return _SPAN_TAG + _varint(len(body)) + body

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        grouped: dict[int, tuple[Resource, dict[InstrumentationScope | None, list[bytes]]]] = {}
        for span in spans:
            resource = span.resource
            scopes = grouped.setdefault(id(resource), (resource, {}))[1]
            scopes.setdefault(span.instrumentation_scope or None, []).append(self._span(span))
        out = []
        for resource, scopes in grouped.values():
            scope_spans = b"".join(
                _len_field(
                    2,
                    self._scope(scope)
                    + b"".join(encoded)
                    + _str_field(3, scope.schema_url if scope is not None else None),
                )
                for scope, encoded in scopes.items()
            )
            out.append(_len_field(1, self._resource(resource) + scope_spans + _str_field(3, resource.schema_url)))
        return b"".join(out)


class _WireTraceStub:
    """`TraceService.Export` sent as the request's wire bytes, without parsing and re-serializing them."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export = channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=bytes,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class LeanOtlpSpanExporter(OTLPSpanExporter):
    """The OTLP/gRPC span exporter with `SpanEncoder` in place of the official encoder; the encoded
    request goes to the channel as it is (the exporter's retries, timeouts and reconnects stay)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = SpanEncoder()
        self._stub = _WireTraceStub  # also what a reconnect builds
        self._client = _WireTraceStub(cast(grpc.Channel, self._channel))  # type: ignore[assignment]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> bytes:  # type: ignore[override]
        return self._encoder.encode(data)


class LeanOtlpHttpSpanExporter(HttpSpanExporter):
    """The OTLP/HTTP span exporter with `SpanEncoder` in place of the official encoder.

    Its `export` is the official one's with the encoder swapped: the same size limit, retries,
    timeouts and exporter metrics (they live in the base class and its client).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = SpanEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            _log.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = self._encoder.encode(spans)
            except Exception as error:  # as the official exporter: a batch that cannot be encoded is dropped
                _log.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(data, self._max_request_size):
                _log.warning(
                    "Dropping span batch: %d bytes exceed max_request_size %d", len(data), self._max_request_size
                )
                result.error = RequestPayloadTooLargeError(f"{len(data)} bytes exceed {self._max_request_size}")
                return SpanExportResult.FAILURE
            outcome = self._client.export(data)
            if not outcome.success:
                result.error = outcome.error
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
