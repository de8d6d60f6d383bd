"""The gateway as WeCom sees it: retried callbacks, flaky APIs, long replies (hostile input: test_hostile_input).

Two gateway replicas run behind two ports, as two pods behind a Service would; spans go to
the OTLP receiver over gRPC (the session stack uses http/protobuf).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import nats
import pytest

from tests.e2e.harness import (
    CONFIG,
    TRACED_SERVICES,
    World,
    _crypto,
    find_message_trace,
    llm_reply,
    logged,
    running_world,
    send_text,
)
from wxbot_common.nats.subjects import EVENTS_STREAM, EventKind
from wxbot_devkit.fakes.llm import ChatRequest
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.fakes.wecom import SentMessage
from wxbot_gateway.inbound import wecom_conversation_id
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_wecom.messages import build_inner_event_xml

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

LONG_REPLY = "\n\n".join(
    f"第{i}段：企业微信机器人的回答需要按字节拆分，每一段都不能超过两千零四十八个字节。" * 6 for i in range(1, 10)
)


def replies(request: ChatRequest) -> str:
    if request.last_user_message == "long please":
        return LONG_REPLY
    return llm_reply(request)


@pytest.fixture(scope="module")
async def gw(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    # Each failed send handed back to JetStream at once (no holding): the durable's last delivery,
    # where a reply is given up and recorded, comes within seconds.
    env = {"GATEWAY_RETRY_BASE_S": "0.2", "GATEWAY_DELIVERY_HOLD_S": "0"}
    async with running_world(
        tmp_path_factory.mktemp("gateway"), env, replicas={"gateway": 2}, reply=replies, otlp_protocol="grpc"
    ) as world:
        yield world


async def stream_last_seq(world: World) -> int:
    nc = await nats.connect(world.stack.nats.url)
    try:
        info = await nc.jetstream().stream_info(EVENTS_STREAM)
        return int(info.state.last_seq)
    finally:
        await nc.drain()


XML = {"Content-Type": "text/xml"}


async def test_three_retries_of_one_message_across_two_replicas_get_exactly_one_reply(gw: World) -> None:
    user = "e2e-retries"
    first, second = gw.stack.gateway_urls
    resp, msg_id = await send_text(gw, user, "retried question", gateway_url=first)
    retries = await asyncio.gather(
        send_text(gw, user, "retried question", msg_id=msg_id, gateway_url=second),
        send_text(gw, user, "retried question", msg_id=msg_id, gateway_url=first),
        send_text(gw, user, "retried question", msg_id=msg_id, gateway_url=second),
    )
    assert resp.status_code == 200 and all(r.status_code == 200 for r, _ in retries)
    await send_text(gw, user, "next question", gateway_url=second)
    await gw.wecom.wait_for_messages(user, 2, timeout=30)
    texts = [m.content for m in gw.wecom.messages_for(user)]
    assert texts == [
        "LLM says: retried question (saw 2 messages)",
        "LLM says: next question (saw 4 messages)",
    ]
    assert sum(1 for r in gw.llm.requests if r.last_user_message == "retried question") == 1


async def test_an_expired_token_then_a_frequency_limit_still_deliver_exactly_once(gw: World) -> None:
    user = "e2e-flaky-wecom"
    gw.wecom.fail_next_sends(42001, 45009)
    await send_text(gw, user, "flaky api")
    await gw.wecom.wait_for_messages(user, 1, timeout=30)
    await send_text(gw, user, "after the storm")
    await gw.wecom.wait_for_messages(user, 2, timeout=30)
    texts = [m.content for m in gw.wecom.messages_for(user)]
    assert texts == ["LLM says: flaky api (saw 2 messages)", "LLM says: after the storm (saw 4 messages)"]


async def test_a_long_chinese_reply_arrives_as_ordered_parts_within_the_limit(gw: World) -> None:
    user = "e2e-long"
    assert len(LONG_REPLY.encode()) > 5000
    await send_text(gw, user, "long please")

    def all_parts() -> list[SentMessage] | None:
        got = gw.wecom.messages_for(user)
        return got if sum(len(p.content) for p in got) >= len(LONG_REPLY) else None

    parts = await wait_until(all_parts, 30, "every part of the long reply")
    assert len(parts) >= 3
    assert all(len(p.content.encode()) <= 2048 for p in parts)
    assert "".join(p.content for p in parts) == LONG_REPLY


async def test_events_are_acknowledged_and_never_reach_the_llm(gw: World) -> None:
    user = "e2e-events"
    crypto = _crypto()
    asked_before = len(gw.llm.requests)
    before = await stream_last_seq(gw)
    async with httpx.AsyncClient(base_url=gw.stack.gateway_url, timeout=10) as client:
        for event in ("enter_agent", "subscribe", "click"):
            inner = build_inner_event_xml(CONFIG["corpid"], user, int(time.time()), event, "KEY", CONFIG["agentid"])
            params, body = crypto.build_callback(
                inner, str(int(time.time())), "n2", CONFIG["corpid"], CONFIG["agentid"]
            )
            resp = await client.post("/wecom/callback", params=params, content=body.encode(), headers=XML)
            assert resp.status_code == 200 and resp.content == b""
    assert await stream_last_seq(gw) == before + 3  # recorded in the log
    await send_text(gw, user, "a real question")
    await gw.wecom.wait_for_messages(user, 1, timeout=20)
    asked = [r.last_user_message for r in gw.llm.requests[asked_before:]]
    assert "a real question" in asked and not any("enter_agent" in a or "subscribe" in a for a in asked)
    assert [m.content for m in gw.wecom.messages_for(user)] == ["LLM says: a real question (saw 2 messages)"]


async def test_both_replicas_share_one_access_token(gw: World) -> None:
    users = [f"e2e-token-{i}" for i in range(8)]
    urls = gw.stack.gateway_urls
    await asyncio.gather(*(send_text(gw, u, "token?", gateway_url=urls[i % 2]) for i, u in enumerate(users)))
    for user in users:
        await gw.wecom.wait_for_messages(user, 1, timeout=30)
    # One gettoken for the module's lifetime so far, plus one after the 42001 test invalidated it.
    assert gw.wecom.stats()["gettoken_calls"] <= 2


async def test_the_trace_of_one_message_spans_all_services_over_otlp_grpc(gw: World) -> None:
    user = "e2e-grpc-trace"
    await send_text(gw, user, "trace me over grpc")
    await gw.wecom.wait_for_messages(user, 1, timeout=20)
    trace = await gw.sink.wait_for(find_message_trace, timeout=30)
    assert {s.service_name for s in trace} >= TRACED_SERVICES
    assert len({s.trace_id for s in trace}) == 1


def _inner_of(kind: str, user: str, msg_id: int) -> str:
    extra = {
        "image": "<PicUrl><![CDATA[http://example.invalid/p.jpg]]></PicUrl><MediaId><![CDATA[media-img]]></MediaId>",
        "voice": "<MediaId><![CDATA[media-voice]]></MediaId><Format><![CDATA[amr]]></Format>",
        "video": "<MediaId><![CDATA[media-video]]></MediaId><ThumbMediaId><![CDATA[thumb]]></ThumbMediaId>",
        "file": "<MediaId><![CDATA[media-file]]></MediaId><FileName><![CDATA[a.pdf]]></FileName>",
        "location": "<Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale>"
        "<Label><![CDATA[广州塔]]></Label><AppType><![CDATA[wxwork]]></AppType>",
        "link": "<Title><![CDATA[wxbot]]></Title><Description><![CDATA[a bot]]></Description>"
        "<Url><![CDATA[https://example.invalid/]]></Url><PicUrl><![CDATA[]]></PicUrl>",
    }[kind]
    return (
        f"<xml><ToUserName><![CDATA[{CONFIG['corpid']}]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[{kind}]]></MsgType>{extra}"
        f"<MsgId>{msg_id}</MsgId><AgentID>{CONFIG['agentid']}</AgentID></xml>"
    )


@pytest.mark.parametrize("kind", ["image", "voice", "video", "file", "location", "link"])
async def test_every_message_type_is_accepted_and_answered_once(gw: World, kind: str) -> None:
    user = f"e2e-type-{kind}"
    crypto = _crypto()
    msg_id = 7_400_000_000_000_000_000 + len(kind) * 1000 + sum(map(ord, kind))
    params, body = crypto.build_callback(
        _inner_of(kind, user, msg_id), str(int(time.time())), "n3", CONFIG["corpid"], CONFIG["agentid"]
    )
    async with httpx.AsyncClient(base_url=gw.stack.gateway_url, timeout=10) as client:
        resp = await client.post("/wecom/callback", params=params, content=body.encode(), headers=XML)
    assert resp.status_code == 200 and resp.content == b""
    replies = await gw.wecom.wait_for_messages(user, 1, timeout=20)
    assert len(replies) == 1 and replies[0].content
    if kind in ("image", "voice", "video", "file"):  # media the bot cannot read: a notice, no LLM call
        assert not replies[0].content.startswith("LLM says")


async def test_a_message_created_long_ago_and_delivered_twice_is_answered_once(gw: World) -> None:
    """Its first delivery may lie outside JetStream's duplicate window: the Redis record decides."""
    user = "e2e-old-message"
    created = int(time.time()) - 3600
    _, msg_id = await send_text(gw, user, "an hour late", created_at=created)
    await gw.wecom.wait_for_messages(user, 1, timeout=20)
    resp, _ = await send_text(gw, user, "an hour late", msg_id=msg_id, created_at=created)
    assert resp.status_code == 200
    await send_text(gw, user, "and a fresh one")  # a later reply proves the retry added none
    got = await gw.wecom.wait_for_messages(user, 2, timeout=20)
    assert [m.content for m in got] == [
        "LLM says: an hour late (saw 2 messages)",
        "LLM says: and a fresh one (saw 4 messages)",
    ]


