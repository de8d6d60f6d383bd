"""OTLP trace receiver for tests and manual runs: OTLP/HTTP (protobuf) and OTLP/gRPC, spans kept in memory.

Tests point the services' `OTEL_EXPORTER_OTLP_*` at it and assert on the flattened `SpanRecord`s.
`python -m wxbot_devkit.otlp_sink` prints each span as it arrives; with `--quiet` it only counts them
and prints the totals when stopped (SIGINT/SIGTERM), as the benchmark runs it in a process of its own.
`--dump PATH` also appends every export request to PATH as it came (see `write_dump`/`read_dump`),
for the benchmark's timeline of where a message's time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import signal
import struct
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, Self, TypeVar

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from wxbot_devkit.fakes.server import AppServer
from wxbot_devkit.fakes.waiting import wait_until

T = TypeVar("T")
PROTOBUF = "application/x-protobuf"
DUMP_LENGTH = struct.Struct("<I")  # each dumped request: its length, then its protobuf bytes


def write_dump(out: BinaryIO, request: ExportTraceServiceRequest) -> None:
    raw = request.SerializeToString()
    out.write(DUMP_LENGTH.pack(len(raw)) + raw)


def read_dump(path: Path) -> list[ExportTraceServiceRequest]:
    """The export requests a `--dump` file holds, in arrival order (a torn last one is left out)."""
    data = path.read_bytes()
    requests: list[ExportTraceServiceRequest] = []
    at = 0
    while at + DUMP_LENGTH.size <= len(data):
        (size,) = DUMP_LENGTH.unpack_from(data, at)
        at += DUMP_LENGTH.size
        if at + size > len(data):
            break
        request = ExportTraceServiceRequest()
        request.ParseFromString(data[at : at + size])
        requests.append(request)
        at += size
    return requests


@dataclass(slots=True)
class SpanRecord:
    """One span, flattened out of its resource/scope envelope. Ids are lower-case hex."""

    service_name: str
    name: str
    kind: str  # "SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL" or "UNSPECIFIED"
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    attributes: dict[str, Any]
    scope_name: str = ""
    status_code: str = "UNSET"  # "UNSET", "OK" or "ERROR"
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    events: list[str] = field(default_factory=list)
    resource_attributes: dict[str, Any] = field(default_factory=dict)


def any_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes_dict(value.kvlist_value.values)
    return getattr(value, which)


def attributes_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in attributes}


def flatten(request: ExportTraceServiceRequest) -> list[SpanRecord]:
    records: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        resource = attributes_dict(resource_spans.resource.attributes)
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            records.extend(
                SpanRecord(
                    service_name=service,
                    name=span.name,
                    kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes=attributes_dict(span.attributes),
                    scope_name=scope_spans.scope.name,
                    status_code=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                    start_time_unix_nano=span.start_time_unix_nano,
                    end_time_unix_nano=span.end_time_unix_nano,
                    events=[event.name for event in span.events],
                    resource_attributes=resource,
                )
                for span in scope_spans.spans
            )
    return records


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, ingest: Callable[[ExportTraceServiceRequest], None]) -> None:
        self._ingest = ingest

    async def Export(  # noqa: N802 - the gRPC method name
        self, request: ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        self._ingest(request)
        return ExportTraceServiceResponse()


class OtlpSink:
    """Both OTLP receivers on 127.0.0.1 (ports 0 = free ports), feeding one in-memory span list."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        http_port: int = 0,
        grpc_port: int = 0,
        on_span: Callable[[SpanRecord], None] | None = None,
        count_only: bool = False,
        dump: BinaryIO | None = None,
    ) -> None:
        """`count_only`: decode each export but keep no spans, only the counts (for long benchmark runs);
        `dump`: also write each export request there as it came."""
        self._host = host
        self._count_only = count_only
        self._dump = dump
        self.span_count = 0
        self._trace_ids: set[bytes] = set()
        self._grpc_port_requested = grpc_port
        self._on_span = on_span
        self._lock = threading.Lock()
        self._spans: list[SpanRecord] = []
        self.export_calls = 0
        app = Starlette(routes=[Route("/v1/traces", self._http_export, methods=["POST"])])
        self._http = AppServer(app, host=host, port=http_port)
        self._grpc: grpc.aio.Server | None = None
        self._grpc_port = 0

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._http.start()
        server = grpc.aio.server()
        # generated module ships no stubs
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self._ingest), server)  # type: ignore[no-untyped-call]
        self._grpc_port = server.add_insecure_port(f"{self._host}:{self._grpc_port_requested}")
        await server.start()
        self._grpc = server

    async def stop(self) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=0.2)
            self._grpc = None
        await self._http.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def http_endpoint(self) -> str:
        """Base URL, as for OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces)."""
        return self._http.base_url

    @property
    def http_traces_url(self) -> str:
        """Full URL, as for OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTLPSpanExporter(endpoint=...)."""
        return f"{self._http.base_url}/v1/traces"

    @property
    def grpc_endpoint(self) -> str:
        """`http://host:port`: the http scheme tells the gRPC exporter to use an insecure channel."""
        if self._grpc is None:
            raise RuntimeError("sink not started")
        return f"http://{self._host}:{self._grpc_port}"

    def otel_env(self, protocol: Literal["grpc", "http/protobuf"] = "grpc") -> dict[str, str]:
        """Environment for a service process so its exporter ships here."""
        endpoint = self.grpc_endpoint if protocol == "grpc" else self.http_endpoint
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}

    # -- ingestion ---------------------------------------------------------------------------------

    def _ingest(self, request: ExportTraceServiceRequest) -> None:
        if self._dump is not None:
            with self._lock:
                write_dump(self._dump, request)
        if self._count_only:
            ids = [span.trace_id for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
            with self._lock:
                self.export_calls += 1
                self.span_count += len(ids)
                self._trace_ids.update(ids)
            return
        records = flatten(request)
        with self._lock:
            self.export_calls += 1
            self.span_count += len(records)
            self._spans.extend(records)
        if self._on_span is not None:
            for record in records:
                self._on_span(record)

    async def _http_export(self, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != PROTOBUF:
            return PlainTextResponse("only application/x-protobuf is supported", status_code=415)
        body = await request.body()
        encoding = request.headers.get("content-encoding", "")
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding == "deflate":
            body = zlib.decompress(body)
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except Exception:  # protobuf raises DecodeError, whose import path varies by backend
            return PlainTextResponse("undecodable ExportTraceServiceRequest", status_code=400)
        self._ingest(message)
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)

    # -- queries -----------------------------------------------------------------------------------

    @property
    def spans(self) -> list[SpanRecord]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self.export_calls = 0
            self.span_count = 0
            self._trace_ids.clear()

    @property
    def trace_count(self) -> int:
        """Distinct trace ids received so far (counted in both modes)."""
        with self._lock:
            return len(self._trace_ids) if self._count_only else len({s.trace_id for s in self._spans})

    def spans_for_trace(self, trace_id: str) -> list[SpanRecord]:
        return [s for s in self.spans if s.trace_id == trace_id.lower()]

    def traces(self) -> dict[str, list[SpanRecord]]:
        """Spans grouped by trace id, in arrival order."""
        grouped: dict[str, list[SpanRecord]] = {}
        for span in self.spans:
            grouped.setdefault(span.trace_id, []).append(span)
        return grouped

    async def wait_for(
        self,
        predicate: Callable[[list[SpanRecord]], T | None],
        timeout: float = 10.0,  # noqa: ASYNC109 - a deadline for polling, part of the test API
    ) -> T:
        """Poll `predicate(spans)` until it returns something truthy, which is returned (TimeoutError after)."""
        return await wait_until(lambda: predicate(self.spans), timeout, "spans matching the predicate")


def _print_span(span: SpanRecord) -> None:
    parent = span.parent_span_id or "-" * 16
    print(f"{span.trace_id} {parent} {span.span_id} {span.kind:<8} [{span.service_name}] {span.name}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OTLP trace sink: prints every span it receives")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=4318)
    parser.add_argument("--grpc-port", type=int, default=4317)
    parser.add_argument("--quiet", action="store_true", help="count spans, print only the totals when stopped")
    parser.add_argument("--dump", type=Path, metavar="PATH", help="append every export request to PATH as well")
    args = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        if args.quiet:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        with contextlib.ExitStack() as files:
            dump = files.enter_context(args.dump.open("ab")) if args.dump else None
            sink = await serve(stop, dump)
        print(
            f"received {sink.span_count} spans of {sink.trace_count} traces in {sink.export_calls} export calls",
            flush=True,
        )

    async def serve(stop: asyncio.Event, dump: BinaryIO | None) -> OtlpSink:
        async with OtlpSink(
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            on_span=None if args.quiet else _print_span,
            count_only=args.quiet,
            dump=dump,
        ) as sink:
            print(f"OTLP/HTTP {sink.http_endpoint}  OTLP/gRPC {sink.grpc_endpoint}", flush=True)
            await stop.wait()
        return sink

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
