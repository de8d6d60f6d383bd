"""The lean path of the message callbacks answers, counts and traces as FastAPI did."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

from wxbot_common.fast_http import BodyError, FastRoute, FastRoutes, RawRequest
from wxbot_common.red_metrics import HttpRedMetrics

Sent = list[Message]


async def handler(request: RawRequest) -> tuple[int, str]:
    try:
        body = await request.body(8, timeout_s=0.05)
    except BodyError as exc:
        return exc.status, exc.reason
    if body == b"boom":
        raise RuntimeError("boom")
    if body == b"down":
        return 503, "unavailable"
    return 200, ",".join(f"{k}={v}" for k, v in request.query.items()) + request.headers.get("content-type", "")


async def fallback(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"framework"})


@pytest.fixture
def stack() -> tuple[HttpRedMetrics, InMemorySpanExporter, CollectorRegistry]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    registry = CollectorRegistry()
    routes = FastRoutes(fallback, [FastRoute("POST", "/cb", handler)], provider.get_tracer("test"))
    return HttpRedMetrics(routes, registry), spans, registry


async def call(
    app: Any, method: str, chunks: list[bytes], query: bytes = b"", headers: Any = (), then: str = "end"
) -> Sent:
    """`chunks` arrive as the body; `then`: "end" (the last chunk ends it), "stall" (more never comes)
    or "disconnect" (the client goes away)."""
    more = then != "end"
    messages: list[Message] = [
        {"type": "http.request", "body": c, "more_body": more or i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    if then == "disconnect":
        messages.append({"type": "http.disconnect"})
    sent: Sent = []

    async def receive() -> Message:
        if not messages:
            await asyncio.Event().wait()  # a stalled client
        return messages.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": "/cb", "query_string": query, "headers": list(headers)}
    await app(scope, receive, send)
    return sent


async def test_other_methods_go_to_the_framework(stack: Any) -> None:
    app, spans, _ = stack
    sent = await call(app, "GET", [b""])
    assert (sent[0]["status"], sent[1]["body"]) == (299, b"framework") and not spans.get_finished_spans()


async def test_answers_like_starlette_responses(stack: Any) -> None:
    app, _, _ = stack
    ok = await call(app, "POST", [b"x"], b"a=1&b=&a=2", [(b"content-type", b"text/xml"), (b"content-type", b"x")])
    assert ok[0] == {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", b"14"), (b"content-type", b"text/plain; charset=utf-8")],
    }
    assert ok[1] == {"type": "http.response.body", "body": b"a=2,b=text/xml"}  # last parameter, first header
    empty = await call(app, "POST", [b""])
    assert empty[0]["headers"] == [(b"content-length", b"0")] and empty[1]["body"] == b""


async def test_a_body_over_the_limit_declared_or_streamed_is_refused(stack: Any) -> None:
    app, _, _ = stack
    streamed = await call(app, "POST", [b"12345", b"67890"])
    declared = await call(app, "POST", [b""], headers=[(b"content-length", b"9")])
    assert [m["body"] for m in (streamed[1], declared[1])] == [b"too_large", b"too_large"]


async def test_a_huge_declared_length_is_too_large_not_a_crash(stack: Any) -> None:
    app, _, _ = stack
    sent = await call(app, "POST", [b""], headers=[(b"content-length", b"9" * 5000)])
    assert (sent[0]["status"], sent[1]["body"]) == (413, b"too_large")


async def test_a_stalled_body_times_out_and_closes_the_connection(stack: Any) -> None:
    app, _, _ = stack
    sent = await call(app, "POST", [b"half"], then="stall")
    assert (sent[0]["status"], sent[1]["body"]) == (408, b"body_timeout")
    assert (b"connection", b"close") in sent[0]["headers"]


async def test_a_client_leaving_mid_body_is_a_400_not_an_exception(stack: Any) -> None:
    app, spans, _ = stack
    sent = await call(app, "POST", [b"half"], then="disconnect")
    assert (sent[0]["status"], sent[1]["body"]) == (400, b"incomplete_body")
    assert spans.get_finished_spans()[0].status.status_code == StatusCode.UNSET


async def test_each_request_is_a_root_server_span_and_a_red_sample(stack: Any) -> None:
    app, spans, registry = stack
    await call(app, "POST", [b"ok"])
    await call(app, "POST", [b"down"])
    with pytest.raises(RuntimeError):
        await call(app, "POST", [b"boom"])
    ok, down, boom = spans.get_finished_spans()
    assert ok.name == "POST /cb" and ok.kind == SpanKind.SERVER and ok.parent is None
    assert dict(ok.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/cb",
        "url.path": "/cb",
        "http.response.status_code": 200,
    }
    assert ok.status.status_code == StatusCode.UNSET
    assert down.status.status_code == boom.status.status_code == StatusCode.ERROR
    for status in ("200", "503", "500"):
        labels = {"route": "/cb", "method": "POST", "status": status}
        assert registry.get_sample_value("wxbot_http_requests_total", labels) == 1
