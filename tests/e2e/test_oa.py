"""The WeChat Official Account channel as WeChat sees it: URL check, plain and safe mode, retries
across two gateway replicas, events, a flaky customer-service API, the 48-hour rule, long replies
and a wrong AppSecret (hostile input: test_hostile_input)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from tests.e2e.harness import CONFIG, VECTORS, World, llm_reply, logged, running_world
from wxbot_common.nats.subjects import EVENTS_STREAM, EventKind
from wxbot_common.nats.topology import GATEWAY_DELIVERY
from wxbot_devkit.fakes.llm import ChatRequest
from wxbot_devkit.fakes.waiting import wait_until
from wxbot_devkit.fakes.wechat_oa import FakeOfficialAccount
from wxbot_devkit.fakes.wecom import SentMessage
from wxbot_gateway.conversation import conversation_id
from wxbot_proto.events.v1 import events_pb2 as ev
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.messages import build_inner_event_xml
from wxbot_wecom.signature import plain_signature

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

APP_ID = VECTORS["i_official_account_safe_mode_post"]["appid"]
APP_SECRET = "oa-secret"
GH_ID = "gh_0123456789ab"
TOKEN = CONFIG["token"]
CRYPTO = CallbackCrypto(TOKEN, CONFIG["encoding_aes_key"], APP_ID)
XML = {"Content-Type": "text/xml"}
LONG_REPLY = "\n\n".join(
    f"第{i}段：公众号客服消息也按字节拆分，每一段都不超过两千零四十八个字节。" * 7 for i in range(1, 10)
)


def replies(request: ChatRequest) -> str:
    return LONG_REPLY if request.last_user_message == "long please" else llm_reply(request)


@pytest.fixture(scope="module")
async def oa(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[World, FakeOfficialAccount]]:
    api = FakeOfficialAccount(APP_ID, APP_SECRET)
    await api.start()
    env = {
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_APP_SECRET": APP_SECRET,
        "WECHAT_TOKEN": TOKEN,
        "WECHAT_ENCODING_AES_KEY": CONFIG["encoding_aes_key"],
        "WECHAT_API_BASE": api.base_url,
        "GATEWAY_RETRY_BASE_S": "0.2",
        "GATEWAY_DELIVERY_HOLD_S": "0",  # each failed send handed back at once: the last delivery comes soon
    }
    try:
        async with running_world(tmp_path_factory.mktemp("oa"), env, replicas={"gateway": 2}, reply=replies) as world:
            yield world, api
    finally:
        await api.stop()


def inner_text(openid: str, text: str, msg_id: int) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


def plain_params(timestamp: str | None = None, nonce: str = "777") -> dict[str, str]:
    ts = timestamp or str(int(time.time()))
    return {"signature": plain_signature(TOKEN, ts, nonce), "timestamp": ts, "nonce": nonce}


def safe_request(inner: str, openid: str) -> tuple[dict[str, str], str]:
    ts, nonce = str(int(time.time())), "4242"
    params, body = CRYPTO.build_callback(inner, ts, nonce, GH_ID, None)
    return params | {"encrypt_type": "aes", "signature": plain_signature(TOKEN, ts, nonce), "openid": openid}, body


async def post(world: World, params: dict[str, str], body: str | bytes, replica: int = 0) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    async with httpx.AsyncClient(base_url=world.stack.gateway_urls[replica], timeout=10) as client:
        return await client.post("/wechat/callback", params=params, content=content, headers=XML)


async def send_plain(world: World, openid: str, text: str, msg_id: int, replica: int = 0) -> None:
    resp = await post(world, plain_params(), inner_text(openid, text, msg_id), replica)
    assert resp.status_code == 200 and resp.text == "success"


def conversation(openid: str) -> str:
    return conversation_id("wechat", APP_ID, openid)


async def last_event(world: World, kind: EventKind, openid: str) -> bytes | None:
    """The latest event of `kind` in the log for this user's conversation, or None."""
    nc = await nats.connect(world.stack.nats.url)
    try:
        msg = await nc.jetstream().get_last_msg(EVENTS_STREAM, kind.subject(conversation(openid)))
        return msg.data
    except NotFoundError:
        return None
    finally:
        await nc.drain()


async def gateway_text(world: World, path: str) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        return "\n".join([(await client.get(f"{u}{path}")).text for u in world.stack.gateway_urls])