async def test_a_token_rejected_again_after_its_refresh_is_retried_not_dropped(gw: World) -> None:
    """42001 three times in a row (the refreshed token rejected too), then 45009: still one reply."""
    user = "e2e-token-storm"
    sends = gw.wecom.stats()["send_calls"]
    gw.wecom.fail_next_sends(42001, 42001, 42001, 45009)
    await send_text(gw, user, "token storm")
    got = await gw.wecom.wait_for_messages(user, 1, timeout=30)
    await send_text(gw, user, "and after it")  # a second reply proves the first was not sent twice
    got = await gw.wecom.wait_for_messages(user, 2, timeout=30)
    assert [m.content for m in got] == [
        "LLM says: token storm (saw 2 messages)",
        "LLM says: and after it (saw 4 messages)",
    ]
    assert gw.wecom.stats()["send_calls"] - sends == 6  # four refused sends retried, then two delivered


async def failures_of(world: World, user: str, count: int = 1, timeout_s: float = 30) -> list[ev.ReplyFailed]:
    """The ReplyFailed events recorded for `user`, once there are at least `count`."""
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    deadline = time.monotonic() + timeout_s
    while len(found := await logged(world, EventKind.FAILED, conversation)) < count:
        assert time.monotonic() < deadline, f"{count} ReplyFailed for {user} not recorded (have {len(found)})"
        await asyncio.sleep(0.2)
    return [ev.ReplyFailed.FromString(data) for data in found]


