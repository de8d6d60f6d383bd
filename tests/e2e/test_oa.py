"""The WeChat Official Account channel: URL check, plain and safe mode, customer-service replies."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.harness import CONFIG, VECTORS, World, running_world
from wxbot_devkit.fakes.wechat_oa import FakeOfficialAccount
from wxbot_wecom.crypto import CallbackCrypto
from wxbot_wecom.signature import plain_signature

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

APP_ID = VECTORS["i_official_account_safe_mode_post"]["appid"]
APP_SECRET = "oa-secret"
GH_ID = "gh_0123456789ab"


@pytest.fixture(scope="module")
async def oa(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[World, FakeOfficialAccount]]:
    api = FakeOfficialAccount(APP_ID, APP_SECRET)
    await api.start()
    env = {
        "WECHAT_APP_ID": APP_ID,
        "WECHAT_APP_SECRET": APP_SECRET,
        "WECHAT_TOKEN": CONFIG["token"],
        "WECHAT_ENCODING_AES_KEY": CONFIG["encoding_aes_key"],
        "WECHAT_API_BASE": api.base_url,
    }
    try:
        async with running_world(tmp_path_factory.mktemp("oa"), env) as world:
            yield world, api
    finally:
        await api.stop()


def inner_text(openid: str, text: str, msg_id: int) -> str:
    return (
        f"<xml><ToUserName><![CDATA[{GH_ID}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
        f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>"
    )


async def post(world: World, params: dict[str, str], body: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=world.stack.gateway_url, timeout=10) as client:
        return await client.post(
            "/wechat/callback", params=params, content=body.encode(), headers={"Content-Type": "text/xml"}
        )


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
    crypto = CallbackCrypto(CONFIG["token"], CONFIG["encoding_aes_key"], APP_ID)
    ts, nonce = str(int(time.time())), "4242"
    params, body = crypto.build_callback(inner_text(openid, "hello OA", 25_000_000_000_000_001), ts, nonce, GH_ID, None)
    params |= {"encrypt_type": "aes", "signature": plain_signature(CONFIG["token"], ts, nonce), "openid": openid}
    resp = await post(world, params, body)
    assert resp.status_code == 200 and resp.text == "success"
    got = await api.wait_for_messages(openid, 1, timeout=20)
    assert got[0].content == "LLM says: hello OA (saw 2 messages)"
    assert world.wecom.messages == []  # not sent through the WeCom app


async def test_plain_mode_message_is_answered_and_a_bad_signature_refused(
    oa: tuple[World, FakeOfficialAccount],
) -> None:
    world, api = oa
    openid = "oPLAINMODEUSER000000000000"
    ts, nonce = str(int(time.time())), "777"
    params = {"signature": plain_signature(CONFIG["token"], ts, nonce), "timestamp": ts, "nonce": nonce}
    body = inner_text(openid, "plain hello", 25_000_000_000_000_002)
    refused = await post(world, {**params, "signature": "f" * 40}, body)
    assert refused.status_code == 403
    resp = await post(world, params, body)
    assert resp.status_code == 200 and resp.text == "success"
    again = await post(world, params, body)  # the OA retries too: still one reply
    assert again.status_code == 200
    await post(world, params, inner_text(openid, "second plain", 25_000_000_000_000_003))
    got = await api.wait_for_messages(openid, 2, timeout=20)
    assert [m.content for m in got] == [
        "LLM says: plain hello (saw 2 messages)",
        "LLM says: second plain (saw 4 messages)",
    ]
