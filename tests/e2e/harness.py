"""Helpers of the end-to-end tests: the world they run in and a WeCom-like client."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import nats
import websockets
from nats.js.errors import NotFoundError

from wxbot_common.ids import inbound_event_id
from wxbot_common.nats.subjects import EVENTS_STREAM, EventKind
from wxbot_devkit.fakes.llm import ChatRequest, FakeLLM, ReplyFn
from wxbot_devkit.fakes.wecom import FakeWeCom
from wxbot_devkit.otlp_sink import OtlpSink, SpanRecord
from wxbot_devkit.system import Stack, StackConfig
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.messages import build_inner_text_xml

VECTORS = json.loads((Path(__file__).parent.parent / "fixtures" / "wecom-vectors.json").read_text())
CONFIG = VECTORS["config"]
SECRET = "e2e-secret"
LLM_KEY = "sk-e2e"


def llm_reply(request: ChatRequest) -> str:
    """Deterministic answers that show what the model was given."""
    return f"LLM says: {request.last_user_message} (saw {len(request.messages)} messages)"


def wecom_env(wecom: FakeWeCom, llm: FakeLLM) -> dict[str, str]:
    """The variables that point a stack at the fakes, with the protocol document's test app."""
    return {
        "WECOM_CORP_ID": CONFIG["corpid"],
        "WECOM_AGENT_ID": CONFIG["agentid"],
        "WECOM_SECRET": SECRET,
        "WECOM_TOKEN": CONFIG["token"],
        "WECOM_ENCODING_AES_KEY": CONFIG["encoding_aes_key"],
        "WECOM_API_BASE": wecom.base_url,
        "LLM_BASE_URL": f"{llm.base_url}/v1",
        "LLM_API_KEY": LLM_KEY,
        "LLM_MODEL": "fake-model",
        "SAFETY_RATE_PER_MINUTE": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "TRACE_REDIS": "true",  # opt-in Redis spans, so the trace tests see that path too
        "IMAGE_IN_ALLOW_PRIVATE": "true",  # the fakes serve picture URLs on loopback
    }


@asynccontextmanager
async def running_world(
    run_dir: Path,
    env: dict[str, str] | None = None,
    replicas: dict[str, int] | None = None,
    reply: ReplyFn = llm_reply,
    otlp_protocol: Literal["grpc", "http/protobuf"] = "http/protobuf",
    supervise: bool = False,
    persist: bool = False,
    gateway_delivery: int = 0,
    console: bool = False,
) -> AsyncIterator[World]:
    """Fakes plus a whole stack pointed at them; `env` overrides or adds variables; `supervise` and
    `persist` as in `make run` (restart what dies; Redis keeps its data); `console` adds the web
    console, logging in through the fake WeCom's web login."""
    wecom = FakeWeCom(
        corp_id=CONFIG["corpid"], corp_secret=SECRET, agent_id=int(CONFIG["agentid"]) if console else None
    )
    llm = FakeLLM(api_key=LLM_KEY, reply=reply)
    sink = OtlpSink()
    await wecom.start()
    await llm.start()
    await sink.start()
    full_env = {**wecom_env(wecom, llm), **sink.otel_env(otlp_protocol)}
    if console:
        full_env.update({"WECOM_LOGIN_BASE": wecom.base_url, "CONSOLE_SAMPLE_S": "0.5"})
    full_env.update(env or {})
    config = StackConfig(
        run_dir=run_dir,
        ports="free",
        extra_env=full_env,
        replicas=replicas or {},
        supervise=supervise,
        persist=persist,
        gateway_delivery=gateway_delivery,
        console=console,
    )
    stack = Stack(config)
    try:
        async with stack:
            yield World(stack, wecom, llm, sink)
    finally:
        await sink.stop()
        await llm.stop()
        await wecom.stop()