async def test_url_check_returns_the_raw_echostr(oa: tuple[World, FakeOfficialAccount]) -> None:
    world, _ = oa
    vector = VECTORS["h_official_account_plain_get"]
    async with httpx.AsyncClient(base_url=world.stack.gateway_url, timeout=10) as client:
        ok = await client.get("/wechat/callback", params=vector["query"])
        bad = await client.get("/wechat/callback", params={**vector["query"], "signature": "0" * 40})
    assert ok.status_code == 200 and ok.text == vector["expected_response_body"]
    assert bad.status_code == 403


async def test_safe_mode_message_is_answered_through_the_customer_service_api(
    oa: tuple[World, FakeOfficialAccount],
) -> None:
    world, api = oa
    openid = "oSAFEMODEUSER0000000000000"
    params, body = safe_request(inner_text(openid, "hello OA", 25_000_000_000_000_001), openid)
    resp = await post(world, params, body)
    assert resp.status_code == 200 and resp.text == "success"
    got = await api.wait_for_messages(openid, 1, timeout=20)
    assert got[0].content == "LLM says: hello OA (saw 2 messages)"
    assert world.wecom.messages == []  # not sent through the WeCom app


async def test_plain_mode_retries_on_both_replicas_get_one_reply_and_a_bad_signature_is_refused(
    oa: tuple[World, FakeOfficialAccount],
) -> None:
    world, api = oa
    openid = "oPLAINMODEUSER000000000000"
    body = inner_text(openid, "plain hello", 25_000_000_000_000_002)
    refused = await post(world, {**plain_params(), "signature": "f" * 40}, body)
    assert refused.status_code == 403
    # WeChat retries a slow callback; the retries may land on either replica.
    answers = await asyncio.gather(*(post(world, plain_params(), body, replica) for replica in (0, 1, 0, 1)))
    assert all(r.status_code == 200 and r.text == "success" for r in answers)
    await api.wait_for_messages(openid, 1, timeout=20)
    await send_plain(world, openid, "second plain", 25_000_000_000_000_003, replica=1)
    got = await api.wait_for_messages(openid, 2, timeout=20)
    assert [m.content for m in got] == [
        "LLM says: plain hello (saw 2 messages)",
        "LLM says: second plain (saw 4 messages)",
    ]
    assert sum(1 for r in world.llm.requests if r.last_user_message == "plain hello") == 1


async def test_a_subscribe_event_is_logged_and_never_reaches_the_llm(oa: tuple[World, FakeOfficialAccount]) -> None:
    world, api = oa
    openid = "oSUBSCRIBER000000000000000"
    before = len(world.llm.requests)
    event = build_inner_event_xml(GH_ID, openid, int(time.time()), "subscribe", "qrscene_42")
    resp = await post(world, *safe_request(event, openid))
    assert resp.status_code == 200 and resp.text == "success"
    logged = await last_event(world, EventKind.CHANNEL_EVENT, openid)
    assert logged is not None and ev.ChannelEventReceived.FromString(logged).event == "subscribe"
    await send_plain(world, openid, "after subscribing", 25_000_000_000_000_010)
    got = await api.wait_for_messages(openid, 1, timeout=20)
    assert [m.content for m in got] == ["LLM says: after subscribing (saw 2 messages)"]
    assert [r.last_user_message for r in world.llm.requests[before:]] == ["after subscribing"]


async def test_a_stale_token_then_a_frequency_limit_still_deliver_exactly_once(
    oa: tuple[World, FakeOfficialAccount],
) -> None:
    world, api = oa
    openid = "oFLAKYAPIUSER0000000000000"
    await send_plain(world, openid, "warm up the token", 25_000_000_000_000_020)
    await api.wait_for_messages(openid, 1, timeout=20)
    calls = api.stats()["gettoken_calls"]
    api.invalidate_tokens()  # the cached token is now stale: custom/send answers 40001
    api.fail_next_sends(45009)
    await send_plain(world, openid, "flaky api", 25_000_000_000_000_021)
    got = await api.wait_for_messages(openid, 2, timeout=30)
    await send_plain(world, openid, "after the storm", 25_000_000_000_000_022)
    got = await api.wait_for_messages(openid, 3, timeout=30)
    assert [m.content for m in got[1:]] == [
        "LLM says: flaky api (saw 4 messages)",
        "LLM says: after the storm (saw 6 messages)",
    ]
    assert api.stats()["gettoken_calls"] == calls + 1  # one refresh, shared by both replicas


