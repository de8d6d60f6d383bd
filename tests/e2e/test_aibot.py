"""The WeCom AI bot channel: encrypted JSON callbacks, a stream reply at once, the answer on refresh.

Two gateway replicas run: refresh polls alternate between them, as behind a load balancer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import nats
import pytest

from tests.e2e.harness import CONFIG, World, running_world
from wxbot_common.nats.subjects import EVENTS_STREAM
from wxbot_gateway.aibot import THINKING
from wxbot_wecom.crypto import CallbackCrypto

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CRYPTO = CallbackCrypto(CONFIG["token"], CONFIG["encoding_aes_key"], "")


@pytest.fixture(scope="module")
async def ab(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    env = {"AIBOT_TOKEN": CONFIG["token"], "AIBOT_ENCODING_AES_KEY": CONFIG["encoding_aes_key"]}
    async with running_world(tmp_path_factory.mktemp("aibot"), env, replicas={"gateway": 2}) as world:
        yield world


async def callback(world: World, payload: dict[str, Any], replica: int = 0) -> dict[str, Any]:
    ts, nonce = str(int(time.time())), "5150"
    params, body = CRYPTO.build_json_callback(json.dumps(payload, ensure_ascii=False), ts, nonce)
    async with httpx.AsyncClient(base_url=world.stack.gateway_urls[replica], timeout=10) as client:
        resp = await client.post("/wecom/aibot/callback", params=params, content=body.encode())
    assert resp.status_code == 200, resp.text
    reply = json.loads(resp.text)
    assert reply["nonce"] == nonce  # the callback's nonce is echoed, as the protocol requires
    return json.loads(CRYPTO.open_reply_json(resp.text))  # type: ignore[no-any-return]


def message(user: str, text: str, msgid: str, chat: str = "") -> dict[str, Any]:
    payload: dict[str, Any] = {
        "msgid": msgid,
        "aibotid": "AIBOT-E2E",
        "chattype": "group" if chat else "single",
        "from": {"userid": user},
        "response_url": "https://qyapi.weixin.qq.com/cgi-bin/aibot/response?response_code=E2E",
        "msgtype": "text",
        "text": {"content": text},
    }
    if chat:
        payload["chatid"] = chat
    return payload


async def until_finished(world: World, sid: str) -> str:
    """Poll like WeCom until `finish`; polls alternate between the two replicas."""
    deadline = time.monotonic() + 30
    for poll in itertools.count():
        reply = await callback(
            world, {"msgid": f"refresh-{time.monotonic_ns()}", "msgtype": "stream", "stream": {"id": sid}}, poll % 2
        )
        stream = reply["stream"]
        assert stream["id"] == sid
        if stream["finish"]:
            return str(stream["content"])
        assert stream["content"] == THINKING
        assert time.monotonic() < deadline, "the stream never finished"
        await asyncio.sleep(0.2)  # WeCom's refresh interval, not a wait for a condition
    raise AssertionError("unreachable")


async def test_url_check_answers_the_decrypted_echostr(ab: World) -> None:
    params = CRYPTO.build_url_verification("aibot-echo-123", str(int(time.time())), "n9")
    async with httpx.AsyncClient(base_url=ab.stack.gateway_url, timeout=10) as client:
        resp = await client.get("/wecom/aibot/callback", params=params)
    assert resp.status_code == 200 and resp.text == "aibot-echo-123"


async def test_a_message_streams_its_answer_and_a_redelivery_resumes_the_same_stream(ab: World) -> None:
    first = await callback(ab, message("aibot-zhangsan", "你好 aibot", "MSG-AIBOT-1"))
    assert first["msgtype"] == "stream" and first["stream"]["finish"] is False
    again = await callback(ab, message("aibot-zhangsan", "你好 aibot", "MSG-AIBOT-1"))  # WeCom redelivers
    sid = first["stream"]["id"]
    assert again["stream"]["id"] == sid
    assert await until_finished(ab, sid) == "LLM says: 你好 aibot (saw 2 messages)"
    assert sum(1 for r in ab.llm.requests if r.last_user_message == "你好 aibot") == 1
    assert ab.wecom.messages == []


async def test_a_group_chat_is_one_conversation(ab: World) -> None:
    one = await callback(ab, message("aibot-alice", "the meeting is at 3pm", "MSG-GROUP-1", chat="CHAT-1"))
    await until_finished(ab, one["stream"]["id"])
    two = await callback(ab, message("aibot-bob", "when is the meeting?", "MSG-GROUP-2", chat="CHAT-1"))
    assert await until_finished(ab, two["stream"]["id"]) == "LLM says: when is the meeting? (saw 4 messages)"
    ask = next(r for r in ab.llm.requests if r.last_user_message == "when is the meeting?")
    assert any("the meeting is at 3pm" in str(m.get("content")) for m in ask.messages)


async def test_an_event_is_acknowledged_and_never_reaches_the_llm(ab: World) -> None:
    before = len(ab.llm.requests)
    ts, nonce = str(int(time.time())), "6160"
    payload = {
        "msgid": "MSG-AIBOT-EVENT-1",
        "aibotid": "AIBOT-E2E",
        "chattype": "single",
        "from": {"userid": "aibot-visitor"},
        "msgtype": "event",
        "create_time": int(time.time()),
        "event": {"eventtype": "enter_chat"},
    }
    params, body = CRYPTO.build_json_callback(json.dumps(payload), ts, nonce)
    async with httpx.AsyncClient(base_url=ab.stack.gateway_url, timeout=10) as client:
        resp = await client.post("/wecom/aibot/callback", params=params, content=body.encode())
    assert resp.status_code == 200 and resp.content == b""
    # A message sent after the event is answered; by then the event would have reached the LLM too.
    reply = await callback(ab, message("aibot-visitor", "after the event", "MSG-AIBOT-EVENT-2"))
    assert await until_finished(ab, reply["stream"]["id"]) == "LLM says: after the event (saw 2 messages)"
    assert [r.last_user_message for r in ab.llm.requests[before:]] == ["after the event"]


# -- hostile input: each case gets its 4xx, publishes nothing, and the next message is answered -------------

Request = tuple[str, dict[str, str], bytes]  # method, query, body


def signed(encrypt: str, timestamp: str | None = None) -> tuple[dict[str, str], bytes]:
    ts = timestamp or str(int(time.time()))
    params = {"msg_signature": CRYPTO.sign(ts, "n1", encrypt), "timestamp": ts, "nonce": "n1"}
    return params, json.dumps({"encrypt": encrypt}).encode()


def good_message() -> bytes:
    return json.dumps(message("aibot-hostile", "hostile?", f"MSG-HOSTILE-{time.monotonic_ns()}")).encode()


def hostile_requests() -> dict[str, tuple[Callable[[], Request], int]]:
    def no_signature() -> Request:
        params, body = signed(CRYPTO.encrypt(good_message()))
        return "POST", {k: v for k, v in params.items() if k != "msg_signature"}, body

    def wrong_signature() -> Request:
        params, body = signed(CRYPTO.encrypt(good_message()))
        return "POST", {**params, "msg_signature": "0" * 40}, body

    def stale_timestamp() -> Request:
        return "POST", *signed(CRYPTO.encrypt(good_message()), str(int(time.time()) - 3600))

    def malformed_json() -> Request:
        params, _ = signed(CRYPTO.encrypt(good_message()))
        return "POST", params, b'{"encrypt": '

    def no_encrypt_key() -> Request:
        params, _ = signed(CRYPTO.encrypt(good_message()))
        return "POST", params, b'{"Encrypt": "x"}'

    def invalid_base64() -> Request:
        return "POST", *signed("not*base64*at*all")

    def wrong_receive_id() -> Request:
        app = CallbackCrypto(CONFIG["token"], CONFIG["encoding_aes_key"], CONFIG["corpid"])
        return "POST", *signed(app.encrypt(good_message()))

    def payload_not_json() -> Request:
        return "POST", *signed(CRYPTO.encrypt(b"<xml>not json</xml>"))

    def payload_wrong_shape() -> Request:
        bad = {"msgid": "MSG-SHAPE", "msgtype": "text", "from": "not-an-object", "text": {"content": "x"}}
        return "POST", *signed(CRYPTO.encrypt(json.dumps(bad).encode()))

    def payload_deeply_nested() -> Request:
        return "POST", *signed(CRYPTO.encrypt(b"[" * 20_000 + b"]" * 20_000))

    def too_large() -> Request:
        params, _ = signed(CRYPTO.encrypt(good_message()))
        return "POST", params, b'{"encrypt": "' + b"A" * (65 * 1024) + b'"}'

    def wrong_method() -> Request:
        return "PUT", *signed(CRYPTO.encrypt(good_message()))

    def url_check_wrong_signature() -> Request:
        params = CRYPTO.build_url_verification("echo", str(int(time.time())), "n2")
        return "GET", {**params, "msg_signature": "f" * 40}, b""

    return {
        "no signature": (no_signature, 403),
        "wrong signature": (wrong_signature, 403),
        "stale timestamp": (stale_timestamp, 403),
        "malformed JSON envelope": (malformed_json, 400),
        "envelope without encrypt": (no_encrypt_key, 400),
        "invalid base64": (invalid_base64, 400),
        "wrong receive id (an app's CorpID)": (wrong_receive_id, 400),
        "payload not JSON": (payload_not_json, 400),
        "payload of the wrong shape": (payload_wrong_shape, 400),
        "payload nested past the recursion limit": (payload_deeply_nested, 400),
        "body over the size limit": (too_large, 413),
        "wrong method": (wrong_method, 405),
        "URL check with a wrong signature": (url_check_wrong_signature, 403),
    }


HOSTILE = hostile_requests()


async def stream_last_seq(world: World) -> int:
    nc = await nats.connect(world.stack.nats.url)
    try:
        return int((await nc.jetstream().stream_info(EVENTS_STREAM)).state.last_seq)
    finally:
        await nc.drain()


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_input_gets_a_4xx_publishes_nothing_and_the_channel_keeps_serving(ab: World, case: str) -> None:
    build, status = HOSTILE[case]
    method, params, body = build()
    before = await stream_last_seq(ab)
    async with httpx.AsyncClient(base_url=ab.stack.gateway_url, timeout=10) as client:
        resp = await client.request(method, "/wecom/aibot/callback", params=params, content=body)
    assert resp.status_code == status, resp.text
    assert await stream_last_seq(ab) == before

    user = f"aibot-after-{case.replace(' ', '-')}"
    reply = await callback(ab, message(user, "still there?", f"MSG-AFTER-{time.monotonic_ns()}"))
    assert (await until_finished(ab, reply["stream"]["id"])).startswith("LLM says: still there?")