TRACED_SERVICES = {"gateway", "safety", "nlp", "context"}
# (service, kind, part of the name) of every span one answered message must produce.
MESSAGE_SPANS = [
    ("gateway", "SERVER", "POST"),
    ("gateway", "PRODUCER", "inbound.received"),
    ("safety", "CONSUMER", "inbound.received"),
    ("safety", "PRODUCER", "inbound.accepted"),
    ("nlp", "CONSUMER", "inbound.accepted"),
    ("nlp", "CLIENT", "GetHistory"),
    ("context", "SERVER", "GetHistory"),
    ("nlp", "CLIENT", "chat "),
    ("nlp", "PRODUCER", "reply.drafted"),
    ("safety", "CONSUMER", "reply.drafted"),
    ("safety", "PRODUCER", "reply.approved"),
    ("gateway", "CONSUMER", "reply.approved"),
    ("context", "CONSUMER", "reply.approved"),
]


def find_message_trace(spans: list[SpanRecord], event_id: str | None = None) -> list[SpanRecord] | None:
    """The spans of a callback's trace once it covers all four services and the WeCom send and every
    span's parent has arrived too, else None.

    With `event_id`, only the trace whose gateway producer span published that event qualifies.
    """
    roots = [
        s
        for s in spans
        if s.service_name == "gateway" and s.kind == "SERVER" and not s.parent_span_id and "POST" in s.name
    ]
    for root in roots:
        trace = [s for s in spans if s.trace_id == root.trace_id]
        sent = any(
            s.kind == "CLIENT" and s.service_name == "gateway" and "message/send" in str(s.attributes) for s in trace
        )
        ours = event_id is None or any(s.attributes.get("messaging.message.id") == event_id for s in trace)
        ids = {s.span_id for s in trace}
        whole = all(s.parent_span_id in ids for s in trace if s is not root)  # parents end (export) last
        have = {s.service_name for s in trace}
        complete = all(
            any(s.service_name == svc and s.kind == kind and part in s.name for s in trace)
            for svc, kind, part in MESSAGE_SPANS
        )
        if have >= TRACED_SERVICES and sent and ours and whole and complete:
            return trace
    return None


def wecom_event_id(msg_id: int) -> str:
    """The id the gateway gives the MessageReceived of a WeCom MsgId (to find that message's trace)."""
    return inbound_event_id("wecom", f"{CONFIG['corpid']}:{CONFIG['agentid']}", f"MsgId={msg_id}")


@dataclass
class World:
    stack: Stack
    wecom: FakeWeCom
    llm: FakeLLM
    sink: OtlpSink


_MSG_IDS = itertools.count(7_300_000_000_000_000_001)


def _crypto() -> CallbackCrypto:
    return CallbackCrypto(CONFIG["token"], CONFIG["encoding_aes_key"], CONFIG["corpid"])


async def send_text(
    world: World,
    user: str,
    text: str,
    msg_id: int | None = None,
    gateway_url: str | None = None,
    created_at: int | None = None,
) -> tuple[httpx.Response, int]:
    """POST an encrypted text callback the way WeCom does (to `gateway_url`, else the first replica);
    `created_at`: the message's CreateTime (default now)."""
    msg_id = msg_id or next(_MSG_IDS)
    inner = build_inner_text_xml(
        to_user=CONFIG["corpid"],
        from_user=user,
        create_time=int(time.time()) if created_at is None else created_at,
        content=text,
        msg_id=str(msg_id),
        agent_id=CONFIG["agentid"],
    )
    params, body = _crypto().build_callback(
        inner,
        timestamp=str(int(time.time())),
        nonce=str(msg_id % 1_000_000),
        to_user_name=CONFIG["corpid"],
        agent_id=CONFIG["agentid"],
    )
    async with httpx.AsyncClient(base_url=gateway_url or world.stack.gateway_url, timeout=10) as client:
        resp = await client.post(
            "/wecom/callback", params=params, content=body.encode(), headers={"Content-Type": "text/xml"}
        )
    return resp, msg_id


async def send_voice(world: World, user: str, media_id: str, msg_id: int | None = None) -> tuple[httpx.Response, int]:
    """POST an encrypted WeCom app voice callback (AMR behind `media_id`, served by the fake's media/get)."""
    fields = f"<MediaId><![CDATA[{media_id}]]></MediaId><Format><![CDATA[amr]]></Format>"
    return await send_media_callback(world, user, "voice", fields, msg_id)


