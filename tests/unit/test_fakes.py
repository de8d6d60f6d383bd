"""The fakes over real HTTP/gRPC: WeCom token/send/media and faults, OpenAI chat/stream and faults, OTLP sink."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from wxbot_devkit.fakes.llm import ChatRequest, FakeLLM
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.otlp_sink import OtlpSink, SpanRecord

pytestmark = pytest.mark.timeout(30)

CORP, SECRET, AGENT = "wwtestcorp", "s3cret", 1000002
API_KEY = "sk-test"


@pytest.fixture(scope="module")
async def wecom_server() -> AsyncIterator[FakeWeCom]:
    async with FakeWeCom(CORP, SECRET, media={"m-1": b"\x89PNG fake"}) as fake:
        yield fake


@pytest.fixture
async def wecom(wecom_server: FakeWeCom) -> FakeWeCom:
    wecom_server.reset()
    return wecom_server


@pytest.fixture(scope="module")
async def llm_server() -> AsyncIterator[FakeLLM]:
    async with FakeLLM(API_KEY) as fake:
        yield fake


@pytest.fixture
async def llm(llm_server: FakeLLM) -> FakeLLM:
    llm_server.reset()
    return llm_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


# -- WeCom --------------------------------------------------------------------------------------------


async def get_token(http: httpx.AsyncClient, fake: FakeWeCom, corpid: str = CORP, secret: str = SECRET) -> Any:
    resp = await http.get(f"{fake.base_url}/cgi-bin/gettoken", params={"corpid": corpid, "corpsecret": secret})
    assert resp.status_code == 200
    return resp.json()


async def send(http: httpx.AsyncClient, fake: FakeWeCom, token: str | None, body: dict[str, Any]) -> Any:
    params = {"access_token": token} if token is not None else {}
    resp = await http.post(f"{fake.base_url}/cgi-bin/message/send", params=params, json=body)
    assert resp.status_code == 200
    return resp.json()


def text(touser: str, content: str, msgtype: str = "text") -> dict[str, Any]:
    return {"touser": touser, "msgtype": msgtype, "agentid": AGENT, msgtype: {"content": content}}


async def test_wecom_token_flow_and_send(wecom: FakeWeCom, http: httpx.AsyncClient) -> None:
    assert (await get_token(http, wecom, corpid="other"))["errcode"] == 40013
    assert (await get_token(http, wecom, secret="wrong"))["errcode"] == 40001
    token = await get_token(http, wecom)
    assert token["errcode"] == 0 and token["expires_in"] == 7200 and token["access_token"]

    reply = await send(http, wecom, token["access_token"], text("alice", "hi alice"))
    assert reply["errcode"] == 0 and reply["msgid"] and reply["invaliduser"] == ""
    (msg,) = await wecom.wait_for_messages("alice", 1, timeout=2.0)
    assert (msg.touser, msg.msgtype, msg.content, msg.agentid) == ("alice", "text", "hi alice", AGENT)

    listed = (await http.get(f"{wecom.base_url}/_fake/messages", params={"touser": "alice"})).json()["messages"]
    assert [m["content"] for m in listed] == ["hi alice"]
    stats = (await http.get(f"{wecom.base_url}/_fake/stats")).json()
    assert stats["gettoken_calls"] == 3 and stats["send_calls"] == 1


async def test_wecom_missing_and_invalidated_token(wecom: FakeWeCom, http: httpx.AsyncClient) -> None:
    assert (await send(http, wecom, None, text("bob", "x")))["errcode"] == 41001
    assert (await send(http, wecom, "never-issued", text("bob", "x")))["errcode"] == 42001
    old = (await get_token(http, wecom))["access_token"]
    await http.post(f"{wecom.base_url}/_fake/faults", json={"invalidate_tokens": True})
    assert (await send(http, wecom, old, text("bob", "x")))["errcode"] == 42001
    new = (await get_token(http, wecom))["access_token"]
    assert (await send(http, wecom, new, text("bob", "x")))["errcode"] == 0


async def test_wecom_send_errcode_queue(wecom: FakeWeCom, http: httpx.AsyncClient) -> None:
    token = (await get_token(http, wecom))["access_token"]
    resp = await http.post(f"{wecom.base_url}/_fake/faults", json={"send_errcodes": [42001, 45009, -1]})
    assert resp.json()["pending_send_errcodes"] == [42001, 45009, -1]
    codes = [(await send(http, wecom, token, text("carol", "x")))["errcode"] for _ in range(4)]
    assert codes == [42001, 45009, -1, 0]
    assert len(wecom.messages_for("carol")) == 1
    wecom.fail_next_sends(45033)
    assert (await send(http, wecom, token, text("carol", "x")))["errcode"] == 45033


async def test_wecom_content_rules(wecom: FakeWeCom, http: httpx.AsyncClient) -> None:
    token = (await get_token(http, wecom))["access_token"]
    assert (await send(http, wecom, token, text("dan", "中" * 682 + "ab")))["errcode"] == 0  # 2048 bytes
    assert (await send(http, wecom, token, text("dan", "中" * 683)))["errcode"] == 45002  # 2049 bytes
    assert (await send(http, wecom, token, text("dan", "")))["errcode"] == 44004
    assert (await send(http, wecom, token, text("dan", "**md**", "markdown")))["errcode"] == 0
    assert (await send(http, wecom, token, text("dan", "x", "mpnews")))["errcode"] == 40008
    assert (await send(http, wecom, token, text("dan", "x", "image")))["errcode"] == 41006  # no media_id
    assert (await send(http, wecom, token, {**text("dan", "x"), "agentid": "1"}))["errcode"] == 40056
    assert [m.msgtype for m in wecom.messages_for("dan")] == ["text", "markdown"]


async def test_wecom_media_latency_and_wait_timeout(wecom: FakeWeCom, http: httpx.AsyncClient) -> None:
    token = (await get_token(http, wecom))["access_token"]
    media = await http.get(f"{wecom.base_url}/cgi-bin/media/get", params={"access_token": token, "media_id": "m-1"})
    assert media.content == b"\x89PNG fake" and "attachment" in media.headers["content-disposition"]
    missing = await http.get(f"{wecom.base_url}/cgi-bin/media/get", params={"access_token": token, "media_id": "?"})
    assert missing.json()["errcode"] == 40007

    wecom.latency_s = 0.2
    started = time.monotonic()
    assert (await send(http, wecom, token, text("erin", "slow")))["errcode"] == 0
    assert time.monotonic() - started >= 0.2
    with pytest.raises(TimeoutError):
        await wecom.wait_for_messages("erin", 2, timeout=0.1)


async def test_wecom_refuses_connections_until_told_to_accept_them(wecom: FakeWeCom) -> None:
    url = wecom.base_url
    await wecom.refuse_connections()
    try:
        assert wecom.base_url == url  # the same address throughout
        async with httpx.AsyncClient(timeout=2.0) as fresh:
            with pytest.raises(httpx.ConnectError):
                await fresh.get(f"{url}/cgi-bin/gettoken", params={"corpid": CORP, "corpsecret": SECRET})
    finally:
        await wecom.accept_connections()
    async with httpx.AsyncClient(timeout=2.0) as fresh:
        token = await fresh.get(f"{url}/cgi-bin/gettoken", params={"corpid": CORP, "corpsecret": SECRET})
    assert token.json()["errcode"] == 0


def test_wecom_in_background_thread() -> None:
    fake = FakeWeCom(CORP, SECRET)
    fake.start_in_thread()
    try:
        resp = httpx.get(f"{fake.base_url}/cgi-bin/gettoken", params={"corpid": CORP, "corpsecret": SECRET})
        assert resp.json()["errcode"] == 0 and fake.gettoken_calls == 1
    finally:
        fake.stop_thread()


async def test_wecom_outage_refuses_connections_then_listens_on_the_same_port() -> None:
    async with FakeWeCom(CORP, SECRET) as fake, httpx.AsyncClient(timeout=2.0) as client:
        url = f"{fake.base_url}/cgi-bin/gettoken"
        params = {"corpid": CORP, "corpsecret": SECRET}
        assert (await client.get(url, params=params)).json()["errcode"] == 0  # a kept-alive connection now
        await fake.refuse_connections()
        assert fake.offline and fake.stats()["offline"]
        for _ in range(2):  # the kept-alive connection was closed too: no request gets through
            with pytest.raises(httpx.ConnectError):
                await client.get(url, params=params)
        await fake.accept_connections()
        assert not fake.offline and f"{fake.base_url}/cgi-bin/gettoken" == url
        assert (await client.get(url, params=params)).json()["errcode"] == 0

        # Timed, through the control API (its own answer still arrives): back by itself afterwards.
        assert (await client.post(f"{fake.base_url}/_fake/faults", json={"offline_s": 0.5})).status_code == 200
        await wait_until(lambda: fake.offline, 5, "the outage to start")
        with pytest.raises(httpx.ConnectError):
            await client.get(url, params=params)
        await wait_until(lambda: not fake.offline, 5, "the fake to listen again")
        assert (await client.get(url, params=params)).json()["errcode"] == 0


# -- LLM ----------------------------------------------------------------------------------------------


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": content}],
        **extra,
    }


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}


async def test_llm_completion_auth_and_custom_reply(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    url = f"{llm.base_url}/v1/chat/completions"
    assert (await http.post(url, json=chat_body("hi"))).status_code == 401
    data = (await http.post(url, json=chat_body("hi there"), headers=auth())).json()
    assert data["choices"][0]["message"]["content"] == "echo: hi there"
    assert data["model"] == "gpt-test" and data["usage"]["completion_tokens"] > 0
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]

    def greet(request: ChatRequest) -> str:
        return f"Hello {request.last_user_message.removeprefix('I am ')}"

    llm.reply = greet
    data = (await http.post(url, json=chat_body("I am Alice"), headers=auth())).json()
    assert data["choices"][0]["message"]["content"] == "Hello Alice"
    requests = await llm.wait_for_requests(2, timeout=2.0)
    assert requests[-1].messages[-1]["content"] == "I am Alice" and requests[-1].model == "gpt-test"
    models = (await http.get(f"{llm.base_url}/v1/models", headers=auth())).json()
    assert models["data"][0]["id"] == "fake-model"


async def test_llm_stream(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    body = chat_body("stream  me please", stream=True, stream_options={"include_usage": True})
    async with http.stream("POST", f"{llm.base_url}/v1/chat/completions", json=body, headers=auth()) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in resp.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    deltas = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert deltas == "echo: stream  me please"
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert llm.requests[0].stream


async def test_llm_fault_queue_and_hang(llm: FakeLLM, http: httpx.AsyncClient) -> None:
    url = f"{llm.base_url}/v1/chat/completions"
    await http.post(f"{llm.base_url}/_fake/faults", json={"statuses": [500, 429, 503], "retry_after_s": 2})
    responses = [await http.post(url, json=chat_body("x"), headers=auth()) for _ in range(4)]
    assert [r.status_code for r in responses] == [500, 429, 503, 200]
    assert responses[1].headers["retry-after"] == "2"
    recorded = (await http.get(f"{llm.base_url}/_fake/requests")).json()["requests"]
    assert len(recorded) == 4 and recorded[0]["messages"][-1]["content"] == "x"

    await http.post(f"{llm.base_url}/_fake/faults", json={"hang": True})
    with pytest.raises(httpx.ReadTimeout):
        await http.post(url, json=chat_body("hang"), headers=auth(), timeout=0.3)
    await wait_until(lambda: llm.stats()["abandoned"] == 1, 5, "the hung call to be abandoned by its client")
    await http.post(f"{llm.base_url}/_fake/reset")
    assert (await http.post(url, json=chat_body("after"), headers=auth())).status_code == 200


async def test_llm_rate_limit_storm_answers_429_with_retry_after_until_it_ends(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    url = f"{llm.base_url}/v1/chat/completions"
    llm.rate_limit_for(0.5, retry_after_s=3)
    storm = [await http.post(url, json=chat_body("x"), headers=auth()) for _ in range(3)]
    assert [r.status_code for r in storm] == [429, 429, 429]
    assert storm[0].headers["retry-after"] == "3" and storm[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert llm.stats()["rate_limited"] == 3

    async def answered() -> bool:
        return (await http.post(url, json=chat_body("after"), headers=auth())).status_code == 200

    deadline = time.monotonic() + 5
    while not await answered():
        assert time.monotonic() < deadline, "the storm never ended"
        await asyncio.sleep(0.05)
    await http.post(f"{llm.base_url}/_fake/faults", json={"rate_limit_s": 10})
    assert (await http.post(url, json=chat_body("y"), headers=auth())).status_code == 429
    llm.reset()
    assert (await http.post(url, json=chat_body("z"), headers=auth())).status_code == 200


async def test_a_hung_call_answers_late_when_released_if_its_client_still_waits(
    llm: FakeLLM, http: httpx.AsyncClient
) -> None:
    llm.hang = True
    waiting = asyncio.create_task(
        http.post(f"{llm.base_url}/v1/chat/completions", json=chat_body("late"), headers=auth())
    )
    await llm.wait_for_requests(1, timeout=5)
    assert not waiting.done()
    llm.hang = False
    late = await asyncio.wait_for(waiting, 5)
    assert late.json()["choices"][0]["message"]["content"] == "echo: late" and llm.stats()["abandoned"] == 0


async def test_llm_cli_prints_url() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wxbot_devkit.fakes.llm", "--port", "0", "--latency", "0.01",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), timeout=20)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(timeout=5.0) as client:
            resp = await client.post(f"{url}/v1/chat/completions", json=chat_body("cli"))
        assert resp.json()["choices"][0]["message"]["content"] == "echo: cli"
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout=10)


# -- OTLP sink ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sink() -> AsyncIterator[OtlpSink]:
    async with OtlpSink() as s:
        yield s


def make_trace(service: str) -> tuple[str, list[ReadableSpan]]:
    """A SERVER span with a PRODUCER child, captured in memory (never exported from the event loop)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    attributes = {"n": 3, "ok": True}
    with (
        tracer.start_as_current_span("POST /callback", kind=SpanKind.SERVER) as root,
        tracer.start_as_current_span("send wxbot.evt", kind=SpanKind.PRODUCER, attributes=attributes),
    ):
        pass
    return f"{root.get_span_context().trace_id:032x}", list(memory.get_finished_spans())


