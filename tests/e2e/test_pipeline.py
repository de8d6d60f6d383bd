"""What a WeCom user sees: one reply per message, with the LLM's text, in order, with context."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.harness import CONFIG, VECTORS, World, send_text

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


async def test_url_verification_returns_the_bare_echostr(world: World) -> None:
    vector = VECTORS["a_url_verification"]
    async with httpx.AsyncClient(base_url=world.stack.gateway_url, timeout=10) as client:
        resp = await client.get(f"/wecom/callback?{vector['query_string']}")
    assert resp.status_code == 200
    assert resp.content == vector["expected_response_body"].encode()


async def test_a_text_message_gets_exactly_one_reply_with_the_llm_text(world: World) -> None:
    user = "e2e-alice"
    resp, msg_id = await send_text(world, user, "你好，wxbot")
    assert resp.status_code == 200 and resp.content == b""

    first = await world.wecom.wait_for_messages(user, 1, timeout=20)
    assert first[0].content == "LLM says: 你好，wxbot (saw 2 messages)"
    assert first[0].agentid == int(CONFIG["agentid"])

    # WeCom retries the same MsgId: no second answer. A later message proves the pipeline moved on.
    again, _ = await send_text(world, user, "你好，wxbot", msg_id=msg_id)
    assert again.status_code == 200
    await send_text(world, user, "second question")
    replies = await world.wecom.wait_for_messages(user, 2, timeout=20)
    texts = [m.content for m in world.wecom.messages_for(user)]
    assert texts.count("LLM says: 你好，wxbot (saw 2 messages)") == 1
    assert replies[-1].content.startswith("LLM says: second question")
    assert len(texts) == 2


async def test_second_message_sees_first_exchange_and_other_users_do_not(world: World) -> None:
    alice, bob = "e2e-ctx-alice", "e2e-ctx-bob"
    await send_text(world, alice, "my name is Alice")
    await send_text(world, alice, "what is my name?")  # sent back to back, before the first is answered
    await send_text(world, bob, "what is my name?")
    await world.wecom.wait_for_messages(alice, 2, timeout=30)
    await world.wecom.wait_for_messages(bob, 1, timeout=30)

    asks = [r for r in world.llm.requests if r.last_user_message == "what is my name?"]
    alice_ask = next(r for r in asks if any("my name is Alice" in str(m) for m in r.messages))
    contents = [str(m.get("content")) for m in alice_ask.messages]
    assert contents[1:] == [
        "my name is Alice",
        "LLM says: my name is Alice (saw 2 messages)",
        "what is my name?",
    ]
    bob_asks = [r for r in asks if r is not alice_ask]
    assert bob_asks and all("Alice" not in str(r.messages) for r in bob_asks)
    alice_texts = [m.content for m in world.wecom.messages_for(alice)]
    assert alice_texts == [
        "LLM says: my name is Alice (saw 2 messages)",
        "LLM says: what is my name? (saw 4 messages)",
    ]