async def test_an_unknown_errcode_is_retried_not_dropped(gw: World) -> None:
    user = "e2e-unknown-errcode"
    sends = gw.wecom.stats()["send_calls"]
    gw.wecom.fail_next_sends(50001, 50001)  # in no table: retried with backoff like "busy"
    await send_text(gw, user, "strange answers")
    await gw.wecom.wait_for_messages(user, 1, timeout=30)
    await send_text(gw, user, "and after them")
    got = await gw.wecom.wait_for_messages(user, 2, timeout=30)
    assert [m.content for m in got] == [
        "LLM says: strange answers (saw 2 messages)",
        "LLM says: and after them (saw 4 messages)",
    ]
    assert gw.wecom.stats()["send_calls"] - sends == 4  # two refused, then one each
    conversation = wecom_conversation_id(CONFIG["corpid"], CONFIG["agentid"], user)
    assert await logged(gw, EventKind.FAILED, conversation) == []


async def test_an_invalid_user_fails_at_once_and_is_recorded(gw: World) -> None:
    user = "e2e-invalid-user"
    sends = gw.wecom.stats()["send_calls"]
    gw.wecom.fail_next_sends(81013)  # "user & party & tag all invalid": no retry can reach them
    await send_text(gw, user, "can you reach me?")
    [failed] = await failures_of(gw, user)
    assert (failed.errcode, failed.retryable) == (81013, False) and "visibility" in failed.error
    await send_text(gw, user, "and now?")  # answered after any retry of the first would have been sent
    got = await gw.wecom.wait_for_messages(user, 1, timeout=30)
    assert [m.content for m in got] == ["LLM says: and now? (saw 4 messages)"]
    assert gw.wecom.stats()["send_calls"] - sends == 2  # the refused reply was sent exactly once
    assert len(await failures_of(gw, user)) == 1