async def send_image(
    world: World, user: str, media_id: str, pic_url: str = "", msg_id: int | None = None
) -> tuple[httpx.Response, int]:
    """POST an encrypted WeCom app image callback (`media_id` for media/get, `pic_url` as WeCom's CDN link)."""
    fields = f"<PicUrl><![CDATA[{pic_url}]]></PicUrl><MediaId><![CDATA[{media_id}]]></MediaId>"
    return await send_media_callback(world, user, "image", fields, msg_id)


async def send_media_callback(
    world: World, user: str, msg_type: str, fields: str, msg_id: int | None
) -> tuple[httpx.Response, int]:
    """POST an encrypted WeCom app callback of `msg_type` whose own XML elements are `fields`."""
    msg_id = msg_id or next(_MSG_IDS)
    inner = (
        f"<xml><ToUserName><![CDATA[{CONFIG['corpid']}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType>{fields}"
        f"<MsgId>{msg_id}</MsgId><AgentID>{CONFIG['agentid']}</AgentID></xml>"
    )
    params, body = _crypto().build_callback(
        inner, str(int(time.time())), str(msg_id % 1_000_000), CONFIG["corpid"], CONFIG["agentid"]
    )
    async with httpx.AsyncClient(base_url=world.stack.gateway_url, timeout=10) as client:
        resp = await client.post(
            "/wecom/callback", params=params, content=body.encode(), headers={"Content-Type": "text/xml"}
        )
    return resp, msg_id


async def logged(world: World, kind: EventKind, conversation_id: str) -> list[bytes]:
    """Every event of `kind` in the log for one conversation, oldest first (what analytics sees)."""
    return await logged_on(world, kind.subject(conversation_id))


async def logged_on(world: World, subject: str) -> list[bytes]:
    """Every event in the log on `subject` (may be a wildcard), oldest first."""
    nc = await nats.connect(world.stack.nats.url)
    found: list[bytes] = []
    try:
        js = nc.jetstream()
        seq = 1
        while True:
            try:
                msg = await js.get_msg(EVENTS_STREAM, seq, subject=subject, next=True)
            except NotFoundError:
                return found
            assert msg.data is not None and msg.seq is not None
            found.append(msg.data)
            seq = msg.seq + 1
    finally:
        await nc.drain()


async def send_until_accepted(world: World, user: str, text: str, timeout_s: float = 30) -> None:
    """Retry a callback like WeCom does while the gateway answers 5xx or is not there at all
    (NATS restarting, the gateway restarting); the same MsgId each time, as WeCom retries."""
    deadline = time.monotonic() + timeout_s
    msg_id = next(_MSG_IDS)
    while True:
        try:
            resp, _ = await send_text(world, user, text, msg_id=msg_id)
            if resp.status_code == 200:
                return
        except (httpx.TransportError, OSError):
            pass
        assert time.monotonic() < deadline, "the gateway never accepted the callback"
        await asyncio.sleep(0.2)


async def counter_by_label(world: World, service: str, metric: str, label: str) -> dict[str, float]:
    """A counter's samples summed over `service`'s replicas, by the value of `label`."""
    found: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=5) as client:
        for url in world.stack.service_urls()[service]:
            for line in (await client.get(f"{url}/metrics")).text.splitlines():
                if line.startswith(f"{metric}{{") and f'{label}="' in line:
                    value = line.split(f'{label}="', 1)[1].split('"', 1)[0]
                    found[value] = found.get(value, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


async def bridge_until_reply(world: World, token: str, frame: dict[str, str]) -> tuple[list[str], str]:
    """Send one frame to the gateway's WebSocket bridge on a new socket; the types of the frames
    answered, up to the bot's reply, and that reply's content."""
    url = world.stack.gateway_url.replace("http://", "ws://") + "/ws/bridge"
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers, open_timeout=10) as ws:
        await ws.send(json.dumps(frame))
        kinds: list[str] = []
        async with asyncio.timeout(20):
            while "reply" not in kinds:
                got = json.loads(await ws.recv())
                kinds.append(got["type"])
    return kinds, str(got["content"])