async def export_and_check(sink: OtlpSink, exporter: SpanExporter, service: str) -> None:
    trace_id, spans = make_trace(service)
    try:
        # The exporters are blocking; run them off the loop that serves the sink.
        assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
    finally:
        await asyncio.to_thread(exporter.shutdown)

    def complete(all_spans: list[SpanRecord]) -> list[SpanRecord] | None:
        mine = [s for s in all_spans if s.trace_id == trace_id]
        return mine if len(mine) == 2 else None

    records = await sink.wait_for(complete, timeout=5.0)
    by_name = {r.name: r for r in records}
    root, child = by_name["POST /callback"], by_name["send wxbot.evt"]
    assert (root.kind, child.kind) == ("SERVER", "PRODUCER")
    assert root.parent_span_id == "" and child.parent_span_id == root.span_id
    assert child.attributes == {"n": 3, "ok": True} and child.service_name == service
    assert sink.spans_for_trace(trace_id) == records and trace_id in sink.traces()


async def test_otlp_sink_http(sink: OtlpSink) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    await export_and_check(sink, OTLPSpanExporter(endpoint=sink.http_traces_url, timeout=5), "svc-http")


async def test_otlp_sink_grpc(sink: OtlpSink) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    await export_and_check(sink, OTLPSpanExporter(endpoint=sink.grpc_endpoint, insecure=True, timeout=5), "svc-grpc")


async def test_otlp_sink_dumps_what_it_receives(tmp_path: Path) -> None:
    """`--dump`: each export request as it came, read back by `read_dump` (the bench's timeline)."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from wxbot_devkit.otlp_sink import flatten, read_dump

    dump = tmp_path / "spans.otlp"
    with dump.open("ab") as out:
        async with OtlpSink(count_only=True, dump=out) as sink:
            trace_id, spans = make_trace("svc-dump")
            exporter = OTLPSpanExporter(endpoint=sink.grpc_endpoint, insecure=True, timeout=5)
            try:
                assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
            finally:
                await asyncio.to_thread(exporter.shutdown)
            await wait_until(lambda: sink.span_count == 2 or None, 5.0, "both spans counted")
    records = [r for request in read_dump(dump) for r in flatten(request)]
    assert sorted((r.name, r.trace_id, r.service_name) for r in records) == [
        ("POST /callback", trace_id, "svc-dump"),
        ("send wxbot.evt", trace_id, "svc-dump"),
    ]