async def test_outside_the_48_hour_window_the_reply_fails_once_and_is_recorded(
    oa: tuple[World, FakeOfficialAccount],
) -> None:
    world, api = oa
    openid = "oSILENTFOR3DAYS00000000000"

    def sends() -> int:  # attempts that WeCom judged on their content (a replica's stale token may cost one more)
        stats = api.stats()
        return int(stats["send_calls"]) - int(stats["token_rejections"])

    before = sends()
    api.fail_next_sends(45015)  # "response out of time limit or subscription is canceled"
    await send_plain(world, openid, "anyone there?", 25_000_000_000_000_030)

    async def failed() -> bytes | None:
        return await last_event(world, EventKind.FAILED, openid)

    deadline = time.monotonic() + 30
    while (data := await failed()) is None:
        assert time.monotonic() < deadline, "no ReplyFailed was recorded"
        await asyncio.sleep(0.2)
    record = ev.ReplyFailed.FromString(data)
    assert (record.errcode, record.retryable) == (45015, False)
    await send_plain(world, openid, "and now?", 25_000_000_000_000_031)
    got = await api.wait_for_messages(openid, 1, timeout=20)
    assert len(got) == 1 and got[0].content.startswith("LLM says: and now?")
    assert sends() == before + 2  # the refused reply was not retried


async def failures_of(world: World, openid: str, count: int = 1, timeout_s: float = 30) -> list[ev.ReplyFailed]:
    """The ReplyFailed events recorded for `openid`, once there are at least `count`."""
    deadline = time.monotonic() + timeout_s
    while len(found := await logged(world, EventKind.FAILED, conversation(openid))) < count:
        assert time.monotonic() < deadline, f"{count} ReplyFailed for {openid} not recorded (have {len(found)})"
        await asyncio.sleep(0.2)
    return [ev.ReplyFailed.FromString(data) for data in found]


async def test_a_token_rejected_three_times_then_a_frequency_limit_still_deliver_exactly_once(
    oa: tuple[World, FakeOfficialAccount],
) -> None:
    """42001 three times in a row (the refreshed token rejected too), then 45009: one reply."""
    world, api = oa
    openid = "oTOKENSTORM000000000000000"
    api.fail_next_sends(42001, 42001, 42001, 45009)
    await send_plain(world, openid, "token storm", 25_000_000_000_000_060)
    await api.wait_for_messages(openid, 1, timeout=30)
    await send_plain(world, openid, "and after it", 25_000_000_000_000_061)
    got = await api.wait_for_messages(openid, 2, timeout=30)
    assert [m.content for m in got] == [
        "LLM says: token storm (saw 2 messages)",
        "LLM says: and after it (saw 4 messages)",
    ]
    assert api.stats()["pending_send_errcodes"] == []
    assert await logged(world, EventKind.FAILED, conversation(openid)) == []


async def test_an_unknown_errcode_is_retried_not_dropped(oa: tuple[World, FakeOfficialAccount]) -> None:
    world, api = oa
    openid = "oUNKNOWNERRCODE00000000000"
    api.fail_next_sends(50001, 50001)
    await send_plain(world, openid, "strange answers", 25_000_000_000_000_062)
    await api.wait_for_messages(openid, 1, timeout=30)
    await send_plain(world, openid, "and after them", 25_000_000_000_000_063)
    got = await api.wait_for_messages(openid, 2, timeout=30)
    assert [m.content for m in got] == [
        "LLM says: strange answers (saw 2 messages)",
        "LLM says: and after them (saw 4 messages)",
    ]
    assert await logged(world, EventKind.FAILED, conversation(openid)) == []


async def test_an_invalid_openid_fails_at_once_and_is_recorded(oa: tuple[World, FakeOfficialAccount]) -> None:
    world, api = oa
    openid = "oINVALIDOPENID000000000000"
    sends = api.stats()["send_calls"] - api.stats()["token_rejections"]
    api.fail_next_sends(40003)  # invalid openid: no retry can reach them
    await send_plain(world, openid, "can you reach me?", 25_000_000_000_000_064)
    [failed] = await failures_of(world, openid)
    assert (failed.errcode, failed.retryable) == (40003, False)
    await send_plain(world, openid, "and now?", 25_000_000_000_000_065)
    got = await api.wait_for_messages(openid, 1, timeout=30)
    assert [m.content for m in got] == ["LLM says: and now? (saw 4 messages)"]
    assert api.stats()["send_calls"] - api.stats()["token_rejections"] - sends == 2  # one send each
    assert len(await failures_of(world, openid)) == 1


