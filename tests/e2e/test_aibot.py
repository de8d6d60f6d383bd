"""The WeCom AI bot channel: encrypted JSON callbacks, a stream reply at once, the answer on refresh.

Two gateway replicas run: refresh polls alternate between them, as behind a load balancer.
Hostile input is in test_hostile_input.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.e2e.harness import CONFIG, World, running_world
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