async def test_an_unreachable_api_is_retried_until_the_last_delivery_then_recorded_once(gw: World) -> None:
    """Connection refused on every delivery (6, GATEWAY_RETRY_BASE_S=0.2: about 6 s of backoff)."""
    user = "e2e-wecom-down"
    await gw.wecom.refuse_connections()
    try:
        await send_text(gw, user, "is anyone there?")
        [failed] = await failures_of(gw, user, timeout_s=45)
    finally:
        await gw.wecom.accept_connections()
    assert (failed.errcode, failed.retryable) == (0, True) and "unreachable" in failed.error
    await send_text(gw, user, "back again?")
    got = await gw.wecom.wait_for_messages(user, 1, timeout=30)
    assert [m.content.split(" (saw")[0] for m in got] == ["LLM says: back again?"]  # the given-up reply stays given up
    assert len(await failures_of(gw, user)) == 1
    async with httpx.AsyncClient(timeout=5) as client:
        metrics = "".join([(await client.get(f"{u}/metrics")).text for u in gw.stack.gateway_urls])
    gave_up = [
        line
        for line in metrics.splitlines()
        if line.startswith("wxbot_gateway_deliveries_total") and 'outcome="gave_up"' in line
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in gave_up) == 1


async def test_a_rejected_secret_fails_fast_and_is_visible_in_readiness(gw: World) -> None:
    """Last in the module: it leaves the app's secret marked bad for a minute."""
    user = "e2e-bad-secret"
    gw.wecom.invalidate_tokens()
    gw.wecom.fail_next_gettokens(40001, 40001, 40001)
    await send_text(gw, user, "does the secret work?")

    async def detail() -> str:
        async with httpx.AsyncClient(timeout=5) as client:
            bodies = [(await client.get(f"{u}/readyz")).text for u in gw.stack.gateway_urls]
        return " ".join(bodies)

    deadline = time.monotonic() + 30
    while "40001" not in await detail():
        assert time.monotonic() < deadline, "readiness never reported the rejected secret"
        await asyncio.sleep(0.2)
    calls = gw.wecom.stats()["gettoken_calls"]
    await send_text(gw, user, "and now?")
    await send_text(gw, user, "and now again?")
    async with httpx.AsyncClient(timeout=5) as client:
        deadline = time.monotonic() + 30
        while True:
            metrics = "".join([(await client.get(f"{u}/metrics")).text for u in gw.stack.gateway_urls])
            failed = [
                line
                for line in metrics.splitlines()
                if line.startswith("wxbot_gateway_deliveries_total") and 'errcode="40001"' in line
            ]
            if sum(float(line.rsplit(" ", 1)[1]) for line in failed) >= 3:
                break
            assert time.monotonic() < deadline, "the three messages did not all fail with 40001"
            await asyncio.sleep(0.2)
    assert gw.wecom.stats()["gettoken_calls"] == calls  # no gettoken loop
    assert gw.wecom.messages_for(user) == []