async def test_a_busy_api_is_retried_until_the_last_delivery_then_recorded_once(
    oa: tuple[World, FakeOfficialAccount],
) -> None:
    """-1 ("system busy") on every one of the delivery durable's deliveries: one send per delivery,
    then ReplyFailed(retryable=true) with the errcode — never silence."""
    world, api = oa
    openid = "oALWAYSBUSY000000000000000"
    deliveries = GATEWAY_DELIVERY.max_deliver
    sends = api.stats()["send_calls"]
    api.fail_next_sends(*[-1] * deliveries)
    await send_plain(world, openid, "are you busy?", 25_000_000_000_000_066)
    [failed] = await failures_of(world, openid, timeout_s=45)
    assert (failed.errcode, failed.retryable) == (-1, True)
    assert api.stats()["send_calls"] - sends == deliveries and api.stats()["pending_send_errcodes"] == []
    await send_plain(world, openid, "and now?", 25_000_000_000_000_067)
    got = await api.wait_for_messages(openid, 1, timeout=30)
    assert [m.content.split(" (saw")[0] for m in got] == ["LLM says: and now?"]
    assert len(await failures_of(world, openid)) == 1


async def test_a_long_reply_arrives_as_ordered_parts_within_the_limit(oa: tuple[World, FakeOfficialAccount]) -> None:
    world, api = oa
    openid = "oLONGREPLYUSER000000000000"
    assert len(LONG_REPLY.encode()) > 5000
    await send_plain(world, openid, "long please", 25_000_000_000_000_040)

    def all_parts() -> list[SentMessage] | None:
        got = api.messages_for(openid)
        return got if sum(len(p.content) for p in got) >= len(LONG_REPLY) else None

    parts = await wait_until(all_parts, 30, "every part of the long reply")
    assert len(parts) >= 3
    assert all(len(p.content.encode()) <= 2048 for p in parts)
    assert "".join(p.content for p in parts) == LONG_REPLY


async def test_a_voice_message_with_recognition_is_answered_with_its_transcript(
    oa: tuple[World, FakeOfficialAccount],
) -> None:
    """The Official Account's own speech recognition is used as it is: no download, no ASR call."""
    world, api = oa
    openid = "oVOICERECOGNITION000000000"
    inner = (
        f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[voice]]></MsgType>"
        "<MediaId><![CDATA[oa-voice]]></MediaId><Format><![CDATA[amr]]></Format>"
        "<Recognition><![CDATA[公众号语音识别]]></Recognition><MsgId>25000000000000077</MsgId></xml>"
    )
    resp = await post(world, plain_params(), inner)
    assert resp.status_code == 200 and resp.text == "success"
    got = await api.wait_for_messages(openid, 1, timeout=20)
    assert got[0].content == "LLM says: 公众号语音识别 (saw 2 messages)"
    assert world.llm.media.transcriptions == []


async def test_a_rejected_app_secret_fails_fast_and_is_visible_in_readiness(
    oa: tuple[World, FakeOfficialAccount],
) -> None:
    """Last in the module: it leaves the AppSecret marked bad for a minute."""
    world, api = oa
    openid = "oBADSECRET0000000000000000"
    api.invalidate_tokens()
    api.fail_next_gettokens(40125, 40125, 40125)
    await send_plain(world, openid, "does the secret work?", 25_000_000_000_000_050)
    deadline = time.monotonic() + 30
    while "40125" not in await gateway_text(world, "/readyz"):
        assert time.monotonic() < deadline, "readiness never reported the rejected AppSecret"
        await asyncio.sleep(0.2)
    readyz = await gateway_text(world, "/readyz")
    assert "WECHAT_APP_SECRET" in readyz and "WECOM_SECRET rejected" not in readyz  # the WeCom app is fine
    metrics = await gateway_text(world, "/metrics")
    assert 'wxbot_gateway_config_errors_total{channel="wechat",errcode="40125"} 1.0' in metrics
    calls = api.stats()["gettoken_calls"]
    await send_plain(world, openid, "and now?", 25_000_000_000_000_051)

    deadline = time.monotonic() + 30
    while True:
        text = await gateway_text(world, "/metrics")
        failed = [
            line
            for line in text.splitlines()
            if line.startswith("wxbot_gateway_deliveries_total")
            and 'channel="wechat"' in line
            and 'outcome="failed"' in line
        ]
        if sum(float(line.rsplit(" ", 1)[1]) for line in failed) >= 2:
            break
        assert time.monotonic() < deadline, "the two messages did not both fail"
        await asyncio.sleep(0.2)
    # The second failed from the held rejection (wecom_api reports a held rejection as 40001 for now).
    recorded = await last_event(world, EventKind.FAILED, openid)
    assert recorded is not None and ev.ReplyFailed.FromString(recorded).errcode in (40125, 40001)
    assert api.stats()["gettoken_calls"] == calls  # no cgi-bin/token loop
    assert api.messages_for(openid) == []
